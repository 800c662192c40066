/* admin_upstreams.c — see admin_upstreams.h. */
#include "gateway/admin_upstreams.h"

#include <stdio.h>
#include <string.h>

#include "gateway/cutover.h"
#include "routes/upstreams.h"

int gw_admin_upstream_name(gw_slice path, char *out, size_t n)
{
    static const char prefix[] = "/admin/upstreams/";
    size_t pl = sizeof prefix - 1;
    if (path.n <= pl || memcmp(path.p, prefix, pl) != 0)
        return -1;
    size_t nn = path.n - pl;
    if (nn >= n || memchr(path.p + pl, '/', nn))
        return -1;
    memcpy(out, path.p + pl, nn);
    out[nn] = '\0';
    return 0;
}

/* One upstream as the API shows it: its definition, where it comes from, its index, and
 * what uses it. */
static json_t *upstream_json(gw_admin *a, const rt_table *t, int i)
{
    const char *name = rt_table_upstream(t, i);
    const rt_upstream_def *d = rt_table_upstream_def(t, i);
    if (!name)
        return NULL;
    json_t *def = d ? rt_upstream_def_json(d, 0) : json_object();
    json_t *refs = rt_upstream_referrers(t, name);
    if (refs)
        gw_admin_upstream_plan_refs(a, name, refs);
    json_t *o = json_pack("{s:s, s:s, s:o, s:o}", "name", name, "source",
                          d && d->from_routes ? "routes" : "gateway.json", "definition",
                          def ? def : json_null(), "used_by", refs ? refs : json_array());
    return o;
}

int gw_admin_upstreams_read(gw_admin *a, gw_request *req, gw_slice path)
{
    char name[GW_NAME_MAX + 1];
    int list = gw_slice_eq(path, "/admin/upstreams");
    if (!list && gw_admin_upstream_name(path, name, sizeof name) != 0)
        return 0;
    rt_table *t = rt_current_acquire();
    if (!t) {
        gw_response_error(req, 503, "no route table loaded");
        return 1;
    }
    json_t *doc;
    if (list) {
        json_t *arr = json_array();
        for (int i = 0; i < rt_table_upstream_count(t); i++) {
            json_t *u = upstream_json(a, t, i);
            if (u)
                json_array_append_new(arr, u);
        }
        doc = json_pack("{s:I, s:o}", "version", (json_int_t)rt_table_version(t), "upstreams", arr);
        gw_admin_send_json(req, 200, doc);
    } else {
        int i = rt_table_upstream_index(t, name);
        doc = i >= 0 ? upstream_json(a, t, i) : NULL;
        if (doc)
            gw_admin_send_json(req, 200, doc);
        else
            gw_response_error(req, 404, "no such upstream");
    }
    json_decref(doc);
    rt_table_unref(t);
    return 1;
}

void gw_admin_upstream_plan_refs(gw_admin *a, const char *name, json_t *refs)
{
    if (!a->cutover)
        return;
    json_t *l = gw_cutover_list(a->cutover);
    json_t *plans = json_object_get(l, "cutovers"), *p;
    size_t i;
    json_array_foreach(plans, i, p) {
        const char *st = json_string_value(json_object_get(p, "state"));
        if (!st || (strcmp(st, "running") != 0 && strcmp(st, "paused") != 0))
            continue;
        const char *route = json_string_value(json_object_get(p, "route"));
        static const char *const sides[] = { "legacy", "target" };
        for (int k = 0; k < 2; k++) {
            const char *v = json_string_value(json_object_get(p, sides[k]));
            if (v && route && strcmp(v, name) == 0) {
                char buf[300];
                snprintf(buf, sizeof buf, "cutovers[\"%.100s\"].%s", route, sides[k]);
                json_array_append_new(refs, json_string(buf));
            }
        }
    }
    json_decref(l);
}

rt_table *gw_admin_upstream_edit(const rt_table *cur, const char *op, const char *name,
                                 const json_t *body, int *status, json_t **referrers,
                                 char *err, size_t errlen)
{
    if (strcmp(op, "put") == 0)
        return rt_table_with_upstream(cur, name, body, status, err, errlen);
    if (strcmp(op, "patch") == 0)
        return rt_table_patch_upstream(cur, name, body, status, err, errlen);
    return rt_table_delete_upstream(cur, name, referrers, status, err, errlen);
}

json_t *gw_admin_upstream_audit(const rt_table *old, const rt_table *next, const char *name,
                                const char *who, const char *action)
{
    json_t *audit = json_array();
    const rt_upstream_def *o = rt_table_upstream_def(old, rt_table_upstream_index(old, name));
    const rt_upstream_def *n = rt_table_upstream_def(next, rt_table_upstream_index(next, name));
    json_t *oj = o ? rt_upstream_def_json(o, 1) : json_null();
    json_t *nj = n ? rt_upstream_def_json(n, 1) : json_null();
    if (!json_equal(oj, nj))
        json_array_append_new(audit, json_pack("{s:s, s:s, s:s, s:O, s:O}", "who", who, "action",
                                               action, "upstream", name, "old", oj, "new", nj));
    json_decref(oj);
    json_decref(nj);
    return audit;
}
