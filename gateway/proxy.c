/* proxy.c — the proxy: the handler of a request the router sent upstream (see proxy.h).
 *
 * One proxy_req per request, freed in one place (proxy_free), reached from exactly one of:
 * the response ended (on_done), the response failed (error paths), or the client went
 * away (on_abort). The upstream connection is released or aborted before that.
 */
#include "gateway/proxy.h"
#include "gateway/inflight_limit.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "routes/policy.h"
#include "composers/compose.h"
#include "composers/lookup.h"
#include "routes/route_table.h"
#include "http/gw_errors.h"
#include "http/http1.h"
#include "http/request_id.h"
#include "http/span.h"
#include "gateway/shadow.h"
#include "gateway/tunnels.h"
#include "gateway/worker.h"
#include "http/end.h"
#include "http/tunnel.h"

#define TARGET_MAX 8192
#define RESP_HEADERS_MAX (32 * 1024)
#define SHADOW_BODY_MAX (1 << 20) /* larger bodies are not shadowed */

enum {
    P_BODY_STARTED = 1 << 0, /* request body bytes went upstream: no retry any more */
    P_BODY_DONE = 1 << 1,    /* the whole request (head and body) went upstream */
    P_RESP_BEGUN = 1 << 2,   /* the client got the response head */
    P_REUSED = 1 << 3,       /* the current upstream connection came from the pool */
    P_BODY_PAUSED = 1 << 4,  /* client body reading paused: upstream slow */
    P_FELL_BACK = 1 << 5,    /* replayed to the fallback upstream once already */
    P_INVALIDATE = 1 << 6,   /* a change on a cached route: evict the path on success */
    P_HEAD_HELD = 1 << 7,    /* a request with a body: the head waits to leave together with
                                the first body bytes (one write instead of two) */
    P_HEAD_LOST = 1 << 8,    /* the upstream answered before the held head left: no body
                                bytes go to it */
    P_RESP_HELD = 1 << 9,    /* a change's answer waits for its eviction (evict, held set;
                                the upstream paused) */
    P_DONE_HELD = 1 << 10,   /* P_RESP_HELD, and the upstream finished meanwhile (u NULL) */
    P_UPGRADE = 1 << 11,     /* asks the upstream to switch to p->upgrade: never retried,
                                shadowed, cached or fallen back; a 101 opens a tunnel */
};

#define PROXY_HEAD_INLINE 4096
#define PROXY_FREE_MAX 64

typedef struct proxy_req {
    gw_request *req;
    gw_worker *w;
    rt_table *table; /* pinned for the whole request: route strings live in it */
    const rt_route *route;
    gw_upstream *up;
    gw_uconn *u;
    char *head;      /* upstream request head, kept until the response begins (retries) */
    size_t head_len;
    rt_match match;  /* for re-targeting (fallback): slices into the head, valid while no body
                        was read — fallback is for bodiless safe methods only */
    int ui;          /* the upstream index in use */
    gw_shadow *shadow;
    char *sh_req;       /* a shadow of a request with a body: its head, then the body as it
                           streams to the primary (up to SHADOW_BODY_MAX), sent at body end */
    size_t sh_len, sh_head_len;
    int sh_ui;
    char sh_span[17];   /* the shadow copy's span id (its traceparent's parent-id) */
    char *cache_key;    /* P_INVALIDATE: the path to evict */
    cmp_evict *evict;   /* P_RESP_HELD: the eviction the answer waits for */
    char *held;         /* P_RESP_HELD: the response head (held_hlen bytes), then the body
                           bytes that came meanwhile (up to held_len) */
    size_t held_hlen, held_len, held_cap;
    int held_status;
    int64_t held_body_len;
    int connect_attempts;
    int stale_retries;
    int last_endpoint;
    const char *upgrade;     /* P_UPGRADE: the protocol, as the route spells it */
    unsigned flags;
    uint64_t t_sent_ns;
    /* the CLIENT span of the exchange under way (http/span.h): span_id "" = none recorded */
    char span_id[17];
    uint16_t span_status;
    const char *span_err;
    uint64_t span_t0;
    char head_inline[PROXY_HEAD_INLINE]; /* where head is built when it fits */
} proxy_req;

static const gw_uconn_cb uconn_cb;

/* proxy_reqs come from a small per-thread stack, like the upstream read buffers: the
 * struct (with its inline head buffer) is reused by the next request without malloc. */
static _Thread_local proxy_req *free_proxies[PROXY_FREE_MAX];
static _Thread_local int n_free_proxies;

static proxy_req *proxy_get(void)
{
    proxy_req *p = n_free_proxies ? free_proxies[--n_free_proxies] : malloc(sizeof *p);
    if (p)
        memset(p, 0, offsetof(proxy_req, head_inline));
    return p;
}

static void head_release(proxy_req *p)
{
    if (p->head != p->head_inline)
        free(p->head);
    p->head = NULL;
}

void gw_proxy_thread_cleanup(void)
{
    while (n_free_proxies)
        free(free_proxies[--n_free_proxies]);
}

/* Back to the per-thread stack (or free when it is full). */
static void proxy_recycle(proxy_req *p)
{
    if (n_free_proxies < PROXY_FREE_MAX)
        free_proxies[n_free_proxies++] = p;
    else
        free(p);
}

/* Records the exchange's CLIENT span (when this thread exports spans) and forgets it. */
static void client_span(proxy_req *p)
{
    gw_span *s = p->span_id[0] ? gw_span_begin(p->req->trace.flags) : NULL;
    if (!s) {
        p->span_id[0] = '\0';
        return;
    }
    const gw_request *req = p->req;
    s->kind = GW_SPAN_CLIENT;
    s->status = p->span_status;
    s->error = !p->span_status || p->span_status >= 500;
    memcpy(s->trace_id, req->trace.trace_id, sizeof s->trace_id);
    memcpy(s->span_id, p->span_id, sizeof s->span_id);
    p->span_id[0] = '\0';
    memcpy(s->parent_id, req->trace.span_id, sizeof s->parent_id);
    GW_SPAN_SET(s->method, req->method_buf);
    GW_SPAN_SET(s->route, p->route->id);
    GW_SPAN_SET(s->upstream, p->up->conf->name);
    GW_SPAN_SET(s->role, p->flags & P_FELL_BACK ? "fallback" : "proxy");
    GW_SPAN_SET(s->error_text, p->span_err ? p->span_err
                               : s->error ? (p->span_status ? "upstream error status" : "no answer")
                               : "");
    s->start_ns = p->span_t0;
    s->end_ns = uv_hrtime();
    gw_span_commit();
}

static void proxy_free(proxy_req *p)
{
    client_span(p);
    if (p->shadow) {
        gw_shadow_primary_done(p->shadow, 0); /* the primary did not finish cleanly */
        p->shadow = NULL;
    }
    if (p->u) {
        gw_uconn_abort(p->u);
        p->u = NULL;
    }
    if (p->table)
        rt_table_unref(p->table);
    cmp_evict_cancel(p->evict); /* the delete goes on; no callback to us */
    free(p->held);
    free(p->cache_key);
    free(p->sh_req);
    head_release(p);
    if (p->req) /* NULL: the request became a tunnel and is gone */
        p->req->data = NULL;
    proxy_recycle(p);
}

/* The gateway's own error, then done with the request. */
static void proxy_error(proxy_req *p, int status, const char *msg)
{
    gw_request *req = p->req;
    req->upstream_name = NULL; /* the gateway answers: X-Gateway-Upstream: gateway */
    if (p->u) {
        gw_uconn_abort(p->u);
        p->u = NULL;
    }
    proxy_free(p);
    gw_response_error(req, status, msg);
}

/* An encoded slash or backslash at P[0..n): "%2F", "%5C" (any case). */
static int enc_sep(const char *p, size_t n)
{
    return n >= 3 && p[0] == '%' &&
           ((p[1] == '2' && (p[2] == 'f' || p[2] == 'F')) || (p[1] == '5' && (p[2] == 'c' || p[2] == 'C')));
}

int gw_path_has_dot_segment(gw_slice path)
{
    size_t i = 0;
    while (i < path.n) {
        /* segments end at '/', and here also at '\', "%2F" and "%5C": an upstream that
         * decodes (or takes '\' for '/') before it normalises sees separators there */
        while (i < path.n && (path.p[i] == '/' || path.p[i] == '\\' || enc_sep(path.p + i, path.n - i)))
            i += path.p[i] == '%' ? 3 : 1;
        size_t start = i;
        while (i < path.n && path.p[i] != '/' && path.p[i] != '\\' && !enc_sep(path.p + i, path.n - i))
            i++;
        /* decode just enough: ".", "..", "%2e", "%2e%2e", ".%2e", "%2e."; a ";params" tail
         * is left out (Tomcat and Jetty take "..;x" for "..") */
        size_t dots = 0, j = start;
        int other = 0;
        while (j < i && !other && path.p[j] != ';') {
            if (path.p[j] == '.') {
                dots++;
                j++;
            } else if (i - j >= 3 && path.p[j] == '%' && path.p[j + 1] == '2' &&
                       (path.p[j + 2] == 'e' || path.p[j + 2] == 'E')) {
                dots++;
                j += 3;
            } else {
                other = 1;
            }
        }
        if (!other && (dots == 1 || dots == 2))
            return 1;
    }
    return 0;
}

int gw_path_has_encoded_slash(gw_slice path)
{
    for (const char *p = path.p, *end = path.p + path.n; (p = memchr(p, '%', (size_t)(end - p))); p++)
        if (enc_sep(p, (size_t)(end - p)))
            return 1;
    return 0;
}

/* ---- request head ---------------------------------------------------------------------- */

/* The request head for upstream UI of the route: its rewrite, its Host, a child span of the
 * request's trace (TRACE_MARK first in its tracestate: shadows). Returns 0 with the head in
 * buf when it fits in buf_cap (buf may be NULL), else in a malloc'd one; or the status to
 * answer (414, 431, 500). */
static int build_head(const gw_request *req, gw_upstream *up, const rt_match *m, int ui,
                      const char *trace_mark, const char *upgrade, char *span_out, char *buf,
                      size_t buf_cap, char **head_out, size_t *len_out)
{
    char target[TARGET_MAX];
    if (rt_rewrite_for(m, ui, req->path, req->query, target, sizeof target) < 0)
        return 414;
    size_t cap = 2048 + req->url.n + strlen(target);
    for (int i = 0; i < req->n_headers; i++)
        cap += req->headers[i].name.n + req->headers[i].value.n + 4;
    char *head = buf && cap <= buf_cap ? buf : malloc(cap);
    if (!head)
        return 500;
    const char *host = up->conf->host;
    gw_fwd f = {
        .method = req->method,
        .target = gw_slice_of(target),
        /* an HTTP/1.0 client may send no Host: name the endpoint then */
        .host = host[0] ? gw_slice_of(host)
                : req->host.n ? req->host : gw_slice_of(up->conf->endpoints[0].address),
        .client_host = req->host,
        .client_ip = req->client_addr,
        .proto = req->tls ? "https" : "http",
        .request_id = req->request_id,
        .trace = &req->trace,
        .trace_mark = trace_mark,
        .span_out = span_out,
        .content_length = req->chunked ? -1 : req->content_length,
        .chunked = req->chunked,
        .upgrade = upgrade,
    };
    int hl = gw_build_upstream_request(req->headers, req->n_headers, &f, head, cap);
    if (hl < 0) {
        if (head != buf)
            free(head);
        return 431;
    }
    *head_out = head;
    *len_out = (size_t)hl;
    return 0;
}

/* ---- sending ------------------------------------------------------------------------- */

static void start_attempt(proxy_req *p);

/* The route's fallback for this outcome (status, or -1 for unreachable): replay the request
 * on the legacy upstream. Only for bodiless safe methods, once, and never after anything
 * went to the client. Returns 1 when the request was handed to the fallback. */
static int try_fallback(proxy_req *p, int status_or_neg)
{
    if ((p->flags & (P_FELL_BACK | P_RESP_BEGUN | P_BODY_STARTED | P_UPGRADE)) || p->req->has_body)
        return 0;
    int fb = rt_route_fallback(p->route, p->req->method, status_or_neg);
    if (fb < 0 || fb == p->ui || !gw_inflight_switch(p->w->inflight, p->req, fb))
        return 0; /* (a fallback to an upstream at its max_in_flight is shed) */
    gw_upstream *up = &p->w->upstreams[fb];
    char *head, span[17];
    size_t hl;
    if (build_head(p->req, up, &p->match, fb, NULL, NULL, span, NULL, 0, &head, &hl) != 0)
        return 0;
    if (status_or_neg > 0)
        p->span_status = (uint16_t)status_or_neg;
    client_span(p); /* the primary's exchange ends here */
    memcpy(p->span_id, span, sizeof span);
    p->span_status = 0;
    p->span_err = NULL;
    p->span_t0 = gw_span_enabled(p->req->trace.flags) ? uv_hrtime() : 0;
    if (p->u) {
        gw_uconn_abort(p->u);
        p->u = NULL;
    }
    gw_log_event(p->w->events, "gateway: fallback route=%s from=%s to=%s reason=%d request_id=%s",
                 p->route->id, p->up->conf->name, up->conf->name, status_or_neg, p->req->request_id);
    gw_metrics_fallback(p->w->metrics);
    gw_metrics_side_fallback(p->w->metrics, p->route->id, p->up->conf->name);
    head_release(p);
    p->head = head;
    p->head_len = hl;
    p->flags |= P_FELL_BACK;
    p->ui = fb;
    p->up = up;
    p->req->upstream_name = up->name; /* not conf's: a retired set may go first */
    p->connect_attempts = 0;
    p->stale_retries = 0;
    p->last_endpoint = -1;
    start_attempt(p);
    return 1;
}

static void start_attempt(proxy_req *p);

static void count_error(proxy_req *p, enum gw_upstream_err_kind kind)
{
    gw_metrics_upstream_error(p->w->metrics, kind);
}

static void fail_before_response(proxy_req *p, int err, int phase)
{
    if (phase == GW_UPHASE_CONNECT && try_fallback(p, -1))
        return;
    switch (err) {
    case GW_ETIMEOUT:
        proxy_error(p, 504, phase == GW_UPHASE_CONNECT ? "upstream connect timeout" : "upstream timeout");
        return;
    case GW_ECONNECT:
        proxy_error(p, 502, "upstream connect failed");
        return;
    case GW_EUPSTREAM_PROTO:
        proxy_error(p, 502, "upstream sent an invalid response");
        return;
    default:
        proxy_error(p, 502, "upstream connection failed");
        return;
    }
}

static int method_is_idempotent(const gw_request *req);

static void up_on_error(gw_uconn *u, void *data, int err, int phase)
{
    proxy_req *p = data;
    (void)u;
    p->u = NULL;
    p->span_err = gw_errname(err);
    count_error(p, err == GW_ETIMEOUT ? GW_UERR_TIMEOUT
                   : err == GW_ECONNECT ? GW_UERR_CONNECT
                   : err == GW_EUPSTREAM_PROTO ? GW_UERR_PROTOCOL : GW_UERR_RESET);
    if (p->flags & P_RESP_BEGUN) {
        /* bytes of the response reached the client: never retried, only cut */
        gw_request *req = p->req;
        proxy_free(p);
        gw_response_fail(req);
        return;
    }
    int body_sent = p->flags & P_BODY_STARTED;
    if (p->flags & P_UPGRADE) { /* an upgrade is tried once, on a connection of its own */
        fail_before_response(p, err, phase);
        return;
    }
    if (phase == GW_UPHASE_CONNECT && p->connect_attempts < 2 && p->up->n_endpoints > 1) {
        start_attempt(p); /* connect failed: nothing was sent, try another endpoint once */
        return;
    }
    if (phase == GW_UPHASE_REQUEST && (p->flags & P_REUSED) && !body_sent && p->stale_retries < 1 &&
        err != GW_ETIMEOUT && method_is_idempotent(p->req)) {
        /* a pooled connection the upstream had closed: send again on a fresh one */
        p->stale_retries++;
        p->connect_attempts = 0;
        start_attempt(p);
        return;
    }
    fail_before_response(p, err, phase);
}

/* RFC 9110 §9.2.2: only these may be sent twice without the client's say-so. */
static int method_is_idempotent(const gw_request *req)
{
    static const char *const ok[] = { "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE" };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (gw_slice_eq(req->method, ok[i]))
            return 1;
    return 0;
}

static int write_upstream(proxy_req *p, uv_buf_t *bufs, unsigned n)
{
    int r = gw_uconn_write(p->u, bufs, n);
    if (r == 1 && !(p->flags & P_BODY_PAUSED)) {
        p->flags |= P_BODY_PAUSED;
        gw_request_pause_body(p->req);
    }
    return r;
}

static void up_on_ready(gw_uconn *u, void *data)
{
    proxy_req *p = data;
    gw_request *req = p->req;
    uv_buf_t b = uv_buf_init(p->head, (unsigned)p->head_len);
    p->t_sent_ns = uv_hrtime();
    if (gw_uconn_reused(u))
        p->flags |= P_REUSED;
    else
        p->flags &= ~P_REUSED;
    int hold = req->has_body && !(p->flags & P_BODY_STARTED);
    if (!hold && gw_uconn_write(u, &b, 1) < 0) {
        /* the error arrives through on_error when the write callback fails; a failed
         * try_write on a pooled socket is a stale connection */
        gw_uconn_abort(u);
        p->u = NULL;
        up_on_error(u, p, GW_ERESET, GW_UPHASE_REQUEST);
        return;
    }
    if (p->flags & P_UPGRADE)
        gw_uconn_allow_upgrade(u);
    gw_uconn_read_response(u, req->is_head);
    if (hold) {
        /* the head leaves with the first body bytes (client_on_body) or at the body's end */
        p->flags |= P_HEAD_HELD | P_BODY_STARTED;
        gw_request_read_body(req);
    } else if (!req->has_body) {
        p->flags |= P_BODY_DONE;
    }
}

static void start_attempt(proxy_req *p)
{
    gw_endpoint *ep = gw_upstream_pick(p->up, p->connect_attempts ? p->last_endpoint : -1);
    if (!ep) {
        count_error(p, GW_UERR_NO_ENDPOINT);
        if (try_fallback(p, -1)) /* every endpoint is down: unreachable, as for a refusal */
            return;
        proxy_error(p, 503, "no healthy endpoint");
        return;
    }
    p->connect_attempts++;
    p->last_endpoint = ep->index;
    int reused = 0;
    /* with a pooled connection on_ready runs inside this call and may free p: nothing
     * below may touch p unless the open failed. A tunnel's connection is never pooled:
     * an upgrade takes a new one (no stale pooled connection to replay on) */
    if ((p->flags & P_UPGRADE) ? gw_uconn_open_new(ep, &uconn_cb, p, &p->u) < 0
                               : gw_uconn_open(ep, &uconn_cb, p, &p->u, &reused) < 0) {
        p->u = NULL;
        up_on_error(NULL, p, GW_ECONNECT, GW_UPHASE_CONNECT);
    }
}

/* ---- request body -------------------------------------------------------------------- */

/* Keeps a copy of the body for the shadow (before the upstream write, which may end p). */
static void shadow_keep_body(proxy_req *p, const char *data, size_t n)
{
    if (!p->sh_req)
        return;
    char *nb = p->sh_len + n - p->sh_head_len <= SHADOW_BODY_MAX ? realloc(p->sh_req, p->sh_len + n) : NULL;
    if (!nb) { /* too large to shadow: the primary goes on alone */
        free(p->sh_req);
        p->sh_req = NULL;
        return;
    }
    memcpy(nb + p->sh_len, data, n);
    p->sh_req = nb;
    p->sh_len += n;
}

/* The whole body is in: send the shadow copy, framed as the head says (Content-Length as the
 * client sent it, or one chunk). Not when the primary already answered: nothing to compare. */
static void shadow_send_with_body(proxy_req *p)
{
    char *buf = p->sh_req;
    size_t len = p->sh_len;
    p->sh_req = NULL;
    if (!buf)
        return;
    if (p->flags & P_RESP_BEGUN) {
        free(buf);
        return;
    }
    if (p->req->chunked) {
        size_t body = len - p->sh_head_len;
        char *framed = malloc(len + 32);
        if (!framed) {
            free(buf);
            return;
        }
        memcpy(framed, buf, p->sh_head_len);
        size_t at = p->sh_head_len;
        if (body) {
            at += gw_chunk_size_line(framed + at, body);
            memcpy(framed + at, buf + p->sh_head_len, body);
            at += body;
            memcpy(framed + at, "\r\n", 2);
            at += 2;
        }
        memcpy(framed + at, "0\r\n\r\n", 5);
        len = at + 5;
        free(buf);
        buf = framed;
    }
    gw_worker *w = p->w;
    p->shadow = gw_shadow_start(&w->upstreams[p->sh_ui], w->metrics, w->events, p->table,
                                p->route, buf, len, p->req, p->sh_span);
    free(buf);
}

/* The held head as the first buffer of the write about to happen (see up_on_ready). */
static unsigned take_held_head(proxy_req *p, uv_buf_t *b)
{
    if (!(p->flags & P_HEAD_HELD))
        return 0;
    p->flags &= ~P_HEAD_HELD;
    *b = uv_buf_init(p->head, (unsigned)p->head_len);
    return 1;
}

static void client_on_body(gw_request *req, const char *data, size_t n)
{
    proxy_req *p = req->data;
    shadow_keep_body(p, data, n);
    if (!p->u || (p->flags & P_HEAD_LOST))
        return;
    uv_buf_t bufs[4];
    char size_line[24];
    unsigned nb = take_held_head(p, &bufs[0]);
    if (req->chunked) {
        bufs[nb++] = uv_buf_init(size_line, (unsigned)gw_chunk_size_line(size_line, n));
        bufs[nb++] = uv_buf_init((char *)data, (unsigned)n);
        bufs[nb++] = uv_buf_init("\r\n", 2);
    } else {
        bufs[nb++] = uv_buf_init((char *)data, (unsigned)n);
    }
    if (write_upstream(p, bufs, nb) < 0) {
        gw_uconn *u = p->u;
        p->u = NULL;
        gw_uconn_abort(u);
        up_on_error(u, p, GW_ERESET, GW_UPHASE_REQUEST);
    }
}

static void client_on_body_end(gw_request *req)
{
    proxy_req *p = req->data;
    p->flags |= P_BODY_DONE;
    shadow_send_with_body(p);
    if (!p->u || (p->flags & P_HEAD_LOST))
        return;
    uv_buf_t b[2];
    unsigned nb = take_held_head(p, &b[0]); /* a body that ended without bytes */
    if (req->chunked)
        b[nb++] = uv_buf_init("0\r\n\r\n", 5);
    if (nb && write_upstream(p, b, nb) < 0) {
        gw_uconn *u = p->u;
        p->u = NULL;
        gw_uconn_abort(u);
        up_on_error(u, p, GW_ERESET, GW_UPHASE_REQUEST);
    }
}

static void up_on_drain(gw_uconn *u, void *data)
{
    proxy_req *p = data;
    (void)u;
    if (p->flags & P_BODY_PAUSED) {
        p->flags &= ~P_BODY_PAUSED;
        gw_request_read_body(p->req);
    }
}

/* ---- response ------------------------------------------------------------------------ */

static void on_evicted(void *arg);

/* A successful change of a cached path: the answer leaves once the eviction is confirmed
 * (or could not be within cache.timeout_ms: the path is marked unservable meanwhile), so a
 * read sent after it, on any worker, never meets the old copy. The head is kept and the
 * upstream paused; body bytes already read are kept too. Returns 1 when held, 0 when the
 * answer may go now (nothing to wait for, or out of memory: the mark alone). */
static int hold_for_eviction(proxy_req *p, gw_uconn *u, int status, const char *hdrs,
                             size_t hl, int64_t body_len)
{
    cmp_evict *e = cmp_lookup_evict(p->w->composer, p->table, p->cache_key, on_evicted, p);
    if (!e)
        return 0;
    size_t cap = hl + 4096;
    char *held = malloc(cap);
    if (!held) {
        cmp_evict_cancel(e);
        return 0;
    }
    memcpy(held, hdrs, hl);
    p->evict = e;
    p->held = held;
    p->held_hlen = p->held_len = hl;
    p->held_cap = cap;
    p->held_status = status;
    p->held_body_len = body_len;
    p->flags |= P_RESP_HELD;
    gw_uconn_pause(u);
    return 1;
}

static int hold_body(proxy_req *p, const char *b, size_t n)
{
    if (p->held_len + n > p->held_cap) {
        size_t cap = (p->held_len + n) * 2;
        char *nb = realloc(p->held, cap);
        if (!nb)
            return -1;
        p->held = nb;
        p->held_cap = cap;
    }
    memcpy(p->held + p->held_len, b, n);
    p->held_len += n;
    return 0;
}

/* The eviction is done (or timed out): the held answer goes out. */
static void on_evicted(void *arg)
{
    proxy_req *p = arg;
    gw_request *req = p->req;
    char *held = p->held;
    p->evict = NULL;
    p->held = NULL;
    p->flags &= ~P_RESP_HELD;
    int r = gw_response_begin(req, p->held_status, held, p->held_hlen, p->held_body_len);
    if (r == 0 && p->held_len > p->held_hlen)
        r = gw_response_body(req, held + p->held_hlen, p->held_len - p->held_hlen);
    free(held);
    if (r < 0) {
        if (p->u) {
            gw_uconn_abort(p->u);
            p->u = NULL;
        }
        return; /* the client is going away: on_abort will free p */
    }
    if (p->flags & P_DONE_HELD) {
        proxy_free(p);
        gw_response_end(req);
        return;
    }
    if (r == 0 && p->u)
        gw_uconn_resume(p->u); /* r == 1: the client is slow, on_drain resumes */
}

/* ---- upgrades (tunnel.h) ------------------------------------------------------------- */

const char *gw_proxy_upgrade_of(const rt_route *route, const gw_request *req)
{
    if (!route->upgrade || req->has_body || req->http_major != 1 || req->http_minor == 0)
        return NULL; /* (with a body, from HTTP/1.0 or HTTP/2: served as a plain request) */
    gw_slice offers[8];
    int n = gw_upgrade_offers(req->headers, req->n_headers, offers, 8);
    for (int i = 0; i < n; i++) {
        const char *t = rt_route_upgrade_allows(route, offers[i]);
        if (t)
            return t;
    }
    return NULL;
}

static void tunnel_closed(const gw_tunnel_stats *st, void *data)
{
    gw_tunnels_closed(data, st);
}

/* The upstream switched (101): the answer goes to the client with the protocol named, then
 * the two connections are one tunnel, counted on the route and upstream until it closes. */
static void open_tunnel(proxy_req *p, gw_uconn *u, const gw_header *headers, int n)
{
    gw_request *req = p->req;
    gw_slice to = { NULL, 0 };
    for (int i = 0; i < n && !to.p; i++)
        if (gw_slice_ieq(headers[i].name, "upgrade"))
            to = headers[i].value;
    req->upstream_ms = (double)(uv_hrtime() - p->t_sent_ns) / 1e6;
    p->flags |= P_RESP_BEGUN;
    p->u = NULL;
    if (!gw_slice_ieq(to, p->upgrade)) {
        gw_uconn_abort(u);
        proxy_error(p, 502, "upstream switched to a protocol the client did not ask for");
        return;
    }
    static _Thread_local char hdrs[RESP_HEADERS_MAX];
    int hl = gw_build_response_headers(headers, n, hdrs, sizeof hdrs - 128);
    if (hl < 0) {
        gw_uconn_abort(u);
        proxy_error(p, 502, "upstream response headers too large");
        return;
    }
    hl += snprintf(hdrs + hl, 128, "Connection: upgrade\r\nUpgrade: %.*s\r\n", (int)to.n, to.p);
    gw_worker *w = p->w;
    const char *route_id = p->route->id, *up_name = p->up->conf->name;
    int websocket = !strcmp(p->upgrade, "websocket"); /* (the route's string dies with p) */
    uint32_t idle = p->route->tunnel_idle_timeout_ms ? p->route->tunnel_idle_timeout_ms
                                                     : w->cfg->limits.tunnel_idle_timeout_ms;
    gw_end client, upstream;
    client_span(p); /* the exchange up to the 101 (it reads the request, gone after) */
    req->data = NULL;
    p->req = NULL; /* gone once upgraded; nothing of it is touched after */
    if (gw_request_upgrade(req, hdrs, (size_t)hl, &client) != 0) {
        p->req = req;
        req->data = p;
        gw_uconn_abort(u);
        proxy_error(p, 503, "the gateway is shutting down");
        return;
    }
    if (gw_uconn_upgrade(u, &upstream) != 0) { /* cannot happen after a 101 it accepted */
        client.ops->close(client.conn);
        gw_uconn_abort(u);
        proxy_free(p);
        return;
    }
    gw_tunnel_pair *pair = gw_tunnels_opened(route_id, up_name);
    proxy_free(p); /* the route table may go: the tunnel keeps only copies */
    if (!gw_tunnel_start(&w->loop, client, upstream, idle, websocket, tunnel_closed, pair))
        gw_tunnels_closed(pair, &(gw_tunnel_stats){ .reason = GW_TUNNEL_CLIENT_CLOSED });
}

static void up_on_head(gw_uconn *u, void *data, int status, const gw_header *headers, int n,
                       int64_t body_len)
{
    proxy_req *p = data;
    gw_request *req = p->req;
    p->span_status = (uint16_t)status;
    if (status == 101) { /* only when asked for (the connection refuses any other) */
        open_tunnel(p, u, headers, n);
        return;
    }
    if ((status == 404 || status >= 500) && try_fallback(p, status))
        return; /* this connection was closed; the replay is under way */
    static _Thread_local char hdrs[RESP_HEADERS_MAX];
    int hl = gw_build_response_headers(headers, n, hdrs, sizeof hdrs);
    req->upstream_ms = (double)(uv_hrtime() - p->t_sent_ns) / 1e6;
    if (hl < 0) {
        p->u = NULL;
        gw_uconn_abort(u);
        proxy_error(p, 502, "upstream response headers too large");
        return;
    }
    int held = (p->flags & P_INVALIDATE) && status >= 200 && status < 300 &&
               hold_for_eviction(p, u, status, hdrs, (size_t)hl, body_len);
    p->flags |= P_RESP_BEGUN; /* held or not: no retry, no fallback from here on */
    if (p->flags & P_HEAD_HELD) /* answered before it heard the request */
        p->flags = (p->flags & ~P_HEAD_HELD) | P_HEAD_LOST;
    head_release(p); /* no retry from here on */
    if (p->shadow)
        gw_shadow_primary_head(p->shadow, status);
    if (held)
        return;
    if (gw_response_begin(req, status, hdrs, (size_t)hl, body_len) < 0) {
        p->u = NULL;
        gw_uconn_abort(u);
        /* the client is going away: on_abort will free p */
    }
}

static void up_on_body(gw_uconn *u, void *data, const char *b, size_t n)
{
    proxy_req *p = data;
    if (p->shadow)
        gw_shadow_primary_body(p->shadow, b, n);
    if (p->flags & P_RESP_HELD) {
        if (hold_body(p, b, n) < 0) {
            gw_request *req = p->req;
            p->u = NULL;
            gw_uconn_abort(u);
            proxy_free(p);
            gw_response_fail(req);
        }
        return;
    }
    int r = gw_response_body(p->req, b, n);
    if (r == 1) {
        gw_uconn_pause(u);
    } else if (r < 0) {
        p->u = NULL;
        gw_uconn_abort(u); /* on_abort follows from the server and frees p */
    }
}

static void up_on_done(gw_uconn *u, void *data)
{
    proxy_req *p = data;
    gw_request *req = p->req;
    p->u = NULL;
    if (p->shadow) {
        gw_shadow_primary_done(p->shadow, 1);
        p->shadow = NULL;
    }
    if ((p->flags & P_BODY_DONE) && !(p->flags & (P_HEAD_LOST | P_UPGRADE)))
        gw_uconn_release(u); /* (one that was asked to upgrade and refused is not pooled) */
    else
        gw_uconn_abort(u); /* the upstream answered before taking the whole request */
    if (p->flags & P_RESP_HELD) {
        p->flags |= P_DONE_HELD; /* on_evicted ends it */
        return;
    }
    proxy_free(p);
    gw_response_end(req);
}

static void client_on_drain(gw_request *req)
{
    proxy_req *p = req->data;
    if (p && p->u)
        gw_uconn_resume(p->u);
}

static void client_on_abort(gw_request *req, int err)
{
    (void)err;
    proxy_req *p = req->data;
    if (p)
        proxy_free(p);
}

static const gw_uconn_cb uconn_cb = {
    .on_ready = up_on_ready,
    .on_head = up_on_head,
    .on_body = up_on_body,
    .on_done = up_on_done,
    .on_drain = up_on_drain,
    .on_error = up_on_error,
};

/* ---- start ------------------------------------------------------------------------- */

void gw_proxy_start(gw_request *req, gw_worker *w, rt_table *table, const rt_match *match, int ui)
{
    const rt_route *route = match->route;
    gw_upstream *up = &w->upstreams[ui];
    rt_match m = *match;
    if (route->max_body_bytes >= 0)
        req->max_body_bytes = (uint64_t)route->max_body_bytes;
    if (req->max_body_bytes && req->content_length > 0 &&
        (uint64_t)req->content_length > req->max_body_bytes) {
        req->upstream_name = NULL;
        gw_response_error(req, 413, "request body too large");
        return;
    }
    proxy_req *p = proxy_get();
    if (!p) {
        gw_response_error(req, 500, "out of memory");
        return;
    }
    char *head;
    size_t hl;
    const char *upgrade = gw_proxy_upgrade_of(route, req);
    int st = build_head(req, up, &m, ui, NULL, upgrade, p->span_id, p->head_inline,
                        sizeof p->head_inline,
                        &head, &hl);
    if (st != 0) {
        proxy_recycle(p);
        req->upstream_name = NULL;
        gw_response_error(req, st, st == 414 ? "rewritten URI too long"
                                   : st == 431 ? "request head too large" : "out of memory");
        return;
    }
    rt_table_ref(table);
    p->req = req;
    p->w = w;
    p->table = table;
    p->route = route;
    p->match = m;
    p->ui = ui;
    p->up = up;
    p->head = head;
    p->head_len = hl;
    p->last_endpoint = -1;
    /* the clock only when this thread exports the span (spans off: one thread-local load) */
    p->span_t0 = p->span_id[0] && gw_span_enabled(req->trace.flags) ? uv_hrtime() : 0;
    if (upgrade) {
        p->flags |= P_UPGRADE;
        p->upgrade = upgrade;
        req->data = p;
        start_attempt(p); /* no shadow copy, no cache eviction */
        return;
    }
    rt_match gm; /* the path's reads may be cached by another route than this write's */
    if (w->composer &&
        (gw_slice_eq(req->method, "PUT") || gw_slice_eq(req->method, "PATCH") ||
         gw_slice_eq(req->method, "DELETE")) &&
        (route->cache ||
         (rt_table_match(table, GW_SLICE_LIT("GET"), req->path, &gm) == 0 && gm.route->cache))) {
        p->cache_key = strndup(req->path.p, req->path.n); /* the head dies with the body read */
        if (p->cache_key)
            p->flags |= P_INVALIDATE;
    }
    req->data = p;
    /* a shadow copy to the candidate (methods as the route says: safe ones by default);
     * with a body, the copy leaves when the body has streamed to the primary */
    int si = rt_route_shadow(route, req->method, gw_random64());
    if (si >= 0 && si != ui && !gw_inflight_busy(w->inflight, si)) { /* shed first */
        char *sh;
        size_t shl;
        if (build_head(req, &w->upstreams[si], &m, si, GW_TRACE_MARK_SHADOW, NULL, p->sh_span, NULL, 0,
                       &sh, &shl) == 0) {
            if (req->has_body) {
                p->sh_req = sh;
                p->sh_len = p->sh_head_len = shl;
                p->sh_ui = si;
            } else {
                p->shadow = gw_shadow_start(&w->upstreams[si], w->metrics, w->events, table,
                                            route, sh, shl, req, p->sh_span);
                free(sh);
            }
        }
    }
    start_attempt(p);
}

const gw_handler gw_proxy_handler = {
    .on_request = NULL, /* the router starts it: gw_proxy_start */
    .on_body = client_on_body,
    .on_body_end = client_on_body_end,
    .on_drain = client_on_drain,
    .on_abort = client_on_abort,
};
