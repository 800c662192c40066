/* lookup.h — cached lookups (the user cache): a GET on a route with "cache": true goes to
 * the cache first (Redis, or the in-process LRU), then to the upstream on a miss, and the
 * answer is stored: a 200 for cache.ttl_ms, a 404 for cache.negative_ttl_ms, each kept
 * cache.stale_ms longer for stale-if-error. Lookups of the same key on this worker while one
 * is under way wait for it: one upstream call serves them all. The cache failing (slow,
 * down) is a miss: it never fails a request. */
#ifndef CMP_LOOKUP_H
#define CMP_LOOKUP_H

#include <stddef.h>
#include <stdint.h>

#include "routes/route_table.h"

typedef struct cmp_worker cmp_worker;
typedef struct cmp_wait cmp_wait;

typedef enum { CMP_FROM_CACHE, CMP_FROM_UPSTREAM, CMP_FROM_STALE } cmp_source;

/* STATUS: 200 or 404 from the cache or the upstream, another upstream status, or 0 with WHY
 * on failure. SOURCE says where the answer came from (CMP_FROM_STALE: the upstream failed
 * and a copy older than its ttl was served). Never called inside cmp_lookup_start, never
 * after cmp_lookup_cancel. */
typedef void (*cmp_lookup_cb)(int status, const char *body, size_t len, cmp_source source,
                              const char *why, int timed_out, const char *upstream, void *arg);

cmp_wait *cmp_lookup_start(cmp_worker *w, rt_table *table, const char *path,
                           const char *request_id, const char *client_ip, uint32_t timeout_ms,
                           cmp_lookup_cb cb, void *arg);
void cmp_lookup_cancel(cmp_wait *wt);
/* After a successful change (PUT, PATCH, DELETE) of PATH through the gateway. */
void cmp_lookup_invalidate(cmp_worker *w, const char *path);
/* Shutdown: every lookup under way ends (waiters get a failure), fetches are cancelled. */
void cmp_lookup_shutdown(cmp_worker *w);

#endif
