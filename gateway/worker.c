/* worker.c — a worker thread: its loop, listener, upstream pools and access log, and the
 * graceful drain on SIGTERM (driven from the main thread through an async handle). */
#include "gateway/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "routes/route_table.h"
#include "routes/upstreams.h"
#include "composers/compose.h"
#include "gateway/certs.h"
#include "gateway/proxy.h"
#include "gateway/inflight_limit.h"
#include "gateway/ratelimit_redis.h"
#include "gateway/resolver.h"
#include "gateway/router.h"
#include "gateway/span_export.h"
#include "http/gw_errors.h"
#include "http/span.h"

/* The table's upstream definitions in force on this worker: each slot whose definition
 * changed (or went) gets the new one; the old endpoints' pools drain (upstream_pool.c).
 * Unchanged definitions keep their generation, and so their pools. */
static void sync_upstreams(gw_worker *w, const rt_table *t)
{
    gw_upstream_conf *want = t ? malloc(sizeof *want) : NULL;
    for (int i = 0; want && i < GW_MAX_UPSTREAMS; i++) {
        const rt_upstream_def *d = rt_table_upstream_def(t, i);
        uint64_t gen = d ? d->gen : 0;
        if (!d && (gen == w->upstream_gen[i] || rt_table_upstream(t, i)))
            continue; /* no upstream, or a name without a definition (tables without seeds) */
        if (d)
            gw_resolved_expand(&d->conf, want); /* one endpoint per address (resolver.h) */
        if (d && gen == w->upstream_gen[i] && gw_endpoints_same(want, w->upstreams[i].conf))
            continue; /* same definition, same addresses: the pools stay */
        if (gw_upstream_reconfigure(&w->upstreams[i], d ? want : NULL) == 0) {
            w->upstream_gen[i] = gen;
            cmp_worker_upstream_changed(w->composer, i); /* NULL before it exists */
        }
    }
    free(want);
}

rt_table *gw_worker_routes(gw_worker *w)
{
    uint64_t gen = rt_current_generation();
    if (gen != w->table_gen || !w->table) {
        rt_table *t = rt_current_acquire();
        if (w->table)
            rt_table_unref(w->table);
        w->table = t;
        w->table_gen = gen;
        if (!w->stopping)
            sync_upstreams(w, t);
    }
    return w->table;
}

static void on_routes_timer(uv_timer_t *t)
{
    gw_worker_routes(t->data);
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Everything is drained: close what is left so uv_run returns. Runs once: when the client
 * side and the one-shot exchanges are both done (see on_server_done). */
static void worker_finish(gw_worker *w)
{
    w->stopping = 2;
    cmp_worker_close(w->composer);
    gw_rl_redis_close(w->ratelimit); /* frees itself once its handles are closed */
    w->ratelimit = NULL;
    gw_inflight_close(w->inflight);
    w->inflight = NULL;
    gw_oneshot_abort_all(&w->oneshots); /* whatever cmp_worker_close did not cancel */
    for (int i = 0; i < GW_MAX_UPSTREAMS; i++)
        gw_upstream_close_idle(&w->upstreams[i]);
    gw_uconn_close_upgraded(); /* tunnels' upstream sides still flushing */
    uv_close((uv_handle_t *)&w->routes_timer, NULL);
    if (w->log)
        gw_access_log_close(w->log, NULL, NULL);
    if (w->events)
        gw_access_log_close(w->events, NULL, NULL);
    uv_close((uv_handle_t *)&w->wakeup, NULL);
    uv_close((uv_handle_t *)&w->drain_timer, NULL);
}

static void on_oneshots_empty(gw_oneshot_set *set, void *data)
{
    gw_worker *w = data;
    (void)set;
    if (w->stopping == 1 && w->n_servers == 0)
        worker_finish(w);
}

/* A listener's client side is done. Once all are, shadow copies still under way may finish
 * until the drain deadline (their comparisons count); the last one to end finishes the
 * worker. */
static void on_server_done(gw_server *s)
{
    gw_worker *w = gw_server_options(s)->data;
    for (int i = 0; i < GW_MAX_LISTENERS; i++)
        if (w->servers[i] == s)
            w->servers[i] = NULL;
    gw_server_free(s);
    if (--w->n_servers == 0)
        gw_oneshot_set_on_empty(&w->oneshots, on_oneshots_empty, w);
}

static void on_drain_deadline(uv_timer_t *t)
{
    gw_worker *w = t->data;
    for (int i = 0; i < GW_MAX_LISTENERS; i++)
        if (w->servers[i])
            gw_server_close(w->servers[i], on_server_done); /* whoever is still there is cut */
    /* and so is every exchange still out: each gets its callback (GW_ECLOSED) now */
    gw_oneshot_abort_all(&w->oneshots);
}

static void on_wakeup(uv_async_t *a)
{
    gw_worker *w = a->data;
    if (atomic_exchange(&w->command, GW_CMD_NONE) != GW_CMD_DRAIN || w->stopping)
        return;
    w->stopping = 1;
    uv_timer_start(&w->drain_timer, on_drain_deadline, w->cfg->drain_timeout_ms, 0);
    /* no new shadow copy; pooled connections close now and released ones are not pooled
     * again (their idle timers would hold the loop past the deadline) */
    gw_oneshot_set_drain(&w->oneshots);
    for (int i = 0; i < GW_MAX_UPSTREAMS; i++)
        gw_upstream_close_idle(&w->upstreams[i]);
    for (int i = 0; i < GW_MAX_LISTENERS; i++)
        if (w->servers[i])
            gw_server_drain(w->servers[i], on_server_done);
}

/* The request's SERVER span, when this worker exports spans and its trace is sampled. */
static void server_span(const gw_request *q, const gw_request_report *r)
{
    gw_span *s = q->trace.origin ? gw_span_begin(q->trace.flags) : NULL;
    if (!s)
        return;
    s->kind = GW_SPAN_SERVER;
    s->status = (uint16_t)q->status;
    /* the gateway's own failures: a 5xx, or an answer cut short */
    s->error = q->status >= 500 || r->err != 0 || q->status == 0;
    memcpy(s->trace_id, q->trace.trace_id, sizeof s->trace_id);
    memcpy(s->span_id, q->trace.span_id, sizeof s->span_id);
    memcpy(s->parent_id, q->trace.parent_id, sizeof s->parent_id);
    GW_SPAN_SET(s->method, q->method_buf);
    GW_SPAN_SET(s->route, q->route_id);
    GW_SPAN_SET(s->upstream, q->upstream_name);
    GW_SPAN_SET(s->peer, q->client_addr);
    GW_SPAN_SET(s->error_text, r->err ? gw_errname(r->err) : s->error ? gw_status_reason(q->status) : "");
    s->start_ns = q->start_ns;
    s->end_ns = q->start_ns + (uint64_t)(r->total_ms * 1e6);
    gw_span_commit();
}

/* The server reports each finished request here: one access-log line, one count. */
static void on_request_done(const gw_request *q, const gw_request_report *r, void *data)
{
    gw_worker *w = data;
    gw_inflight_release_request(w->inflight, q); /* concurrency slots it held */
    if (w->log) {
        gw_access_entry e = {
            .request_id = q->request_id[0] ? q->request_id : NULL,
            .trace_id = q->trace.origin ? q->trace.trace_id : NULL,
            .span_id = q->trace.origin ? q->trace.span_id : NULL,
            .client = q->client_addr,
            .method = q->method_buf[0] ? q->method_buf : NULL,
            .proto = q->http_major == 2 ? "HTTP/2" : q->http_minor ? "HTTP/1.1" : "HTTP/1.0",
            .path = r->url[0] ? r->url : NULL,
            .route = q->route_id,
            .upstream = q->upstream_name ? q->upstream_name : "gateway",
            .route_version = q->route_version,
            .status = q->status,
            .bytes_in = q->bytes_in,
            .bytes_out = q->bytes_out,
            .upstream_ms = q->upstream_ms,
            .total_ms = r->total_ms,
        };
        gw_access_log_write(w->log, &e);
    }
    gw_metrics_request(w->metrics, q->route_id, q->upstream_name, q->status, r->total_ms);
    server_span(q, r);
}

static void on_connection(enum gw_conn_event ev, void *data)
{
    gw_worker *w = data;
    if (ev == GW_CONN_ACCEPTED)
        atomic_fetch_add_explicit(&w->metrics->connections_accepted, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&w->metrics->connections_rejected_max, 1, memory_order_relaxed);
}

static void on_tls_event(enum gw_tls_event ev, void *data)
{
    gw_worker *w = data;
    atomic_fetch_add_explicit(&w->metrics->tls_events[ev], 1, memory_order_relaxed);
}

static void on_h2_event(enum gw_h2_event ev, void *data)
{
    gw_worker *w = data;
    atomic_fetch_add_explicit(&w->metrics->h2_events[ev], 1, memory_order_relaxed);
}

static void worker_main(void *arg)
{
    gw_worker *w = arg;
    if (w->log_fd >= 0)
        w->log = gw_access_log_new(&w->loop, w->log_fd);
    w->events = gw_access_log_new(&w->loop, STDERR_FILENO);
    gw_span_attach(gw_span_export_ring(w->id)); /* NULL when spans are not exported */
    gw_oneshot_set_init(&w->oneshots, &w->loop, w->cfg->background.max_in_flight,
                        w->cfg->background.max_connections_per_endpoint);
    /* every slot is a valid upstream: gateway.json's first, the rest empty until the
     * route table defines them (sync_upstreams) */
    gw_config_upstream_defaults(&w->empty_upstream);
    for (int i = 0; i < GW_MAX_UPSTREAMS; i++) {
        gw_upstream_init(&w->upstreams[i], &w->loop,
                         i < w->cfg->n_upstreams ? &w->cfg->upstreams[i] : &w->empty_upstream);
        w->upstreams[i].oneshots = &w->oneshots;
    }
    (void)gw_worker_routes(w);
    uv_timer_init(&w->loop, &w->routes_timer);
    w->routes_timer.data = w;
    uv_timer_start(&w->routes_timer, on_routes_timer, 1000, 1000);
    uv_unref((uv_handle_t *)&w->routes_timer);
    /* compositions and the user cache (Redis, or an in-process LRU) */
    w->composer = gw_router_composer_new(w);
    /* rate limits: shared through Redis when configured (falls back to rate/instances) */
    if (w->cfg->redis_topo.kind != CMP_REDIS_NONE && w->cfg->rate_limits.shared)
        w->ratelimit = gw_rl_redis_new(&w->loop, &w->cfg->redis_topo, w->cfg->rate_limits.instances,
                                       w->cfg->rate_limits.timeout_ms, w->id);
    if (!w->ratelimit)
        gw_rl_workers_in_mode(GW_RL__MODES, GW_RL_LOCAL);
    w->inflight = gw_inflight_new(&w->loop, w->cfg, w->cfg->workers);
    const gw_limits_conf *l = &w->cfg->limits;
    gw_server_opts opts = {
        .limits = {
            .max_uri_bytes = l->max_uri_bytes,
            .max_header_bytes = l->max_header_bytes,
            .max_headers = l->max_headers,
            .max_body_bytes = l->max_body_bytes,
            .header_timeout_ms = l->header_timeout_ms,
            .body_timeout_ms = l->body_timeout_ms,
            .idle_timeout_ms = l->idle_timeout_ms,
            .send_timeout_ms = l->send_timeout_ms,
            .read_buffer_bytes = l->read_buffer_bytes,
            .max_connections = l->max_connections,
        },
        .gateway_headers = 1,
        .reuseport = 1,
        .worker_id = w->id,
        .on_request_done = on_request_done,
        .on_connection = on_connection,
        .h2 = {
            .max_concurrent_streams = w->cfg->http2.max_concurrent_streams,
            .stream_window = w->cfg->http2.stream_window_bytes,
            .connection_window = w->cfg->http2.connection_window_bytes,
            .reset_rate = w->cfg->http2.reset_rate,
            .reset_burst = w->cfg->http2.reset_burst,
        },
        .on_h2_event = on_h2_event,
        .hook_data = w,
        .data = w,
    };
    int r = 0;
    for (int i = 0; i < w->cfg->n_listeners && r == 0; i++) {
        const gw_listener_conf *lc = &w->cfg->listeners[i];
        opts.tls = lc->tls ? gw_certs_slot(w->certs, i) : NULL;
        opts.tls_handshake_timeout_ms = lc->tls ? lc->tls_conf.handshake_timeout_ms : 0;
        opts.on_tls_event = on_tls_event;
        opts.h2c = lc->h2c;
        r = gw_server_init(&w->servers[i], &w->loop, (const struct sockaddr *)&lc->addr, &opts,
                           &gw_router_handler);
        if (r == 0)
            w->n_servers++;
        else
            w->failed_listener = i;
    }
    if (r != 0) { /* the limiter's handles close through their own callbacks */
        gw_rl_redis_close(w->ratelimit);
        w->ratelimit = NULL;
        gw_inflight_close(w->inflight);
        w->inflight = NULL;
    }
    if (r != 0) /* the ones already listening close; the loop below runs their callbacks */
        for (int i = 0; i < GW_MAX_LISTENERS; i++)
            if (w->servers[i]) {
                gw_server_close(w->servers[i], NULL); /* frees it */
                w->servers[i] = NULL;
            }
    w->started = r == 0 ? 1 : r;
    uv_sem_post(&w->ready);
    if (r == 0)
        uv_run(&w->loop, UV_RUN_DEFAULT);
    else
        uv_walk(&w->loop, close_walk_cb, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT); /* let close callbacks run */
    if (w->table) {
        rt_table_unref(w->table);
        w->table = NULL;
    }
    cmp_worker_free(w->composer);
    w->composer = NULL;
    if (w->cfg->redis_topo.kind == CMP_REDIS_NONE || !w->cfg->rate_limits.shared)
        gw_rl_workers_in_mode(GW_RL_LOCAL, GW_RL__MODES);
    for (int i = 0; i < GW_MAX_UPSTREAMS; i++)
        gw_upstream_free(&w->upstreams[i]);
    gw_access_log_free(w->log); /* after the loop: late writers are done */
    w->log = NULL;
    gw_access_log_free(w->events);
    w->events = NULL;
    uv_loop_close(&w->loop);
    gw_uconn_thread_cleanup();
    gw_proxy_thread_cleanup();
    gw_tls_thread_cleanup();
}

int gw_worker_start(gw_worker *w, int id, const gw_config *cfg, const cmp_spec *compositions,
                    int log_fd, struct gw_certs *certs)
{
    memset(w, 0, sizeof *w);
    w->certs = certs;
    w->id = id;
    w->cfg = cfg;
    w->compositions = compositions;
    w->log_fd = log_fd;
    atomic_init(&w->command, GW_CMD_NONE);
    w->metrics = calloc(1, sizeof *w->metrics);
    if (!w->metrics)
        return UV_ENOMEM;
    int r = uv_loop_init(&w->loop);
    if (r < 0)
        return r;
    uv_async_init(&w->loop, &w->wakeup, on_wakeup);
    w->wakeup.data = w;
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    uv_sem_init(&w->ready, 0);
    r = uv_thread_create(&w->thread, worker_main, w);
    if (r < 0)
        return r;
    uv_sem_wait(&w->ready);
    uv_sem_destroy(&w->ready);
    return w->started == 1 ? 0 : w->started;
}

void gw_worker_drain(gw_worker *w)
{
    atomic_store(&w->command, GW_CMD_DRAIN);
    uv_async_send(&w->wakeup);
}

void gw_worker_join(gw_worker *w)
{
    uv_thread_join(&w->thread);
}
