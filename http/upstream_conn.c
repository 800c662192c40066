/* upstream_conn.c — one connection to an upstream endpoint, as an explicit state machine.
 * Freed in one place, uconn_on_close, after both handles (socket, timer) have closed. */
#include <llhttp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "http/deadline.h"
#include "http/end.h"
#include "http/gw_errors.h"
#include "http/stream_write.h"
#include "http/upstream.h"
#include "http/upstream_tls.h"

#define UC_BUF_SIZE (32 * 1024) /* a response head must fit; body bytes pass through it */
#define UC_HIGH_WATER (64 * 1024)

typedef enum uconn_state {
    UC_CONNECTING, /* connect_req pending, connect timer armed; owner set */
    UC_ACTIVE,     /* owned by an exchange: request going out, response coming in */
    UC_IDLE,       /* in its endpoint's pool: reading only to notice a close; idle timer */
    UC_CLOSING,    /* handles closing; owner cleared */
    UC_UPGRADED,   /* after a 101 the exchange asked for (gw_uconn_upgrade): a byte stream
                      for the end's binder (end.h), never pooled; buf[off..len) holds bytes
                      not yet given to it. Deadline: the send timeout while bytes wait for
                      the upstream (from the last write progress), also bounding the flush
                      once closing; the timer also delivers bytes behind the head (0 ms) */
} uconn_state;

enum {
    U_READING = 1 << 0,      /* uv_read_start in effect */
    U_PAUSED = 1 << 1,       /* the owner asked us to stop reading (client slow) */
    U_EXPECT = 1 << 2,       /* gw_uconn_read_response was called */
    U_HEAD_DONE = 1 << 3,    /* on_head was delivered */
    U_MSG_DONE = 1 << 4,     /* the response ended cleanly */
    U_GOT_BYTES = 1 << 5,    /* at least one response byte arrived */
    U_IS_HEAD = 1 << 6,      /* response to HEAD: no body */
    U_IN_PARSE = 1 << 7,     /* owner callbacks on the stack: release waits until they return */
    U_RELEASE_PENDING = 1 << 8,
    U_WANT_DRAIN = 1 << 9,
    U_NO_REUSE = 1 << 10,    /* the response or its framing forbids keep-alive */
    U_INFORMATIONAL = 1 << 11, /* skipping a 1xx interim response */
    U_UPGRADE = 1 << 12,     /* the request asked for an upgrade: a 101 is an answer */
    U_UPG_READ = 1 << 13,    /* UC_UPGRADED: the binder wants bytes */
    U_UPG_CLOSE = 1 << 14,   /* UC_UPGRADED: the binder let go; close once flushed */
};

struct gw_uconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect_req;
    gw_endpoint *ep;
    gw_queue pool_node;
    llhttp_t parser;
    uconn_state state;
    unsigned flags;
    int handles_open;
    const gw_uconn_cb *cb;
    void *data;
    char *buf;
    size_t len, off;
    size_t pending_write;
    int status;
    gw_header headers[GW_UPSTREAM_MAX_HEADERS];
    int n_headers;
    int last_was_value;
    int fail_err;
    gw_deadline deadline;    /* this state's timeout (http/deadline.h) */
    uint64_t exchanges;      /* requests carried, this one included */
    gw_utls *tls;            /* upstreams.NAME.tls: the TLS layer on the socket, or NULL */
    const gw_end_cb *end_cb; /* UC_UPGRADED: who gets the bytes, or NULL */
    void *end_arg;
};

static llhttp_settings_t settings;
static void buf_put(char *b);
static void uconn_close(gw_uconn *u);
static void uconn_fail(gw_uconn *u, int err);
static void uconn_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);
static void uconn_on_write(uv_write_t *wr, int status);
static void uconn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out);

int gw_uconn_reused(const gw_uconn *u)
{
    return u->exchanges > 1;
}

gw_endpoint *gw_uconn_endpoint(const gw_uconn *u)
{
    return u->ep;
}

static void uconn_gone(gw_uconn *u)
{
    if (--u->handles_open > 0)
        return;
    gw_endpoint *ep = u->ep;
    buf_put(u->buf);
    free(u);
    ep->n_conns--;
    gw__endpoint_released(ep); /* a replaced definition's last connection frees it */
}

static void uconn_on_close(uv_handle_t *h)
{
    uconn_gone(h->data);
}

static void uconn_tls_closed(void *owner)
{
    uconn_gone(owner);
}

static void upgraded_tell_end(gw_uconn *u, int err);
static void upgraded_on_timer(gw_uconn *u);

static void uconn_close(gw_uconn *u)
{
    if (u->state == UC_CLOSING)
        return;
    if (u->state == UC_UPGRADED) {
        gw_queue_remove(&u->pool_node);
        u->flags |= U_UPG_CLOSE; /* the binder's close, from on_end, is then a no-op */
        upgraded_tell_end(u, GW_ECLOSED);
    }
    if (u->state == UC_IDLE) {
        gw_queue_remove(&u->pool_node);
        u->ep->n_idle--;
    }
    u->state = UC_CLOSING;
    u->cb = NULL;
    uv_close((uv_handle_t *)&u->timer, uconn_on_close);
    uv_close((uv_handle_t *)&u->tcp, uconn_on_close);
    if (u->tls) {
        gw__utls_close(u->tls, uconn_tls_closed); /* freed with its handle; u after it */
        u->tls = NULL;
    }
}

static int phase_of(const gw_uconn *u)
{
    if (u->flags & U_GOT_BYTES)
        return GW_UPHASE_RESPONSE;
    return u->state == UC_CONNECTING ? GW_UPHASE_CONNECT : GW_UPHASE_REQUEST;
}

/* Closes the connection and tells the owner, once. */
static void uconn_fail(gw_uconn *u, int err)
{
    if (u->state == UC_CLOSING)
        return;
    const gw_uconn_cb *cb = u->cb;
    void *data = u->data;
    int phase = phase_of(u);
    uconn_close(u);
    if (cb && !(u->flags & U_RELEASE_PENDING))
        cb->on_error(u, data, err, phase);
}

/* ---- timers -------------------------------------------------------------------------- */

/* Lazy timers, shared with client connections (http/deadline.h): one deadline per state,
 * the libuv timer moved only when the deadline comes earlier than the wake-up already set. */
static void uconn_on_timer(uv_timer_t *t)
{
    gw_uconn *u = t->data;
    if (u->state == UC_UPGRADED) {
        upgraded_on_timer(u);
        return;
    }
    if (!gw_deadline_expired(&u->deadline, t, uconn_on_timer))
        return;
    if (u->state == UC_IDLE) {
        uconn_close(u);
    } else if (u->state == UC_CONNECTING) {
        gw_endpoint_mark_down(u->ep);
        u->ep->up->n_connect_errors++;
        uconn_fail(u, GW_ETIMEOUT);
    } else {
        uconn_fail(u, GW_ETIMEOUT);
    }
}

/* MS 0: no deadline in this state. */
static void arm(gw_uconn *u, uint32_t ms)
{
    gw_deadline_set(&u->deadline, &u->timer, uconn_on_timer, ms);
}

/* ---- reading ------------------------------------------------------------------------- */

/* Read buffers come from a small per-thread stack: a pooled connection gives its buffer
 * back between requests, and the next exchange takes it again without malloc. */
#define UC_FREE_BUFS 32
static _Thread_local char *free_bufs[UC_FREE_BUFS];
static _Thread_local int n_free_bufs;

static char *buf_get(void)
{
    return n_free_bufs ? free_bufs[--n_free_bufs] : malloc(UC_BUF_SIZE);
}

static void buf_put(char *b)
{
    if (b && n_free_bufs < UC_FREE_BUFS)
        free_bufs[n_free_bufs++] = b;
    else
        free(b);
}

void gw_uconn_thread_cleanup(void)
{
    while (n_free_bufs)
        free(free_bufs[--n_free_bufs]);
    gw__utls_thread_cleanup();
}

static void uconn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    gw_uconn *u = h->data;
    (void)suggested;
    if (!u->buf) {
        u->buf = buf_get();
        u->len = u->off = 0;
    }
    if (!u->buf) {
        *out = uv_buf_init(NULL, 0);
        return;
    }
    *out = uv_buf_init(u->buf + u->len, (unsigned)(UC_BUF_SIZE - u->len));
}

static void update_reading(gw_uconn *u)
{
    /* reading stays on from connect to close (idle in the pool included), except while the
     * client is slow: no epoll_ctl per request */
    int want = u->state == UC_IDLE || (u->state == UC_ACTIVE && !(u->flags & U_PAUSED)) ||
               (u->state == UC_UPGRADED && (u->flags & (U_UPG_READ | U_UPG_CLOSE)) == U_UPG_READ &&
                u->off == u->len);
    if (u->tls) { /* the TLS layer reads the socket as it needs (upstream_tls.h) */
        if (!want != !(u->flags & U_READING))
            gw__utls_want_read(u->tls, want);
        u->flags = want ? (u->flags | U_READING) : (u->flags & ~U_READING);
        return;
    }
    if (want && !(u->flags & U_READING)) {
        if (uv_read_start((uv_stream_t *)&u->tcp, uconn_alloc, uconn_on_read) == 0)
            u->flags |= U_READING;
    } else if (!want && (u->flags & U_READING)) {
        uv_read_stop((uv_stream_t *)&u->tcp);
        u->flags &= ~U_READING;
    }
}

static void do_release(gw_uconn *u);

static void uconn_parse(gw_uconn *u)
{
    u->flags |= U_IN_PARSE;
    llhttp_errno_t err = llhttp_execute(&u->parser, u->buf + u->off, u->len - u->off);
    u->flags &= ~U_IN_PARSE;
    if (u->state == UC_CLOSING)
        return;
    if (u->state == UC_UPGRADED) {
        /* the bytes behind the 101's head are the stream's first */
        u->off = (size_t)(llhttp_get_error_pos(&u->parser) - u->buf);
        if (u->off == u->len)
            u->off = u->len = 0;
        update_reading(u);
        return;
    }
    if (err == HPE_PAUSED) {
        /* the message ended: bytes after it mean the connection cannot be reused */
        size_t used = (size_t)(llhttp_get_error_pos(&u->parser) - u->buf);
        if (used < u->len)
            u->flags |= U_NO_REUSE;
        u->off = u->len = 0;
    } else if (err != HPE_OK) {
        uconn_fail(u, GW_EUPSTREAM_PROTO);
        return;
    } else if (u->flags & U_HEAD_DONE) {
        u->off = u->len = 0; /* body bytes were handed on: reuse the buffer */
    } else {
        u->off = u->len;
        if (u->len >= UC_BUF_SIZE) {
            uconn_fail(u, GW_EUPSTREAM_PROTO); /* response head too large */
            return;
        }
    }
    if (u->flags & U_RELEASE_PENDING) {
        do_release(u);
        return;
    }
    if ((u->flags & U_MSG_DONE) && u->cb) {
        const gw_uconn_cb *cb = u->cb;
        cb->on_done(u, u->data);
        if (u->flags & U_RELEASE_PENDING)
            do_release(u);
        return;
    }
    update_reading(u);
}

static void upgraded_on_read(gw_uconn *u, ssize_t nread);

static void uconn_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    gw_uconn *u = st->data;
    (void)b;
    if (nread == 0)
        return;
    if (u->state == UC_UPGRADED) {
        upgraded_on_read(u, nread);
        return;
    }
    if (u->state == UC_IDLE) {
        uconn_close(u); /* data or EOF on an idle pooled connection: it is done */
        return;
    }
    if (u->flags & U_MSG_DONE) {
        /* the response is complete and the owner is about to release: anything more means
         * the connection cannot be reused */
        u->flags |= U_NO_REUSE;
        u->len = u->off = 0;
        if (nread < 0 && (u->flags & U_READING)) {
            if (u->tls)
                gw__utls_want_read(u->tls, 0);
            else
                uv_read_stop(st);
            u->flags &= ~U_READING;
        }
        return;
    }
    if (nread < 0) {
        if (nread == UV_EOF && (u->flags & U_HEAD_DONE) && llhttp_message_needs_eof(&u->parser)) {
            /* body delimited by the close */
            u->flags |= U_NO_REUSE;
            u->flags |= U_IN_PARSE;
            llhttp_errno_t err = llhttp_finish(&u->parser);
            u->flags &= ~U_IN_PARSE;
            if (u->state == UC_CLOSING)
                return;
            if (err == HPE_OK || err == HPE_PAUSED) {
                if (u->flags & U_RELEASE_PENDING) {
                    do_release(u);
                } else if (u->cb) {
                    u->cb->on_done(u, u->data);
                    if (u->flags & U_RELEASE_PENDING)
                        do_release(u);
                }
                return;
            }
        }
        uconn_fail(u, nread == UV_EOF ? GW_ERESET : (int)nread);
        return;
    }
    u->flags |= U_GOT_BYTES;
    u->len += (size_t)nread;
    if (u->flags & U_HEAD_DONE)
        arm(u, u->ep->def->read_timeout_ms);
    uconn_parse(u);
}

/* ---- llhttp callbacks ---------------------------------------------------------------- */

static int extend(gw_slice *s, const char *at, size_t n)
{
    if (!s->p) {
        s->p = at;
        s->n = n;
        return 0;
    }
    if (s->p + s->n != at)
        return -1;
    s->n += n;
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    gw_uconn *u = p->data;
    u->n_headers = 0;
    u->last_was_value = 1;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    gw_uconn *u = p->data;
    if (u->last_was_value) {
        if (u->n_headers >= GW_UPSTREAM_MAX_HEADERS)
            return -1;
        u->headers[u->n_headers].name = (gw_slice){ NULL, 0 };
        u->headers[u->n_headers].value = (gw_slice){ "", 0 };
        u->n_headers++;
        u->last_was_value = 0;
    }
    return extend(&u->headers[u->n_headers - 1].name, at, n);
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    gw_uconn *u = p->data;
    gw_slice *v = &u->headers[u->n_headers - 1].value;
    if (!u->last_was_value) {
        v->p = NULL;
        v->n = 0;
        u->last_was_value = 1;
    }
    return extend(v, at, n);
}

static int on_headers_complete(llhttp_t *p)
{
    gw_uconn *u = p->data;
    u->status = p->status_code;
    if (u->status < 100)
        return -1; /* llhttp takes "HTTP/1.1 10 X": not a 3-digit status, never forwarded */
    if (u->status < 200) {
        if (u->status == 101) {
            /* only an answer to a request that asked for an upgrade (else a protocol
             * error: 502); the owner calls gw_uconn_upgrade from on_head, or aborts */
            if (!(u->flags & U_UPGRADE) || p->http_major != 1)
                return -1;
            u->flags |= U_HEAD_DONE | U_NO_REUSE;
            arm(u, 0);
            if (u->cb)
                u->cb->on_head(u, u->data, 101, u->headers, u->n_headers, 0);
            return u->state == UC_UPGRADED ? HPE_PAUSED : -1;
        }
        u->flags |= U_INFORMATIONAL;
        return 1; /* no body; the real response follows */
    }
    if (p->http_major != 1)
        return -1;
    if (!llhttp_should_keep_alive(p))
        u->flags |= U_NO_REUSE;
    int64_t body_len = -1;
    if (p->flags & F_CONTENT_LENGTH)
        body_len = (int64_t)p->content_length;
    if (p->flags & F_CHUNKED)
        body_len = -1;
    u->flags |= U_HEAD_DONE;
    arm(u, u->ep->def->read_timeout_ms);
    if (u->cb)
        u->cb->on_head(u, u->data, u->status, u->headers, u->n_headers, body_len);
    if (u->state == UC_CLOSING)
        return -1;
    /* llhttp 8.1 would wait for a Content-Length body after 204/304: say there is none
     * (RFC 9112 §6.3 rule 1), as for a response to HEAD */
    return (u->flags & U_IS_HEAD) || u->status == 204 || u->status == 304 ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    gw_uconn *u = p->data;
    if (u->cb && !(u->flags & U_RELEASE_PENDING))
        u->cb->on_body(u, u->data, at, n);
    return u->state == UC_CLOSING ? -1 : 0;
}

static int on_message_complete(llhttp_t *p)
{
    gw_uconn *u = p->data;
    if (u->flags & U_INFORMATIONAL) {
        u->flags &= ~U_INFORMATIONAL;
        return 0; /* the real response follows */
    }
    u->flags |= U_MSG_DONE;
    arm(u, 0);
    return HPE_PAUSED;
}

static void init_settings_once(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
}

/* Once per process, whichever worker thread gets there first. */
static void init_settings(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, init_settings_once);
}

/* ---- connect ------------------------------------------------------------------------- */

/* ---- TLS (upstreams.NAME.tls) ------------------------------------------------------- */

static void tls_sock_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    gw_uconn *u = h->data;
    (void)suggested;
    gw__utls_sock_alloc(u->tls, out);
}

static void tls_sock_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    gw_uconn *u = st->data;
    (void)b;
    if (u->tls)
        gw__utls_sock_read(u->tls, nread);
}

static void tls_alloc(void *owner, uv_buf_t *out)
{
    gw_uconn *u = owner;
    uconn_alloc((uv_handle_t *)&u->tcp, 0, out);
    if (out->len == 0)
        out->base = NULL;
}

static void tls_deliver(void *owner, ssize_t nread)
{
    gw_uconn *u = owner;
    uv_buf_t b = uv_buf_init(NULL, 0);
    uconn_on_read((uv_stream_t *)&u->tcp, nread, &b);
}

static void tls_ready(void *owner)
{
    gw_uconn *u = owner;
    if (u->state != UC_CONNECTING)
        return;
    u->state = UC_ACTIVE;
    arm(u, 0);
    u->cb->on_ready(u, u->data);
}

/* A failed handshake (certificate not trusted, name mismatch, protocol): nothing was sent,
 * like a refused connect. */
static void tls_failed(void *owner, int err)
{
    gw_uconn *u = owner;
    if (u->state == UC_CLOSING)
        return;
    gw_endpoint_mark_down(u->ep);
    u->ep->up->n_connect_errors++;
    uconn_fail(u, err);
}

static int tls_gone(void *owner)
{
    return ((gw_uconn *)owner)->state == UC_CLOSING;
}

static void tls_queued(void *owner);

static void uconn_tls_begin(gw_uconn *u)
{
    gw_upstream *up = u->ep->up;
    gw_utls_owner o = {
        .loop = up->loop, .stream = (uv_stream_t *)&u->tcp, .sock_alloc = tls_sock_alloc,
        .sock_read = tls_sock_read, .pending_write = &u->pending_write,
        .on_write = uconn_on_write, .queued = tls_queued, .alloc = tls_alloc,
        .deliver = tls_deliver,
        .ready = tls_ready, .failed = tls_failed, .gone = tls_gone, .owner = u,
    };
    /* the endpoint's own generation: a retired set's connection keeps its CA, SNI, verify */
    SSL_CTX *ctx = gw__endpoint_tls_ctx(u->ep);
    if (!ctx || !(u->tls = gw__utls_start(ctx, gw__endpoint_upstream_conf(u->ep), u->ep->conf,
                                          &o, &u->ep->tls_session))) {
        tls_failed(u, GW_ECONNECT);
        return;
    }
    u->handles_open++; /* its timer: u is freed after it closed too */
    gw__utls_begin(u->tls);
}

static void uconn_on_connect(uv_connect_t *req, int status)
{
    gw_uconn *u = req->data;
    if (u->state == UC_CLOSING)
        return;
    if (status < 0) {
        gw_endpoint_mark_down(u->ep);
        u->ep->up->n_connect_errors++;
        uconn_fail(u, status == UV_ETIMEDOUT ? GW_ETIMEOUT : GW_ECONNECT);
        return;
    }
    uv_tcp_nodelay(&u->tcp, 1);
    if (u->ep->def->tls) {
        uconn_tls_begin(u); /* on_ready once the handshake is done, within connect_timeout_ms */
        return;
    }
    u->state = UC_ACTIVE;
    arm(u, 0);
    u->cb->on_ready(u, u->data);
}

static void reset_exchange(gw_uconn *u, const gw_uconn_cb *cb, void *data)
{
    u->cb = cb;
    u->data = data;
    u->flags &= U_READING;
    u->pending_write = 0;
    u->status = 0;
    u->n_headers = 0;
    llhttp_init(&u->parser, HTTP_RESPONSE, &settings);
    u->parser.data = u;
}

static int uconn_connect(gw_endpoint *ep, const gw_uconn_cb *cb, void *data, gw_uconn **out);

int gw_uconn_open_new(gw_endpoint *ep, const gw_uconn_cb *cb, void *data, gw_uconn **out)
{
    init_settings();
    return uconn_connect(ep, cb, data, out);
}

int gw_uconn_open(gw_endpoint *ep, const gw_uconn_cb *cb, void *data, gw_uconn **out, int *reused)
{
    init_settings();
    *reused = 0;
    if (!gw_queue_empty(&ep->idle)) {
        /* most recently used first: it is the least likely to have been closed */
        gw_uconn *u = GW_QUEUE_DATA(ep->idle.prev, gw_uconn, pool_node);
        gw_queue_remove(&u->pool_node);
        ep->n_idle--;
        u->state = UC_ACTIVE;
        arm(u, 0);
        reset_exchange(u, cb, data);
        ep->up->n_reuses++;
        u->exchanges++;
        *out = u;
        *reused = 1;
        cb->on_ready(u, data); /* may end the owner's request: touch nothing after */
        return 0;
    }
    return uconn_connect(ep, cb, data, out);
}

static int uconn_connect(gw_endpoint *ep, const gw_uconn_cb *cb, void *data, gw_uconn **out)
{
    gw_uconn *u = calloc(1, sizeof *u);
    if (!u)
        return GW_ENOMEM;
    u->ep = ep;
    gw_queue_init(&u->pool_node);
    uv_tcp_init(ep->up->loop, &u->tcp);
    uv_timer_init(ep->up->loop, &u->timer);
    u->tcp.data = u->timer.data = u->connect_req.data = u;
    u->handles_open = 2;
    ep->n_conns++;
    u->state = UC_CONNECTING;
    u->exchanges = 1;
    reset_exchange(u, cb, data);
    ep->up->n_connects++;
    int r = uv_tcp_connect(&u->connect_req, &u->tcp, (const struct sockaddr *)&ep->conf->addr,
                           uconn_on_connect);
    if (r < 0) {
        u->cb = NULL;
        uconn_close(u);
        gw_endpoint_mark_down(ep);
        return GW_ECONNECT;
    }
    arm(u, ep->def->connect_timeout_ms);
    *out = u;
    return 0;
}

/* ---- writing ------------------------------------------------------------------------- */

static void upgraded_on_write(gw_uconn *u);

static void uconn_on_write(uv_write_t *wr, int status)
{
    gw_uconn *u = wr->handle->data;
    gw_stream_write_done(wr, &u->pending_write);
    if (u->state == UC_CLOSING)
        return;
    if (status < 0) {
        uconn_fail(u, GW_ERESET);
        return;
    }
    if (u->state == UC_UPGRADED) {
        upgraded_on_write(u);
        return;
    }
    if ((u->flags & U_WANT_DRAIN) && u->pending_write <= UC_HIGH_WATER / 2 && u->cb) {
        u->flags &= ~U_WANT_DRAIN;
        u->cb->on_drain(u, u->data);
    }
}

static void upgraded_queued(gw_uconn *u);

/* The write path shared with client connections (http/stream_write.h). */
int gw_uconn_write(gw_uconn *u, uv_buf_t *bufs, unsigned n)
{
    if (u->state != UC_ACTIVE && (u->state != UC_UPGRADED || (u->flags & U_UPG_CLOSE)))
        return GW_ECLOSED;
    int r = u->tls ? gw__utls_write(u->tls, bufs, n)
                   : gw_stream_write((uv_stream_t *)&u->tcp, &u->pending_write, bufs, n, uconn_on_write);
    if (r < 0)
        return r == GW_ENOMEM ? r : GW_ERESET;
    upgraded_queued(u);
    if (u->pending_write > UC_HIGH_WATER) {
        u->flags |= U_WANT_DRAIN;
        return 1;
    }
    return 0;
}

void gw_uconn_allow_upgrade(gw_uconn *u)
{
    u->flags |= U_UPGRADE;
}

void gw_uconn_read_response(gw_uconn *u, int is_head)
{
    if (u->state != UC_ACTIVE)
        return;
    u->flags |= U_EXPECT | (is_head ? U_IS_HEAD : 0);
    arm(u, u->ep->def->response_timeout_ms);
    update_reading(u);
}

void gw_uconn_pause(gw_uconn *u)
{
    if (u->state != UC_ACTIVE)
        return;
    u->flags |= U_PAUSED;
    arm(u, 0); /* the client's send timeout covers a slow reader */
    if (!(u->flags & U_IN_PARSE))
        update_reading(u);
}

void gw_uconn_resume(gw_uconn *u)
{
    if (u->state != UC_ACTIVE || !(u->flags & U_PAUSED))
        return;
    u->flags &= ~U_PAUSED;
    arm(u, (u->flags & U_HEAD_DONE) ? u->ep->def->read_timeout_ms
                                    : u->ep->def->response_timeout_ms);
    if (!(u->flags & U_IN_PARSE))
        update_reading(u);
}

/* ---- release ------------------------------------------------------------------------- */

static void do_release(gw_uconn *u)
{
    u->flags &= ~U_RELEASE_PENDING;
    u->cb = NULL;
    u->data = NULL;
    gw_endpoint *ep = u->ep;
    int reusable = u->state == UC_ACTIVE && (u->flags & U_MSG_DONE) &&
                   !(u->flags & U_NO_REUSE) && u->pending_write == 0 &&
                   ep->n_idle < ep->def->pool_max_idle && gw__endpoint_pools(ep);
    if (!reusable) {
        uconn_close(u);
        return;
    }
    u->state = UC_IDLE;
    u->flags &= U_READING;
    if (u->buf) { /* an idle connection keeps no buffer */
        buf_put(u->buf);
        u->buf = NULL;
        u->len = u->off = 0;
    }
    gw_queue_insert_tail(&ep->idle, &u->pool_node);
    ep->n_idle++;
    arm(u, ep->def->pool_idle_timeout_ms);
    update_reading(u);
}

void gw_uconn_release(gw_uconn *u)
{
    if (u->state == UC_CLOSING || u->state == UC_IDLE)
        return;
    if (u->flags & U_IN_PARSE) {
        u->flags |= U_RELEASE_PENDING;
        u->cb = NULL;
        return;
    }
    do_release(u);
}

void gw_uconn_abort(gw_uconn *u)
{
    u->cb = NULL;
    uconn_close(u);
}

gw_uconn *gw__uconn_from_pool_node(gw_queue *q)
{
    return GW_QUEUE_DATA(q, gw_uconn, pool_node);
}

/* ---- after a 101 (end.h) --------------------------------------------------------------- */

/* This thread's upgraded connections (through pool_node, which they no longer need): a
 * worker that ends closes those still flushing to an upstream that does not read. */
static _Thread_local gw_queue upgraded;

void gw_uconn_close_upgraded(void)
{
    if (!upgraded.next)
        return;
    gw_queue *q, *n;
    GW_QUEUE_FOREACH_SAFE(q, n, &upgraded)
    {
        uconn_close(GW_QUEUE_DATA(q, gw_uconn, pool_node));
    }
}

static void upgraded_tell_end(gw_uconn *u, int err)
{
    const gw_end_cb *cb = u->end_cb;
    u->end_cb = NULL;
    if (cb)
        cb->on_end(u->end_arg, err);
}

static void upgraded_deliver(gw_uconn *u)
{
    while (u->state == UC_UPGRADED && (u->flags & U_UPG_READ) && u->end_cb && u->off < u->len) {
        size_t at = u->off, n = u->len - u->off;
        u->off = u->len; /* taken: the callback may ask for more or stop */
        u->end_cb->on_data(u->end_arg, u->buf + at, n);
    }
    if (u->state == UC_UPGRADED && u->off == u->len)
        u->off = u->len = 0;
}

static void upgraded_on_read(gw_uconn *u, ssize_t nread)
{
    if (nread < 0) {
        if (u->flags & U_UPG_CLOSE) {
            uconn_close(u);
            return;
        }
        u->flags &= ~U_UPG_READ;
        update_reading(u);
        upgraded_tell_end(u, nread == UV_EOF ? 0 : (int)nread);
        return;
    }
    u->len += (size_t)nread;
    upgraded_deliver(u);
    if (u->state == UC_UPGRADED)
        update_reading(u);
}

/* Bytes wait for the upstream: the send timeout counts from now, the last write progress
 * (as the client side's does, nginx proxy_send_timeout): a busy tunnel whose upstream keeps
 * taking bytes stays open, one that takes nothing is closed, however much comes the other
 * way. Nothing waits: no deadline. Lazy (deadline.h): no timer call per write. */
static void upgraded_send_deadline(gw_uconn *u)
{
    uint32_t ms = u->ep->def->send_timeout_ms;
    if (!ms && (u->flags & U_UPG_CLOSE))
        ms = u->ep->def->read_timeout_ms; /* (a conf without one) the flush is bounded */
    gw_deadline_set(&u->deadline, &u->timer, uconn_on_timer, u->pending_write ? ms : 0);
}

/* Bytes were queued to the upstream (by gw_uconn_write, by the TLS layer's own records such
 * as a KeyUpdate answer, or still queued from the request at the 101): with no send deadline
 * running, it starts now. Not only on the queue's empty -> non-empty step: bytes queued some
 * other way would leave every later write finding the queue non-empty, and a peer that never
 * reads would then hold the tunnel for good. */
static void upgraded_queued(gw_uconn *u)
{
    if (u->state == UC_UPGRADED && u->pending_write > 0 && !gw_deadline_active(&u->deadline))
        upgraded_send_deadline(u);
}

static void tls_queued(void *owner)
{
    upgraded_queued(owner);
}

/* The timer in UC_UPGRADED: the send timeout passed (the upstream took none of the queued
 * bytes for that long: the binder hears GW_ETIMEOUT, or the flush of a closing end is given
 * up), or bytes behind the head to deliver (uend_read's wake-up). */
static void upgraded_on_timer(gw_uconn *u)
{
    if (gw_deadline_expired(&u->deadline, &u->timer, uconn_on_timer)) {
        u->flags |= U_UPG_CLOSE; /* the binder's close, from on_end, is then a no-op */
        upgraded_tell_end(u, GW_ETIMEOUT);
        uconn_close(u);
        return;
    }
    if (u->flags & U_UPG_CLOSE)
        return;
    upgraded_deliver(u);
    if (u->state == UC_UPGRADED)
        update_reading(u);
}

static void upgraded_on_write(gw_uconn *u)
{
    if (u->flags & U_UPG_CLOSE) {
        if (u->pending_write == 0)
            uconn_close(u);
        else
            upgraded_send_deadline(u);
        return;
    }
    upgraded_send_deadline(u);
    if ((u->flags & U_WANT_DRAIN) && u->pending_write <= UC_HIGH_WATER / 2) {
        u->flags &= ~U_WANT_DRAIN;
        if (u->end_cb)
            u->end_cb->on_drain(u->end_arg);
    }
}

static void uend_bind(void *conn, const gw_end_cb *cb, void *arg)
{
    gw_uconn *u = conn;
    u->end_cb = cb;
    u->end_arg = arg;
}

static int uend_write(void *conn, uv_buf_t *bufs, unsigned n)
{
    return gw_uconn_write(conn, bufs, n);
}

static void uend_read(void *conn, int on)
{
    gw_uconn *u = conn;
    if (u->state != UC_UPGRADED)
        return;
    if (!on) {
        u->flags &= ~U_UPG_READ;
    } else {
        u->flags |= U_UPG_READ;
        if (u->off < u->len) /* bytes behind the head: from the loop, not from here */
            gw_deadline_wake(&u->deadline, &u->timer, uconn_on_timer);
    }
    if (!(u->flags & U_IN_PARSE))
        update_reading(u);
}

static void uend_close(void *conn)
{
    gw_uconn *u = conn;
    u->end_cb = NULL;
    if (u->state != UC_UPGRADED || (u->flags & U_UPG_CLOSE))
        return;
    u->flags |= U_UPG_CLOSE;
    u->flags &= ~U_UPG_READ;
    if (u->pending_write == 0) {
        uconn_close(u);
        return;
    }
    update_reading(u);
    if (!gw_deadline_active(&u->deadline)) /* (armed with the first unsent byte, else) */
        upgraded_send_deadline(u);
}

static size_t uend_queued(const void *conn)
{
    return ((const gw_uconn *)conn)->pending_write;
}

static const gw_end_ops uconn_end_ops = {
    .bind = uend_bind, .write = uend_write, .read = uend_read, .close = uend_close,
    .queued = uend_queued,
};

int gw_uconn_upgrade(gw_uconn *u, gw_end *out)
{
    if (u->state != UC_ACTIVE || !(u->flags & U_UPGRADE) || u->status != 101)
        return GW_EINVAL;
    u->state = UC_UPGRADED;
    if (!upgraded.next)
        gw_queue_init(&upgraded);
    gw_queue_insert_tail(&upgraded, &u->pool_node);
    u->cb = NULL;
    u->data = NULL;
    u->flags &= ~(U_WANT_DRAIN | U_PAUSED);
    uv_timer_stop(&u->timer);
    u->deadline = (gw_deadline){ 0 }; /* none, and no wake-up set */
    upgraded_queued(u); /* the request may still be queued: the send timeout covers it */
    out->ops = &uconn_end_ops;
    out->conn = u;
    return 0;
}
