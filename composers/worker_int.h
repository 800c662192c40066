/* worker_int.h — the composition engine's per-worker state, shared by compose.c (runs),
 * fetch.c (internal GETs) and lookup.c (the cached, coalesced lookups). */
#ifndef CMP_WORKER_INT_H
#define CMP_WORKER_INT_H

#include "http/queue.h"
#include "http/upstream_conf.h"
#include "composers/breaker.h"
#include "composers/cache.h"
#include "composers/compose.h"

struct cmp_worker {
    uv_loop_t *loop;
    const cmp_spec *spec;
    cmp_conf conf;             /* a copy; conf.redis is NULL (only needed to open the cache) */
    cmp_report report;         /* a copy */
    gw_upstream *upstreams;
    int n_upstreams;
    cmp_breaker breakers[GW_MAX_UPSTREAMS];
    cmp_cache *cache;          /* Redis, or the in-process LRU */
    gw_queue inflight;         /* lookups with a fetch or cache read under way (by key) */
    gw_queue detached;         /* ones whose path changed meanwhile: not joined, not stored */
};

/* Reporting, for callbacks the gateway may leave NULL. */
static inline void cmp_report_cache(const cmp_worker *w, const char *route, const char *upstream,
                                    cmp_cache_event ev)
{
    if (w->report.cache)
        w->report.cache(w->report.data, route, upstream, ev);
}

static inline void cmp_report_leg(const cmp_worker *w, const char *composition, const char *leg,
                                  double ms)
{
    if (w->report.leg)
        w->report.leg(w->report.data, composition, leg, ms);
}

#endif
