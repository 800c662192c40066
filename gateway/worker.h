/* worker.h — one worker: a thread running its own libuv loop with its own SO_REUSEPORT
 * listener, upstream pools, timers and access-log buffer. Workers share nothing mutable
 * but the route table snapshot (refcounted, swapped atomically). */
#ifndef GW_WORKER_H
#define GW_WORKER_H

#include <stdatomic.h>
#include <uv.h>

#include "gateway/access_log.h"
#include "gateway/config.h"
#include "gateway/metrics.h"
#include "http/server.h"
#include "http/upstream.h"
#include "http/oneshot.h"

typedef struct rt_table rt_table;
typedef struct cmp_worker cmp_worker;
typedef struct cmp_spec cmp_spec;

typedef struct gw_worker {
    int id;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wakeup;           /* main thread -> worker: a command is waiting */
    atomic_int command;          /* GW_CMD_* */
    uv_timer_t drain_timer;
    const gw_config *cfg;
    int log_fd;                  /* -1: access log off */
    struct gw_certs *certs;      /* the TLS listeners' certificate slots */
    gw_server *servers[GW_MAX_LISTENERS]; /* one per configured listener, same order */
    int n_servers;               /* servers not yet done (drain/close) */
    gw_access_log *log;
    gw_access_log *events;       /* operational events (fallback, shadow mismatch): stderr,
                                    buffered and written off the loop like the access log */
    gw_metrics *metrics;         /* written by this worker only; read by the admin thread */
    gw_upstream upstreams[GW_MAX_UPSTREAMS]; /* indexed like the route table's upstreams */
    uint64_t upstream_gen[GW_MAX_UPSTREAMS]; /* the definition each is built from (upstreams.h) */
    gw_upstream_conf empty_upstream; /* the settings of slots no upstream uses yet */
    uv_timer_t routes_timer;     /* notices a new table without traffic (pools to drain) */
    gw_oneshot_set oneshots;     /* shadow copies and internal GETs: caps, abort at shutdown */
    rt_table *table;             /* this worker's pinned snapshot */
    uint64_t table_gen;
    const cmp_spec *compositions; /* shared, immutable; NULL when none are configured */
    cmp_worker *composer;        /* this worker's composition engine (breakers, cache) */
    struct gw_rl_redis *ratelimit; /* shared rate limits through Redis; NULL: in-process */
    struct gw_inflight *inflight;  /* upstreams' max_in_flight; NULL: none has one */
    int started;                 /* 1 listening, <0 start error */
    int failed_listener;         /* with started < 0: which listener could not be opened */
    uv_sem_t ready;              /* posted once started is set */
    int stopping;
} gw_worker;

enum { GW_CMD_NONE = 0, GW_CMD_DRAIN = 1 };

/* Starts the worker thread; returns once it listens (0) or failed (<0). */
int gw_worker_start(gw_worker *w, int id, const gw_config *cfg, const cmp_spec *compositions,
                    int log_fd, struct gw_certs *certs);
/* Asks the worker to drain (stop accepting, finish in-flight requests up to the config's
 * drain deadline, then exit its loop). Thread-safe. */
void gw_worker_drain(gw_worker *w);
void gw_worker_join(gw_worker *w);

/* The current route table for a request on this worker, re-pinned only when a reload
 * published a new one. Borrowed: rt_table_ref it to keep it past this call. */
rt_table *gw_worker_routes(gw_worker *w);

#endif
