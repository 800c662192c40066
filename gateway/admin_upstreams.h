/* admin_upstreams.h — /admin/upstreams: the upstream definitions in force (read here) and
 * the parts of their changes (PUT|PATCH|DELETE /admin/upstreams/{name}) that admin.c's
 * change queue runs: the edit, the cutover plans that still use a name, the audit entry. */
#ifndef GW_ADMIN_UPSTREAMS_H
#define GW_ADMIN_UPSTREAMS_H

#include <jansson.h>

#include "gateway/admin.h"
#include "http/server.h"
#include "routes/route_table.h"

/* GET /admin/upstreams and GET /admin/upstreams/{name}: answered here (1), or 0 (not one). */
int gw_admin_upstreams_read(gw_admin *a, gw_request *req, gw_slice path);
/* The name in /admin/upstreams/{name} into out[n]: 0, or -1 when PATH is not one. */
int gw_admin_upstream_name(gw_slice path, char *out, size_t n);
/* Cutover plans (running or paused) that name upstream NAME, appended to REFS as
 * "cutovers[\"route\"].legacy|target". Main loop. */
void gw_admin_upstream_plan_refs(gw_admin *a, const char *name, json_t *refs);
/* Threadpool: OP ("put", "patch", "delete") on upstream NAME of CUR with BODY. Returns the
 * new table, or NULL with *status, err and (409 in use) *referrers set. */
rt_table *gw_admin_upstream_edit(const rt_table *cur, const char *op, const char *name,
                                 const json_t *body, int *status, json_t **referrers,
                                 char *err, size_t errlen);
/* The audit entry of a change of NAME from OLD to NEXT (an array of one, or empty when the
 * definition in force did not change). */
json_t *gw_admin_upstream_audit(const rt_table *old, const rt_table *next, const char *name,
                                const char *who, const char *action);

#endif
