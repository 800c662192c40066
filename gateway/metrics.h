/* metrics.h — counters and histograms for GET /metrics (Prometheus text format).
 *
 * Each worker owns a gw_metrics and is its only writer (relaxed atomic adds: no lock, no
 * shared cache line). The admin thread reads every worker's block and sums. Labelled request
 * counters live in an insert-only table per worker: a slot is filled, then published with a
 * release store, so a concurrent reader sees either nothing or a complete key. */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "http/server.h" /* GW_H2__EVENTS */
#include "http/tls.h" /* GW_TLS__EVENTS */
#include "routes/cutover_plan.h"

#define GW_METRICS_SLOTS 4096          /* (route, upstream, status class) combinations */
#define GW_METRICS_KEY_MAX 96
#define GW_LATENCY_BUCKETS 14
#define GW_METRICS_SHADOW_SLOTS 256
#define GW_METRICS_UPSTREAMS 64

typedef struct gw_metric_slot {
    atomic_int used;                   /* 0 empty, 1 published */
    uint64_t hash;
    char route[GW_METRICS_KEY_MAX];
    char upstream[GW_METRICS_KEY_MAX];
    int status_class;                  /* 1..5 */
    atomic_uint_fast64_t count;
} gw_metric_slot;

enum gw_upstream_err_kind {
    GW_UERR_CONNECT, GW_UERR_TIMEOUT, GW_UERR_RESET, GW_UERR_PROTOCOL, GW_UERR_NO_ENDPOINT,
    GW_UERR__COUNT
};

/* Evidence for cutover plans, per (route, upstream): the side's own counters and latency
 * histogram (routes/cutover_plan.h buckets). Same insert-only scheme as gw_metric_slot. */
#define GW_SIDE_SLOTS 1024
enum { GW_SIDE_CACHE_HIT, GW_SIDE_CACHE_STALE, GW_SIDE_CACHE_MISS, GW_SIDE_CACHE__N };
typedef struct gw_side_slot {
    atomic_int used;
    uint64_t hash;
    char route[GW_METRICS_KEY_MAX];
    char upstream[GW_METRICS_KEY_MAX];
    atomic_uint_fast64_t requests, errors, fallbacks, shadow_compared, shadow_mismatched;
    atomic_uint_fast64_t lat[RT_CUT_LAT_BUCKETS + 1];
    /* user-cache lookups of the route answered from its cache or by this upstream */
    atomic_uint_fast64_t cache[GW_SIDE_CACHE__N];
} gw_side_slot;

typedef struct gw_metrics {
    gw_metric_slot slots[GW_METRICS_SLOTS];
    atomic_uint_fast64_t overflow;     /* requests whose label set found no free slot */
    atomic_uint_fast64_t duration_buckets[GW_LATENCY_BUCKETS + 1]; /* last = +Inf */
    atomic_uint_fast64_t duration_count;
    atomic_uint_fast64_t duration_sum_us;
    atomic_uint_fast64_t upstream_errors[GW_UERR__COUNT];
    atomic_uint_fast64_t connections_accepted;
    atomic_uint_fast64_t connections_rejected_max; /* closed at once: limits.max_connections */
    /* shadow comparisons per route: status_class 0 = compared, 1 = mismatched */
    gw_metric_slot shadow_slots[GW_METRICS_SHADOW_SLOTS];
    /* shadow copies not sent: route, upstream = reason ("in_flight", "endpoint", "draining",
     * "no_endpoint") */
    gw_metric_slot shadow_skipped_slots[GW_METRICS_SHADOW_SLOTS];
    atomic_uint_fast64_t fallbacks;
    /* compositions */
    atomic_uint_fast64_t compositions[3];          /* GW_COMP_OK, _DEGRADED, _FAILED */
    gw_metric_slot degraded_slots[GW_METRICS_SHADOW_SLOTS]; /* route = composition, upstream = leg */
    atomic_uint_fast64_t leg_buckets[GW_LATENCY_BUCKETS + 1];
    atomic_uint_fast64_t leg_count, leg_sum_us;
    atomic_int breaker_state[GW_METRICS_UPSTREAMS]; /* 0 closed, 1 open, 2 half-open */
    /* TLS handshakes and errors by kind (enum gw_tls_event) */
    atomic_uint_fast64_t tls_events[GW_TLS__EVENTS];
    atomic_uint_fast64_t h2_events[GW_H2__EVENTS]; /* HTTP/2 connections, streams, resets */
    /* user cache */
    atomic_uint_fast64_t cache_hits, cache_misses, cache_errors, cache_coalesced, cache_stale,
        cache_bypass;
    /* cutover evidence */
    gw_side_slot sides[GW_SIDE_SLOTS];
    atomic_uint_fast64_t sides_overflow; /* events whose (route, upstream) found no slot */
} gw_metrics;

enum { GW_COMP_OK, GW_COMP_DEGRADED, GW_COMP_FAILED };

/* Upper bounds of the duration histogram, in seconds. */
extern const double gw_latency_bounds[GW_LATENCY_BUCKETS];

void gw_metrics_request(gw_metrics *m, const char *route, const char *upstream, int status,
                        double total_ms);
void gw_metrics_upstream_error(gw_metrics *m, enum gw_upstream_err_kind kind);
/* A shadow comparison on ROUTE; MISMATCHED when the answers differed. Thread-safe for the
 * owning worker only (like the rest). */
void gw_metrics_shadow(gw_metrics *m, const char *route, int mismatched);
/* A shadow copy of a request on ROUTE was not sent, for REASON (a label value). */
void gw_metrics_shadow_skipped(gw_metrics *m, const char *route, const char *reason);
void gw_metrics_fallback(gw_metrics *m);
/* Cutover evidence (gw_metrics_request counts each answered request of a route on its side
 * too): a request on ROUTE that failed on FROM and was replayed to the fallback; a shadow
 * comparison on ROUTE whose copy went to UPSTREAM. */
void gw_metrics_side_fallback(gw_metrics *m, const char *route, const char *from);
void gw_metrics_side_shadow(gw_metrics *m, const char *route, const char *upstream,
                            int mismatched);
/* Sums ROUTE's counters on UPSTREAM over WORKERS[0..n) into OUT (zeroed first). Any thread. */
void gw_metrics_side_read(gw_metrics *const *workers, int n, const char *route,
                          const char *upstream, rt_cut_side *out);

/* The latest shadow mismatches, process-wide (a ring of GW_MISMATCH_RING): what a cutover
 * plan shows as its first mismatches. A worker that finds the ring busy skips the sample
 * (never waits): the counts above stay exact, only the examples are best effort. */
#define GW_MISMATCH_RING 64
typedef struct gw_mismatch_sample {
    uint64_t seq;                      /* 1, 2, ... in the order recorded */
    int64_t at_ms;                     /* wall clock */
    char route[GW_METRICS_KEY_MAX];
    char upstream[GW_METRICS_KEY_MAX];
    char request_id[64];
    char diff[200];
} gw_mismatch_sample;
void gw_metrics_mismatch_sample(const char *route, const char *upstream,
                                const char *request_id, const char *diff);
/* Copies up to MAX samples newer than *SEQ into OUT, oldest first, and advances *SEQ.
 * Returns how many. */
int gw_metrics_mismatches_since(uint64_t *seq, gw_mismatch_sample *out, int max);
void gw_metrics_composition(gw_metrics *m, int outcome);
void gw_metrics_leg(gw_metrics *m, const char *composition, const char *leg, int degraded,
                    double ms);
/* A leg answered as null in a degraded composition answer. */
void gw_metrics_leg_degraded(gw_metrics *m, const char *composition, const char *leg);
const char *gw_upstream_err_name(enum gw_upstream_err_kind kind);

/* The composers' reporting interface (cmp_report, composers/compose.h) writing into M. */
struct cmp_report;
void gw_metrics_composer_report(gw_metrics *m, struct cmp_report *out);

/* Process-wide values set by the main thread. */
typedef struct gw_process_metrics {
    atomic_uint_fast64_t reloads_ok, reloads_failed;
    atomic_uint_fast64_t shadow_compared, shadow_mismatched;
} gw_process_metrics;
extern gw_process_metrics gw_process_stats;

/* Appends the Prometheus text for WORKERS[0..n) plus process values to a malloc'd buffer
 * (*out, *len); route_version is the table in force. Returns 0 or -1 (out of memory). */
int gw_metrics_render(gw_metrics *const *workers, int n, uint64_t route_version,
                      const char *const *upstream_names, int n_upstreams, char **out, size_t *len);

#endif
