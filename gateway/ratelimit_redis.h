/* ratelimit_redis.h — the shared rate limiter: one hiredis async connection per worker on
 * the worker's loop, one EVALSHA of the GCRA script per request (hiredis pipelines every
 * command queued in a loop iteration into one write), never blocking.
 *
 * Connection: WAIT -(timer)-> RESOLVING -> CONNECTING -(SCRIPT LOAD answered)-> UP; any
 * failure back to WAIT with a backoff (100 ms doubling to 5 s). The script is loaded on
 * each connection; a NOSCRIPT answer (Redis restarted, SCRIPT FLUSH) re-sends that request
 * as EVAL, which loads it again.
 *
 * Modes (gw_rl_mode): UP = SHARED, the script decides, exact across instances. Otherwise =
 * FALLBACK: the request is decided at once in this process with rate / instances — neither
 * an open flood nor a 429 storm. A request whose answer is later than timeout_ms is decided
 * the same way (its late answer is dropped); when nothing at all came back for timeout_ms
 * the connection is dropped and re-made. Transitions are logged and shown in /metrics. */
#ifndef GW_RATELIMIT_REDIS_H
#define GW_RATELIMIT_REDIS_H

#include <stdint.h>
#include <uv.h>

#include "gateway/ratelimit.h"

typedef struct gw_rl_redis gw_rl_redis;
typedef struct gw_rl_wait gw_rl_wait;

/* Called exactly once per queued check (unless cancelled first), from the loop. */
typedef void (*gw_rl_done)(void *arg, const gw_gcra_result *r);

/* A limiter for LOOP talking to HOSTPORT; DIVISOR is the instance count for the fallback,
 * TIMEOUT_MS the answer deadline. Starts connecting at once. NULL when out of memory. */
gw_rl_redis *gw_rl_redis_new(uv_loop_t *loop, const char *hostport, uint32_t divisor,
                             uint32_t timeout_ms, int worker_id);
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
