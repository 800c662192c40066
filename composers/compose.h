/* compose.h — the composition engine: answers a composition's endpoint by issuing its legs
 * as internal GET requests resolved through the live route table (so a leg follows the
 * cutover), in parallel where dependencies allow, each with its own timeout, all under the
 * composition's deadline. A slow or dead optional leg yields null and is listed in
 * "degraded" (and X-Composition-Degraded); a required leg that is missing gives 404, that
 * fails 502, that times out 504; an upstream 4xx other than 404 passes through.
 *
 * composers/ reads no application state: the gateway hands it a cmp_conf (its settings)
 * and a cmp_report (where it reports what happened), filled from its own config and
 * metrics. */
#ifndef CMP_COMPOSE_H
#define CMP_COMPOSE_H

#include <stdatomic.h>
#include <stdint.h>

#include "http/server.h"
#include "http/upstream.h"
#include "routes/route_table.h"
#include "composers/breaker.h"
#include "composers/spec.h"

typedef struct cmp_worker cmp_worker;

/* The composers' settings. Per-upstream breaker settings come with each upstream's
 * gw_upstream_conf (breaker_failures, breaker_cooldown_ms). */
typedef struct cmp_conf {
    const char *redis;             /* "host:port" of the user cache, or NULL/"": an LRU */
    const struct cmp_redis_conf *redis_topo; /* instead: any topology (redis_client.h);
                                      NULL or kind NONE: use redis */
    struct {
        uint32_t ttl_ms;           /* a cached 200 is fresh for */
        uint32_t negative_ttl_ms;  /* a cached 404 is fresh for */
        uint32_t stale_ms;         /* kept past ttl for stale-if-error */
        uint32_t timeout_ms;       /* a Redis command slower than this is a miss */
        uint32_t lru_entries;      /* in-process cache size when no Redis */
    } cache;
} cmp_conf;

typedef enum { CMP_COMPOSED_OK, CMP_COMPOSED_DEGRADED, CMP_COMPOSED_FAILED } cmp_outcome;

typedef enum {
    CMP_CACHE_EV_HIT,       /* answered from the cache, fresh */
    CMP_CACHE_EV_MISS,      /* not there (or too old): the upstream is asked */
    CMP_CACHE_EV_ERROR,     /* the cache failed: the upstream is asked (fail open) */
    CMP_CACHE_EV_STALE,     /* the upstream failed: a copy past its ttl was served */
    CMP_CACHE_EV_COALESCED, /* waited for a lookup of the same key already under way */
    CMP_CACHE_EV_BYPASS,    /* the upstream's answer was passed on, not stored (its status or
                               its Cache-Control / Set-Cookie / Vary: *) */
} cmp_cache_event;

/* What the composers report, called on the worker's loop. Every member may be NULL. */
typedef struct cmp_report {
    void *data;
    void (*composition)(void *data, cmp_outcome outcome);
    /* A leg (or a cached GET: COMPOSITION and LEG are the route id) ended after MS. */
    void (*leg)(void *data, const char *composition, const char *leg, double ms);
    /* A leg answered as null in a degraded composition answer. */
    void (*leg_degraded)(void *data, const char *composition, const char *leg);
    /* A user-cache event of a lookup on ROUTE (its id) answered by UPSTREAM. */
    void (*cache)(void *data, const char *route, const char *upstream, cmp_cache_event ev);
    /* Where upstream UPSTREAM's breaker state (cmp_breaker_state) is mirrored for readers
     * on other threads, or NULL. Asked once per upstream, at cmp_worker_new. */
    atomic_int *(*breaker_mirror)(void *data, int upstream);
} cmp_report;

/* Per worker: UPSTREAMS[0..N_UPSTREAMS) are that worker's; SPEC (may be NULL) is shared and
 * immutable; CONF and REPORT are copied (CONF's strings need only last for this call).
 * Also opens the worker's user cache (Redis when configured, else an LRU). */
cmp_worker *cmp_worker_new(uv_loop_t *loop, const cmp_spec *spec, const cmp_conf *conf,
                           gw_upstream *upstreams, int n_upstreams, const cmp_report *report);
/* Upstream UI's definition changed (a live upstream, routes/upstreams.h): its breaker takes
 * the new breaker settings; its state (open, closed, a probe under way) is kept. */
void cmp_worker_upstream_changed(cmp_worker *w, int ui);
/* At shutdown, on the worker's loop: cancels lookups under way, closes the cache. */
void cmp_worker_close(cmp_worker *w);
/* After the loop ran the close callbacks. */
void cmp_worker_free(cmp_worker *w);

/* The composition engine's handler (body, drain, abort) for a request handed to it with
 * gw_request_set_handler before cmp_compose_start. Its on_request is NULL. */
extern const gw_handler cmp_compose_handler;
/* Composes C (matched with cmp_spec_match, PARAMS slicing REQ's path) for REQ; the answer
 * follows later (at once when out of memory). TABLE is the worker's pinned route table
 * (ref'd for the request). */
void cmp_compose_start(cmp_worker *w, rt_table *table, gw_request *req, const cmp_composition *c,
                       const cmp_params *params);

#endif
