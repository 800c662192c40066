/* admin.h — the admin listener (default 127.0.0.1:9090) on the main thread's loop:
 * /healthz, /readyz, /metrics, and the /admin/ paths (Bearer token) for routes and reloads. It never
 * runs on a worker loop, so its file and database work never delays a proxied request. */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include "gateway/config.h"
#include "gateway/route_store.h"
#include "gateway/metrics.h"
#include "http/server.h"

typedef struct gw_admin {
    const gw_config *cfg;
    gw_metrics **metrics;         /* one per worker */
    int n_workers;
    int ready;                    /* a route table is loaded and the workers listen */
    gw_route_store *store;        /* the active route source */
    struct gw_certs *certs;       /* TLS certificates (admin_certs.c); NULL: none */
    gw_server *server;
    uv_loop_t *loop;
    int stopping;                 /* gw_admin_stop was called: no change starts any more */
    struct admin_req *queue_head; /* changes waiting, in arrival order */
    struct admin_req *queue_tail;
    struct admin_req *changing;   /* the change in progress (threadpool or store), or NULL */
    struct gw_cutover *cutover;   /* the cutover plans' driver, or NULL */
    struct gw_dashboard *dashboard; /* the dashboard's sampler (admin_dashboard.c), made on
                                       the first poll; NULL before */
    uv_timer_t lag_timer;         /* the main loop's lag probe */
    int lag_started;              /* 1 running, 2 closed */
    uint64_t lag_due;             /* uv_hrtime() the probe is due */
    uint64_t lag_window_start;
    uint64_t lag_max_cur, lag_max_prev; /* ns, this window and the previous one */
} gw_admin;

#define GW_ADMIN_TOKEN_BYTES 256 /* sizeof gw_config.admin_token and gw_admin_token.token */
#define GW_ADMIN_MIN_TOKEN 16    /* shortest token accepted off loopback */

/* Whether the N bytes GIVEN are TOKEN (NUL-terminated in a buffer of GW_ADMIN_TOKEN_BYTES).
 * Constant time: independent of the token's bytes and of its length. */
int gw_admin_token_equal(const char *token, const char *given, size_t n);
/* Whether cfg->admin_addr is a loopback address (127.0.0.0/8, ::1, ::ffff:127.x). */
int gw_admin_on_loopback(const gw_config *cfg);
/* Off loopback every non-empty token must have at least GW_ADMIN_MIN_TOKEN bytes. Returns 0,
 * or -1 with err naming the field ("FILE: admin.tokens.ci: ...", or "env GATEWAY_ADMIN_TOKEN:
 * ..." when TOKEN_FROM_ENV: the environment replaced admin.token). */
int gw_admin_check_tokens(const gw_config *cfg, int token_from_env, char *err, size_t errlen);

/* A route change made by the gateway itself (a cutover plan's step, who = "cutover"):
 * route ID put at WEIGHT (rt_table_cutover_step), queued behind the operators' changes and
 * applied, audited (ACTION, REASON) and published through the same path. CB is called once,
 * on the loop: STATUS 0 when in force (also when nothing differed), else an HTTP-ish status
 * and ERR (also 503 at shutdown). */
typedef void (*gw_admin_change_cb)(int status, const char *err, void *arg);
void gw_admin_cutover_step(gw_admin *a, const char *id, const char *legacy, const char *target,
                           int weight, const char *action, const char *reason,
                           gw_admin_change_cb cb, void *arg);
/* /admin/cutovers... (admin_cutover.c): answers through DONE(ARG) exactly once, now or later;
 * BODY[0..len) is only read before it returns. PATH is the request path. */
void gw_admin_cutover_request(gw_admin *a, gw_request *req, const char *who, const char *path,
                              const char *body, size_t len, gw_store_done done, void *arg);

/* Starts the admin listener on cfg->admin_addr. */
/* DOC (borrowed; NULL: 500) as the indented JSON answer with STATUS. */
void gw_admin_send_json(gw_request *req, int status, json_t *doc);
int gw_admin_start(gw_admin *a, uv_loop_t *loop);
void gw_admin_stop(gw_admin *a);

#endif
