/* dashboard_stats.h — what the cutover dashboard plots, the pure part: one sample a second
 * of the cumulative per-(route, upstream) counters (gw_metrics_side_read's figures, summed
 * over the workers by the caller) kept per side in two small rings: the last
 * GW_DASH_WINDOW + 1 cumulative snapshots (rates, error rate, p50/p99 over the window, as
 * exact differences of counters) and the last GW_DASH_SERIES per-second differences of
 * requests and errors (the sparklines). No clock, no loop, no I/O: the caller samples
 * (admin_dashboard.c, on the main loop, only while someone polls the dashboard). */
#ifndef GW_DASHBOARD_STATS_H
#define GW_DASHBOARD_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/metrics.h"
#include "routes/cutover_plan.h"
#include "routes/route_table.h"

#define GW_DASH_WINDOW 10          /* seconds the rates and percentiles cover */
#define GW_DASH_SERIES 60          /* seconds of sparkline */
#define GW_DASH_MAX_SIDES GW_SIDE_SLOTS
#define GW_DASH_INDEX (2 * GW_DASH_MAX_SIDES)

typedef struct gw_dash_side {
    char route[GW_METRICS_KEY_MAX];
    char upstream[GW_METRICS_KEY_MAX];
    uint64_t first_tick;           /* the sample it first appeared in */
    rt_cut_side cur;               /* being summed in the sample in progress */
    rt_cut_side snap[GW_DASH_WINDOW + 1]; /* cumulative, at tick % (GW_DASH_WINDOW + 1) */
    uint32_t req[GW_DASH_SERIES], err[GW_DASH_SERIES]; /* per second, at tick % SERIES */
    /* user-cache lookups (GW_SIDE_CACHE_*), summed and snapshotted like cur / snap */
    uint64_t cache_cur[GW_SIDE_CACHE__N];
    uint64_t cache_snap[GW_DASH_WINDOW + 1][GW_SIDE_CACHE__N];
} gw_dash_side;

typedef struct gw_dash_stats {
    uint64_t ticks;                /* samples completed */
    int n;                         /* sides tracked */
    int cap;
    gw_dash_side *sides;
    int index[GW_DASH_INDEX];      /* open addressing: side index + 1, 0 empty */
    uint64_t dropped;              /* accumulations refused: GW_DASH_MAX_SIDES reached */
    uint64_t cache_cur[2];         /* hits, lookups, for the sample in progress */
    uint64_t cache_snap[GW_DASH_WINDOW + 1][2];
} gw_dash_stats;

void gw_dash_stats_init(gw_dash_stats *st);
void gw_dash_stats_free(gw_dash_stats *st);

/* A sample: begin, accumulate every (route, upstream)'s cumulative counters (a side may be
 * given several times, e.g. once per worker: they are summed), set the cache totals, end.
 * A side first seen after the first sample counts from zero (it had no traffic before);
 * in the first sample everything is the baseline. accumulate returns -1 when the table is
 * full (the side is not shown; dropped counts it). */
void gw_dash_stats_begin(gw_dash_stats *st);
int gw_dash_stats_accumulate(gw_dash_stats *st, const char *route, const char *upstream,
                             const rt_cut_side *cumulative);
void gw_dash_stats_cache(gw_dash_stats *st, uint64_t hits, uint64_t lookups);
/* The side's cumulative user-cache lookups (GW_SIDE_CACHE_* counts), summed like accumulate
 * (the side is added when new). */
void gw_dash_stats_side_cache(gw_dash_stats *st, const char *route, const char *upstream,
                              const uint64_t *cumulative);
void gw_dash_stats_end(gw_dash_stats *st);

/* The side of (ROUTE, UPSTREAM), or -1. */
int gw_dash_stats_find(const gw_dash_stats *st, const char *route, const char *upstream);
/* Side I's counters over the last window (up to GW_DASH_WINDOW seconds, fewer while the
 * samples are fewer). Returns the seconds covered (0: no figures yet). */
int gw_dash_stats_window(const gw_dash_stats *st, int i, rt_cut_side *out);
/* Side I's user-cache lookups over the window into OUT[GW_SIDE_CACHE__N]; the seconds. */
int gw_dash_stats_side_cache_window(const gw_dash_stats *st, int i, uint64_t *out);
/* The cache's hits and lookups over the same window; returns the seconds covered. */
int gw_dash_stats_cache_window(const gw_dash_stats *st, uint64_t *hits, uint64_t *lookups);
/* Side I's last GW_DASH_SERIES per-second requests and errors, oldest first (0 before the
 * side or the sampling existed). */
void gw_dash_stats_series(const gw_dash_stats *st, int i, uint32_t *req, uint32_t *err);

/* The Q-th quantile (0 < Q <= 1) of S's latency in ms (the bucket's upper bound), or -1
 * without samples. */
double gw_dash_quantile_ms(const rt_cut_side *s, double q);
/* A route's domain for the migration progress: its id up to the first '.' or '-' ("orders"
 * for "orders", "orders.get" and "orders-list"), the whole id without one. */
void gw_dash_domain(const char *route_id, char *out, size_t n);
/* The share (%) of route R's traffic its policy sends to upstreams other than LEGACY: the
 * split's weights off legacy, else 100 or 0 by the primary. */
double gw_dash_new_share(const rt_route *r, const char *legacy);

#endif
