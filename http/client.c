/* client.c — one accepted HTTP/1.1 connection: read, parse, check, hand the request to the
 * handler, write its response, then keep-alive / pipeline or close.
 *
 * Parsing is in place: the read buffer is handed to libuv directly, llhttp callbacks record
 * slices into it. The buffer is taken from the server's free list when bytes arrive and given
 * back when the connection goes idle with nothing buffered, so an idle keep-alive connection
 * holds only this struct.
 *
 * Ownership: the client owns its gw_request. The handler may use it from on_request until it
 * ends the response (or is told on_abort). The client is freed in one place, client_on_close,
 * after both of its handles (socket, timer) have closed.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <llhttp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/access_log.h"
#include "http/gw_errors.h"
#include "http/http1.h"
#include "http/request_id.h"
#include "http/client_int.h"
#include "gateway/metrics.h"

static const char *client_state_name(client_state s)
{
    switch (s) {
    case CS_IDLE: return "idle";
    case CS_HEAD: return "head";
    case CS_ACTIVE: return "active";
    case CS_FLUSH_CLOSE: return "flush_close";
    case CS_CLOSING: return "closing";
    }
    return "?";
}

static llhttp_settings_t parser_settings;
static void client_process(gw_client *c);
static void client_close(gw_client *c);
static void client_abort(gw_client *c, int err);
static void update_reading(gw_client *c);
static void arm_timer(gw_client *c);

/* ---- buffers ------------------------------------------------------------------------- */

static char *server_get_buf(gw_server *s)
{
    if (s->n_free_bufs > 0)
        return s->free_bufs[--s->n_free_bufs];
    return malloc(s->buf_size);
}

static void server_put_buf(gw_server *s, char *b)
{
    if (!b)
        return;
    if (s->n_free_bufs < s->cap_free_bufs) {
        s->free_bufs[s->n_free_bufs++] = b;
        return;
    }
    free(b);
}

static void client_release_idle_memory(gw_client *c)
{
    if (c->buf && c->off == c->len) {
        server_put_buf(c->server, c->buf);
        c->buf = NULL;
        c->len = c->off = 0;
    }
}

/* ---- writing ------------------------------------------------------------------------- */

static void on_write(uv_write_t *wr, int status)
{
    write_req *w = (write_req *)wr;
    gw_client *c = w->client;
    c->pending_write -= w->len;
    free(w);
    if (c->state == CS_CLOSING)
        return;
    if (status < 0) {
        client_abort(c, status);
        return;
    }
    if (c->pending_write == 0 && c->state == CS_FLUSH_CLOSE) {
        client_close(c);
        return;
    }
    arm_timer(c);
    if ((c->flags & F_WANT_DRAIN) && c->pending_write <= WRITE_HIGH_WATER / 2 && c->req) {
        c->flags &= ~F_WANT_DRAIN;
        c->req->pub.handler->on_drain(&c->req->pub);
    }
}

/* Writes bufs in order after whatever is queued: uv_try_write first (most responses leave
 * in that one system call), then the rest is copied and queued. Returns 0 or <0. */
int gw__client_write(gw_client *c, uv_buf_t *bufs, unsigned n)
{
    if (c->state == CS_CLOSING)
        return GW_ECLOSED;
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0)
        return 0;
    size_t done = 0;
    if (c->pending_write == 0) {
        int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (r >= 0)
            done = (size_t)r;
        else if (r != UV_EAGAIN && r != UV_ENOSYS)
            return r;
    }
    if (done == total)
        return 0;
    write_req *w = malloc(sizeof *w + total - done);
    if (!w)
        return GW_ENOMEM;
    size_t skip = done, at = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t l = bufs[i].len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        memcpy(w->data + at, bufs[i].base + skip, l - skip);
        at += l - skip;
        skip = 0;
    }
    w->client = c;
    w->len = at;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)at);
    int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (r < 0) {
        free(w);
        return r;
    }
    c->pending_write += at;
    arm_timer(c);
    return 0;
}

/* ---- close --------------------------------------------------------------------------- */

static void client_on_close(uv_handle_t *h)
{
    gw_client *c = h->data;
    if (--c->handles_open > 0)
        return;
    gw_server *s = c->server;
    server_put_buf(s, c->buf);
    free(c);
    gw__server_client_gone(s);
}

/* One access-log line and one metrics count per request, however it ended: a request cut
 * by the client before its response is logged with status 499 (nginx's "client closed"). */
static void log_request(gw_client *c)
{
    gw_request *q = &c->req->pub;
    gw_server *s = c->server;
    if (!q->status)
        q->status = 499;
    double total_ms = (double)(uv_hrtime() - q->start_ns) / 1e6;
    if (s->opts.log) {
        gw_access_entry e = {
            .request_id = q->request_id[0] ? q->request_id : NULL,
            .client = c->peer,
            .method = q->method_buf[0] ? q->method_buf : NULL,
            .path = c->req->url_copy[0] ? c->req->url_copy : NULL,
            .route = q->route_id,
            .upstream = q->upstream_name ? q->upstream_name : "gateway",
            .route_version = q->route_version,
            .status = q->status,
            .bytes_in = q->bytes_in,
            .bytes_out = q->bytes_out,
            .upstream_ms = q->upstream_ms,
            .total_ms = total_ms,
        };
        gw_access_log_write(s->opts.log, &e);
    }
    if (s->opts.metrics)
        gw_metrics_request(s->opts.metrics, q->route_id, q->upstream_name, q->status, total_ms);
}

/* Requests are recycled through a per-server free list: a request struct is large (its
 * header array), and only the part before the array needs clearing for the next one. */
static req_impl *req_get(gw_server *s)
{
    req_impl *r;
    if (s->n_free_reqs > 0) {
        r = s->free_reqs[--s->n_free_reqs];
        memset(&r->pub, 0, offsetof(gw_request, headers));
        r->url_copy[0] = '\0';
    } else if (!(r = malloc(sizeof *r))) {
        return NULL;
    } else {
        memset(r, 0, offsetof(req_impl, head_inline)); /* the buffer needs no clearing */
    }
    r->hbuf = r->head_inline;
    r->hcap = sizeof r->head_inline;
    r->hlen = 0;
    return r;
}

static void free_request(gw_client *c)
{
    gw_server *s = c->server;
    req_impl *r = c->req;
    c->req = NULL;
    if (!r)
        return;
    if (r->hbuf != r->head_inline)
        free(r->hbuf);
    if (s->n_free_reqs < GW_FREE_REQS_MAX)
        s->free_reqs[s->n_free_reqs++] = r;
    else
        free(r);
}

/* Closes both handles; safe to call twice. A request still held by the handler is aborted
 * first so it can let go of upstream state. */
static void client_close(gw_client *c)
{
    if (c->state == CS_CLOSING)
        return;
    if (c->req && c->state == CS_ACTIVE) {
        c->state = CS_CLOSING;
        c->req->pub.handler->on_abort(&c->req->pub, GW_ECLOSED);
        log_request(c);
    }
    free_request(c);
    c->state = CS_CLOSING;
    gw_queue_remove(&c->node);
    gw_queue_remove(&c->post_node);
    uv_close((uv_handle_t *)&c->timer, client_on_close);
    uv_close((uv_handle_t *)&c->tcp, client_on_close);
}

/* The connection failed under the request (read/write error, timeout): tell the handler
 * with the real error, then close. */
static void client_abort(gw_client *c, int err)
{
    if (c->state == CS_CLOSING)
        return;
    if (c->req && c->state == CS_ACTIVE) {
        c->state = CS_CLOSING; /* the handler must not write any more */
        c->req->pub.handler->on_abort(&c->req->pub, err);
        c->state = CS_ACTIVE;
        log_request(c);
        free_request(c);
    }
    client_close(c);
}

/* A failure inside an API call the handler made (a write that failed) must not call the
 * handler back while it is still in that call: the abort is posted and runs from the
 * server's idle handle on this loop iteration, before any new I/O for this client. */
void gw__client_abort_later(gw_client *c, int err)
{
    if (c->state == CS_CLOSING || (c->flags & F_ABORT_POSTED))
        return;
    c->flags |= F_ABORT_POSTED;
    c->abort_err = err;
    if (c->flags & F_READING) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->flags &= ~F_READING;
    }
    c->deadline = 0; /* no timeout fires for a connection that is being aborted */
    gw__server_post(c->server, &c->post_node);
}

/* Deferred work for this client: a posted abort, or parsing that an API call asked for. */
void gw__client_run_posted(gw_queue *node)
{
    gw_client *c = GW_QUEUE_DATA(node, gw_client, post_node);
    if (c->flags & F_ABORT_POSTED) {
        c->flags &= ~F_ABORT_POSTED;
        client_abort(c, c->abort_err);
        return;
    }
    client_process(c);
}


/* ---- timers -------------------------------------------------------------------------- */

static void fail_in_body(gw_client *c, int status, int err, const char *why);
static int check_chunk_crlf(gw_client *c, const char *p, const char *end);

static void on_timer(uv_timer_t *t);

/* Lazy timers (as nginx does): the connection keeps its deadline; the libuv timer is only
 * moved when the deadline comes EARLIER than the wake-up already set, and a wake-up that
 * finds the deadline moved later just sleeps again. Most requests then touch no timer at all.
 * MS 0: no deadline. */
static void set_deadline(gw_client *c, uint64_t ms)
{
    if (!ms) {
        c->deadline = 0;
        return;
    }
    c->deadline = uv_now(c->server->loop) + ms;
    if (c->armed_at && c->armed_at <= c->deadline)
        return;
    c->armed_at = c->deadline;
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void on_timer_expired(gw_client *c);

static void on_timer(uv_timer_t *t)
{
    gw_client *c = t->data;
    c->armed_at = 0;
    if (!c->deadline)
        return;
    uint64_t now = uv_now(c->server->loop);
    if (now < c->deadline) {
        c->armed_at = c->deadline;
        uv_timer_start(&c->timer, on_timer, c->deadline - now, 0);
        return;
    }
    c->deadline = 0;
    on_timer_expired(c);
}

static void on_timer_expired(gw_client *c)
{
    switch (c->state) {
    case CS_IDLE:
        client_close(c);
        return;
    case CS_HEAD:
        /* slow or stalled head (slowloris): answer 408 and close */
        c->state = CS_ACTIVE;
        c->flags |= F_CLOSE_AFTER;
        gw_response_error(&c->req->pub, 408, "request head not received in time");
        return;
    case CS_ACTIVE:
        if (c->pending_write > 0) {
            client_abort(c, GW_ETIMEOUT); /* client stopped reading our response */
            return;
        }
        if ((c->flags & F_BODY_PULL) && !(c->flags & F_BODY_DONE)) {
            /* request body stalled: the handler lets go, the client gets 408 if nothing
             * of the response went out yet */
            fail_in_body(c, 408, GW_ETIMEOUT, "request body not received in time");
        }
        return;
    case CS_FLUSH_CLOSE:
        client_close(c);
        return;
    case CS_CLOSING:
        return;
    }
}

/* The request body failed (bad framing, too large, stalled) after the handler got the head:
 * the handler lets go, and the client gets STATUS if nothing of the response went out yet,
 * else just the close. */
static void fail_in_body(gw_client *c, int status, int err, const char *why)
{
    int begun = c->flags & F_RESP_BEGUN;
    c->state = CS_CLOSING;
    c->req->pub.handler->on_abort(&c->req->pub, err);
    c->state = CS_ACTIVE;
    if (begun) {
        free_request(c);
        client_close(c);
        return;
    }
    c->flags |= F_CLOSE_AFTER;
    c->flags &= ~(F_BODY_PULL | F_WANT_DRAIN);
    c->req->pub.upstream_name = NULL; /* the gateway answers, not the upstream */
    gw_response_error(&c->req->pub, status, why);
}

/* One timer, whose meaning follows the state: idle, head, body, send. */
static void arm_timer(gw_client *c)
{
    const gw_server_limits *lim = &c->server->opts.limits;
    uint64_t ms = 0;
    switch (c->state) {
    case CS_IDLE: ms = lim->idle_timeout_ms; break;
    case CS_HEAD: return; /* armed once, at the request's first byte */
    case CS_ACTIVE:
        if (c->pending_write > 0)
            ms = lim->send_timeout_ms;
        else if ((c->flags & F_BODY_PULL) && !(c->flags & F_BODY_DONE))
            ms = lim->body_timeout_ms;
        break;
    case CS_FLUSH_CLOSE: ms = lim->send_timeout_ms; break;
    case CS_CLOSING: return;
    }
    if (c->flags & F_ABORT_POSTED)
        return;
    set_deadline(c, ms);
}

/* ---- reading ------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    gw_client *c = h->data;
    (void)suggested;
    if (!c->buf) {
        c->buf = server_get_buf(c->server);
        c->len = c->off = 0;
    }
    if (!c->buf) {
        *out = uv_buf_init(NULL, 0);
        return;
    }
    *out = uv_buf_init(c->buf + c->len, (unsigned)(c->server->buf_size - c->len));
}

static void begin_request(gw_client *c);

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    gw_client *c = st->data;
    (void)b;
    if (nread == 0)
        return;
    if (nread < 0) {
        /* EOF or error. Between requests that is the normal end of a keep-alive
         * connection; inside one, the request is void. */
        if (c->state == CS_IDLE || c->state == CS_HEAD || c->state == CS_FLUSH_CLOSE) {
            if (c->state == CS_HEAD && c->req && nread == UV_EOF && c->len > c->off) {
                free_request(c);
            }
            client_close(c);
        } else {
            client_abort(c, nread == UV_EOF ? GW_ECLOSED : (int)nread);
        }
        return;
    }
    size_t fresh = c->len;
    c->len += (size_t)nread;
    if (c->req)
        c->req->pub.bytes_in += (uint64_t)nread;
    if (c->crlf_pending && c->state == CS_ACTIVE &&
        check_chunk_crlf(c, c->buf + fresh, c->buf + c->len) < 0) {
        c->fail_status = 400;
        c->fail_reason = "chunk data not followed by CRLF";
        fail_in_body(c, 400, GW_EPARSE, c->fail_reason);
        return;
    }
    if (c->state == CS_ACTIVE && (c->flags & F_BODY_PULL))
        arm_timer(c); /* body timeout counts from the last read */
    client_process(c);
}

static void update_reading(gw_client *c)
{
    int want = 0;
    if (c->state == CS_IDLE || c->state == CS_HEAD)
        want = !c->buf || c->len < c->server->buf_size;
    else if (c->state == CS_ACTIVE && (c->flags & F_BODY_DONE))
        /* keep watching the socket while the handler works, so a client that leaves is
         * noticed (on_abort frees the upstream side at once); pipelined bytes wait in the
         * buffer unparsed, and reading stops when it is full */
        want = c->buf && c->len < c->server->buf_size;
    else if (c->state == CS_ACTIVE)
        want = (c->flags & F_BODY_PULL) && c->off == c->len;
    if (want && !(c->flags & F_READING)) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->flags |= F_READING;
    } else if (!want && (c->flags & F_READING)) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->flags &= ~F_READING;
    }
}

enum { SC_LINE_START, SC_IN_LINE, SC_CR, SC_END_CR };

/* A byte that may sit inside a head line: visible ASCII, SP, HTAB and obs-text. */
static inline int head_plain(unsigned char ch)
{
    return (ch >= 0x20 && ch != 0x7f) || ch == '\t';
}

/* Rejects what llhttp accepts but a proxy must not forward (RFC 9112 §2.2, §5.2): a bare
 * CR or LF, a control byte or NUL anywhere in the head, and obs-fold continuation lines.
 * Scans only the head: it stops at the empty line. Returns 0 or -1 (fail_reason set). */
/* Eight bytes at once: 1 when none is a control byte (< 0x20, which includes CR, LF and
 * HTAB) or DEL. The borrow trick is exact about whether such a byte exists; a word with
 * one (or an HTAB) goes through the byte loop. */
static inline int word_plain(const unsigned char *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof x);
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t lt = (x - 0x20 * ones) & ~x & highs;
    uint64_t y = x ^ (0x7f * ones);
    uint64_t del = (y - ones) & ~y & highs;
    return !(lt | del);
}

static int scan_head(gw_client *c)
{
    const unsigned char *p = (const unsigned char *)c->buf;
    /* locals, not c->...: the loop runs once per head byte */
    size_t i = c->scan_pos, len = c->len;
    /* stop one byte past the head limit, so the error says where that limit was crossed
     * (still on the request line: 414) however much the read buffer holds */
    size_t limit = c->head_start + c->server->opts.limits.max_header_bytes + 1;
    if (len > limit)
        len = limit;
    unsigned state = c->scan_state, lines = c->scan_lines;
    int done = (c->flags & F_SCAN_DONE) != 0;
    const char *bad = NULL;

    while (!done && i < len) {
        if (state == SC_IN_LINE) {
            while (i + 8 <= len && word_plain(p + i))
                i += 8;
            while (i < len && head_plain(p[i]))
                i++;
            if (i == len)
                break;
        }
        unsigned char ch = p[i];
        switch (state) {
        case SC_LINE_START:
            if (ch == '\r') {
                state = SC_END_CR;
                break;
            }
            if ((ch == ' ' || ch == '\t') && lines > 0) {
                bad = "obsolete line folding is not accepted";
                goto fail;
            }
            /* fallthrough */
        case SC_IN_LINE:
            if (ch == '\r') {
                state = SC_CR;
            } else if (ch == '\n') {
                bad = "bare LF in request head";
                goto fail;
            } else if (!head_plain(ch)) {
                bad = ch ? "control character in request head" : "NUL in request head";
                goto fail;
            } else {
                state = SC_IN_LINE;
            }
            break;
        case SC_CR:
            if (ch != '\n') {
                bad = "bare CR in request head";
                goto fail;
            }
            lines++;
            state = SC_LINE_START;
            break;
        case SC_END_CR:
            if (ch != '\n') {
                bad = "bare CR in request head";
                goto fail;
            }
            if (lines == 0) /* an empty line before the request line is ignored */
                state = SC_LINE_START;
            else
                done = 1;
            break;
        }
        i++;
    }
    c->scan_pos = i;
    c->scan_state = state;
    c->scan_lines = lines;
    if (done)
        c->flags |= F_SCAN_DONE;
    if (c->scan_pos - c->head_start > c->server->opts.limits.max_header_bytes) {
        c->fail_status = lines == 0 ? 414 : 431; /* still on the request line: URI */
        c->fail_reason = lines == 0 ? "request line too long" : "request head too large";
        return -1;
    }
    return 0;

fail:
    c->scan_state = state;
    c->scan_lines = lines;
    c->fail_reason = bad;
    return -1;
}

/* Answers a broken head with STATUS and closes: nothing was given to a handler. */
static void fail_head(gw_client *c, int status, const char *reason)
{
    c->state = CS_ACTIVE;
    c->flags |= F_CLOSE_AFTER;
    c->flags &= ~(F_BODY_PULL | F_DISPATCH);
    gw_response_error(&c->req->pub, status, reason);
}

static void begin_request(gw_client *c)
{
    req_impl *r = req_get(c->server);
    if (!r) {
        client_close(c);
        return;
    }
    c->req = r;
    gw_request *q = &r->pub;
    q->client = c;
    q->server = c->server;
    q->handler = &c->server->handler;
    q->content_length = -1;
    q->upstream_ms = -1;
    q->max_body_bytes = c->server->opts.limits.max_body_bytes;
    q->start_ns = uv_hrtime();
    q->conn_id = c->id;
    q->bytes_in = c->len - c->off;
    memcpy(q->client_addr, c->peer, sizeof q->client_addr < sizeof c->peer ? sizeof q->client_addr : sizeof c->peer);
    c->state = CS_HEAD;
    c->flags &= ~(F_BODY_PULL | F_BODY_DONE | F_BODY_END_SENT | F_DISPATCH | F_FIRST_CHUNK | F_RESP_BEGUN |
                  F_HEAD_PENDING | F_RESP_CHUNKED | F_RESP_NOBODY | F_CONTINUE_SENT |
                  F_WANT_DRAIN | F_SCAN_DONE);
    c->scan_pos = c->head_start = c->off;
    c->scan_state = SC_LINE_START;
    c->chunk_left = 0;
    c->crlf_pending = 0;
    c->scan_lines = 0;
    c->url_len = 0;
    c->n_content_length = c->n_transfer_encoding = c->n_host = 0;
    c->last_was_value = 1;
    c->body_read = 0;
    c->resp_left = -1;
    c->fail_status = 400;
    c->fail_reason = NULL;
    set_deadline(c, c->server->opts.limits.header_timeout_ms);
}

static int can_parse(const gw_client *c)
{
    if (c->state == CS_IDLE || c->state == CS_HEAD)
        return 1;
    return c->state == CS_ACTIVE && (c->flags & F_BODY_PULL) && !(c->flags & F_BODY_DONE) &&
           !(c->flags & F_DISPATCH);
}

static void dispatch(gw_client *c)
{
    c->flags &= ~F_DISPATCH;
    c->state = CS_ACTIVE;
    arm_timer(c);
    gw_request *q = &c->req->pub;
    size_t n = q->url.n < sizeof c->req->url_copy - 1 ? q->url.n : sizeof c->req->url_copy - 1;
    memcpy(c->req->url_copy, q->url.p, n);
    c->req->url_copy[n] = '\0';
    c->server->handler.on_request(q);
}

static void deliver_body_end(gw_client *c)
{
    if (c->state != CS_ACTIVE || !c->req || !(c->flags & F_BODY_PULL) ||
        !(c->flags & F_BODY_DONE) || (c->flags & F_BODY_END_SENT))
        return;
    c->flags |= F_BODY_END_SENT;
    c->req->pub.handler->on_body_end(&c->req->pub);
}

/* The parse loop: feeds buffered bytes to llhttp as long as the state allows, dispatches
 * complete heads, and leaves the connection reading or not. Re-entry (a handler answering
 * synchronously) only asks the running loop for another pass. */
static void client_process(gw_client *c)
{
    if (c->flags & F_IN_PARSE) {
        c->flags |= F_REPARSE;
        return;
    }
    c->flags |= F_IN_PARSE;
    do {
        c->flags &= ~F_REPARSE;
        if (c->state == CS_CLOSING)
            break;
        if (c->state == CS_IDLE && c->buf && c->off < c->len)
            begin_request(c);
        if (c->state == CS_HEAD && scan_head(c) < 0) {
            fail_head(c, c->fail_status, c->fail_reason);
            continue;
        }
        if (can_parse(c) && c->buf && c->off < c->len) {
            if (c->flags & F_PARSER_PAUSED) {
                llhttp_resume(&c->parser);
                c->flags &= ~F_PARSER_PAUSED;
            }
            const char *start = c->buf + c->off;
            llhttp_errno_t err = llhttp_execute(&c->parser, start, c->len - c->off);
            if (c->state == CS_CLOSING)
                break;
            if (err == HPE_OK) {
                c->off = c->len;
            } else if (err == HPE_PAUSED) {
                c->off = (size_t)(llhttp_get_error_pos(&c->parser) - c->buf);
                c->flags |= F_PARSER_PAUSED;
            } else if (c->state == CS_HEAD) {
                const char *why = c->fail_reason ? c->fail_reason : llhttp_get_error_reason(&c->parser);
                fail_head(c, c->fail_status, why ? why : "malformed request");
                continue;
            } else {
                /* bad chunked framing or a limit in the body, after the handler got the
                 * head: the handler lets go; the client gets an error if nothing went out */
                int status = c->fail_status ? c->fail_status : 400;
                const char *why = c->fail_reason ? c->fail_reason : llhttp_get_error_reason(&c->parser);
                fail_in_body(c, status, status == 413 ? GW_ETOOBIG : GW_EPARSE,
                             why ? why : "malformed request body");
                if (c->state == CS_CLOSING)
                    break;
                continue;
            }
            if (c->state == CS_ACTIVE && !(c->flags & F_DISPATCH) && c->off == c->len) {
                c->off = c->len = 0; /* body bytes consumed: reuse the buffer from its start */
            }
        }
        if (c->flags & F_DISPATCH) {
            dispatch(c);
            continue;
        }
        if (c->state == CS_HEAD && c->buf && c->len >= c->server->buf_size) {
            int uri = c->scan_lines == 0; /* still on the request line */
            fail_head(c, uri ? 414 : 431, uri ? "request line too long" : "request head too large");
            continue;
        }
        deliver_body_end(c);
    } while ((c->flags & F_REPARSE) && c->state != CS_CLOSING);
    c->flags &= ~F_IN_PARSE;
    if (c->state != CS_CLOSING)
        update_reading(c);
}

/* ---- llhttp callbacks ---------------------------------------------------------------- */

static gw_client *parser_client(llhttp_t *p)
{
    return p->data;
}

static int reject(gw_client *c, int status, const char *reason)
{
    c->fail_status = status;
    c->fail_reason = reason;
    return HPE_USER;
}

static int on_message_begin(llhttp_t *p)
{
    gw_client *c = parser_client(p);
    if (!c->req)
        begin_request(c);
    return c->req ? 0 : -1;
}

static int extend(gw_slice *s, const char *at, size_t n)
{
    if (s->p == NULL) {
        s->p = at;
        s->n = n;
        return 0;
    }
    if (s->p + s->n != at)
        return -1; /* cannot happen while the head stays in one buffer */
    s->n += n;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    gw_client *c = parser_client(p);
    c->url_len += n;
    if (c->url_len > c->server->opts.limits.max_uri_bytes)
        return reject(c, 414, "request URI too long");
    return extend(&c->req->pub.url, at, n) ? reject(c, 400, "malformed URI") : 0;
}

static int on_method(llhttp_t *p, const char *at, size_t n)
{
    gw_client *c = parser_client(p);
    return extend(&c->req->pub.method, at, n) ? reject(c, 400, "malformed method") : 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    gw_client *c = parser_client(p);
    gw_request *q = &c->req->pub;
    if (c->last_was_value) {
        if ((uint32_t)q->n_headers >= c->server->opts.limits.max_headers)
            return reject(c, 431, "too many request headers");
        q->headers[q->n_headers].name = (gw_slice){ NULL, 0 };
        q->headers[q->n_headers].value = (gw_slice){ "", 0 };
        q->n_headers++;
        c->last_was_value = 0;
    }
    return extend(&q->headers[q->n_headers - 1].name, at, n) ? reject(c, 400, "malformed header") : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    gw_client *c = parser_client(p);
    gw_request *q = &c->req->pub;
    gw_slice *v = &q->headers[q->n_headers - 1].value;
    if (!c->last_was_value) {
        v->p = NULL;
        v->n = 0;
        c->last_was_value = 1;
    }
    return extend(v, at, n) ? reject(c, 400, "malformed header") : 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    gw_client *c = parser_client(p);
    gw_request *q = &c->req->pub;
    c->last_was_value = 1;
    gw_header *h = &q->headers[q->n_headers - 1];
    if (h->value.p == NULL)
        h->value = (gw_slice){ "", 0 };
    /* a field value excludes trailing whitespace (RFC 9110 §5.5); llhttp keeps it */
    while (h->value.n && (h->value.p[h->value.n - 1] == ' ' || h->value.p[h->value.n - 1] == '\t'))
        h->value.n--;
    if (gw_slice_ieq(h->name, "content-length"))
        c->n_content_length++;
    else if (gw_slice_ieq(h->name, "transfer-encoding")) {
        c->n_transfer_encoding++;
        /* only a lone "chunked": "gzip, chunked" and friends are how smuggling starts */
        if (!gw_slice_ieq(h->value, "chunked"))
            return reject(c, 400, "Transfer-Encoding other than chunked");
    }
    else if (gw_slice_ieq(h->name, "host")) {
        c->n_host++;
        q->host = h->value;
    } else if (gw_slice_ieq(h->name, "expect")) {
        if (!gw_slice_ieq(h->value, "100-continue"))
            return reject(c, 417, "unsupported Expect");
        q->expect_continue = 1;
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    gw_client *c = parser_client(p);
    gw_request *q = &c->req->pub;
    q->http_major = p->http_major;
    q->http_minor = p->http_minor;
    if (q->http_major != 1 || q->http_minor > 1)
        return reject(c, 400, "unsupported HTTP version");
    /* request smuggling: one framing, stated once (RFC 9112 §6.1, §6.3) */
    if (c->n_content_length && c->n_transfer_encoding)
        return reject(c, 400, "both Content-Length and Transfer-Encoding");
    if (c->n_content_length > 1)
        return reject(c, 400, "several Content-Length headers");
    if (c->n_transfer_encoding > 1)
        return reject(c, 400, "several Transfer-Encoding headers");
    if (c->n_transfer_encoding && !(p->flags & F_CHUNKED))
        return reject(c, 400, "Transfer-Encoding other than chunked");
    if (c->n_transfer_encoding && q->http_minor == 0)
        return reject(c, 400, "Transfer-Encoding in an HTTP/1.0 request");
    if (c->n_host > 1)
        return reject(c, 400, "several Host headers");
    if (c->n_host == 0 && q->http_minor == 1)
        return reject(c, 400, "missing Host header");
    if (q->url.n == 0 || q->url.p[0] != '/')
        return reject(c, 400, "request target must be an absolute path");
    q->chunked = (p->flags & F_CHUNKED) != 0;
    if (c->n_content_length)
        q->content_length = (int64_t)p->content_length;
    q->has_body = q->chunked || q->content_length > 0;
    q->keep_alive = llhttp_should_keep_alive(p) != 0;
    q->is_head = p->method == HTTP_HEAD;
    /* path and query */
    const char *qm = memchr(q->url.p, '?', q->url.n);
    if (memchr(q->url.p, '#', q->url.n))
        return reject(c, 400, "fragment in request target");
    q->path = (gw_slice){ q->url.p, qm ? (size_t)(qm - q->url.p) : q->url.n };
    q->query = qm ? (gw_slice){ qm + 1, q->url.n - q->path.n - 1 } : (gw_slice){ NULL, 0 };
    size_t mn = q->method.n < sizeof q->method_buf - 1 ? q->method.n : sizeof q->method_buf - 1;
    memcpy(q->method_buf, q->method.p, mn);
    q->method_buf[mn] = '\0';
    gw_slice rid = gw_request_header(q, "x-request-id");
    if (gw_request_id_valid(rid)) {
        memcpy(q->request_id, rid.p, rid.n);
        q->request_id[rid.n] = '\0';
    } else {
        gw_request_id_generate(q->request_id);
    }
    if (q->chunked && !q->expect_continue) {
        /* hold the request until its first chunk-size line parsed: a malformed one is then
         * refused before anything went upstream (a 100-continue client sends no body before
         * we answer, so that one goes at once) */
        c->flags |= F_FIRST_CHUNK;
        return 0;
    }
    c->flags |= F_DISPATCH;
    /* With a body, stop here: the handler pulls it when it is ready for it. */
    return q->has_body ? HPE_PAUSED : 0;
}

/* llhttp 8.1 does not check the CRLF that must follow chunk data; we do, since a proxy
 * that reads chunk boundaries differently from its upstream can be smuggled through. */
static int check_chunk_crlf(gw_client *c, const char *p, const char *end)
{
    static const char crlf[2] = { '\r', '\n' };
    while (c->crlf_pending && p < end) {
        if (*p != crlf[2 - c->crlf_pending])
            return -1;
        c->crlf_pending--;
        p++;
    }
    return 0;
}

static int on_chunk_header(llhttp_t *p)
{
    gw_client *c = parser_client(p);
    c->chunk_left = p->content_length;
    if (c->flags & F_FIRST_CHUNK) {
        c->flags &= ~F_FIRST_CHUNK;
        c->flags |= F_DISPATCH;
        return HPE_PAUSED;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    gw_client *c = parser_client(p);
    gw_request *q = &c->req->pub;
    if (q->chunked) {
        c->chunk_left -= n < c->chunk_left ? n : c->chunk_left;
        if (c->chunk_left == 0) {
            c->crlf_pending = 2;
            if (check_chunk_crlf(c, at + n, c->buf + c->len) < 0)
                return reject(c, 400, "chunk data not followed by CRLF");
        }
    }
    c->body_read += n;
    if (q->max_body_bytes && c->body_read > q->max_body_bytes)
        return reject(c, 413, "request body too large");
    if (c->state != CS_ACTIVE)
        return 0;
    q->handler->on_body(q, at, n);
    return c->state == CS_CLOSING ? HPE_USER : 0;
}

static int on_message_complete(llhttp_t *p)
{
    gw_client *c = parser_client(p);
    c->flags |= F_BODY_DONE;
    /* pause: the next pipelined request waits until this response is done */
    return HPE_PAUSED;
}

static void init_parser_settings(void)
{
    static int done;
    if (done)
        return;
    llhttp_settings_init(&parser_settings);
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_url = on_url;
    parser_settings.on_method = on_method;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_header_value_complete = on_header_value_complete;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_chunk_header = on_chunk_header;
    parser_settings.on_message_complete = on_message_complete;
    done = 1;
}

/* ---- accept -------------------------------------------------------------------------- */

void gw__client_accept(gw_server *s)
{
    gw_client *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->server = s;
    c->id = ++s->next_conn_id;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    gw_queue_init(&c->post_node);
    gw_queue_insert_tail(&s->clients, &c->node);
    s->n_clients++;
    if (s->opts.metrics)
        atomic_fetch_add_explicit(&s->opts.metrics->connections_accepted, 1, memory_order_relaxed);
    if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->tcp) != 0) {
        c->state = CS_IDLE;
        client_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    c->peer[0] = '\0';
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof c->peer);
        else if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof c->peer);
    }
    init_parser_settings();
    llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
    c->parser.data = c;
    c->state = CS_IDLE;
    arm_timer(c);
    update_reading(c);
}

void gw__client_shutdown(gw_client *c, int hard)
{
    if (hard) {
        client_abort(c, GW_ECLOSED);
        return;
    }
    if (c->state == CS_IDLE && !(c->buf && c->off < c->len))
        client_close(c);
    else
        c->flags |= F_CLOSE_AFTER;
}

void gw__close_all_clients(gw_server *s, int hard)
{
    gw_queue *q, *n;
    GW_QUEUE_FOREACH_SAFE(q, n, &s->clients)
    {
        gw__client_shutdown(GW_QUEUE_DATA(q, gw_client, node), hard);
    }
}

/* ---- requests: body ------------------------------------------------------------------ */

void gw_request_set_route(gw_request *req, const char *id, uint64_t version)
{
    if (!id)
        id = "-";
    size_t n = strnlen(id, sizeof req->route_buf - 1); /* truncated like the old snprintf */
    memcpy(req->route_buf, id, n);
    req->route_buf[n] = '\0';
    req->route_id = req->route_buf;
    req->route_version = version;
}

gw_slice gw_request_header(const gw_request *req, const char *name)
{
    for (int i = 0; i < req->n_headers; i++)
        if (gw_slice_ieq(req->headers[i].name, name))
            return req->headers[i].value;
    return (gw_slice){ NULL, 0 };
}

int gw_request_read_body(gw_request *req)
{
    gw_client *c = req->client;
    if (c->state != CS_ACTIVE || (c->flags & F_ABORT_POSTED))
        return GW_ECLOSED;
    if (req->max_body_bytes && req->content_length > 0 &&
        (uint64_t)req->content_length > req->max_body_bytes)
        return GW_ETOOBIG;
    if (req->expect_continue && !(c->flags & (F_CONTINUE_SENT | F_BODY_DONE)) &&
        !(c->flags & F_RESP_BEGUN)) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof cont - 1);
        c->flags |= F_CONTINUE_SENT;
        if (gw__client_write(c, &b, 1) < 0) {
            gw__client_abort_later(c, GW_ECLOSED);
            return GW_ECLOSED;
        }
    }
    c->flags |= F_BODY_PULL;
    arm_timer(c);
    if (c->flags & F_IN_PARSE)
        c->flags |= F_REPARSE;
    else
        gw__server_post(c->server, &c->post_node); /* body callbacks never nest in this call */
    return 0;
}

void gw_request_pause_body(gw_request *req)
{
    gw_client *c = req->client;
    c->flags &= ~F_BODY_PULL;
    arm_timer(c);
    if (!(c->flags & F_IN_PARSE))
        update_reading(c);
}

void gw_request_close_after(gw_request *req)
{
    req->client->flags |= F_CLOSE_AFTER;
}

/* The response is written (or queued): log it, then keep the connection for the next
 * request or close it once the bytes are out. */
void gw__request_finish(gw_client *c)
{
    gw_request *q = &c->req->pub;
    gw_server *s = c->server;
    log_request(c);
    int close_now = (c->flags & F_CLOSE_AFTER) || !q->keep_alive || s->draining ||
                    !(c->flags & F_BODY_DONE);
    free_request(c);
    c->flags &= ~(F_BODY_PULL | F_WANT_DRAIN | F_DISPATCH);
    if (close_now) {
        c->state = CS_FLUSH_CLOSE;
        if (c->flags & F_READING) {
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->flags &= ~F_READING;
        }
        if (c->pending_write == 0)
            client_close(c);
        else
            arm_timer(c);
        return;
    }
    c->state = CS_IDLE;
    if (c->off < c->len) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    } else {
        c->len = c->off = 0;
    }
    client_release_idle_memory(c);
    arm_timer(c);
    if (c->off < c->len) /* a pipelined request waits: start it after this call returns */
        gw__server_post(s, &c->post_node);
    else if (!(c->flags & F_IN_PARSE))
        update_reading(c);
}

const char *gw__client_state_name(const gw_client *c)
{
    return client_state_name(c->state);
}
