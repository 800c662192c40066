/* lookup.h — cached lookups (the user cache): a GET on a route with "cache": true goes to
 * the cache first (Redis, or the in-process LRU), then to the upstream on a miss, and the
 * answer is stored with its kept headers: a 200 with a JSON body for cache.ttl_ms, a 404
 * for cache.negative_ttl_ms (each capped by the answer's s-maxage / max-age), a 200 kept
 * cache.stale_ms longer for stale-if-error — unless its headers forbid storing it
 * (composers/cache_policy.h). Other 2xx and 3xx answers are passed on, not stored. Lookups
 * of the same key on this worker while one is under way wait for it: one upstream call
 * serves them all. The cache failing (slow, down) is a miss: it never fails a request. */
#ifndef CMP_LOOKUP_H
#define CMP_LOOKUP_H

#include <stddef.h>
#include <stdint.h>

#include "http/server.h"
#include "routes/route_table.h"
#include "composers/fetch.h"

typedef struct cmp_worker cmp_worker;
typedef struct cmp_wait cmp_wait;

/* CMP_FROM_BYPASS: fetched from the upstream and not stored because of what it is (a 3xx, a
 * 204, a 200 that is not JSON, another 2xx) or what its headers say (cache_policy.h). */
typedef enum { CMP_FROM_CACHE, CMP_FROM_UPSTREAM, CMP_FROM_STALE, CMP_FROM_BYPASS } cmp_source;

/* One lookup's answer. STATUS: 200 or 404 from the cache or the upstream, another upstream
 * status, or 0 with WHY on failure. HDRS: the upstream's kept headers (stored with the copy,
 * Set-Cookie never; a waiter that joined another's fetch gets them without Set-Cookie).
 * SOURCE says where the answer came from (CMP_FROM_STALE: the upstream failed and a copy
 * older than its ttl was served); AGE_MS how old a copy from the cache is (0 otherwise).
 * Everything is valid during the callback only. */
typedef struct cmp_answer {
    int status;
    const char *body;
    size_t len;
    cmp_headers hdrs;
    cmp_source source;
    uint64_t age_ms;
    const char *why;
    int timed_out;
    const char *upstream;
} cmp_answer;

/* Never called inside cmp_lookup_start, never after cmp_lookup_cancel. */
typedef void (*cmp_lookup_cb)(const cmp_answer *a, void *arg);

cmp_wait *cmp_lookup_start(cmp_worker *w, rt_table *table, const char *path,
                           const char *request_id, const gw_trace_ctx *trace,
                           const char *client_ip, uint32_t timeout_ms, cmp_lookup_cb cb,
                           void *arg);
/* As cmp_lookup_start, the answer from upstream UI (an index of the worker's upstreams: the
 * one the route picked for the client), or from the route's own pick when UI < 0. NULL
 * also when PATH's GET route is not cached. */
cmp_wait *cmp_lookup_start_on(cmp_worker *w, rt_table *table, const char *path, int ui,
                              const char *request_id, const gw_trace_ctx *trace,
                              const char *client_ip, uint32_t timeout_ms, cmp_lookup_cb cb,
                              void *arg);
void cmp_lookup_cancel(cmp_wait *wt);
/* ---- a client's GET on a cached route ---- */

#define CMP_CACHED_URL_MAX 2048 /* longer URLs are proxied, not cached */

/* The cached lookup's handler (body, drain, abort) for a request handed to it with
 * gw_request_set_handler before cmp_cached_start. Its on_request is NULL. */
extern const gw_handler cmp_cached_handler;
/* Answers REQ — a GET or HEAD without a body on the route ROUTE_ID (a string of TABLE, which
 * is ref'd for the request) with "cache": true, its URL shorter than CMP_CACHED_URL_MAX —
 * from the user cache, or fetched (one call for concurrent misses of the same path), stored,
 * and answered with the upstream's status, kept headers and body, and X-Cache: HIT, MISS,
 * STALE or BYPASS (passed on, not stored); a URL with a query is fetched, not cached.
 * TIMEOUT_MS bounds the whole answer. Returns 0 (the answer follows later), or <0 (out of
 * memory, URL too long): nothing was answered and REQ is untouched. */
int cmp_cached_start(cmp_worker *w, rt_table *table, gw_request *req, const char *route_id,
                     int ui, uint32_t timeout_ms);

/* After a successful change (PUT, PATCH, DELETE) of PATH through the gateway: PATH is
 * marked on every worker of this process (answers fetched until now are not served, stored
 * or joined any more), lookups of it under way here are let go, and its keys (the GET
 * route's, under every upstream) are deleted from the cache. Returns NULL when there is
 * nothing to wait for (no cached route, the cache closing, out of memory: the mark alone),
 * else a handle whose CB runs once, on a later loop turn, when the store confirmed the
 * delete or could not within cache.timeout_ms (the mark covers that case) — never after
 * cmp_evict_cancel. */
typedef struct cmp_evict cmp_evict;
typedef void (*cmp_evicted_cb)(void *arg);
cmp_evict *cmp_lookup_evict(cmp_worker *w, rt_table *table, const char *path, cmp_evicted_cb cb,
                            void *arg);
void cmp_evict_cancel(cmp_evict *e);
/* Shutdown: every lookup under way ends (waiters get a failure), fetches are cancelled. */
void cmp_lookup_shutdown(cmp_worker *w);

#endif
