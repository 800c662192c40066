/* client.c — one accepted HTTP/1.1 connection: read, parse, check, hand the request to the
 * handler, write its response, then keep-alive / pipeline or close.
 *
 * Parsing is in place: the read buffer is handed to libuv directly, llhttp callbacks record
 * slices into it. The buffer is taken from the server's free list when bytes arrive and given
 * back when the connection goes idle with nothing buffered, so an idle keep-alive connection
 * holds only this struct.
 *
 * "Response queued" and "response written" are separate facts: the next pipelined request
 * is parsed, and the connection kept or closed, only once the previous response has left
 * (CS_SENDING between the two), so a client that sends without reading costs at most one
 * read buffer and one response, and its send timeout runs from the first unsent byte.
 *
 * Ownership: the client owns its gw_request. The handler may use it from on_request until it
 * ends the response (or is told on_abort). A request ends in one place, end_request, for
 * every reason. The client is freed in one place, client_on_close, once its socket handle
 * has closed. Its timeout is a node in one of the server's lists (http/deadline.h), not a
 * handle of its own.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <llhttp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "http/client_int.h"
#include "http/edge.h"
#include "http/gw_errors.h"
#include "http/http1.h"
#include "http/request_id.h"
#include "http/stream_write.h"

static const char *client_state_name(client_state s)
{
    switch (s) {
    case CS_IDLE: return "idle";
    case CS_HEAD: return "head";
    case CS_ACTIVE: return "active";
    case CS_SENDING: return "sending";
    case CS_LINGER: return "linger";
    case CS_CLOSING: return "closing";
    }
    return "?";
}

static llhttp_settings_t parser_settings;
static void client_process(gw_client *c);
static void client_close(gw_client *c, int err);
static void update_reading(gw_client *c);
static void transport_read_stop(gw_client *c);
static void arm_timer(gw_client *c);
static void set_deadline(gw_client *c, unsigned kind, uint64_t ms);
static void response_flushed(gw_client *c);

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

/* Bytes left the queue: the send timeout counts from this progress (nginx send_timeout),
 * never from a new request while older bytes still wait. */
static void send_progress(gw_client *c)
{
    if (c->tls && !gw__tls_handshake_done(c->tls))
        return; /* the handshake deadline bounds the handshake's writes too */
    if (!(c->flags & F_ABORT_POSTED))
        set_deadline(c, TK_SEND, c->server->opts.limits.send_timeout_ms);
}

static void on_write(uv_write_t *wr, int status)
{
    gw_client *c = wr->handle->data;
    gw_stream_write_done(wr, &c->pending_write);
    if (c->state == CS_CLOSING)
        return;
    if (status < 0) {
        client_close(c, status);
        return;
    }
    if (c->pending_write > 0) {
        send_progress(c);
    } else if (c->state == CS_SENDING) {
        response_flushed(c);
        return;
    } else {
        arm_timer(c); /* nothing unsent: the state's own timeout again */
    }
    if ((c->flags & (F_WANT_DRAIN | F_HANDLER)) == (F_WANT_DRAIN | F_HANDLER) &&
        c->state == CS_ACTIVE && c->pending_write <= WRITE_HIGH_WATER / 2) {
        c->flags &= ~F_WANT_DRAIN;
        c->req->pub.handler->on_drain(&c->req->pub);
    }
}

/* Writes bufs in order after whatever is queued (stream_write.h). Returns 0 or <0. */
int gw__client_write(gw_client *c, uv_buf_t *bufs, unsigned n)
{
    if (c->state == CS_CLOSING)
        return GW_ECLOSED;
    /* TCP_NODELAY only from the connection's second write on (nginx sets it when a
     * connection is kept alive): one write then close needs no setsockopt, since Linux's
     * Nagle (Minshall's variant) holds back a small segment only behind another small one
     * still unacknowledged, which a single write does not leave. */
    if (n && (c->flags & (F_WROTE | F_NODELAY)) == F_WROTE) {
        uv_tcp_nodelay(&c->tcp, 1);
        c->flags |= F_NODELAY;
    }
    if (n)
        c->flags |= F_WROTE; /* (gw_response_end after the last body bytes writes nothing) */
    if (c->tls)
        return gw__tls_write(c, bufs, n);
    return gw__client_write_wire(c, bufs, n);
}

int gw__client_write_wire(gw_client *c, uv_buf_t *bufs, unsigned n)
{
    if (c->state == CS_CLOSING)
        return GW_ECLOSED;
    size_t before = c->pending_write;
    int r = gw_stream_write((uv_stream_t *)&c->tcp, &c->pending_write, bufs, n, on_write);
    if (r == 0 && before == 0 && c->pending_write > 0)
        send_progress(c); /* the first unsent byte */
    return r;
}

/* ---- ending a request, closing ------------------------------------------------------- */

static void client_on_close(uv_handle_t *h)
{
    gw_client *c = h->data;
    gw_server *s = c->server;
    server_put_buf(s, c->buf);
    gw__tls_conn_free(c->tls);
    free(c);
    gw__server_client_gone(s);
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

/* The handler lets go of the request: on_abort, once, if it still holds it. It can write
 * nothing from there (the state reads CS_CLOSING while it runs). */
static void release_handler(gw_client *c, int err)
{
    if (!(c->flags & F_HANDLER))
        return;
    c->flags &= ~(F_HANDLER | F_WANT_DRAIN | F_BODY_PULL);
    client_state st = c->state;
    c->state = CS_CLOSING;
    c->req->pub.handler->on_abort(&c->req->pub, err);
    c->state = st;
}

/* The one way a request ends, whatever the reason (ERR 0: its response was written whole;
 * else why it was cut): the handler lets go (on_abort if it still held it), the request is
 * reported once if a handler saw it or it got an answer (a request cut before its response
 * began counts as 499, nginx's "client closed"), and it is freed. */
static void end_request(gw_client *c, int err)
{
    req_impl *r = c->req;
    if (!r)
        return;
    release_handler(c, err ? err : GW_ECLOSED);
    gw_request *q = &r->pub;
    const gw_server_opts *o = &c->server->opts;
    if ((c->state == CS_ACTIVE || c->state == CS_SENDING) && o->on_request_done) {
        if (!q->status)
            q->status = 499;
        gw_request_report rep = {
            .url = r->url_copy,
            .total_ms = (double)(uv_hrtime() - q->start_ns) / 1e6,
            .err = err,
        };
        o->on_request_done(q, &rep, o->hook_data);
    }
    c->req = NULL;
    gw_server *s = c->server;
    if (r->hbuf != r->head_inline)
        free(r->hbuf);
    if (s->n_free_reqs < GW_FREE_REQS_MAX)
        s->free_reqs[s->n_free_reqs++] = r;
    else
        free(r);
}

/* Ends the request (if any) with ERR and closes both handles; safe to call twice. */
static void client_close(gw_client *c, int err)
{
    if (c->state == CS_CLOSING)
        return;
    end_request(c, err);
    if (c->tls && !(c->flags & F_NO_LINGER))
        gw__tls_close_notify(c); /* not after a cut response: its truncation must show */
    c->state = CS_CLOSING;
    gw_queue_remove(&c->node);
    gw_queue_remove(&c->post_node);
    gw_timeout_clear(&c->timeout);
    uv_close((uv_handle_t *)&c->tcp, client_on_close);
}

/* Lingering close (nginx): the answer is written; shut the write side so the client gets
 * it with a FIN, then read and throw away what it still sends, for a bounded time and byte
 * count, before closing. Closing with unread input would make the kernel send a reset,
 * which can destroy the answer before the client reads it. */
static void client_linger(gw_client *c)
{
    uv_os_fd_t fd;
    if (c->tls && !(c->flags & F_PEER_EOF))
        gw__tls_close_notify(c);
    if ((c->flags & F_PEER_EOF) || uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 ||
        shutdown(fd, SHUT_WR) != 0) {
        client_close(c, 0);
        return;
    }
    c->state = CS_LINGER;
    c->body_read = 0;
    c->len = c->off = 0; /* buffered input is thrown away too */
    set_deadline(c, TK_LINGER, GW_LINGER_MS);
    update_reading(c);
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
        transport_read_stop(c);
        c->flags &= ~F_READING;
    }
    gw_timeout_clear(&c->timeout); /* no timeout fires for a connection being aborted */
    gw__server_post(c->server, &c->post_node);
}

/* Deferred work for this client: a posted abort, or parsing that an API call asked for. */
void gw__client_run_posted(gw_queue *node)
{
    gw_client *c = GW_QUEUE_DATA(node, gw_client, post_node);
    if (c->flags & F_ABORT_POSTED) {
        c->flags &= ~F_ABORT_POSTED;
        client_close(c, c->abort_err);
        return;
    }
    if (gw__tls_run_posted(c) && c->state == CS_CLOSING)
        return;
    client_process(c);
}

/* ---- timers -------------------------------------------------------------------------- */

static void fail_in_body(gw_client *c, int status, int err, const char *why);
static void fail_head(gw_client *c, int status, const char *reason);
static int check_chunk_crlf(gw_client *c, const char *p, const char *end);

/* MS 0: no deadline. KIND is the list (one per timeout value, see TK_*). */
static void set_deadline(gw_client *c, unsigned kind, uint64_t ms)
{
    gw_timeout_set(&c->server->timeouts, &c->timeout, kind, ms);
}

/* The server's timeout lists found this connection's deadline passed. */
void gw__client_on_timeout(gw_timeout *t)
{
    gw_client *c = GW_QUEUE_DATA(t, gw_client, timeout);
    switch (c->state) {
    case CS_IDLE: /* no request came: first (header_timeout) or next (idle_timeout) */
        if (c->tls && !gw__tls_handshake_done(c->tls))
            gw__client_tls_event(c, GW_TLS_ERR_TIMEOUT); /* or no ClientHello at all */
        client_close(c, 0);
        return;
    case CS_HEAD:
        /* slow or stalled head (slowloris): answer 408 and close */
        fail_head(c, 408, "request head not received in time");
        return;
    case CS_ACTIVE:
        if (c->pending_write > 0) {
            client_close(c, GW_ETIMEOUT); /* the client stopped reading our response */
            return;
        }
        if ((c->flags & F_BODY_PULL) && !(c->flags & F_BODY_DONE)) {
            /* request body stalled: the handler lets go, the client gets 408 if nothing
             * of the response went out yet */
            fail_in_body(c, 408, GW_ETIMEOUT, "request body not received in time");
        }
        return;
    case CS_SENDING: /* the client stopped reading: its pipelined requests are dropped */
        client_close(c, GW_ETIMEOUT);
        return;
    case CS_LINGER:
        client_close(c, 0);
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
    release_handler(c, err);
    if (c->flags & F_RESP_BEGUN) {
        client_close(c, err);
        return;
    }
    c->flags |= F_CLOSE_AFTER | F_UNREAD;
    c->flags &= ~(F_BODY_PULL | F_WANT_DRAIN);
    c->req->pub.upstream_name = NULL; /* the gateway answers, not the upstream */
    gw_response_error(&c->req->pub, status, why);
}

/* Sets the timeout the state calls for. The head's (set at its first byte), the send
 * timeout (from the first unsent byte) and the lingering time (from entry) are not moved
 * here. */
static void arm_timer(gw_client *c)
{
    const gw_server_limits *lim = &c->server->opts.limits;
    uint64_t ms = 0;
    unsigned kind = TK_BODY;
    switch (c->state) {
    case CS_IDLE:
        if (c->tls && !gw__tls_handshake_done(c->tls))
            return; /* the handshake deadline, set at accept, stays */
        kind = (c->flags & F_KEPT) ? TK_IDLE : TK_HEADER;
        ms = (c->flags & F_KEPT) ? lim->idle_timeout_ms : lim->header_timeout_ms;
        break;
    case CS_ACTIVE:
        if (c->pending_write > 0)
            return;
        if ((c->flags & F_BODY_PULL) && !(c->flags & F_BODY_DONE))
            ms = lim->body_timeout_ms;
        break;
    case CS_HEAD:
    case CS_SENDING:
    case CS_LINGER:
    case CS_CLOSING:
        return;
    }
    if (c->flags & F_ABORT_POSTED)
        return;
    set_deadline(c, kind, ms);
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
    if (c->state == CS_LINGER) {
        c->len = 0; /* thrown away */
        if (nread < 0 || (c->body_read += (uint64_t)nread) > GW_LINGER_BYTES)
            client_close(c, 0);
        return;
    }
    if (nread < 0) {
        if (nread == UV_EOF && c->state == CS_SENDING) {
            /* the client shut its write side: what is queued still goes out, then close */
            c->flags |= F_PEER_EOF | F_CLOSE_AFTER;
            update_reading(c);
            return;
        }
        /* EOF or error. Between requests (or inside a head) that is the normal end of a
         * connection; with a request under way, the request is void. */
        client_close(c, nread == UV_EOF ? GW_ECLOSED : (int)nread);
        return;
    }
    size_t fresh = c->len;
    c->len += (size_t)nread;
    if (c->req && c->state != CS_SENDING)
        c->req->pub.bytes_in += (uint64_t)nread;
    if (c->state == CS_ACTIVE && c->req->crlf_pending &&
        check_chunk_crlf(c, c->buf + fresh, c->buf + c->len) < 0) {
        c->req->fail_status = 400;
        c->req->fail_reason = "chunk data not followed by CRLF";
        fail_in_body(c, 400, GW_EPARSE, c->req->fail_reason);
        return;
    }
    if (c->state == CS_ACTIVE && (c->flags & F_BODY_PULL))
        arm_timer(c); /* body timeout counts from the last read */
    client_process(c);
}

/* ---- the transport under the framing ------------------------------------------------- */

/* Plaintext in and out: the socket itself, or the TLS transport (tls_transport.h), which
 * feeds the same on_alloc/on_read through gw__client_alloc/gw__client_deliver. */
static int transport_read_start(gw_client *c)
{
    if (c->tls) {
        gw__tls_read_start(c);
        return 0;
    }
    return uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void transport_read_stop(gw_client *c)
{
    if (c->tls)
        gw__tls_read_stop(c);
    else
        uv_read_stop((uv_stream_t *)&c->tcp);
}

void gw__client_alloc(gw_client *c, uv_buf_t *out)
{
    on_alloc((uv_handle_t *)&c->tcp, 0, out);
    if (c->buf && out->len == 0)
        out->base = NULL;
}

void gw__client_deliver(gw_client *c, ssize_t nread)
{
    uv_buf_t b = uv_buf_init(NULL, 0);
    on_read((uv_stream_t *)&c->tcp, nread, &b);
}

void gw__client_tls_event(gw_client *c, enum gw_tls_event ev)
{
    const gw_server_opts *o = &c->server->opts;
    if (o->on_tls_event)
        o->on_tls_event(ev, o->hook_data);
}

/* The handshake completed: the first request's head must now come in header_timeout. */
void gw__client_tls_ready(gw_client *c, enum gw_tls_event ev)
{
    gw__client_tls_event(c, ev);
    arm_timer(c);
}

void gw__client_tls_failed(gw_client *c, enum gw_tls_event ev)
{
    gw__client_tls_event(c, ev);
    client_close(c, 0);
}

static void update_reading(gw_client *c)
{
    int want = 0;
    if (c->state == CS_IDLE || c->state == CS_HEAD)
        want = !c->buf || c->len < c->server->buf_size;
    else if ((c->state == CS_ACTIVE && (c->flags & F_BODY_DONE)) || c->state == CS_SENDING)
        /* keep watching the socket while the handler works or the response leaves, so a
         * client that goes is noticed (on_abort frees the upstream side at once); pipelined
         * bytes wait in the buffer unparsed, and reading stops when it is full */
        want = c->buf && c->len < c->server->buf_size && !(c->flags & F_PEER_EOF);
    else if (c->state == CS_ACTIVE)
        want = (c->flags & F_BODY_PULL) && (c->off == c->len || (c->flags & F_CHUNK_LINE)) &&
               c->len < c->server->buf_size;
    else if (c->state == CS_LINGER)
        want = 1;
    if (want && !(c->flags & F_READING)) {
        if (transport_read_start(c) == 0)
            c->flags |= F_READING;
    } else if (!want && (c->flags & F_READING)) {
        transport_read_stop(c);
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
    size_t i = c->req->scan_pos, len = c->len;
    /* stop one byte past the head limit, so the error says where that limit was crossed
     * (still on the request line: 414) however much the read buffer holds */
    size_t limit = c->req->head_start + c->server->opts.limits.max_header_bytes + 1;
    if (len > limit)
        len = limit;
    unsigned state = c->req->scan_state, lines = c->req->scan_lines;
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
    c->req->scan_pos = i;
    c->req->scan_state = state;
    c->req->scan_lines = lines;
    if (done)
        c->flags |= F_SCAN_DONE;
    if (c->req->scan_pos - c->req->head_start > c->server->opts.limits.max_header_bytes) {
        c->req->fail_status = lines == 0 ? 414 : 431; /* still on the request line: URI */
        c->req->fail_reason = lines == 0 ? "request line too long" : "request head too large";
        return -1;
    }
    return 0;

fail:
    c->req->scan_state = state;
    c->req->scan_lines = lines;
    c->req->fail_reason = bad;
    return -1;
}

/* Answers a broken head with STATUS and closes (lingering: the rest of the head may still
 * be coming): nothing was given to a handler. */
static void fail_head(gw_client *c, int status, const char *reason)
{
    c->state = CS_ACTIVE;
    c->flags |= F_CLOSE_AFTER | F_UNREAD;
    c->flags &= ~(F_BODY_PULL | F_DISPATCH);
    gw_response_error(&c->req->pub, status, reason);
}

static void begin_request(gw_client *c)
{
    req_impl *r = req_get(c->server);
    if (!r) {
        client_close(c, GW_ENOMEM);
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
    q->tls = c->tls != NULL;
    /* the address is kept raw per connection (an idle one needs no text) */
    q->client_addr[0] = '\0';
    if (c->peer_family)
        inet_ntop(c->peer_family, c->peer_addr, q->client_addr, sizeof q->client_addr);
    llhttp_init(&r->parser, HTTP_REQUEST, &parser_settings);
    r->parser.data = c;
    c->state = CS_HEAD;
    c->flags &= ~(F_PARSER_PAUSED | F_BODY_PULL | F_BODY_DONE | F_BODY_END_SENT | F_DISPATCH | F_FIRST_CHUNK | F_RESP_BEGUN |
                  F_HEAD_PENDING | F_RESP_CHUNKED | F_RESP_NOBODY | F_CONTINUE_SENT |
                  F_WANT_DRAIN | F_SCAN_DONE | F_HANDLER | F_UNREAD | F_NO_LINGER | F_LINE_DONE |
                  F_CHUNK_LINE);
    c->req->scan_pos = c->req->head_start = c->off;
    c->req->scan_state = SC_LINE_START;
    c->req->chunk_left = 0;
    c->req->crlf_pending = 0;
    c->req->chunk_skip = 0;
    c->req->authority = (gw_slice){ NULL, 0 };
    c->req->scan_lines = 0;
    c->req->url_len = 0;
    c->req->n_content_length = c->req->n_transfer_encoding = c->req->n_host = 0;
    c->req->last_was_value = 1;
    c->body_read = 0;
    c->req->resp_left = -1;
    c->req->fail_status = 400;
    c->req->fail_reason = NULL;
    /* the first request's head counts from accept: its deadline is already set */
    if (c->flags & F_KEPT)
        set_deadline(c, TK_HEADER, c->server->opts.limits.header_timeout_ms);
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
    c->flags |= F_HANDLER;
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
    if (c->state != CS_ACTIVE || !(c->flags & F_HANDLER) || !(c->flags & F_BODY_PULL) ||
        !(c->flags & F_BODY_DONE) || (c->flags & F_BODY_END_SENT))
        return;
    c->flags |= F_BODY_END_SENT;
    c->req->pub.handler->on_body_end(&c->req->pub);
}

/* The request line, once scan_head saw its CRLF: parsed here (edge.h) so that any token
 * method and HTTP/1.x with a higher minor pass, and exactly one SP separates the parts;
 * llhttp is given a canonical line instead ("GET / HTTP/1.1", or 1.0 for a 1.0 client) and
 * then the real header bytes. Returns 1 when done, 0 when the line is not complete yet, -1
 * when it was refused (answered). */
static int parse_request_line(gw_client *c)
{
    if (c->req->scan_lines == 0)
        return 0;
    char *p = c->buf + c->off;
    while (p[0] == '\r') /* empty lines before the request line (scan_head checked the LF) */
        p += 2;
    char *lf = memchr(p, '\n', (size_t)(c->buf + c->len - p)); /* after a CR: scan_head */
    gw_reqline rl;
    const char *why = NULL;
    int st = gw_edge_request_line(p, (size_t)(lf - 1 - p), c->server->opts.limits.max_uri_bytes,
                                  &rl, &why);
    if (st) {
        fail_head(c, st, why);
        return -1;
    }
    gw_request *q = &c->req->pub;
    q->method = rl.method;
    q->url = rl.origin;
    q->http_major = 1;
    q->http_minor = rl.minor ? 1 : 0; /* a higher 1.x minor is answered as 1.1 */
    c->req->authority = rl.authority;
    static const char canon11[] = "GET / HTTP/1.1\r\n", canon10[] = "GET / HTTP/1.0\r\n";
    if (c->flags & F_PARSER_PAUSED) {
        llhttp_resume(&c->req->parser);
        c->flags &= ~F_PARSER_PAUSED;
    }
    if (llhttp_execute(&c->req->parser, q->http_minor ? canon11 : canon10, sizeof canon11 - 1) != HPE_OK) {
        fail_head(c, 400, "malformed request");
        return -1;
    }
    c->flags |= F_LINE_DONE;
    c->off = (size_t)(lf + 1 - c->buf);
    return 1;
}

#define GW_CHUNK_LINE_MAX 4096 /* a chunk-size line with its extensions, at most */

/* llhttp is paused before a chunk-size line: fix what it would wrongly refuse (edge.h) once
 * the line is buffered. Returns 1 to go on parsing, 0 to wait for bytes, -1 refused
 * (fail_status/fail_reason set). */
static int prepare_chunk_line(gw_client *c)
{
    size_t at = c->off + (size_t)c->req->chunk_skip;
    if (at > c->len)
        return 0;
    size_t max = GW_CHUNK_LINE_MAX;
    int r = gw_edge_chunk_line(c->buf + at, c->len - at, max);
    if (r == 0 && c->len >= c->server->buf_size) {
        if ((c->flags & F_HANDLER) && c->off > 0) {
            /* the head was handed over: the unparsed tail moves to the buffer's start */
            memmove(c->buf, c->buf + c->off, c->len - c->off);
            c->len -= c->off;
            c->off = 0;
            return 0;
        }
        r = -1;
    }
    if (r < 0) {
        c->req->fail_status = 400;
        c->req->fail_reason = r == -1 ? "chunk extension too long" : "malformed chunk extension";
        return -1;
    }
    if (r > 0)
        c->flags &= ~F_CHUNK_LINE;
    return r;
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
        if (c->state == CS_CLOSING || c->state == CS_LINGER)
            break;
        if (c->state == CS_IDLE && c->buf && c->off < c->len)
            begin_request(c);
        if (c->state == CS_HEAD && scan_head(c) < 0) {
            fail_head(c, c->req->fail_status, c->req->fail_reason);
            continue;
        }
        int line_ok = 1; /* 0: the request line is not complete yet */
        if (c->state == CS_HEAD && !(c->flags & F_LINE_DONE) && (line_ok = parse_request_line(c)) < 0)
            continue; /* refused: answered */
        int chunk_ok = 1;
        if ((c->flags & F_CHUNK_LINE) && can_parse(c) && c->buf) {
            chunk_ok = prepare_chunk_line(c);
            if (chunk_ok < 0) {
                if (c->state == CS_HEAD) {
                    fail_head(c, c->req->fail_status, c->req->fail_reason);
                    continue;
                }
                fail_in_body(c, 400, GW_EPARSE, c->req->fail_reason);
                if (c->state == CS_CLOSING || c->state == CS_LINGER)
                    break;
                continue;
            }
        }
        if (line_ok && chunk_ok && can_parse(c) && c->buf && c->off < c->len) {
            if (c->flags & F_PARSER_PAUSED) {
                llhttp_resume(&c->req->parser);
                c->flags &= ~F_PARSER_PAUSED;
            }
            const char *start = c->buf + c->off;
            llhttp_errno_t err = llhttp_execute(&c->req->parser, start, c->len - c->off);
            if (c->state == CS_CLOSING || c->state == CS_LINGER)
                break; /* the buffer is no longer the parser's */
            if (err == HPE_OK) {
                c->off = c->len;
            } else if (err == HPE_PAUSED) {
                c->off = (size_t)(llhttp_get_error_pos(&c->req->parser) - c->buf);
                c->flags |= F_PARSER_PAUSED;
            } else if (c->state == CS_HEAD) {
                const char *why = c->req->fail_reason ? c->req->fail_reason : llhttp_get_error_reason(&c->req->parser);
                fail_head(c, c->req->fail_status, why ? why : "malformed request");
                continue;
            } else {
                /* bad chunked framing or a limit in the body, after the handler got the
                 * head: the handler lets go; the client gets an error if nothing went out */
                int status = c->req->fail_status ? c->req->fail_status : 400;
                const char *why = c->req->fail_reason ? c->req->fail_reason : llhttp_get_error_reason(&c->req->parser);
                fail_in_body(c, status, status == 413 ? GW_ETOOBIG : GW_EPARSE,
                             why ? why : "malformed request body");
                if (c->state == CS_CLOSING || c->state == CS_LINGER)
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
        if (c->state == CS_HEAD && !(c->flags & F_SCAN_DONE) && c->buf &&
            c->len >= c->server->buf_size) {
            int uri = c->req->scan_lines == 0; /* still on the request line */
            fail_head(c, uri ? 414 : 431, uri ? "request line too long" : "request head too large");
            continue;
        }
        deliver_body_end(c);
    } while ((c->flags & F_REPARSE) && c->state != CS_CLOSING && c->state != CS_LINGER);
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
    c->req->fail_status = status;
    c->req->fail_reason = reason;
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

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    gw_client *c = parser_client(p);
    gw_request *q = &c->req->pub;
    if (c->req->last_was_value) {
        if ((uint32_t)q->n_headers >= c->server->opts.limits.max_headers)
            return reject(c, 431, "too many request headers");
        q->headers[q->n_headers].name = (gw_slice){ NULL, 0 };
        q->headers[q->n_headers].value = (gw_slice){ "", 0 };
        q->n_headers++;
        c->req->last_was_value = 0;
    }
    return extend(&q->headers[q->n_headers - 1].name, at, n) ? reject(c, 400, "malformed header") : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    gw_client *c = parser_client(p);
    gw_request *q = &c->req->pub;
    gw_slice *v = &q->headers[q->n_headers - 1].value;
    if (!c->req->last_was_value) {
        v->p = NULL;
        v->n = 0;
        c->req->last_was_value = 1;
    }
    return extend(v, at, n) ? reject(c, 400, "malformed header") : 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    gw_client *c = parser_client(p);
    gw_request *q = &c->req->pub;
    c->req->last_was_value = 1;
    gw_header *h = &q->headers[q->n_headers - 1];
    if (h->value.p == NULL)
        h->value = (gw_slice){ "", 0 };
    /* a field value excludes trailing whitespace (RFC 9110 §5.5); llhttp keeps it */
    while (h->value.n && (h->value.p[h->value.n - 1] == ' ' || h->value.p[h->value.n - 1] == '\t'))
        h->value.n--;
    /* llhttp takes "Name : v" (the name then ends in a space) and an empty name */
    if (!gw_edge_is_token(h->name))
        return reject(c, 400, "invalid header field name");
    if (gw_slice_ieq(h->name, "content-length")) {
        uint64_t cl;
        c->req->n_content_length++;
        /* llhttp accepts up to 2^64-1, which wraps negative as the int64_t we keep */
        if (gw_edge_content_length(h->value, &cl) < 0)
            return reject(c, 400, "invalid Content-Length");
    }
    else if (gw_slice_ieq(h->name, "transfer-encoding")) {
        c->req->n_transfer_encoding++;
        /* only a lone "chunked": "gzip, chunked" and friends are how smuggling starts */
        if (!gw_slice_ieq(h->value, "chunked"))
            return reject(c, 400, "Transfer-Encoding other than chunked");
    }
    else if (gw_slice_ieq(h->name, "host")) {
        c->req->n_host++;
        q->host = h->value;
        if (!gw_edge_host_valid(h->value))
            return reject(c, 400, "invalid Host header");
    } else if (gw_slice_ieq(h->name, "expect")) {
        /* an HTTP/1.0 client knows no 100: its expectation is ignored (RFC 9110 §10.1.1) */
        if (q->http_minor == 0 && gw_slice_ieq(h->value, "100-continue"))
            return 0;
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
    /* http_major/minor are the request line's (parse_request_line); no upgrade is accepted,
     * so llhttp must go on parsing HTTP/1.1 after this request */
    p->upgrade = 0;
    /* request smuggling: one framing, stated once (RFC 9112 §6.1, §6.3) */
    if (c->req->n_content_length && c->req->n_transfer_encoding)
        return reject(c, 400, "both Content-Length and Transfer-Encoding");
    if (c->req->n_content_length > 1)
        return reject(c, 400, "several Content-Length headers");
    if (c->req->n_transfer_encoding > 1)
        return reject(c, 400, "several Transfer-Encoding headers");
    if (c->req->n_transfer_encoding && !(p->flags & F_CHUNKED))
        return reject(c, 400, "Transfer-Encoding other than chunked");
    if (c->req->n_transfer_encoding && q->http_minor == 0)
        return reject(c, 400, "Transfer-Encoding in an HTTP/1.0 request");
    if (c->req->n_host > 1)
        return reject(c, 400, "several Host headers");
    if (c->req->n_host == 0 && q->http_minor == 1)
        return reject(c, 400, "missing Host header");
    if (c->req->authority.p) {
        /* absolute-form: the authority is the Host (RFC 9112 §3.2.2), a different Host
         * header is a request that means two things */
        if (c->req->n_host && !gw_edge_host_same(q->host, c->req->authority))
            return reject(c, 400, "Host does not match the request target");
        q->host = c->req->authority;
    }
    q->chunked = (p->flags & F_CHUNKED) != 0;
    if (c->req->n_content_length)
        q->content_length = (int64_t)p->content_length;
    q->has_body = q->chunked || q->content_length > 0;
    q->keep_alive = llhttp_should_keep_alive(p) != 0;
    q->is_head = gw_slice_eq(q->method, "HEAD");
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
    gw_trace_begin(&q->trace, q->headers, q->n_headers);
    if (q->chunked) {
        c->flags |= F_CHUNK_LINE | F_REPARSE; /* paused: its first size line is checked first */
        c->req->chunk_skip = 0;
    }
    if (q->chunked && !q->expect_continue) {
        /* hold the request until its first chunk-size line parsed: a malformed one is then
         * refused before anything went upstream (a 100-continue client sends no body before
         * we answer, so that one goes at once) */
        c->flags |= F_FIRST_CHUNK;
        return HPE_PAUSED;
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
    while (c->req->crlf_pending && p < end) {
        if (*p != crlf[2 - c->req->crlf_pending])
            return -1;
        c->req->crlf_pending--;
        p++;
    }
    return 0;
}

static int on_chunk_header(llhttp_t *p)
{
    gw_client *c = parser_client(p);
    c->req->chunk_left = p->content_length;
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
    /* the handler may have ended the response from an earlier on_body of this execute (the
     * request is then being written or gone): stop; the connection closes without reading
     * the rest */
    if (c->state != CS_ACTIVE || !(c->flags & F_HANDLER))
        return HPE_PAUSED;
    gw_request *q = &c->req->pub;
    if (q->chunked) {
        c->req->chunk_left -= n < c->req->chunk_left ? n : c->req->chunk_left;
        if (c->req->chunk_left == 0) {
            c->req->crlf_pending = 2;
            if (check_chunk_crlf(c, at + n, c->buf + c->len) < 0)
                return reject(c, 400, "chunk data not followed by CRLF");
        }
    }
    c->body_read += n;
    if (q->max_body_bytes && c->body_read > q->max_body_bytes)
        return reject(c, 413, "request body too large");
    q->handler->on_body(q, at, n);
    if (c->state == CS_CLOSING)
        return HPE_USER;
    if (c->state != CS_ACTIVE || !(c->flags & F_HANDLER))
        return HPE_PAUSED; /* the handler ended the response in on_body: c->req is gone */
    if (q->chunked && c->req->chunk_left == 0) {
        /* the next size line is checked (prepare_chunk_line) before llhttp reads it */
        c->flags |= F_CHUNK_LINE | F_REPARSE;
        c->req->chunk_skip = 2;
        return HPE_PAUSED;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    gw_client *c = parser_client(p);
    c->flags |= F_BODY_DONE;
    /* pause: the next pipelined request waits until this response is done */
    return HPE_PAUSED;
}

/* Once per process, whichever worker thread gets there first. */
static void init_parser_settings(void)
{
    llhttp_settings_init(&parser_settings);
    parser_settings.on_message_begin = on_message_begin;
    /* no on_url / on_method: llhttp sees a canonical request line (parse_request_line) */
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_header_value_complete = on_header_value_complete;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_chunk_header = on_chunk_header;
    parser_settings.on_message_complete = on_message_complete;
}

static pthread_once_t parser_settings_once = PTHREAD_ONCE_INIT;

/* ---- accept -------------------------------------------------------------------------- */

/* A TLS listener's connection pins the current certificate snapshot (re-taken from the
 * slot only when a reload moved its generation) and starts its handshake. 0 or <0. */
static int client_tls_begin(gw_client *c)
{
    gw_server *s = c->server;
    uint64_t gen = atomic_load_explicit(&s->opts.tls->gen, memory_order_acquire);
    if (gen != s->tls_gen || !s->tls_ctx) {
        gw_tls_ctx *x = gw_tls_slot_acquire(s->opts.tls);
        gw_tls_ctx_unref(s->tls_ctx);
        s->tls_ctx = x;
        s->tls_gen = gen;
    }
    if (!s->tls_ctx || !(c->tls = gw__tls_conn_new(s->tls_ctx, c)))
        return GW_ENOMEM;
    return gw__tls_start(c);
}

/* Takes the connection waiting on the listener. Returns 0, or <0 when it could not be
 * served (the listener then closes it). */
int gw__client_accept(gw_server *s)
{
    gw_client *c = calloc(1, sizeof *c);
    if (!c)
        return GW_ENOMEM;
    c->server = s;
    c->id = ++s->next_conn_id;
    pthread_once(&parser_settings_once, init_parser_settings);
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    gw_queue_init(&c->post_node);
    gw_timeout_init(&c->timeout);
    gw_queue_insert_tail(&s->clients, &c->node);
    s->n_clients++;
    c->state = CS_IDLE;
    if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->tcp) != 0) {
        client_close(c, 0);
        return 0;
    }
    if (s->opts.on_connection)
        s->opts.on_connection(GW_CONN_ACCEPTED, s->opts.hook_data);
    if (s->opts.tls && client_tls_begin(c) != 0) {
        client_close(c, 0);
        return 0;
    }
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            c->peer_family = AF_INET;
            memcpy(c->peer_addr, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        } else if (ss.ss_family == AF_INET6) {
            c->peer_family = AF_INET6;
            memcpy(c->peer_addr, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
        }
    }
    if (c->tls)
        set_deadline(c, TK_HANDSHAKE, s->opts.tls_handshake_timeout_ms ? s->opts.tls_handshake_timeout_ms : 10000);
    else
        arm_timer(c); /* header_timeout: the first request must come in time */
    update_reading(c);
    return 0;
}

void gw__client_shutdown(gw_client *c, int hard)
{
    if (hard) {
        client_close(c, GW_ECLOSED);
        return;
    }
    if (c->state == CS_IDLE && !(c->buf && c->off < c->len))
        client_close(c, 0);
    else if (c->state != CS_LINGER) /* a lingering close ends on its own, soon */
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
    if (c->state != CS_ACTIVE || !(c->flags & F_HANDLER) || (c->flags & F_ABORT_POSTED))
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
    if (c->state != CS_ACTIVE)
        return;
    c->flags &= ~F_BODY_PULL;
    arm_timer(c);
    if (!(c->flags & F_IN_PARSE))
        update_reading(c);
}

void gw_request_close_after(gw_request *req)
{
    req->client->flags |= F_CLOSE_AFTER;
}

/* The response is complete in the write queue: the handler is done with req. The request
 * ends once those bytes are out: at once in the common case (uv_try_write took them all),
 * else from on_write; until then nothing more is parsed. */
void gw__response_queued(gw_client *c)
{
    c->flags &= ~(F_HANDLER | F_WANT_DRAIN | F_BODY_PULL | F_DISPATCH);
    if (c->pending_write == 0) {
        response_flushed(c);
        return;
    }
    c->state = CS_SENDING; /* the send deadline runs since the first unsent byte */
    if (!(c->flags & F_IN_PARSE))
        update_reading(c);
}

/* The response left whole: end the request, then keep the connection for the next request
 * or close it (lingering when input is left unread). */
static void response_flushed(gw_client *c)
{
    gw_request *q = &c->req->pub;
    gw_server *s = c->server;
    int close_now = (c->flags & (F_CLOSE_AFTER | F_PEER_EOF)) || !q->keep_alive ||
                    s->draining || !(c->flags & F_BODY_DONE);
    int linger = close_now && !(c->flags & F_NO_LINGER) &&
                 (!(c->flags & F_BODY_DONE) || (c->flags & F_UNREAD) || c->off < c->len);
    end_request(c, (c->flags & F_NO_LINGER) ? GW_ECLOSED : 0);
    if (close_now) {
        if (linger)
            client_linger(c);
        else
            client_close(c, 0);
        return;
    }
    c->state = CS_IDLE;
    c->flags |= F_KEPT;
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
