/* fetch.c — internal GETs (see fetch.h). One cmp_fetch per request; the exchange itself is a
 * one-shot (http/oneshot.h, class GW_ONESHOT_REQUEST: a client waits for it, so the background
 * caps do not shed it). Freed in one place (fetch_free) after its timer handle closed; it ends
 * exactly once, by the exchange's callback or by an early result (fetch_end_early). */
#include "composers/fetch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/gw_errors.h"
#include "http/oneshot.h"
#include "http/span.h"
#include "http/request_id.h"
#include "routes/policy.h"
#include "composers/cache_policy.h"
#include "composers/worker_int.h"

#define BODY_MAX (1 << 20)
#define PATH_MAX_LEN 2048

struct cmp_fetch {
    cmp_worker *w;
    gw_oneshot *o;        /* the exchange under way; NULL before, after, or with an early end */
    uv_timer_t timer;     /* defers an early result to the next loop turn */
    int upstream;         /* index, -1 before one was chosen */
    const char *why;
    int ended;            /* the result is known; the callback is due or done */
    int cancelled;
    cmp_fetch_cb cb;
    void *arg;
    /* its CLIENT span (http/span.h), recorded when the answer comes: span_id "" = none */
    char span_id[17], trace_id[33], parent_id[17];
    uint8_t trace_flags;
    uint64_t t0;
    char route[64];
};

static void fetch_free(uv_handle_t *h)
{
    cmp_fetch *f = h->data;
    free(f);
}

static const char *upstream_name(cmp_fetch *f)
{
    return f->upstream >= 0 ? f->w->upstreams[f->upstream].name : NULL;
}

static void deliver(uv_timer_t *t)
{
    cmp_fetch *f = t->data;
    static const cmp_headers none = { NULL, 0, 0 };
    if (!f->cancelled)
        f->cb(0, NULL, 0, &none, f->why, 0, upstream_name(f), f->arg);
    uv_close((uv_handle_t *)&f->timer, fetch_free);
}

static void breaker_result(cmp_fetch *f, int ok)
{
    if (f->upstream < 0)
        return;
    cmp_breaker *b = &f->w->breakers[f->upstream];
    if (ok)
        cmp_breaker_success(b);
    else
        cmp_breaker_failure(b, uv_now(f->w->loop));
}

/* No exchange (no route, circuit open, ...): the callback on the next loop turn (the timer at
 * 0), so it never runs inside a caller's call. */
static void fetch_end_early(cmp_fetch *f, const char *why)
{
    f->ended = 1;
    f->why = why;
    uv_timer_start(&f->timer, deliver, 0, 0);
}

/* The leg's CLIENT span: STATUS (0: none came), WHY when it failed. */
static void record_span(cmp_fetch *f, int status, const char *why)
{
    gw_span *s = f->span_id[0] ? gw_span_begin(f->trace_flags) : NULL;
    if (!s)
        return;
    s->kind = GW_SPAN_CLIENT;
    s->status = (uint16_t)status;
    s->error = !status || status >= 500;
    memcpy(s->trace_id, f->trace_id, sizeof s->trace_id);
    memcpy(s->span_id, f->span_id, sizeof s->span_id);
    memcpy(s->parent_id, f->parent_id, sizeof s->parent_id);
    GW_SPAN_SET(s->method, "GET");
    GW_SPAN_SET(s->route, f->route);
    GW_SPAN_SET(s->upstream, upstream_name(f));
    GW_SPAN_SET(s->role, "fetch");
    GW_SPAN_SET(s->error_text, why ? why : s->error ? "upstream error status" : "");
    s->start_ns = f->t0;
    s->end_ns = uv_hrtime();
    gw_span_commit();
}

/* The exchange's answer (already on a later loop turn than cmp_fetch_start). */
static void on_result(gw_oneshot *o, const gw_oneshot_result *r, void *arg)
{
    cmp_fetch *f = arg;
    (void)o;
    f->o = NULL;
    f->ended = 1;
    int status = 0, timed_out = 0;
    const char *why = NULL;
    if (r->err == 0 && r->too_big) {
        breaker_result(f, 1); /* it answered */
        why = "answer too large";
    } else if (r->err == 0) {
        breaker_result(f, r->status < 500); /* a 4xx means the upstream is alive */
        status = r->status;
    } else if (r->err == GW_ECLOSED || r->err == GW_ENOMEM) {
        if (f->upstream >= 0) /* no verdict on the upstream */
            cmp_breaker_abandon(&f->w->breakers[f->upstream]);
        why = r->err == GW_ECLOSED ? "shutting down" : "out of memory";
    } else {
        breaker_result(f, 0);
        timed_out = r->err == GW_ETIMEOUT;
        why = timed_out ? "timeout" : r->err == GW_ECONNECT ? "connect failed"
                                                             : "upstream connection failed";
    }
    record_span(f, status, why);
    cmp_headers h = { NULL, 0, 0 };
    if (status)
        h = (cmp_headers){ r->headers, r->headers_len, r->headers_truncated };
    f->cb(status, status ? r->body : NULL, status ? r->len : 0, &h, why, timed_out,
          upstream_name(f), f->arg);
    uv_close((uv_handle_t *)&f->timer, fetch_free);
}

cmp_fetch *cmp_fetch_start(cmp_worker *w, rt_table *table, const char *url,
                           const char *request_id, const gw_trace_ctx *trace,
                           const char *client_ip, uint32_t timeout_ms, cmp_fetch_cb cb,
                           void *arg)
{
    return cmp_fetch_start_on(w, table, url, -1, request_id, trace, client_ip, timeout_ms, cb,
                              arg);
}

cmp_fetch *cmp_fetch_start_on(cmp_worker *w, rt_table *table, const char *url, int ui,
                              const char *request_id, const gw_trace_ctx *trace,
                              const char *client_ip, uint32_t timeout_ms, cmp_fetch_cb cb,
                              void *arg)
{
    cmp_fetch *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->w = w;
    f->cb = cb;
    f->arg = arg;
    f->upstream = -1;
    uv_timer_init(w->loop, &f->timer);
    f->timer.data = f;

    size_t n = strlen(url);
    const char *qm = strchr(url, '?');
    gw_slice path = { url, qm ? (size_t)(qm - url) : n };
    gw_slice query = qm ? (gw_slice){ qm + 1, n - path.n - 1 } : (gw_slice){ NULL, 0 };
    rt_match m;
    if (!table || rt_table_match(table, GW_SLICE_LIT("GET"), path, &m) != 0) {
        fetch_end_early(f, "no route");
        return f;
    }
    /* the caller's side (the route's pick for its client), else the route decides, as for
     * a client request: split by weight (no stickiness: there is no client key), no
     * override */
    if (ui < 0 || ui >= w->n_upstreams)
        ui = rt_route_pick(m.route, (gw_slice){ NULL, 0 }, gw_random64());
    gw_upstream *up = &w->upstreams[ui];
    if (!cmp_breaker_allow(&w->breakers[ui], uv_now(w->loop))) {
        fetch_end_early(f, "circuit open");
        return f;
    }
    f->upstream = ui;
    char target[PATH_MAX_LEN];
    if (rt_rewrite_for(&m, ui, path, query, target, sizeof target) < 0) {
        breaker_result(f, 1);
        fetch_end_early(f, "URL too long");
        return f;
    }
    gw_endpoint *ep = gw_upstream_pick(up, -1);
    if (!ep || !up->oneshots) {
        breaker_result(f, 0);
        fetch_end_early(f, "no healthy endpoint");
        return f;
    }
    const char *host = up->conf->host[0] ? up->conf->host : up->conf->endpoints[0].address;
    char trace_lines[GW_TRACE_LINES_MAX];
    gw_trace_ctx_lines(trace, trace_lines, f->span_id); /* a child span per leg */
    if (!gw_span_enabled(trace ? trace->t.flags : 0))
        f->span_id[0] = '\0';
    if (f->span_id[0]) {
        memcpy(f->trace_id, trace->t.trace_id, sizeof f->trace_id);
        memcpy(f->parent_id, trace->t.span_id, sizeof f->parent_id);
        f->trace_flags = trace->t.flags;
        f->t0 = uv_hrtime();
        snprintf(f->route, sizeof f->route, "%s", m.route->id);
    }
    size_t cap = strlen(target) + strlen(host) + strlen(trace_lines) + 512;
    char *head = malloc(cap);
    if (!head) {
        cmp_breaker_abandon(&w->breakers[ui]);
        fetch_end_early(f, "out of memory");
        return f;
    }
    int hl = snprintf(head, cap,
                      "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n"
                      "X-Request-Id: %s\r\n%sX-Forwarded-For: %s\r\nVia: 1.1 gateway\r\n\r\n",
                      target, host, request_id, trace_lines, client_ip);
    int skip;
    int r = gw_oneshot_start_keep(up->oneshots, ep, GW_ONESHOT_REQUEST, head, (size_t)hl, 0,
                                  BODY_MAX, timeout_ms, cmp_kept_headers, on_result, f, &f->o,
                                  &skip);
    free(head);
    if (r < 0) {
        /* refused only once the worker is closing, or out of memory */
        cmp_breaker_abandon(&w->breakers[ui]);
        fetch_end_early(f, skip ? "shutting down" : "out of memory");
    }
    return f;
}

void cmp_fetch_cancel(cmp_fetch *f)
{
    if (!f || f->cancelled)
        return;
    f->cancelled = 1;
    if (!f->ended) {
        f->ended = 1;
        /* no result: a half-open circuit must not wait forever for this probe */
        if (f->upstream >= 0)
            cmp_breaker_abandon(&f->w->breakers[f->upstream]);
        gw_oneshot_cancel(f->o);
        f->o = NULL;
        uv_close((uv_handle_t *)&f->timer, fetch_free);
    }
    /* else: the callback is scheduled; deliver() sees cancelled and only frees */
}
