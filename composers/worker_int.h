/* worker_int.h — the composition engine's per-worker state, shared by compose.c (runs),
 * fetch.c (internal GETs) and lookup.c (the cached, coalesced lookups). */
#ifndef CMP_WORKER_INT_H
#define CMP_WORKER_INT_H

#include "http/queue.h"
#include "composers/breaker.h"
#include "composers/cache.h"
#include "composers/compose.h"

struct cmp_worker {
    uv_loop_t *loop;
    const cmp_spec *spec;
    const gw_config *cfg;
    gw_upstream *upstreams;
    gw_metrics *metrics;
    cmp_breaker breakers[GW_MAX_UPSTREAMS];
    cmp_cache *cache;          /* Redis, or the in-process LRU */
    gw_queue inflight;         /* lookups with a fetch or cache read under way (by key) */
    gw_queue detached;         /* ones whose path changed meanwhile: not joined, not stored */
};

#endif
