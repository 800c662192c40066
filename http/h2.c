/* h2.c — HTTP/2 on a client connection (h2.h): nghttp2 does the framing, HPACK, flow
 * control and the protocol checks (pseudo-headers, connection-specific headers,
 * Content-Length against DATA: RFC 9113 §8.1-8.3); this file maps streams onto gw_requests
 * for the same handler HTTP/1.1 requests go to.
 *
 * One rule keeps the handler from being called back re-entrantly: nghttp2 is driven
 * (mem_recv, session_send) only from this file's run loop, never from inside an API call
 * a handler makes; those calls queue frames (submit, resume) and post a run. Streams whose
 * head completed are queued and given to the handler after mem_recv returns, so a stream a
 * client opens and resets in the same read ("rapid reset") costs no upstream work.
 *
 * Memory per stream is bounded both ways: request body bytes wait in the stream's buffer
 * only up to its flow-control window (nghttp2's automatic WINDOW_UPDATE is off: a window
 * opens again only when the handler took the bytes), and response bytes wait only up to
 * WRITE_HIGH_WATER before gw_response_body asks the handler to wait for on_drain — a client
 * that opens no window gets no more. Per connection: the connection window for request
 * bodies, and frames are produced only while less than H2_WRITE_HIGH bytes are unsent.
 *
 * Ownership: a stream (and its request) is freed in one place, on_stream_close (nghttp2
 * closed it), or with the connection in gw__h2_close. */
#include "http/h2_int.h"

#include <arpa/inet.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/client_int.h"
#include "http/edge.h"
#include "http/gw_errors.h"
#include "http/http1.h"
#include "http/request_id.h"

#define H2_OUT_BUF (32 * 1024)       /* frames gathered into one write */
#define H2_WRITE_HIGH (256 * 1024)   /* no frames are produced while more than this is unsent */
#define H2_READ_STOP (1024 * 1024)   /* ... and the client is not read while more than this is */
#define H2_ARENA_MIN 1024

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* A request body still coming after the answer is read and thrown away up to this much
 * (as HTTP/1.1's lingering close), so that the client sees its answer; past it, or past
 * the body timeout, the stream is reset (NO_ERROR). */
#define H2_DISCARD_MAX (8u << 20)

static void stream_ready(h2_stream *s);

static void h2_event(gw_client *c, enum gw_h2_event ev)
{
    const gw_server_opts *o = &c->server->opts;
    if (o->on_h2_event)
        o->on_h2_event(ev, o->hook_data);
}

/* ---- output -------------------------------------------------------------------------- */

static int out_flush(gw_h2 *h)
{
    if (!h->out_len)
        return 0;
    uv_buf_t b = uv_buf_init(h->out, (unsigned)h->out_len);
    h->out_len = 0;
    return gw__client_write(h->c, &b, 1);
}

static int out_put(gw_h2 *h, const uint8_t *p, size_t n)
{
    if (!h->out && !(h->out = malloc(H2_OUT_BUF)))
        return -1;
    if (h->out_len + n > H2_OUT_BUF && out_flush(h) < 0)
        return -1;
    if (n > H2_OUT_BUF) {
        uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
        return gw__client_write(h->c, &b, 1);
    }
    memcpy(h->out + h->out_len, p, n);
    h->out_len += n;
    return 0;
}

static ssize_t send_cb(nghttp2_session *session, const uint8_t *data, size_t length, int flags,
                       void *user_data)
{
    gw_h2 *h = user_data;
    (void)session, (void)flags;
    if (h->c->pending_write > H2_WRITE_HIGH)
        return NGHTTP2_ERR_WOULDBLOCK; /* on_write runs us again */
    if (out_put(h, data, length) < 0) {
        h->fatal = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return (ssize_t)length;
}

static int send_data_cb(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *source, void *user_data)
{
    gw_h2 *h = user_data;
    h2_stream *s = source->ptr;
    (void)session, (void)frame;
    if (h->c->pending_write + h->out_len > H2_WRITE_HIGH)
        return NGHTTP2_ERR_WOULDBLOCK; /* nghttp2 keeps the frame; on_write runs us again */
    if (out_put(h, framehd, 9) < 0 || out_put(h, (uint8_t *)s->out + s->out_off, length) < 0) {
        h->fatal = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    s->out_off += length;
    s->out_since = uv_now(h->c->server->loop);
    if (s->out_off == s->out_len)
        s->out_off = s->out_len = 0;
    if ((s->flags & S_WANT_DRAIN) && s->out_len - s->out_off <= WRITE_HIGH_WATER / 2)
        stream_ready(s); /* on_drain, from the run loop */
    return 0;
}

/* ---- streams ------------------------------------------------------------------------- */

static h2_stream *stream_of(gw_h2 *h, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h->session, id);
}

static void stream_ready(h2_stream *s)
{
    if (s->flags & (S_READY | S_CLOSED))
        return;
    s->flags |= S_READY;
    gw_queue_insert_tail(&s->h->ready, &s->ready);
}

static h2_stream *stream_new(gw_h2 *h, int32_t id)
{
    gw_server *sv = h->c->server;
    h2_stream *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    /* the header array needs no clearing: n_headers counts what is set */
    memset(s, 0, offsetof(h2_stream, req) + offsetof(gw_request, headers));
    s->h = h;
    s->id = id;
    s->resp_left = -1;
    s->last_in = uv_now(sv->loop);
    gw_queue_init(&s->ready);
    gw_queue_insert_tail(&h->streams, &s->node);
    h->n_streams++;
    gw_request *q = &s->req;
    gw_client *c = h->c;
    q->client = c;
    q->server = sv;
    q->stream = s;
    q->handler = &sv->handler;
    q->http_major = 2;
    q->content_length = -1;
    q->upstream_ms = -1;
    q->keep_alive = 1;
    q->max_body_bytes = sv->opts.limits.max_body_bytes;
    q->start_ns = uv_hrtime();
    q->conn_id = c->id;
    q->tls = c->tls != NULL;
    if (c->peer_family)
        gw_addr_text(c->peer_family, c->peer_addr, q->client_addr, sizeof q->client_addr);
    return s;
}

/* The one end of a stream: the handler lets go (on_abort if it still held it), the
 * request is reported if it reached a handler or got an answer, and it is freed. */
static void stream_end(h2_stream *s, int err)
{
    gw_h2 *h = s->h;
    gw_client *c = h->c;
    gw_request *q = &s->req;
    s->flags |= S_CLOSED;
    if (s->flags & S_READY)
        gw_queue_remove(&s->ready);
    if (s->flags & S_HANDLER) {
        s->flags &= ~S_HANDLER;
        q->handler->on_abort(q, err ? err : GW_ECLOSED);
    }
    const gw_server_opts *o = &c->server->opts;
    if ((s->flags & S_DISPATCHED) && o->on_request_done) {
        if (!q->status)
            q->status = 499;
        gw_request_report rep = {
            .url = q->url.p ? q->url.p : "",
            .total_ms = (double)(uv_hrtime() - q->start_ns) / 1e6,
            .err = err,
        };
        o->on_request_done(q, &rep, o->hook_data);
    }
    /* request body bytes never consumed still hold the connection's window */
    if (!h->closed && s->in_len > s->in_off)
        nghttp2_session_consume_connection(h->session, s->in_len - s->in_off);
    gw_queue_remove(&s->node);
    if (--h->n_streams == 0)
        h->idle_since = uv_now(c->server->loop);
    free(s->arena);
    free(s->in);
    free(s->out);
    free(s);
}

/* Room for N more bytes in a growable buffer (*p, len, *cap): 0, or -1 (no memory). */
int gw__h2_buf_room(char **p, size_t len, size_t *cap, size_t n, size_t min)
{
    if (len + n <= *cap)
        return 0;
    size_t nc = *cap ? *cap : min;
    while (nc < len + n)
        nc *= 2;
    char *nb = realloc(*p, nc);
    if (!nb)
        return -1;
    *p = nb;
    *cap = nc;
    return 0;
}

/* ---- the request head ---------------------------------------------------------------- */

static void refuse(h2_stream *s, int status, const char *why)
{
    if (!s->fail_status) {
        s->fail_status = status;
        s->fail_reason = why;
    }
}

/* Copies N bytes into the stream's arena (slices into it move with it). NULL: no memory. */
static const char *arena_put(h2_stream *s, const uint8_t *p, size_t n)
{
    if (s->arena_len + n + 1 > s->arena_cap) {
        size_t nc = s->arena_cap ? s->arena_cap : H2_ARENA_MIN;
        while (nc < s->arena_len + n + 1)
            nc *= 2;
        char *nb = malloc(nc);
        if (!nb)
            return NULL;
        if (s->arena_len)
            memcpy(nb, s->arena, s->arena_len);
        /* the slices taken so far point into the old block: move them */
        gw_request *q = &s->req;
        gw_slice *fix[3] = { &q->method, &q->url, &q->host };
        for (int i = 0; i < 3; i++)
            if (fix[i]->p)
                fix[i]->p = nb + (fix[i]->p - s->arena);
        for (int i = 0; i < q->n_headers; i++) {
            q->headers[i].name.p = nb + (q->headers[i].name.p - s->arena);
            q->headers[i].value.p = nb + (q->headers[i].value.p - s->arena);
        }
        free(s->arena);
        s->arena = nb;
        s->arena_cap = nc;
    }
    char *at = s->arena + s->arena_len;
    memcpy(at, p, n);
    at[n] = '\0';
    s->arena_len += n + 1;
    return at;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    gw_h2 *h = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h2_stream *s = stream_new(h, frame->hd.stream_id);
    if (!s)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM INTERNAL_ERROR */
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s);
    h2_event(h->c, GW_H2_STREAM);
    return 0;
}

/* nghttp2 checked the field already (RFC 9113 §8.2: lowercase, no connection-specific
 * field, pseudo-headers first, known and once); the limits and the slices are ours. */
static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    gw_h2 *h = user_data;
    (void)flags;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers are not forwarded */
    h2_stream *s = stream_of(h, frame->hd.stream_id);
    if (!s)
        return 0;
    (void)session;
    const gw_server_limits *lim = &h->c->server->opts.limits;
    gw_request *q = &s->req;
    s->head_bytes += namelen + valuelen + 32;
    if (s->head_bytes > lim->max_header_bytes)
        refuse(s, 431, "request head too large");
    if (s->fail_status)
        return 0; /* the rest of the head is not kept */
    if (namelen && name[0] == ':') {
        gw_slice *to = NULL;
        if (namelen == 7 && memcmp(name, ":method", 7) == 0)
            to = &q->method;
        else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
            to = &q->url;
        else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
            to = &q->host;
        if (!to)
            return 0; /* :scheme (checked by nghttp2) */
        if (to == &q->url && valuelen > lim->max_uri_bytes) {
            refuse(s, 414, "request target too long");
            return 0;
        }
        const char *p = arena_put(s, value, valuelen);
        if (!p)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        *to = (gw_slice){ p, valuelen };
        return 0;
    }
    if ((uint32_t)q->n_headers >= lim->max_headers) {
        refuse(s, 431, "too many request headers");
        return 0;
    }
    const char *np = arena_put(s, name, namelen);
    const char *vp = np ? arena_put(s, value, valuelen) : NULL;
    if (!vp)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    np = s->arena + (s->arena_len - valuelen - 1 - namelen - 1); /* (the arena may have moved) */
    q->headers[q->n_headers].name = (gw_slice){ np, namelen };
    q->headers[q->n_headers].value = (gw_slice){ vp, valuelen };
    q->n_headers++;
    if (namelen == 6 && memcmp(name, "cookie", 6) == 0)
        s->n_cookie++;
    return 0;
}

/* RFC 9113 §8.2.3: cookie fields split for compression are joined with "; " before the
 * request goes on as HTTP/1.1. */
static int join_cookies(h2_stream *s)
{
    gw_request *q = &s->req;
    size_t total = 0;
    for (int i = 0; i < q->n_headers; i++)
        if (gw_slice_eq(q->headers[i].name, "cookie"))
            total += q->headers[i].value.n + 2;
    char *j = malloc(total);
    if (!j)
        return -1;
    size_t n = 0;
    int first = -1, w = 0;
    for (int i = 0; i < q->n_headers; i++) {
        if (gw_slice_eq(q->headers[i].name, "cookie")) {
            if (n) {
                memcpy(j + n, "; ", 2);
                n += 2;
            }
            memcpy(j + n, q->headers[i].value.p, q->headers[i].value.n);
            n += q->headers[i].value.n;
            if (first >= 0)
                continue;
            first = w;
        }
        q->headers[w++] = q->headers[i];
    }
    q->n_headers = w;
    const char *v = arena_put(s, (const uint8_t *)j, n);
    free(j);
    if (!v)
        return -1;
    q->headers[first].value = (gw_slice){ v, n };
    return 0;
}

/* As HTTP/1.1's request line (edge.c): visible ASCII only, no raw UTF-8 or controls. */
static int target_chars_valid(gw_slice t)
{
    for (size_t i = 0; i < t.n; i++)
        if ((unsigned char)t.p[i] <= 0x20 || (unsigned char)t.p[i] >= 0x7f)
            return 0;
    return 1;
}

/* The head is complete: the checks HTTP/1.1 heads get that nghttp2 does not make, the
 * request id and trace, then the stream waits for dispatch from the run loop. */
static void head_done(h2_stream *s, int end_stream)
{
    gw_request *q = &s->req;
    s->flags |= S_HEAD_DONE;
    s->last_in = uv_now(s->h->c->server->loop);
    if (end_stream)
        s->flags |= S_BODY_DONE;
    if (!s->fail_status) {
        if (s->n_cookie > 1 && join_cookies(s) < 0)
            refuse(s, 500, "out of memory");
        gw_slice host = gw_request_header(q, "host");
        if (!q->host.p)
            q->host = host;
        else if (host.p && !gw_edge_host_same(host, q->host))
            refuse(s, 400, "Host does not match :authority");
        gw_slice cl = gw_request_header(q, "content-length");
        uint64_t v;
        if (cl.p && gw_edge_content_length(cl, &v) == 0)
            q->content_length = (int64_t)v;
        if (!q->host.p)
            refuse(s, 400, "missing :authority and Host");
        else if (!gw_edge_host_valid(q->host))
            refuse(s, 400, "invalid Host header");
        if (gw_slice_eq(q->method, "CONNECT"))
            refuse(s, 405, "CONNECT is not supported");
        else if (!q->url.p || q->url.n == 0)
            refuse(s, 400, "missing :path");
        else if (memchr(q->url.p, '#', q->url.n))
            refuse(s, 400, "fragment in request target");
        else if (!target_chars_valid(q->url))
            refuse(s, 400, "invalid character in request target");
    }
    if (q->url.p) {
        const char *qm = memchr(q->url.p, '?', q->url.n);
        q->path = (gw_slice){ q->url.p, qm ? (size_t)(qm - q->url.p) : q->url.n };
        q->query = qm ? (gw_slice){ qm + 1, q->url.n - q->path.n - 1 } : (gw_slice){ NULL, 0 };
    }
    if (q->method.p) {
        size_t mn = q->method.n < sizeof q->method_buf - 1 ? q->method.n : sizeof q->method_buf - 1;
        memcpy(q->method_buf, q->method.p, mn);
        q->method_buf[mn] = '\0';
    }
    q->is_head = gw_slice_eq(q->method, "HEAD");
    gw_slice rid = gw_request_header(q, "x-request-id");
    if (gw_request_id_valid(rid)) {
        memcpy(q->request_id, rid.p, rid.n);
        q->request_id[rid.n] = '\0';
    } else {
        gw_request_id_generate(q->request_id);
    }
    gw_trace_begin(&q->trace, q->headers, q->n_headers);
    if (!end_stream && q->content_length < 0 && !s->fail_status) {
        s->flags |= S_HOLD; /* a body of unknown length, or just END_STREAM: see body_known */
        return;
    }
    q->has_body = !end_stream && q->content_length > 0;
    stream_ready(s);
}

/* A held head learns whether a body comes: DATA (sent upstream chunked) or END_STREAM. */
static void body_known(h2_stream *s, int data)
{
    if (!(s->flags & S_HOLD))
        return;
    s->flags &= ~S_HOLD;
    s->req.has_body = s->req.chunked = data != 0;
    stream_ready(s);
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user_data)
{
    gw_h2 *h = user_data;
    (void)flags;
    h2_stream *s = stream_of(h, stream_id);
    if (!s || (s->flags & S_CLOSED)) {
        nghttp2_session_consume(session, stream_id, len);
        return 0;
    }
    s->body_read += len;
    s->req.bytes_in += len;
    s->last_in = uv_now(h->c->server->loop);
    if (s->flags & S_DISCARD) {
        nghttp2_session_consume(session, stream_id, len);
        if (s->body_read > H2_DISCARD_MAX)
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_NO_ERROR);
        return 0;
    }
    body_known(s, 1);
    if (s->req.max_body_bytes && s->body_read > s->req.max_body_bytes) {
        refuse(s, 413, "request body too large");
        nghttp2_session_consume(session, stream_id, len);
        if (s->flags & S_DISPATCHED)
            stream_ready(s); /* the handler lets go (run loop) */
        return 0;
    }
    if (s->in_off == s->in_len)
        s->in_off = s->in_len = 0;
    /* at most the stream's window is ever here: it opens only as the handler takes bytes */
    if (gw__h2_buf_room(&s->in, s->in_len, &s->in_cap, len, 16384) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    memcpy(s->in + s->in_len, data, len);
    s->in_len += len;
    if ((s->flags & (S_BODY_PULL | S_HANDLER)) == (S_BODY_PULL | S_HANDLER))
        stream_ready(s);
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    gw_h2 *h = user_data;
    (void)session;
    h2_stream *s = frame->hd.stream_id ? stream_of(h, frame->hd.stream_id) : NULL;
    int end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (!s)
            return 0;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            s->req.bytes_in += frame->hd.length + 9;
            head_done(s, end);
            return 0;
        }
        s->last_in = uv_now(h->c->server->loop);
        break; /* trailers: only their END_STREAM matters */
    case NGHTTP2_DATA:
        if (!s)
            return 0;
        break;
    case NGHTTP2_RST_STREAM:
        h->resets++;
        h2_event(h->c, GW_H2_RESET);
        return 0;
    default:
        return 0;
    }
    if (end && !(s->flags & S_BODY_DONE)) {
        s->flags |= S_BODY_DONE;
        body_known(s, 0);
        stream_ready(s);
    }
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    gw_h2 *h = user_data;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        h2_event(h->c, GW_H2_GOAWAY);
        /* nghttp2 ends a connection over its RST_STREAM rate with INTERNAL_ERROR (we never
         * do): that, after at least a burst of resets, is the rate limit */
        uint32_t burst = h->c->server->opts.h2.reset_burst ? h->c->server->opts.h2.reset_burst : 1000;
        if (frame->goaway.error_code == NGHTTP2_INTERNAL_ERROR && h->resets >= burst)
            h2_event(h->c, GW_H2_RESET_LIMITED);
        return 0;
    }
    if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        /* the response is complete but the request body is not: what still comes is
         * thrown away (bounded, see H2_DISCARD_MAX); an RST_STREAM at once would be
         * allowed (RFC 9113 §8.1) but some clients report it as a failed upload */
        h2_stream *s = stream_of(h, frame->hd.stream_id);
        if (s && !(s->flags & S_BODY_DONE)) {
            s->flags |= S_DISCARD;
            s->last_in = uv_now(h->c->server->loop); /* body_timeout_ms for the rest */
            if (s->in_len > s->in_off)
                nghttp2_session_consume(session, s->id, s->in_len - s->in_off);
            s->in_off = s->in_len = 0;
            if (s->body_read > H2_DISCARD_MAX)
                nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                          NGHTTP2_NO_ERROR);
        }
    }
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    gw_h2 *h = user_data;
    h2_stream *s = stream_of(h, stream_id);
    (void)session;
    if (!s || h->closed)
        return 0;
    int whole = (s->flags & (S_RESP_ENDED | S_CUT)) == S_RESP_ENDED &&
                error_code == NGHTTP2_NO_ERROR;
    int err = whole ? 0 : s->err ? s->err : GW_ECLOSED;
    stream_end(s, err);
    return 0;
}

/* ---- the run loop -------------------------------------------------------------------- */

static void dispatch(h2_stream *s)
{
    gw_request *q = &s->req;
    s->flags |= S_DISPATCHED;
    if (s->fail_status) { /* the gateway answers; the handler never sees it */
        gw_response_error(q, s->fail_status, s->fail_reason);
        return;
    }
    s->flags |= S_HANDLER;
    s->h->c->server->handler.on_request(q);
}

/* Gives the handler what it pulls, and tells it what it waits for. */
static void stream_run(h2_stream *s)
{
    gw_h2 *h = s->h;
    gw_request *q = &s->req;
    if (!(s->flags & S_DISPATCHED)) {
        dispatch(s);
        return; /* (a body pull, if any, queued the stream again) */
    }
    if ((s->flags & S_HANDLER) && s->fail_status == 413) {
        /* too large a body after the head went to the handler: it lets go */
        s->flags &= ~(S_HANDLER | S_BODY_PULL | S_WANT_DRAIN);
        q->handler->on_abort(q, GW_ETOOBIG);
        if (!(s->flags & S_RESP_BEGUN)) {
            q->upstream_name = NULL;
            gw_response_error(q, 413, s->fail_reason);
        } else {
            gw__h2_response_fail(q);
        }
        return;
    }
    while ((s->flags & (S_BODY_PULL | S_HANDLER)) == (S_BODY_PULL | S_HANDLER) &&
           s->in_off < s->in_len) {
        size_t n = s->in_len - s->in_off;
        const char *p = s->in + s->in_off;
        s->in_off = s->in_len;
        q->handler->on_body(q, p, n);
        nghttp2_session_consume(h->session, s->id, n); /* the window opens again */
        s->last_in = uv_now(h->c->server->loop);
        if (h->c->state == CS_CLOSING || (s->flags & S_CLOSED))
            return;
    }
    if ((s->flags & (S_BODY_PULL | S_HANDLER | S_BODY_DONE)) ==
            (S_BODY_PULL | S_HANDLER | S_BODY_DONE) &&
        s->in_off == s->in_len && !(s->flags & S_BODY_END_SENT)) {
        s->flags |= S_BODY_END_SENT;
        q->handler->on_body_end(q);
        if (h->c->state == CS_CLOSING)
            return;
    }
    if ((s->flags & (S_WANT_DRAIN | S_HANDLER)) == (S_WANT_DRAIN | S_HANDLER) &&
        s->out_len - s->out_off <= WRITE_HIGH_WATER / 2 && h->c->pending_write <= H2_WRITE_HIGH) {
        s->flags &= ~S_WANT_DRAIN;
        q->handler->on_drain(q);
    }
}

/* A stream waits for its request body: a held head, a body the handler pulls, or the rest
 * thrown away after the answer. */
static int body_waits(const h2_stream *s)
{
    if (s->flags & S_HOLD)
        return 1;
    if (s->flags & S_BODY_DONE)
        return 0;
    return ((s->flags & (S_HANDLER | S_BODY_PULL)) == (S_HANDLER | S_BODY_PULL) && s->req.has_body) ||
           (s->flags & S_DISCARD);
}

static uint64_t after(uint64_t t, uint32_t ms)
{
    return ms ? t + ms : 0;
}

/* When stream S's own deadline passes (uv_now ms; 0: none) and which one (*KIND): a header
 * block that does not end (from its first frame), a body that does not move (from its last
 * DATA, or since the window last opened), response bytes the client's flow-control window
 * holds back (from their last progress). Other streams, PINGs or SETTINGS move none. */
static uint64_t stream_deadline(const h2_stream *s, const gw_server_limits *lim, unsigned *kind)
{
    if (!(s->flags & S_HEAD_DONE)) {
        *kind = TK_HEADER;
        return after(s->last_in, lim->header_timeout_ms);
    }
    uint64_t at = 0, t;
    if (body_waits(s) && (at = after(s->last_in, lim->body_timeout_ms)))
        *kind = TK_BODY;
    if (s->out_len > s->out_off && !(s->flags & S_CUT) &&
        (t = after(s->out_since, lim->send_timeout_ms)) && (!at || t < at)) {
        at = t;
        *kind = TK_SEND;
    }
    return at;
}

/* The connection's timer for the earliest deadline: unsent bytes on the socket have the send
 * deadline (client.c sets it on write progress); else the streams' own (stream_deadline);
 * no stream at all, the idle (or, before the first stream, the header) timeout since the
 * last stream ended. */
static void h2_arm_timer(gw_h2 *h)
{
    gw_client *c = h->c;
    if (c->pending_write > 0 || (c->flags & F_ABORT_POSTED))
        return;
    const gw_server_limits *lim = &c->server->opts.limits;
    uint64_t at = 0, now = uv_now(c->server->loop);
    unsigned kind = TK_IDLE, k = TK_IDLE;
    if (h->n_streams == 0) {
        kind = (c->flags & F_KEPT) ? TK_IDLE : TK_HEADER;
        at = after(h->idle_since, (c->flags & F_KEPT) ? lim->idle_timeout_ms : lim->header_timeout_ms);
    }
    gw_queue *q, *n;
    GW_QUEUE_FOREACH_SAFE(q, n, &h->streams)
    {
        uint64_t t = stream_deadline(GW_QUEUE_DATA(q, h2_stream, node), lim, &k);
        if (t && (!at || t < at)) {
            at = t;
            kind = k;
        }
    }
    if (!at)
        gw_timeout_clear(&c->timeout);
    else if (c->timeout.at != at || !gw_timeout_active(&c->timeout))
        gw_timeout_set(&c->server->timeouts, &c->timeout, kind, at > now ? at - now : 1);
}

static void h2_run(gw_h2 *h)
{
    gw_client *c = h->c;
    if (h->in_run) {
        h->rerun = 1;
        return;
    }
    h->in_run = 1;
    do {
        h->rerun = 0;
        while (!gw_queue_empty(&h->ready) && c->state != CS_CLOSING) {
            h2_stream *s = GW_QUEUE_DATA(h->ready.next, h2_stream, ready);
            gw_queue_remove(&s->ready);
            s->flags &= ~S_READY;
            stream_run(s);
        }
        if (c->state == CS_CLOSING)
            break;
        if (c->pending_write <= H2_WRITE_HIGH) {
            int rv = nghttp2_session_send(h->session);
            if (rv == 0 && out_flush(h) < 0)
                h->fatal = 1;
            if (rv != 0 || h->fatal) {
                h->in_run = 0;
                gw__client_close(c, GW_ECLOSED);
                return;
            }
        }
    } while ((h->rerun || !gw_queue_empty(&h->ready)) && c->state != CS_CLOSING);
    h->in_run = 0;
    if (c->state == CS_CLOSING)
        return;
    if (!nghttp2_session_want_read(h->session) && !nghttp2_session_want_write(h->session) &&
        c->pending_write == 0) {
        gw__client_close(c, 0); /* GOAWAY went out and every stream is done */
        return;
    }
    if (h->n_streams > 0 || h->draining)
        c->flags |= F_KEPT;
    if (h->n_streams == 0 && h->out) { /* an idle connection holds no frame buffer */
        free(h->out);
        h->out = NULL;
    }
    h2_arm_timer(h);
    gw__client_update_reading(c);
}

void gw__h2_post(gw_h2 *h)
{
    if (h->in_run)
        h->rerun = 1;
    else
        gw__server_post(h->c->server, &h->c->post_node);
}

/* ---- client.c's events --------------------------------------------------------------- */

int gw__h2_preface(gw_client *c)
{
    size_t n = c->len - c->off, want = sizeof preface - 1;
    if (memcmp(c->buf + c->off, preface, n < want ? n : want) != 0)
        return 0;
    if (n < want)
        return 1; /* maybe: the rest of the preface decides */
    if (gw__h2_start(c) < 0) {
        gw__client_close(c, GW_ENOMEM);
        return 1;
    }
    gw__h2_read(c, 0);
    return 1;
}

int gw__h2_start(gw_client *c)
{
    gw_h2 *h = calloc(1, sizeof *h);
    if (!h)
        return GW_ENOMEM;
    h->c = c;
    h->idle_since = uv_now(c->server->loop);
    gw_queue_init(&h->streams);
    gw_queue_init(&h->ready);
    const gw_h2_limits *l = &c->server->opts.h2;
    uint32_t max_streams = l->max_concurrent_streams ? l->max_concurrent_streams : 128;
    uint32_t win = l->stream_window ? l->stream_window : 65535;
    uint32_t conn_win = l->connection_window ? l->connection_window : 1u << 20;
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb) != 0) {
        free(h);
        return GW_ENOMEM;
    }
    nghttp2_session_callbacks_set_send_callback(cb, send_cb);
    nghttp2_session_callbacks_set_send_data_callback(cb, send_data_cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    int rv = nghttp2_option_new(&opt);
    if (rv == 0) {
        nghttp2_option_set_no_auto_window_update(opt, 1);
        nghttp2_option_set_max_send_header_block_length(opt, 1u << 20);
        /* CVE-2023-44487 ("rapid reset"): nghttp2's token bucket on RST_STREAM */
        nghttp2_option_set_stream_reset_rate_limit(opt, l->reset_burst ? l->reset_burst : 1000,
                                                   l->reset_rate ? l->reset_rate : 33);
        rv = nghttp2_session_server_new2(&h->session, cb, h, opt);
        nghttp2_option_del(opt);
    }
    nghttp2_session_callbacks_del(cb);
    if (rv != 0) {
        free(h);
        return GW_ENOMEM;
    }
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, win },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, c->server->opts.limits.max_header_bytes },
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
    };
    nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    if (conn_win > 65535)
        nghttp2_session_set_local_window_size(h->session, NGHTTP2_FLAG_NONE, 0, (int32_t)conn_win);
    c->h2 = h;
    c->state = CS_H2;
    c->flags &= ~F_KEPT;
    uv_tcp_nodelay(&c->tcp, 1); /* many small frames, each one awaited */
    c->flags |= F_NODELAY | F_WROTE;
    h2_event(c, GW_H2_CONN_OPEN);
    gw__h2_post(h);
    if (c->server->draining)
        gw__h2_drain(c); /* began during a drain (its preface was still coming): GOAWAY at once */
    return 0;
}

void gw__h2_read(gw_client *c, ssize_t nread)
{
    gw_h2 *h = c->h2;
    if (nread < 0) {
        gw__client_close(c, nread == UV_EOF ? GW_ECLOSED : (int)nread);
        return;
    }
    c->len += (uint32_t)nread;
    ssize_t rv = nghttp2_session_mem_recv(h->session, (const uint8_t *)c->buf + c->off,
                                          c->len - c->off);
    c->len = c->off = 0;
    if (c->state == CS_CLOSING)
        return;
    gw__client_release_idle_memory(c); /* nghttp2 copied what it keeps: no buffer while idle */
    if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC || rv == NGHTTP2_ERR_NOMEM) {
        gw__client_close(c, GW_EPARSE);
        return;
    }
    if (rv < 0) { /* a connection error: GOAWAY goes out (h2_run), then the close */
        nghttp2_session_terminate_session(h->session, NGHTTP2_PROTOCOL_ERROR);
        while (!gw_queue_empty(&h->ready)) { /* heads of this read are not dispatched */
            h2_stream *s = GW_QUEUE_DATA(h->ready.next, h2_stream, ready);
            gw_queue_remove(&s->ready);
            s->flags &= ~S_READY;
        }
    }
    h2_run(h);
}

void gw__h2_written(gw_client *c)
{
    gw_h2 *h = c->h2;
    if (c->pending_write == 0)
        gw_timeout_clear(&c->timeout); /* the send deadline: h2_arm_timer picks the next */
    if (c->pending_write <= H2_WRITE_HIGH / 2 || c->pending_write == 0) {
        /* room again: drains wait in streams that asked */
        gw_queue *q, *n;
        GW_QUEUE_FOREACH_SAFE(q, n, &h->streams)
        {
            h2_stream *s = GW_QUEUE_DATA(q, h2_stream, node);
            if (s->flags & S_WANT_DRAIN)
                stream_ready(s);
        }
        h2_run(h);
    }
}

void gw__h2_run_posted(gw_client *c)
{
    h2_run(c->h2);
}

int gw__h2_want_read(const gw_client *c)
{
    return c->pending_write <= H2_READ_STOP && !(c->flags & F_ABORT_POSTED) &&
           nghttp2_session_want_read(c->h2->session);
}

/* The client's window held response bytes back for send_timeout_ms: the handler lets go
 * (its upstream was paused for this client) and the stream is reset (CANCEL). */
static void stream_stuck(h2_stream *s)
{
    if (s->flags & S_HANDLER) {
        s->flags &= ~(S_HANDLER | S_BODY_PULL | S_WANT_DRAIN);
        s->req.handler->on_abort(&s->req, GW_ETIMEOUT);
    }
    s->err = GW_ETIMEOUT;
    gw__h2_stream_cut(s, NGHTTP2_CANCEL);
}

/* The request body did not move for body_timeout_ms. */
static void body_stalled(h2_stream *s, uint64_t now)
{
    if ((s->flags & S_DISCARD) && !(s->flags & S_BODY_DONE)) {
        nghttp2_submit_rst_stream(s->h->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
        s->last_in = now; /* (closed once the reset is out) */
        return;
    }
    if (s->flags & S_HOLD) { /* never said whether a body comes: refused, not given on */
        s->flags &= ~S_HOLD;
        refuse(s, 408, "request body not received in time");
        stream_ready(s);
        return;
    }
    /* the handler pulls a body that stalled: it lets go, the client gets 408 if nothing
     * went out yet */
    s->flags &= ~(S_HANDLER | S_BODY_PULL | S_WANT_DRAIN);
    s->req.handler->on_abort(&s->req, GW_ETIMEOUT);
    if (!(s->flags & S_RESP_BEGUN)) {
        s->req.upstream_name = NULL;
        gw_response_error(&s->req, 408, "request body not received in time");
    } else {
        gw__h2_response_fail(&s->req);
    }
}

void gw__h2_timeout(gw_client *c)
{
    gw_h2 *h = c->h2;
    if (c->pending_write > 0) {
        gw__client_close(c, GW_ETIMEOUT); /* the client stopped reading */
        return;
    }
    const gw_server_limits *lim = &c->server->opts.limits;
    uint64_t now = uv_now(c->server->loop);
    if (h->n_streams == 0) {
        uint64_t at = after(h->idle_since, (c->flags & F_KEPT) ? lim->idle_timeout_ms
                                                               : lim->header_timeout_ms);
        if (at && now >= at) {
            gw__h2_drain(c); /* idle: GOAWAY, then the close */
            h->idle_since = now; /* (not due again at once should the close wait) */
        }
    }
    gw_queue *q, *n;
    GW_QUEUE_FOREACH_SAFE(q, n, &h->streams)
    {
        h2_stream *s = GW_QUEUE_DATA(q, h2_stream, node);
        unsigned kind = TK_BODY;
        uint64_t at = stream_deadline(s, lim, &kind);
        if (!at || now < at)
            continue;
        if (kind == TK_HEADER) {
            gw__client_close(c, GW_ETIMEOUT); /* mid header block: only the close ends it */
            return;
        }
        if (kind == TK_SEND)
            stream_stuck(s);
        else
            body_stalled(s, now);
        if (c->state == CS_CLOSING)
            return;
    }
    h2_run(h);
}

void gw__h2_drain(gw_client *c)
{
    gw_h2 *h = c->h2;
    if (h->draining)
        return;
    h->draining = 1;
    nghttp2_submit_goaway(h->session, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(h->session), NGHTTP2_NO_ERROR,
                          NULL, 0);
    gw__h2_post(h);
}

void gw__h2_close(gw_client *c, int err)
{
    gw_h2 *h = c->h2;
    if (!h || h->closed)
        return;
    gw_queue *q, *n;
    GW_QUEUE_FOREACH_SAFE(q, n, &h->streams)
    {
        h2_stream *s = GW_QUEUE_DATA(q, h2_stream, node);
        stream_end(s, err ? err : GW_ECLOSED);
    }
    h->closed = 1;
    h2_event(c, GW_H2_CONN_CLOSE);
}

void gw__h2_free(gw_client *c)
{
    gw_h2 *h = c->h2;
    if (!h)
        return;
    gw__h2_close(c, GW_ECLOSED);
    nghttp2_session_del(h->session);
    free(h->out);
    free(h);
    c->h2 = NULL;
}

/* ---- the request body for streams (the response calls: h2_response.c) ------------- */

int gw__h2_read_body(gw_request *req)
{
    h2_stream *s = req->stream;
    if (stream_gone(s) || !(s->flags & S_HANDLER))
        return GW_ECLOSED;
    if (req->max_body_bytes && req->content_length > 0 &&
        (uint64_t)req->content_length > req->max_body_bytes)
        return GW_ETOOBIG;
    if (!(s->flags & S_BODY_PULL))
        s->last_in = uv_now(s->h->c->server->loop); /* the body timeout counts from now */
    s->flags |= S_BODY_PULL;
    stream_ready(s);
    gw__h2_post(s->h);
    return 0;
}

void gw__h2_pause_body(gw_request *req)
{
    h2_stream *s = req->stream;
    s->flags &= ~S_BODY_PULL;
}
