/* ratelimit.h — a route's "rate_limit" applied to one request: the key (client ip, a header,
 * or the whole route), the GCRA decision (ratelimit_local.c in-process), the 429 answer with
 * its headers, and the counters for /metrics.
 *
 * Headers on a 429 (the gateway's JSON error), and on every allowed answer but Retry-After:
 *   Retry-After: S                         seconds until a request of this key would pass
 *   RateLimit-Policy: "ROUTE";q=RATE;w=PER_S   (IETF draft-ietf-httpapi-ratelimit-headers)
 *   RateLimit: "ROUTE";r=REMAINING;t=RESET_S
 *   X-RateLimit-Limit / X-RateLimit-Remaining / X-RateLimit-Reset   (the older trio) */
#ifndef GW_RATELIMIT_H
#define GW_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/gcra.h"
#include "http/server.h"
#include "routes/route_table.h"

/* Where a decision was made (label "mode" in /metrics). */
typedef enum gw_rl_mode {
    GW_RL_LOCAL = 0,    /* no shared store configured: the limit is this process's */
    GW_RL_SHARED = 1,   /* Redis decided: exact across instances */
    GW_RL_FALLBACK = 2, /* Redis slow or down: rate / instances, in this process */
    GW_RL__MODES
} gw_rl_mode;

/* Every function below takes the route (its id names the bucket and the metrics) and the
 * limit L that applies: the route's own "rate_limit", or gateway.json's default. */

/* The limit for ROUTE: its own, else DEF (rate_limits.default, rate 0: none); NULL when
 * neither. */
static inline const rt_rate_limit *gw_rl_for(const rt_route *route, const rt_rate_limit *def)
{
    return route->rate_limit.rate ? &route->rate_limit : def && def->rate ? def : NULL;
}

/* The hash naming ROUTE's bucket for REQ (route id, key kind and key value). A request
 * without the key's header counts under one shared "no header" key. */
uint64_t gw_rl_key_hash(const rt_route *route, const rt_rate_limit *l, const gw_request *req);
/* The key value itself (the client address, the header's value, "-" without the header,
 * empty for "route"), for a Redis key; valid as long as REQ's head. */
gw_slice gw_rl_key_value(const rt_rate_limit *l, const gw_request *req);

/* Decides REQ on ROUTE in this process: DIVISOR 1 for a local limit, the instance count for
 * the fallback share. Counts the outcome. */
void gw_rl_decide_local(const rt_route *route, const rt_rate_limit *l, const gw_request *req,
                        uint32_t divisor, gw_rl_mode mode, gw_gcra_result *r);

/* The same for a key hash already computed (gw_rl_key_hash). */
void gw_rl_decide_hash(const rt_route *route, const rt_rate_limit *l, uint64_t key,
                       uint32_t divisor, gw_rl_mode mode, gw_gcra_result *r);

/* Counts a decision (shared ones are counted by their caller). */
void gw_rl_count(const rt_route *route, const rt_rate_limit *l, gw_rl_mode mode, int allowed);

/* The RateLimit-Policy, RateLimit and X-RateLimit-* lines for result R into OUT (N bytes);
 * their length, 0 when they do not fit. */
size_t gw_rl_headers(char *out, size_t n, const rt_route *route, const rt_rate_limit *l,
                     const gw_gcra_result *r);
/* REQ was allowed with R: its answer, whoever writes it, carries those lines. */
void gw_rl_mark_allowed(gw_request *req, const rt_route *route, const rt_rate_limit *l,
                        const gw_gcra_result *r);

/* Answers REQ with 429 and the headers above for result R (per-instance share DIVISOR). */
void gw_rl_answer_limited(gw_request *req, const rt_route *route, const rt_rate_limit *l,
                          const gw_gcra_result *r);

/* The rate-limit lines of /metrics into a malloc'd buffer; 0 or -1 (out of memory). */
int gw_rl_metrics_render(char **out, size_t *len);

/* The process-wide mode gauge: which mode the last decision of any worker used, per mode
 * the number of workers in it (set by the Redis limiter on transitions). */
void gw_rl_workers_in_mode(gw_rl_mode from, gw_rl_mode to);
/* The fallback divisor the Redis limiter uses now (gateway_ratelimit_instances; 0 without
 * shared limits). */
void gw_rl_instances_seen(uint32_t n);
/* Script calls of the Redis limiter answered with an error
 * (gateway_ratelimit_redis_errors_total). */
void gw_rl_redis_errors_add(uint64_t n);

#endif
