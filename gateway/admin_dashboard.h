/* admin_dashboard.h — the cutover dashboard on the admin listener:
 *
 *   GET /dashboard, /dashboard/app.js, /dashboard/app.css   the page (no token: it holds no
 *        data; it asks for the token once, keeps it in sessionStorage, and sends it as
 *        Authorization: Bearer on every data request and change)
 *   GET /admin/dashboard                                     the JSON it polls every second
 *
 * The page's files are compiled into the binary (gateway/dashboard/, embedded by the
 * Makefile with gateway/dashboard/embed.sh). Figures come from the counters that exist
 * (gw_metrics per route and side, the cache's, the shadow mismatch samples), sampled on the
 * main loop once a second while someone polls (dashboard_stats.h), never on the request
 * path; the audit history is re-read only when the route table's version changes. */
#ifndef GW_ADMIN_DASHBOARD_H
#define GW_ADMIN_DASHBOARD_H

#include <stddef.h>

#include "gateway/admin.h"

typedef struct gw_dash_asset {
    const char *path;                  /* "/dashboard", "/dashboard/app.js", ... */
    const char *type;                  /* Content-Type */
    const unsigned char *data;
    size_t len;
} gw_dash_asset;
extern const gw_dash_asset gw_dash_assets[]; /* generated: $(OUT)/gen/dashboard_assets.c */
extern const int gw_dash_n_assets;

/* Serves PATH when it is one of the page's files; returns 1 when it answered. No token. */
int gw_admin_dashboard_page(gw_admin *a, gw_request *req, gw_slice path);
/* GET /admin/dashboard (the token was checked). */
void gw_admin_dashboard_data(gw_admin *a, gw_request *req);
/* Stops the sampler; the memory goes once its timer is closed and a history read in
 * flight has answered. Safe to call when the dashboard was never used. */
void gw_admin_dashboard_close(gw_admin *a);

#endif
