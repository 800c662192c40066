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
    gw_server *server;
} gw_admin;

/* Starts the admin listener on cfg->admin_addr. */
int gw_admin_start(gw_admin *a, uv_loop_t *loop);
void gw_admin_stop(gw_admin *a);

#endif
