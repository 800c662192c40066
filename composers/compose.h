/* compose.h — the composition engine: answers a composition's endpoint by issuing its legs
 * as internal GET requests resolved through the live route table (so a leg follows the
 * cutover), in parallel where dependencies allow, each with its own timeout, all under the
 * composition's deadline. A slow or dead optional leg yields null and is listed in
 * "degraded" (and X-Composition-Degraded); a required leg that is missing gives 404, that
 * fails 502, that times out 504; an upstream 4xx other than 404 passes through. */
#ifndef CMP_COMPOSE_H
#define CMP_COMPOSE_H

#include "gateway/config.h"
#include "gateway/metrics.h"
#include "http/server.h"
#include "http/upstream.h"
#include "routes/route_table.h"
#include "composers/breaker.h"
#include "composers/spec.h"

typedef struct cmp_worker cmp_worker;
struct cmp_cache;

/* Per worker: the upstreams and metrics of that worker; SPEC (may be NULL) is shared and
 * immutable. Also opens the worker's user cache (Redis when configured, else an LRU). */
cmp_worker *cmp_worker_new(uv_loop_t *loop, const cmp_spec *spec, const gw_config *cfg,
                           gw_upstream *upstreams, gw_metrics *metrics);
/* At shutdown, on the worker's loop: cancels lookups under way, closes the cache. */
void cmp_worker_close(cmp_worker *w);
/* After the loop ran the close callbacks. */
void cmp_worker_free(cmp_worker *w);

/* When REQ is for a composition, takes it over and returns 1 (the answer follows later);
 * else returns 0. TABLE is the worker's pinned route table (ref'd for the request). */
int cmp_handle(cmp_worker *w, rt_table *table, gw_request *req);
/* A GET on a route with "cache": true: answered from the user cache, or fetched (one call
 * for concurrent misses of the same path), stored, and answered with X-Cache: HIT, MISS or
 * STALE. Returns 1 when it took the request. */
int cmp_handle_cached(cmp_worker *w, rt_table *table, gw_request *req, const char *route_id,
                      uint32_t timeout_ms);
/* After a successful PUT/PATCH/DELETE through the gateway on a cached route. */
void cmp_invalidate(cmp_worker *w, const char *path);
/* For the gateway's handler: whether req->data belongs to the composer, and its abort. */
int cmp_owns(const gw_request *req);
void cmp_on_abort(gw_request *req);

#endif
