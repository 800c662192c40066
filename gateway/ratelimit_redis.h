/* ratelimit_redis.h — the shared rate limiter: the checks of one loop turn go out at its end
 * as one EVALSHA of the GCRA script per batch (up to 128 requests; per slot in a cluster)
 * through the worker's Redis client (composers/redis_client.h: one server, Sentinel or
 * Cluster, on the worker's loop), never blocking. The script decides a batch's requests in
 * arrival order, as one call per request would. One server (or Sentinel): one batch out at a
 * time; what comes in meanwhile goes when it is answered (or at once when 128 wait).
 *
 * The script's sha is computed here; a NOSCRIPT answer (a new server, a restart, SCRIPT
 * FLUSH, a cluster node that never saw it) re-sends that batch as EVAL, which loads it.
 *
 * Modes (gw_rl_mode): client up = SHARED, the script decides, exact across instances.
 * Otherwise = FALLBACK: the request is decided at once in this process with rate / N —
 * neither an open flood nor a 429 storm. A request whose answer is later than timeout_ms is
 * decided the same way (its late answer is dropped); when nothing at all came back for
 * timeout_ms the client drops the connection and makes it again. In a cluster a key whose
 * master is down is decided locally while the others stay shared. Transitions are logged
 * and shown in /metrics.
 *
 * N: "instances" when configured, else learned: every worker refreshes its process's entry
 * in the sorted set gw:rl:instances (scored by Redis's clock) each second; entries older
 * than 3 s are dropped and the count of the rest is N (kept while Redis is away). */
#ifndef GW_RATELIMIT_REDIS_H
#define GW_RATELIMIT_REDIS_H

#include <stdint.h>
#include <uv.h>

#include "composers/redis_client.h"
#include "gateway/ratelimit.h"

typedef struct gw_rl_redis gw_rl_redis;
typedef struct gw_rl_wait gw_rl_wait;

/* Called exactly once per queued check (unless cancelled first), from the loop. */
typedef void (*gw_rl_done)(void *arg, const gw_gcra_result *r);

/* A limiter for LOOP talking to the Redis of CONF; DIVISOR is the instance count for the
 * fallback (0: learned), TIMEOUT_MS the answer deadline. Starts connecting at once. NULL
 * when CONF is unusable or out of memory. */
gw_rl_redis *gw_rl_redis_new(uv_loop_t *loop, const cmp_redis_conf *conf, uint32_t divisor,
                             uint32_t timeout_ms, int worker_id);
/* The fallback divisor now: the configured instances, else the learned count (1 until
 * known). 1 for NULL. */
uint32_t gw_rl_redis_divisor(const gw_rl_redis *rl);
/* Closes the connection (pending checks are decided locally first) and frees the limiter
 * once its timer is closed. Safe with NULL. */
void gw_rl_redis_close(gw_rl_redis *rl);

/* Decides REQ on ROUTE. Returns 1 when decided now into *NOW (fallback: not connected), or 0
 * when the check is queued: DONE(ARG, result) follows, and *WAIT lets the caller cancel it
 * (the request went away) — after a cancel DONE is not called. */
int gw_rl_redis_check(gw_rl_redis *rl, const rt_route *route, const rt_rate_limit *l,
                      const gw_request *req,
                      gw_rl_done done, void *arg, gw_rl_wait **wait, gw_gcra_result *now);
void gw_rl_redis_cancel(gw_rl_wait *wait);

#endif
