/* fetch.c — internal GETs (see fetch.h). One cmp_fetch per exchange, freed in one place
 * (fetch_free) after its timer handle closed; it ends exactly once (fetch_end). */
#include "composers/fetch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/gw_errors.h"
#include "http/request_id.h"
#include "routes/policy.h"
#include "composers/worker_int.h"

#define BODY_MAX (1 << 20)
#define PATH_MAX_LEN 2048

struct cmp_fetch {
    cmp_worker *w;
    gw_uconn *u;
    uv_timer_t timer;
    int upstream;         /* index, -1 before one was chosen */
    int status;
    char *body;
    size_t len;
    char *head;
    size_t head_len;
    const char *why;
    int timed_out;
    int ended;            /* the result is set; the callback is due or done */
    int cancelled;
    cmp_fetch_cb cb;
    void *arg;
};

static void fetch_free(uv_handle_t *h)
{
    cmp_fetch *f = h->data;
    free(f->body);
    free(f->head);
    free(f);
}

static void deliver(uv_timer_t *t)
{
    cmp_fetch *f = t->data;
    if (!f->cancelled) {
        const char *up = f->upstream >= 0 ? f->w->upstreams[f->upstream].conf->name : NULL;
        f->cb(f->status, f->body, f->len, f->why, f->timed_out, up, f->arg);
    }
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

/* Sets the result and schedules the callback on the next loop turn (the timer, re-armed at
 * 0), so it never runs inside a caller's call. */
static void fetch_end(cmp_fetch *f, int status, const char *why)
{
    if (f->ended)
        return;
    f->ended = 1;
    f->status = status;
    f->why = why;
    if (f->u) {
        gw_uconn_abort(f->u);
        f->u = NULL;
    }
    uv_timer_start(&f->timer, deliver, 0, 0);
}

static void on_timeout(uv_timer_t *t)
{
    cmp_fetch *f = t->data;
    f->timed_out = 1;
    breaker_result(f, 0);
    fetch_end(f, 0, "timeout");
}

static void f_on_ready(gw_uconn *u, void *data)
{
    cmp_fetch *f = data;
    uv_buf_t b = uv_buf_init(f->head, (unsigned)f->head_len);
    if (gw_uconn_write(u, &b, 1) < 0) {
        breaker_result(f, 0);
        fetch_end(f, 0, "upstream connection failed");
        return;
    }
    gw_uconn_read_response(u, 0);
}

static void f_on_head(gw_uconn *u, void *data, int status, const gw_header *h, int n, int64_t len)
{
    cmp_fetch *f = data;
    (void)u, (void)h, (void)n, (void)len;
    f->status = status;
}

static void f_on_body(gw_uconn *u, void *data, const char *p, size_t n)
{
    cmp_fetch *f = data;
    (void)u;
    if (f->ended)
        return;
    if (f->len + n > BODY_MAX) {
        breaker_result(f, 1);
        fetch_end(f, 0, "answer too large");
        return;
    }
    char *nb = realloc(f->body, f->len + n);
    if (!nb) {
        fetch_end(f, 0, "out of memory");
        return;
    }
    memcpy(nb + f->len, p, n);
    f->body = nb;
    f->len += n;
}

static void f_on_done(gw_uconn *u, void *data)
{
    cmp_fetch *f = data;
    f->u = NULL;
    gw_uconn_release(u);
    breaker_result(f, f->status < 500); /* a 4xx means the upstream is alive */
    fetch_end(f, f->status, NULL);
}

static void f_on_drain(gw_uconn *u, void *data)
{
    (void)u, (void)data;
}

static void f_on_error(gw_uconn *u, void *data, int err, int phase)
{
    cmp_fetch *f = data;
    (void)u, (void)phase;
    f->u = NULL;
    breaker_result(f, 0);
    if (err == GW_ETIMEOUT)
        f->timed_out = 1;
    fetch_end(f, 0, err == GW_ETIMEOUT ? "timeout" : err == GW_ECONNECT ? "connect failed"
                                                    : "upstream connection failed");
}

static const gw_uconn_cb fetch_cb = {
    .on_ready = f_on_ready,
    .on_head = f_on_head,
    .on_body = f_on_body,
    .on_done = f_on_done,
    .on_drain = f_on_drain,
    .on_error = f_on_error,
};

cmp_fetch *cmp_fetch_start(cmp_worker *w, rt_table *table, const char *url,
                           const char *request_id, const char *client_ip, uint32_t timeout_ms,
                           cmp_fetch_cb cb, void *arg)
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
    uv_timer_start(&f->timer, on_timeout, timeout_ms, 0);

    size_t n = strlen(url);
    const char *qm = strchr(url, '?');
    gw_slice path = { url, qm ? (size_t)(qm - url) : n };
    gw_slice query = qm ? (gw_slice){ qm + 1, n - path.n - 1 } : (gw_slice){ NULL, 0 };
    rt_match m;
    if (!table || rt_table_match(table, GW_SLICE_LIT("GET"), path, &m) != 0) {
        fetch_end(f, 0, "no route");
        return f;
    }
    /* the route decides the side, as for a client request: split by weight (no stickiness:
     * there is no client key), no override */
    int ui = rt_route_pick(m.route, (gw_slice){ NULL, 0 }, gw_random64());
    gw_upstream *up = &w->upstreams[ui];
    if (!cmp_breaker_allow(&w->breakers[ui], uv_now(w->loop))) {
        fetch_end(f, 0, "circuit open");
        return f;
    }
    f->upstream = ui;
    char target[PATH_MAX_LEN];
    if (rt_rewrite_for(&m, ui, path, query, target, sizeof target) < 0) {
        breaker_result(f, 1);
        fetch_end(f, 0, "URL too long");
        return f;
    }
    gw_endpoint *ep = gw_upstream_pick(up, -1);
    if (!ep) {
        breaker_result(f, 0);
        fetch_end(f, 0, "no healthy endpoint");
        return f;
    }
    const char *host = up->conf->host[0] ? up->conf->host : up->conf->endpoints[0].address;
    size_t cap = strlen(target) + strlen(host) + 512;
    f->head = malloc(cap);
    if (!f->head) {
        fetch_end(f, 0, "out of memory");
        return f;
    }
    f->head_len = (size_t)snprintf(f->head, cap,
                                   "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n"
                                   "X-Request-Id: %s\r\nX-Forwarded-For: %s\r\nVia: 1.1 gateway\r\n\r\n",
                                   target, host, request_id, client_ip);
    int reused;
    /* on_ready may run (and end the fetch) inside the open: the callback is deferred anyway */
    if (gw_uconn_open(ep, &fetch_cb, f, &f->u, &reused) < 0) {
        f->u = NULL;
        breaker_result(f, 0);
        fetch_end(f, 0, "connect failed");
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
        if (f->u) {
            gw_uconn_abort(f->u);
            f->u = NULL;
        }
        uv_timer_stop(&f->timer);
        uv_close((uv_handle_t *)&f->timer, fetch_free);
    }
    /* else: the callback is scheduled; deliver() sees cancelled and only frees */
}
