/* inflight_limit.h — concurrency limits (load shedding):
 *  - per upstream, "max_in_flight" with a bounded queue ("queue": {max, timeout_ms}): a
 *    worker's share is max_in_flight / workers (at least 1). A proxied request takes a slot
 *    from dispatch until it is reported; above the share it waits in the worker's queue
 *    (FIFO; a slot freed goes to the oldest) up to timeout_ms, and with the queue full (or no
 *    queue) it is answered 503 with Retry-After at once. Fallbacks take a slot only when one
 *    is free and nobody waits, and shadows are not sent while the candidate is at its share:
 *    both are shed before any client request waits.
 *  - per route, "max_in_flight": requests of the route at once in the process (all workers,
 *    one atomic count); above it 503 at once.
 * Everything per upstream runs on the worker's loop: no locks. */
#ifndef GW_INFLIGHT_LIMIT_H
#define GW_INFLIGHT_LIMIT_H

#include <stdint.h>
#include <uv.h>

#include "gateway/config.h"
#include "http/queue.h"
#include "http/server.h"
#include "routes/route_table.h"

typedef struct gw_inflight gw_inflight;

typedef struct gw_inflight_waiter {
    gw_queue node;
    uint64_t deadline;
    int ui;
    /* GRANTED 1: the slot is the waiter's; 0: timed out (answer 503). Called from the loop,
     * never from inside gw_inflight_leave. */
    void (*ready)(struct gw_inflight_waiter *w, int granted);
} gw_inflight_waiter;

enum { GW_INFLIGHT_GO = 0, GW_INFLIGHT_QUEUED = 1, GW_INFLIGHT_FULL = 2 };

/* The worker's limiter for the upstreams of CFG with WORKERS sharing each limit; NULL when
 * no upstream has max_in_flight (or out of memory: no limits then). */
gw_inflight *gw_inflight_new(uv_loop_t *loop, const gw_config *cfg, int workers);
/* Closes its timers and frees it (from their close callbacks); waiters get ready(0). */
void gw_inflight_close(gw_inflight *f);

/* Whether upstream UI has a limit (NULL F: none). */
int gw_inflight_limited(const gw_inflight *f, int ui);
/* A client request for UI: GO (slot taken), QUEUED (W->ready follows) or FULL. */
int gw_inflight_enter(gw_inflight *f, int ui, gw_inflight_waiter *w);
/* Takes a slot only if one is free and nobody waits (fallbacks); 1 taken, 0 shed. */
int gw_inflight_try(gw_inflight *f, int ui);
/* Whether UI is at its share or has waiters (shadows are skipped then). */
int gw_inflight_busy(const gw_inflight *f, int ui);
void gw_inflight_leave(gw_inflight *f, int ui);
void gw_inflight_cancel(gw_inflight *f, gw_inflight_waiter *w);

/* The request's holds, released when it is reported (worker.c): 1 + upstream index. */
void gw_inflight_release_request(gw_inflight *f, const gw_request *req);
/* Moves REQ's upstream slot to FB (a fallback): 1 done, 0 shed (FB at its share). */
int gw_inflight_switch(gw_inflight *f, gw_request *req, int fb);

/* Per route (or composition), process-wide: takes one of the MAX slots of ID into
 * req->hold_route; 0 when full. */
int gw_route_inflight_enter(const char *id, uint32_t max, gw_request *req);

/* Requests refused or timed out, for /metrics (process-wide sums). */
int gw_inflight_metrics_render(char **out, size_t *len, const char *const *upstream_names,
                               int n_upstreams);

#endif
