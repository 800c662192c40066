/* metrics.c — per-worker counters and their Prometheus rendering. */
#include "metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double gw_latency_bounds[GW_LATENCY_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5,
};

gw_process_metrics gw_process_stats;

static uint64_t fnv(const char *s, uint64_t h)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

#define ADD(a, v) atomic_fetch_add_explicit(&(a), (v), memory_order_relaxed)
#define GET(a) atomic_load_explicit(&(a), memory_order_relaxed)

void gw_metrics_request(gw_metrics *m, const char *route, const char *upstream, int status,
                        double total_ms)
{
    route = route ? route : "-";
    upstream = upstream ? upstream : "gateway";
    int cls = status / 100;
    if (cls < 1 || cls > 5)
        cls = 5;
    uint64_t h = fnv(upstream, fnv(route, 0xcbf29ce484222325ULL)) ^ (uint64_t)cls;
    /* linear probing in an insert-only table; this worker is the only writer */
    for (unsigned i = 0; i < 64; i++) {
        gw_metric_slot *s = &m->slots[(h + i) % GW_METRICS_SLOTS];
        if (atomic_load_explicit(&s->used, memory_order_relaxed)) {
            if (s->hash == h && s->status_class == cls && strcmp(s->route, route) == 0 &&
                strcmp(s->upstream, upstream) == 0) {
                ADD(s->count, 1);
                goto timed;
            }
            continue;
        }
        s->hash = h;
        s->status_class = cls;
        snprintf(s->route, sizeof s->route, "%s", route);
        snprintf(s->upstream, sizeof s->upstream, "%s", upstream);
        atomic_store_explicit(&s->count, 1, memory_order_relaxed);
        atomic_store_explicit(&s->used, 1, memory_order_release);
        goto timed;
    }
    ADD(m->overflow, 1);
timed:;
    double sec = total_ms / 1000.0;
    int b = 0;
    while (b < GW_LATENCY_BUCKETS && sec > gw_latency_bounds[b])
        b++;
    ADD(m->duration_buckets[b], 1);
    ADD(m->duration_count, 1);
    ADD(m->duration_sum_us, (uint64_t)(total_ms * 1000.0));
}

void gw_metrics_upstream_error(gw_metrics *m, enum gw_upstream_err_kind kind)
{
    ADD(m->upstream_errors[kind], 1);
}

const char *gw_upstream_err_name(enum gw_upstream_err_kind kind)
{
    static const char *const names[] = { "connect", "timeout", "reset", "protocol", "no_endpoint" };
    return kind < GW_UERR__COUNT ? names[kind] : "other";
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

/* Label values are route ids and upstream names: validated to [A-Za-z0-9._~-], so no
 * escaping is needed; anything else is replaced rather than trusted. */
static const char *label(const char *s, char *tmp, size_t n)
{
    size_t i = 0;
    for (; s[i] && i < n - 1; i++)
        tmp[i] = (s[i] == '"' || s[i] == '\\' || s[i] == '\n') ? '_' : s[i];
    tmp[i] = '\0';
    return tmp;
}

int gw_metrics_render(gw_metrics *const *workers, int n, uint64_t route_version, char **out,
                      size_t *len)
{
    sbuf b = { malloc(16384), 0, 16384, 0 };
    if (!b.p)
        return -1;
    char t1[GW_METRICS_KEY_MAX], t2[GW_METRICS_KEY_MAX];
    sb_printf(&b, "# HELP gateway_requests_total Requests answered, by route, upstream and status class.\n"
                  "# TYPE gateway_requests_total counter\n");
    /* the same label set may sit in several workers' tables: print each worker's line; sum
     * per label set by merging through worker 0's order would need a map, and Prometheus
     * sums series with identical labels only if we do it, so merge here */
    for (int w = 0; w < n; w++) {
        for (int i = 0; i < GW_METRICS_SLOTS; i++) {
            const gw_metric_slot *s = &workers[w]->slots[i];
            if (!atomic_load_explicit(&s->used, memory_order_acquire))
                continue;
            /* printed once, by the first worker that has it */
            int seen = 0;
            for (int v = 0; v < w && !seen; v++) {
                for (int j = 0; j < GW_METRICS_SLOTS; j++) {
                    const gw_metric_slot *o = &workers[v]->slots[(s->hash + (unsigned)j) % GW_METRICS_SLOTS];
                    if (!atomic_load_explicit(&o->used, memory_order_acquire))
                        break;
                    if (o->hash == s->hash && o->status_class == s->status_class &&
                        strcmp(o->route, s->route) == 0 && strcmp(o->upstream, s->upstream) == 0) {
                        seen = 1;
                        break;
                    }
                }
            }
            if (seen)
                continue;
            uint64_t total = 0;
            for (int v = w; v < n; v++) {
                for (int j = 0; j < GW_METRICS_SLOTS; j++) {
                    const gw_metric_slot *o = &workers[v]->slots[(s->hash + (unsigned)j) % GW_METRICS_SLOTS];
                    if (!atomic_load_explicit(&o->used, memory_order_acquire))
                        break;
                    if (o->hash == s->hash && o->status_class == s->status_class &&
                        strcmp(o->route, s->route) == 0 && strcmp(o->upstream, s->upstream) == 0) {
                        total += GET(((gw_metric_slot *)o)->count);
                        break;
                    }
                }
            }
            sb_printf(&b, "gateway_requests_total{route=\"%s\",upstream=\"%s\",status=\"%dxx\"} %" PRIu64 "\n",
                      label(s->route, t1, sizeof t1), label(s->upstream, t2, sizeof t2),
                      s->status_class, total);
        }
    }
    sb_printf(&b, "# HELP gateway_request_duration_seconds Time from a request's first byte to its last response byte queued.\n"
                  "# TYPE gateway_request_duration_seconds histogram\n");
    uint64_t cum = 0, count = 0, sum_us = 0;
    for (int k = 0; k <= GW_LATENCY_BUCKETS; k++) {
        for (int w = 0; w < n; w++)
            cum += GET(workers[w]->duration_buckets[k]);
        if (k < GW_LATENCY_BUCKETS)
            sb_printf(&b, "gateway_request_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                      gw_latency_bounds[k], cum);
        else
            sb_printf(&b, "gateway_request_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
    }
    for (int w = 0; w < n; w++) {
        count += GET(workers[w]->duration_count);
        sum_us += GET(workers[w]->duration_sum_us);
    }
    sb_printf(&b, "gateway_request_duration_seconds_sum %.6f\ngateway_request_duration_seconds_count %" PRIu64 "\n",
              (double)sum_us / 1e6, count);
    sb_printf(&b, "# HELP gateway_upstream_errors_total Upstream failures by kind.\n"
                  "# TYPE gateway_upstream_errors_total counter\n");
    for (int k = 0; k < GW_UERR__COUNT; k++) {
        uint64_t v = 0;
        for (int w = 0; w < n; w++)
            v += GET(workers[w]->upstream_errors[k]);
        sb_printf(&b, "gateway_upstream_errors_total{kind=\"%s\"} %" PRIu64 "\n",
                  gw_upstream_err_name((enum gw_upstream_err_kind)k), v);
    }
    uint64_t acc = 0, ovf = 0;
    for (int w = 0; w < n; w++) {
        acc += GET(workers[w]->connections_accepted);
        ovf += GET(workers[w]->overflow);
    }
    sb_printf(&b, "# TYPE gateway_connections_accepted_total counter\ngateway_connections_accepted_total %" PRIu64 "\n", acc);
    sb_printf(&b, "# TYPE gateway_requests_unlabelled_total counter\ngateway_requests_unlabelled_total %" PRIu64 "\n", ovf);
    sb_printf(&b, "# HELP gateway_route_table_version Version of the route table in force.\n"
                  "# TYPE gateway_route_table_version gauge\ngateway_route_table_version %" PRIu64 "\n",
              route_version);
    sb_printf(&b, "# TYPE gateway_route_reloads_total counter\n"
                  "gateway_route_reloads_total{result=\"ok\"} %" PRIu64 "\n"
                  "gateway_route_reloads_total{result=\"failed\"} %" PRIu64 "\n",
              (uint64_t)GET(gw_process_stats.reloads_ok), (uint64_t)GET(gw_process_stats.reloads_failed));
    sb_printf(&b, "# TYPE gateway_shadow_comparisons_total counter\n"
                  "gateway_shadow_comparisons_total %" PRIu64 "\n"
                  "# TYPE gateway_shadow_mismatches_total counter\n"
                  "gateway_shadow_mismatches_total %" PRIu64 "\n",
              (uint64_t)GET(gw_process_stats.shadow_compared), (uint64_t)GET(gw_process_stats.shadow_mismatched));
    if (b.oom) {
        free(b.p);
        return -1;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}
