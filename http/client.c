/* client.c — one accepted HTTP/1.1 connection's lifecycle: accept, buffers, reading,
 * timers, writing, ending a request, keep-alive / pipeline or close. Parsing a request off
 * the buffer is client_parse.c's, the handler's calls on a request client_request.c's, the
 * response writer client_response.c's; they share client_int.h.
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
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "http/client_int.h"
#include "http/gw_errors.h"
#include "http/h2.h"
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
    case CS_H2: return "h2";
    case CS_UPGRADED: return "upgraded";
    }
    return "?";
}

static void transport_read_stop(gw_client *c);
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

void gw__client_release_idle_memory(gw_client *c)
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
        gw__client_set_deadline(c, TK_SEND, c->server->opts.limits.send_timeout_ms);
}

static void on_write(uv_write_t *wr, int status)
{
    gw_client *c = wr->handle->data;
    gw_stream_write_done(wr, &c->pending_write);
    if (c->state == CS_CLOSING)
        return;
    if (status < 0) {
        gw__client_close(c, status);
        return;
    }
    if (c->state == CS_H2) {
        if (c->pending_write > 0)
            send_progress(c);
        gw__h2_written(c);
        return;
    }
    if (c->state == CS_UPGRADED) {
        gw__upgraded_on_write(c);
        return;
    }
    if (c->pending_write > 0) {
        send_progress(c);
    } else if (c->state == CS_SENDING) {
        response_flushed(c);
        return;
    } else {
        gw__client_arm_timer(c); /* nothing unsent: the state's own timeout again */
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
    gw__h2_free(c);
    gw__tls_conn_free(c->tls);
    free(c);
    gw__server_client_gone(s);
}

/* Requests are recycled through a per-server free list: a request struct is large (its
 * header array), and only the part before the array needs clearing for the next one. */
req_impl *gw__client_req_get(gw_server *s)
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
void gw__client_end_request(gw_client *c, int err)
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
void gw__client_close(gw_client *c, int err)
{
    if (c->state == CS_CLOSING)
        return;
    if (c->state == CS_UPGRADED)
        gw__upgraded_closing(c, err);
    gw__client_end_request(c, err);
    if (c->h2) { /* its streams end here (their handlers are told on_abort) */
        c->state = CS_CLOSING;
        gw__h2_close(c, err);
    }
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
void gw__client_linger(gw_client *c)
{
    uv_os_fd_t fd;
    if (c->tls && !(c->flags & F_PEER_EOF))
        gw__tls_close_notify(c);
    if ((c->flags & F_PEER_EOF) || uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 ||
        shutdown(fd, SHUT_WR) != 0) {
        gw__client_close(c, 0);
        return;
    }
    c->state = CS_LINGER;
    c->body_read = 0;
    c->len = c->off = 0; /* buffered input is thrown away too */
    gw__client_set_deadline(c, TK_LINGER, GW_LINGER_MS);
    gw__client_update_reading(c);
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
        gw__client_close(c, c->abort_err);
        return;
    }
    if (gw__tls_run_posted(c) && c->state == CS_CLOSING)
        return;
    if (c->state == CS_H2) {
        gw__h2_run_posted(c);
        return;
    }
    if (c->state == CS_UPGRADED) {
        gw__upgraded_posted(c);
        return;
    }
    gw__client_process(c);
}

/* ---- timers -------------------------------------------------------------------------- */


/* MS 0: no deadline. KIND is the list (one per timeout value, see TK_*). */
void gw__client_set_deadline(gw_client *c, unsigned kind, uint64_t ms)
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
        gw__client_close(c, 0);
        return;
    case CS_HEAD:
        /* slow or stalled head (slowloris): answer 408 and close */
        gw__client_fail_head(c, 408, "request head not received in time");
        return;
    case CS_ACTIVE:
        if (c->pending_write > 0) {
            gw__client_close(c, GW_ETIMEOUT); /* the client stopped reading our response */
            return;
        }
        if ((c->flags & F_BODY_PULL) && !(c->flags & F_BODY_DONE)) {
            /* request body stalled: the handler lets go, the client gets 408 if nothing
             * of the response went out yet */
            gw__client_fail_in_body(c, 408, GW_ETIMEOUT, "request body not received in time");
        }
        return;
    case CS_UPGRADED: /* closing, and the client does not take what is queued */
        gw__client_close(c, GW_ETIMEOUT);
        return;
    case CS_SENDING: /* the client stopped reading: its pipelined requests are dropped */
        gw__client_close(c, GW_ETIMEOUT);
        return;
    case CS_LINGER:
        gw__client_close(c, 0);
        return;
    case CS_H2:
        gw__h2_timeout(c);
        return;
    case CS_CLOSING:
        return;
    }
}

/* The request body failed (bad framing, too large, stalled) after the handler got the head:
 * the handler lets go, and the client gets STATUS if nothing of the response went out yet,
 * else just the close. */
void gw__client_fail_in_body(gw_client *c, int status, int err, const char *why)
{
    release_handler(c, err);
    if (c->flags & F_RESP_BEGUN) {
        gw__client_close(c, err);
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
void gw__client_arm_timer(gw_client *c)
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
    case CS_H2: /* h2.c sets its own */
    case CS_CLOSING:
    case CS_UPGRADED:
        return;
    }
    if (c->flags & F_ABORT_POSTED)
        return;
    gw__client_set_deadline(c, kind, ms);
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

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    gw_client *c = st->data;
    (void)b;
    if (nread == 0)
        return;
    if (c->state == CS_H2) {
        gw__h2_read(c, nread);
        return;
    }
    if (c->state == CS_UPGRADED) {
        gw__upgraded_on_read(c, nread);
        return;
    }
    if (c->state == CS_LINGER) {
        c->len = 0; /* thrown away */
        if (nread < 0 || (c->body_read += (uint64_t)nread) > GW_LINGER_BYTES)
            gw__client_close(c, 0);
        return;
    }
    if (nread < 0) {
        if (nread == UV_EOF && (c->state == CS_SENDING ||
                                (c->state == CS_ACTIVE && (c->flags & F_BODY_DONE) && c->tls &&
                                 gw__tls_peer_half_closed(c->tls)))) {
            /* the client shut its write side: what is queued still goes out, then close
             * (a TLS 1.3 close_notify says only that: the handler's answer is awaited) */
            c->flags |= F_PEER_EOF | F_CLOSE_AFTER;
            gw__client_update_reading(c);
            return;
        }
        /* EOF or error. Between requests (or inside a head) that is the normal end of a
         * connection; with a request under way, the request is void. */
        gw__client_close(c, nread == UV_EOF ? GW_ECLOSED : (int)nread);
        return;
    }
    size_t fresh = c->len;
    c->len += (size_t)nread;
    if (c->req && c->state != CS_SENDING)
        c->req->pub.bytes_in += (uint64_t)nread;
    if (c->state == CS_ACTIVE && c->req->crlf_pending &&
        gw__client_check_chunk_crlf(c, c->buf + fresh, c->buf + c->len) < 0) {
        c->req->fail_status = 400;
        c->req->fail_reason = "chunk data not followed by CRLF";
        gw__client_fail_in_body(c, 400, GW_EPARSE, c->req->fail_reason);
        return;
    }
    if (c->state == CS_ACTIVE && (c->flags & F_BODY_PULL))
        gw__client_arm_timer(c); /* body timeout counts from the last read */
    /* h2c by prior knowledge: a cleartext connection's first bytes are the preface */
    if (c->state == CS_IDLE && !(c->flags & F_KEPT) && c->server->opts.h2c && !c->tls &&
        gw__h2_preface(c))
        return;
    gw__client_process(c);
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
    if (gw__tls_alpn_h2(c->tls)) { /* ALPN chose HTTP/2: its framing reads from now on */
        if (gw__h2_start(c) < 0)
            gw__client_close(c, GW_ENOMEM);
        return;
    }
    gw__client_arm_timer(c);
}

void gw__client_tls_failed(gw_client *c, enum gw_tls_event ev)
{
    gw__client_tls_event(c, ev);
    gw__client_close(c, 0);
}

void gw__client_update_reading(gw_client *c)
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
    else if (c->state == CS_H2)
        want = gw__h2_want_read(c);
    else if (c->state == CS_UPGRADED) /* bytes already buffered go first (posted) */
        want = (c->flags & (F_UPG_READ | F_UPG_CLOSE)) == F_UPG_READ && c->off == c->len;
    if (want && !(c->flags & F_READING)) {
        if (transport_read_start(c) == 0)
            c->flags |= F_READING;
    } else if (!want && (c->flags & F_READING)) {
        transport_read_stop(c);
        c->flags &= ~F_READING;
    }
}


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
    gw__client_parse_init();
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    gw_queue_init(&c->post_node);
    gw_timeout_init(&c->timeout);
    gw_queue_insert_tail(&s->clients, &c->node);
    s->n_clients++;
    c->state = CS_IDLE;
    if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->tcp) != 0) {
        gw__client_close(c, 0);
        return 0;
    }
    if (s->opts.on_connection)
        s->opts.on_connection(GW_CONN_ACCEPTED, s->opts.hook_data);
    if (s->opts.tls && client_tls_begin(c) != 0) {
        gw__client_close(c, 0);
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
        gw__client_set_deadline(c, TK_HANDSHAKE, s->opts.tls_handshake_timeout_ms ? s->opts.tls_handshake_timeout_ms : 10000);
    else
        gw__client_arm_timer(c); /* header_timeout: the first request must come in time */
    gw__client_update_reading(c);
    return 0;
}

void gw__client_shutdown(gw_client *c, int hard)
{
    if (hard) {
        gw__client_close(c, GW_ECLOSED);
        return;
    }
    if (c->state == CS_UPGRADED) {
        gw__upgraded_shutdown(c);
        return;
    }
    if (c->state == CS_H2)
        gw__h2_drain(c); /* GOAWAY; the streams begun finish */
    else if (c->state == CS_IDLE && !(c->buf && c->off < c->len))
        gw__client_close(c, 0);
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
        gw__client_update_reading(c);
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
    gw__client_end_request(c, (c->flags & F_NO_LINGER) ? GW_ECLOSED : 0);
    if (close_now) {
        if (linger)
            gw__client_linger(c);
        else
            gw__client_close(c, 0);
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
    gw__client_release_idle_memory(c);
    gw__client_arm_timer(c);
    if (c->off < c->len) /* a pipelined request waits: start it after this call returns */
        gw__server_post(s, &c->post_node);
    else if (!(c->flags & F_IN_PARSE))
        gw__client_update_reading(c);
}

const char *gw__client_state_name(const gw_client *c)
{
    return client_state_name(c->state);
}
