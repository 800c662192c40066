/* mutate.c — operator changes to a route table (route_edit.h). Each change edits the old
 * table's canonical document and parses it again with the old table's upstream names, so a
 * change is validated by exactly the rules a routes file is, and the old table is never
 * touched: readers that pinned it go on undisturbed. Admin-rate, not request-rate: the cost
 * is a serialize and a parse of the whole table (a few ms for 10,000 routes). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "routes/parse.h"
#include "routes/route_edit.h"

#define SOURCE "routes" /* how errors name an edited table */

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* An edit in progress: the document, its routes array, and the route being changed. */
typedef struct edit {
    json_t *doc;
    json_t *routes;
    json_t *route;   /* NULL when there is no route with the id */
    size_t index;    /* its position, or the array's size when absent */
    char label[96];  /* how errors name it: routes["id"] */
} edit;

enum { MAY_BE_NEW, MUST_EXIST, NULL_IS_ALL };

/* Starts an edit of route ID of T. MODE says whether ID may be a new route, must exist
 * (else the error "routes: no route \"ID\""), or may be NULL for every route. Returns 0, or
 * -1 with err set and nothing to release. */
static int begin(const rt_table *t, const char *id, int mode, edit *e, char *err,
                 size_t errlen)
{
    *e = (edit){ 0 };
    if (!t) {
        errf(err, errlen, SOURCE ": no route table");
        return -1;
    }
    if (!id && mode != NULL_IS_ALL) {
        errf(err, errlen, SOURCE ": no route id");
        return -1;
    }
    if (!(e->doc = rt_table_to_json(t))) {
        errf(err, errlen, SOURCE ": out of memory");
        return -1;
    }
    e->routes = json_object_get(e->doc, "routes");
    e->index = json_array_size(e->routes);
    for (size_t i = 0; id && i < json_array_size(e->routes); i++) {
        json_t *r = json_array_get(e->routes, i);
        if (strcmp(json_string_value(json_object_get(r, "id")), id) == 0) {
            e->route = r;
            e->index = i;
            break;
        }
    }
    if (id && !e->route && mode != MAY_BE_NEW) {
        errf(err, errlen, SOURCE ": no route \"%s\"", id);
        json_decref(e->doc);
        e->doc = NULL;
        return -1;
    }
    rt__route_label(e->label, sizeof(e->label), 1, id, e->index);
    return 0;
}

static void abandon(edit *e)
{
    json_decref(e->doc);
    e->doc = NULL;
}

/* Ends an edit: the edited document becomes a new validated table (or NULL, err set). */
static rt_table *commit(const rt_table *t, edit *e, int failed, char *err, size_t errlen)
{
    if (failed) {
        errf(err, errlen, SOURCE ": out of memory");
        abandon(e);
        return NULL;
    }
    /* the seeds only: the document brings the upstreams the routes source defines */
    rt_table *n = rt__table_from_json(e->doc, SOURCE, (const char *const *)t->upstreams,
                                      t->n_seed, 1, err, errlen);
    abandon(e);
    if (n)
        n->version = t->version + 1;
    return n;
}

/* Sets (or with V NULL deletes) field KEY of the route; returns nonzero on failure. */
static int set_field(edit *e, const char *key, json_t *v)
{
    if (!v) {
        json_object_del(e->route, key);
        return 0;
    }
    return json_object_set_new(e->route, key, v) != 0;
}

/* ROUTE's id must be absent or ID. */
static int check_id(edit *e, const json_t *route, const char *id, char *err, size_t errlen)
{
    json_t *jid = json_object_get(route, "id");
    if (jid && !(json_is_string(jid) && strcmp(json_string_value(jid), id) == 0)) {
        errf(err, errlen, SOURCE ": %s.id: must be \"%s\" (the id of the route changed)",
             e->label, id);
        return -1;
    }
    return 0;
}

rt_table *rt_table_with_route(const rt_table *t, const char *id, const json_t *route,
                              char *err, size_t errlen)
{
    edit e;
    if (begin(t, id, MAY_BE_NEW, &e, err, errlen) != 0)
        return NULL;
    if (!json_is_object(route)) {
        errf(err, errlen, SOURCE ": %s: must be an object", e.label);
        abandon(&e);
        return NULL;
    }
    if (check_id(&e, route, id, err, errlen) != 0) {
        abandon(&e);
        return NULL;
    }
    json_t *copy = json_deep_copy(route);
    if (copy) /* what GET /admin/routes/{id} adds (open tunnels) is not part of a route */
        json_object_del(copy, "tunnels");
    int failed = !copy || json_object_set_new(copy, "id", json_string(id)) != 0;
    if (e.route)
        failed |= json_array_set_new(e.routes, e.index, copy) != 0;
    else
        failed |= json_array_append_new(e.routes, copy) != 0;
    return commit(t, &e, failed, err, errlen);
}

json_t *rt__merge_patch(json_t *target, const json_t *patch)
{
    if (!json_is_object(patch)) {
        json_decref(target);
        return json_deep_copy(patch);
    }
    if (!json_is_object(target)) {
        json_decref(target);
        target = json_object();
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)patch, key, v) {
        if (!target)
            return NULL;
        if (json_is_null(v)) {
            json_object_del(target, key);
            continue;
        }
        json_t *cur = json_object_get(target, key);
        json_incref(cur);
        json_t *merged = rt__merge_patch(cur, v);
        if (json_object_set_new(target, key, merged) != 0) {
            json_decref(target);
            target = NULL;
        }
    }
    return target;
}

rt_table *rt_table_patch_route(const rt_table *t, const char *id, const json_t *patch,
                               char *err, size_t errlen)
{
    edit e;
    if (begin(t, id, MUST_EXIST, &e, err, errlen) != 0)
        return NULL;
    if (!json_is_object(patch)) {
        errf(err, errlen, SOURCE ": %s: a patch must be an object", e.label);
        abandon(&e);
        return NULL;
    }
    if (check_id(&e, patch, id, err, errlen) != 0) {
        abandon(&e);
        return NULL;
    }
    json_incref(e.route);
    json_t *merged = rt__merge_patch(e.route, patch);
    int failed = !merged || json_array_set_new(e.routes, e.index, merged) != 0;
    return commit(t, &e, failed, err, errlen);
}

rt_table *rt_table_delete_route(const rt_table *t, const char *id, char *err, size_t errlen)
{
    edit e;
    if (begin(t, id, MUST_EXIST, &e, err, errlen) != 0)
        return NULL;
    return commit(t, &e, json_array_remove(e.routes, e.index) != 0, err, errlen);
}

/* A NULL name becomes a missing field, which the parser reports as such. */
static json_t *string_or_null(const char *s)
{
    return s ? json_string(s) : NULL;
}

rt_table *rt_table_flip(const rt_table *t, const char *id, const char *upstream, char *err,
                        size_t errlen)
{
    edit e;
    if (begin(t, id, MUST_EXIST, &e, err, errlen) != 0)
        return NULL;
    int failed = set_field(&e, "upstream", string_or_null(upstream));
    json_object_del(e.route, "split");
    json_object_del(e.route, "sticky");
    return commit(t, &e, failed, err, errlen);
}

rt_table *rt_table_split(const rt_table *t, const char *id, const json_t *weights, char *err,
                         size_t errlen)
{
    edit e;
    if (begin(t, id, MUST_EXIST, &e, err, errlen) != 0)
        return NULL;
    if (!weights) {
        errf(err, errlen, SOURCE ": %s.split: missing", e.label);
        abandon(&e);
        return NULL;
    }
    json_t *copy = json_deep_copy(weights);
    return commit(t, &e, !copy || set_field(&e, "split", copy), err, errlen);
}

rt_table *rt_table_shadow(const rt_table *t, const char *id, const char *upstream, char *err,
                          size_t errlen)
{
    edit e;
    if (begin(t, id, MUST_EXIST, &e, err, errlen) != 0)
        return NULL;
    json_t *shadow = json_object_get(e.route, "shadow");
    int failed = 0;
    if (!shadow)
        failed = set_field(&e, "shadow", shadow = json_object());
    if (!failed && upstream)
        failed = json_object_set_new(shadow, "upstream", json_string(upstream)) != 0;
    else if (!failed)
        json_object_del(shadow, "upstream");
    return commit(t, &e, failed, err, errlen);
}

rt_table *rt_table_unshadow(const rt_table *t, const char *id, char *err, size_t errlen)
{
    edit e;
    if (begin(t, id, MUST_EXIST, &e, err, errlen) != 0)
        return NULL;
    json_object_del(e.route, "shadow");
    return commit(t, &e, 0, err, errlen);
}

rt_table *rt_table_rollback(const rt_table *t, const char *id, char *err, size_t errlen)
{
    edit e;
    if (t && t->legacy_index < 0) {
        errf(err, errlen, SOURCE ": legacy_upstream: unknown upstream \"%s\"", t->legacy);
        return NULL;
    }
    if (begin(t, id, NULL_IS_ALL, &e, err, errlen) != 0)
        return NULL;
    int failed = 0;
    for (size_t i = 0; i < json_array_size(e.routes); i++) {
        json_t *r = json_array_get(e.routes, i);
        if (e.route && r != e.route)
            continue;
        failed |= json_object_set_new(r, "upstream", json_string(t->legacy)) != 0;
        json_object_del(r, "split");
        json_object_del(r, "sticky");
        json_object_del(r, "fallback");
    }
    return commit(t, &e, failed, err, errlen);
}

/* A shadow to TARGET is the plan's own (its shadow step): it goes when the step moves on. */
static void drop_shadow_to(edit *e, const char *target)
{
    json_t *sh = json_object_get(e->route, "shadow");
    const char *up = json_string_value(json_object_get(sh, "upstream"));
    if (sh && up && strcmp(up, target) == 0)
        json_object_del(e->route, "shadow");
}

rt_table *rt_table_cutover_step(const rt_table *t, const char *id, const char *legacy,
                                const char *target, int weight, char *err, size_t errlen)
{
    if (!legacy || !target || weight < -1 || weight > 100) {
        errf(err, errlen, SOURCE ": cutover step: bad arguments");
        return NULL;
    }
    edit e;
    if (begin(t, id, MUST_EXIST, &e, err, errlen) != 0)
        return NULL;
    int failed = set_field(&e, "upstream", json_string(weight == 100 ? target : legacy));
    if (weight > 0 && weight < 100) {
        failed |= set_field(&e, "split", json_pack("{s:i, s:i}", legacy, 100 - weight, target,
                                                   weight));
    } else {
        json_object_del(e.route, "split");
        json_object_del(e.route, "sticky");
    }
    if (weight == 0) {
        json_t *shadow = json_object_get(e.route, "shadow");
        if (!shadow)
            failed |= set_field(&e, "shadow", shadow = json_object());
        if (!failed)
            failed |= json_object_set_new(shadow, "upstream", json_string(target)) != 0;
    } else {
        drop_shadow_to(&e, target);
    }
    return commit(t, &e, failed, err, errlen);
}
