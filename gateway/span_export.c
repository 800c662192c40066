/* span_export.c — see span_export.h. Everything below but the counters belongs to the
 * exporter thread once it runs; the main thread only starts it, reads the counters and
 * stops it (uv_async). */
#include "gateway/span_export.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "http/gw_errors.h"
#include "http/oneshot.h"
#include "http/otlp_json.h"
#include "http/trace.h"
#include "http/upstream.h"

#define TICK_MAX_MS 100 /* how often the rings are looked at, at most */

typedef struct exporter {
    uv_thread_t thread;
    uv_loop_t loop;
    uv_timer_t timer;
    uv_async_t stop;
    gw_upstream_conf upconf;
    gw_upstream up;
    gw_oneshot_set set;
    gw_span_ring **rings;
    int n_rings;
    int next_ring;         /* where the next take starts: no worker starves the others */
    gw_span *batch;
    size_t n_batch, batch_max;
    size_t n_sending;      /* spans in the POST under way (0: none) */
    uint64_t last_send_ms; /* uv_now of the last POST (or start) */
    uint32_t flush_ms, timeout_ms;
    int stopping, closing;
    uint64_t stop_deadline_ms;
    gw_otlp_buf body;
    char *req;
    size_t req_cap;
    char service[128], path[384], hostport[128];
} exporter;

static exporter *ex;
/* counters, read by /metrics on the admin loop */
static atomic_uint_fast64_t n_exported, n_failed_posts, n_drop_export, n_drop_shutdown;

static size_t take(exporter *e)
{
    size_t got = 0;
    for (int k = 0; k < e->n_rings && e->n_batch < e->batch_max; k++) {
        gw_span_ring *r = e->rings[(e->next_ring + k) % e->n_rings];
        size_t n = gw_span_ring_take(r, e->batch + e->n_batch, e->batch_max - e->n_batch);
        e->n_batch += n;
        got += n;
    }
    e->next_ring = (e->next_ring + 1) % e->n_rings;
    return got;
}

/* Unix-epoch ns minus the monotonic clock, now: what turns span times into OTLP times. */
static int64_t mono_to_unix(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - (int64_t)uv_hrtime();
}

static void finish_stop(exporter *e);
static void send_batch(exporter *e, uint32_t deadline_ms);

static void on_posted(gw_oneshot *o, const gw_oneshot_result *r, void *arg)
{
    exporter *e = arg;
    (void)o;
    size_t n = e->n_sending;
    e->n_sending = 0;
    if (r->err == 0 && r->status >= 200 && r->status < 300) {
        atomic_fetch_add(&n_exported, n);
    } else {
        atomic_fetch_add(&n_failed_posts, 1);
        atomic_fetch_add(&n_drop_export, n);
    }
    if (!e->stopping) {
        /* a full batch waiting: send it now rather than at the next tick */
        take(e);
        if (e->n_batch == e->batch_max)
            send_batch(e, e->timeout_ms);
        return;
    }
    if (!e->closing) {
        uint64_t now = uv_now(&e->loop);
        take(e);
        if (e->n_batch && now < e->stop_deadline_ms && r->err != GW_ECLOSED)
            send_batch(e, (uint32_t)(e->stop_deadline_ms - now));
        if (!e->n_sending)
            finish_stop(e);
    }
}

/* POSTs the batch (then empty); on a refusal the batch is dropped and counted. */
static void send_batch(exporter *e, uint32_t deadline_ms)
{
    size_t n = e->n_batch;
    e->n_batch = 0;
    e->last_send_ms = uv_now(&e->loop);
    gw_endpoint *ep = gw_upstream_pick(&e->up, -1);
    if (!ep || gw_otlp_encode(e->batch, n, e->service, mono_to_unix(), &e->body) != 0) {
        atomic_fetch_add(&n_failed_posts, 1);
        atomic_fetch_add(&n_drop_export, n);
        return;
    }
    size_t need = e->body.len + strlen(e->path) + strlen(e->hostport) + 160;
    if (need > e->req_cap) {
        char *p = realloc(e->req, need);
        if (!p) {
            atomic_fetch_add(&n_failed_posts, 1);
            atomic_fetch_add(&n_drop_export, n);
            return;
        }
        e->req = p;
        e->req_cap = need;
    }
    int hl = snprintf(e->req, e->req_cap,
                      "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      e->path, e->hostport, e->body.len);
    memcpy(e->req + hl, e->body.p, e->body.len);
    gw_oneshot *o;
    int skip;
    e->n_sending = n;
    if (gw_oneshot_start(&e->set, ep, GW_ONESHOT_REQUEST, e->req, (size_t)hl + e->body.len, 0,
                         4096, deadline_ms, on_posted, e, &o, &skip) != 0) {
        e->n_sending = 0;
        atomic_fetch_add(&n_failed_posts, 1);
        atomic_fetch_add(&n_drop_export, n);
    }
}

static void on_tick(uv_timer_t *t)
{
    exporter *e = t->data;
    if (e->n_sending)
        return; /* one POST at a time: meanwhile the rings fill, then drop */
    take(e);
    if (e->n_batch &&
        (e->n_batch == e->batch_max || uv_now(&e->loop) - e->last_send_ms >= e->flush_ms))
        send_batch(e, e->timeout_ms);
}

static void closed(uv_handle_t *h)
{
    (void)h;
}

static void finish_stop(exporter *e)
{
    e->closing = 1;
    uint64_t left = e->n_batch;
    gw_span tmp[64];
    for (int i = 0; i < e->n_rings; i++)
        for (size_t n; (n = gw_span_ring_take(e->rings[i], tmp, 64)) > 0;)
            left += n;
    atomic_fetch_add(&n_drop_shutdown, left);
    e->n_batch = 0;
    gw_oneshot_abort_all(&e->set);
    gw_upstream_close_idle(&e->up);
    uv_close((uv_handle_t *)&e->timer, closed);
    uv_close((uv_handle_t *)&e->stop, closed);
}

static void on_stop(uv_async_t *a)
{
    exporter *e = a->data;
    if (e->stopping)
        return;
    e->stopping = 1;
    uv_timer_stop(&e->timer);
    e->stop_deadline_ms = uv_now(&e->loop) + e->timeout_ms;
    if (e->n_sending)
        return; /* on_posted goes on with the flush */
    take(e);
    if (e->n_batch)
        send_batch(e, e->timeout_ms);
    if (!e->n_sending)
        finish_stop(e);
}

static void thread_main(void *arg)
{
    exporter *e = arg;
    uv_run(&e->loop, UV_RUN_DEFAULT);
    gw_uconn_thread_cleanup(); /* this thread's pooled read buffers */
}

int gw_span_export_start(const gw_config *cfg, int n_workers)
{
    gw_trace_set_sample_ratio(cfg->tracing.sample_ratio);
    if (!cfg->tracing.otlp_endpoint[0] || ex)
        return 0;
    exporter *e = calloc(1, sizeof *e);
    if (!e)
        return -1;
    e->n_rings = n_workers > 0 ? n_workers : 1;
    e->rings = calloc((size_t)e->n_rings, sizeof *e->rings);
    e->batch_max = cfg->tracing.batch_size;
    e->batch = malloc(e->batch_max * sizeof *e->batch);
    /* the rings' power-of-two sizes rounded down: together never more than max_queue */
    uint32_t per = 16, want = cfg->tracing.max_queue / (uint32_t)e->n_rings;
    while (per * 2 <= want)
        per *= 2;
    for (int i = 0; e->rings && i < e->n_rings; i++)
        e->rings[i] = gw_span_ring_new(per);
    for (int i = 0; e->rings && i < e->n_rings; i++)
        if (!e->rings[i])
            e->batch = (free(e->batch), NULL);
    if (!e->rings || !e->batch || uv_loop_init(&e->loop) != 0) {
        for (int i = 0; e->rings && i < e->n_rings; i++)
            gw_span_ring_free(e->rings[i]);
        free(e->rings);
        free(e->batch);
        free(e);
        return -1;
    }
    e->flush_ms = cfg->tracing.flush_ms;
    e->timeout_ms = cfg->tracing.timeout_ms;
    snprintf(e->service, sizeof e->service, "%s", cfg->tracing.service_name);
    snprintf(e->path, sizeof e->path, "%s", cfg->tracing.path);
    snprintf(e->hostport, sizeof e->hostport, "%s", cfg->tracing.hostport);
    /* the collector as a one-endpoint upstream: its pool keeps the connection alive */
    gw_upstream_conf *u = &e->upconf;
    snprintf(u->name, sizeof u->name, "otlp-collector");
    snprintf(u->endpoints[0].address, sizeof u->endpoints[0].address, "%s", e->hostport);
    u->endpoints[0].addr = cfg->tracing.addr;
    u->endpoints[0].addrlen = cfg->tracing.addrlen;
    u->n_endpoints = 1;
    u->connect_timeout_ms = e->timeout_ms;
    u->response_timeout_ms = e->timeout_ms;
    u->read_timeout_ms = e->timeout_ms;
    u->pool_max_idle = 1;
    u->pool_idle_timeout_ms = 30000;
    u->down_ms = 1000;
    gw_upstream_init(&e->up, &e->loop, u);
    gw_oneshot_set_init(&e->set, &e->loop, 0, 0);
    e->up.oneshots = &e->set;
    uv_timer_init(&e->loop, &e->timer);
    e->timer.data = e;
    uint32_t tick = e->flush_ms < TICK_MAX_MS ? e->flush_ms : TICK_MAX_MS;
    uv_timer_start(&e->timer, on_tick, tick, tick);
    uv_async_init(&e->loop, &e->stop, on_stop);
    e->stop.data = e;
    e->last_send_ms = uv_now(&e->loop);
    if (uv_thread_create(&e->thread, thread_main, e) != 0) {
        uv_close((uv_handle_t *)&e->timer, NULL);
        uv_close((uv_handle_t *)&e->stop, NULL);
        uv_run(&e->loop, UV_RUN_DEFAULT);
        gw_upstream_free(&e->up);
        uv_loop_close(&e->loop);
        for (int i = 0; i < e->n_rings; i++)
            gw_span_ring_free(e->rings[i]);
        free(e->rings);
        free(e->batch);
        free(e);
        return -1;
    }
    ex = e;
    return 0;
}

gw_span_ring *gw_span_export_ring(int i)
{
    return ex && i >= 0 && i < ex->n_rings ? ex->rings[i] : NULL;
}

void gw_span_export_stop(void)
{
    exporter *e = ex;
    if (!e)
        return;
    uv_async_send(&e->stop);
    uv_thread_join(&e->thread);
    gw_upstream_free(&e->up);
    uv_loop_close(&e->loop);
    ex = NULL; /* (nothing reads the rings any more: /metrics is served by the stopped admin) */
    for (int i = 0; i < e->n_rings; i++)
        gw_span_ring_free(e->rings[i]);
    gw_otlp_buf_free(&e->body);
    free(e->req);
    free(e->rings);
    free(e->batch);
    free(e);
}

size_t gw_span_export_metrics(char *out, size_t n)
{
    exporter *e = ex;
    uint64_t full = 0;
    for (int i = 0; e && i < e->n_rings; i++)
        full += atomic_load_explicit(&e->rings[i]->dropped, memory_order_relaxed);
    int k = snprintf(
        out, n,
        "# HELP gateway_trace_spans_exported_total Spans the OTLP collector accepted.\n"
        "# TYPE gateway_trace_spans_exported_total counter\n"
        "gateway_trace_spans_exported_total %" PRIu64 "\n"
        "# HELP gateway_trace_spans_dropped_total Spans not exported: queue_full (the collector "
        "was slower than the traffic), export_failed (its POST failed), shutdown.\n"
        "# TYPE gateway_trace_spans_dropped_total counter\n"
        "gateway_trace_spans_dropped_total{reason=\"queue_full\"} %" PRIu64 "\n"
        "gateway_trace_spans_dropped_total{reason=\"export_failed\"} %" PRIu64 "\n"
        "gateway_trace_spans_dropped_total{reason=\"shutdown\"} %" PRIu64 "\n"
        "# HELP gateway_trace_export_failures_total POSTs to the collector that failed (refused, "
        "timed out, or not answered 2xx).\n"
        "# TYPE gateway_trace_export_failures_total counter\n"
        "gateway_trace_export_failures_total %" PRIu64 "\n",
        (uint64_t)atomic_load(&n_exported), full, (uint64_t)atomic_load(&n_drop_export),
        (uint64_t)atomic_load(&n_drop_shutdown), (uint64_t)atomic_load(&n_failed_posts));
    return k > 0 && (size_t)k < n ? (size_t)k : 0;
}
