/* mutate_upstreams.c — operator changes to the upstream definitions of a table
 * (upstreams.h): like mutate.c's route changes, each edits the old table's canonical
 * document and parses it again, so an upstream change is validated together with every
 * route that uses it, by the rules a routes file is. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "routes/parse.h"
#include "routes/route_edit.h"
#include "routes/upstreams.h"

#define SOURCE "routes"

static rt_table *fail(int *status, int code, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static rt_table *fail(int *status, int code, char *err, size_t errlen, const char *fmt, ...)
{
    if (status)
        *status = code;
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return NULL;
}

/* The document of T with its "upstreams" object (created when absent) in *ups. */
static json_t *doc_of(const rt_table *t, json_t **ups)
{
    json_t *doc = rt_table_to_json(t);
    if (!doc)
        return NULL;
    *ups = json_object_get(doc, "upstreams");
    if (!*ups) {
        *ups = json_object();
        if (json_object_set_new(doc, "upstreams", *ups) != 0) {
            json_decref(doc);
            return NULL;
        }
    }
    return doc;
}

/* Parses the edited DOC (consumed) into T's successor. */
static rt_table *commit(const rt_table *t, json_t *doc, int *status, char *err, size_t errlen)
{
    json_t *ups = json_object_get(doc, "upstreams");
    if (ups && json_object_size(ups) == 0)
        json_object_del(doc, "upstreams");
    rt_table *n = rt__table_from_json(doc, SOURCE, (const char *const *)t->upstreams,
                                      t->n_seed, 1, err, errlen);
    json_decref(doc);
    if (!n) {
        if (status)
            *status = 422;
        return NULL;
    }
    n->version = t->version + 1;
    return n;
}

static int seeded(const rt_table *t, const char *name)
{
    for (int i = 0; i < t->n_seed; i++)
        if (strcmp(t->upstreams[i], name) == 0)
            return 1;
    return 0;
}

rt_table *rt_table_with_upstream(const rt_table *t, const char *name, const json_t *def,
                                 int *status, char *err, size_t errlen)
{
    if (!t || !name)
        return fail(status, 500, err, errlen, SOURCE ": no route table");
    if (!json_is_object(def))
        return fail(status, 422, err, errlen, SOURCE ": upstreams.%.80s: must be an object", name);
    json_t *ups, *doc = doc_of(t, &ups);
    json_t *copy = json_deep_copy(def);
    if (!doc || !copy || json_object_set_new(ups, name, copy) != 0) {
        json_decref(doc);
        return fail(status, 500, err, errlen, SOURCE ": out of memory");
    }
    return commit(t, doc, status, err, errlen);
}

rt_table *rt_table_patch_upstream(const rt_table *t, const char *name, const json_t *patch,
                                  int *status, char *err, size_t errlen)
{
    if (!t || !name)
        return fail(status, 500, err, errlen, SOURCE ": no route table");
    const rt_upstream_def *d = rt_table_upstream_def(t, rt_table_upstream_index(t, name));
    if (!d)
        return fail(status, 404, err, errlen, SOURCE ": no upstream \"%.80s\"", name);
    if (!json_is_object(patch))
        return fail(status, 422, err, errlen, SOURCE ": upstreams.%.80s: a patch must be an object",
                    name);
    json_t *cur = rt_upstream_def_json(d, 0);
    if (cur && !d->from_routes) {
        /* gateway.json's start-only limits may not be written in the routes source; they
         * stay in force from gateway.json whatever the override says (inflight_limit.c) */
        json_object_del(cur, "max_in_flight");
        json_object_del(cur, "queue");
    }
    json_t *merged = cur ? rt__merge_patch(cur, patch) : NULL;
    if (!merged)
        return fail(status, 500, err, errlen, SOURCE ": out of memory");
    rt_table *n = rt_table_with_upstream(t, name, merged, status, err, errlen);
    json_decref(merged);
    return n;
}

rt_table *rt_table_delete_upstream(const rt_table *t, const char *name, json_t **referrers,
                                   int *status, char *err, size_t errlen)
{
    if (referrers)
        *referrers = NULL;
    if (!t || !name)
        return fail(status, 500, err, errlen, SOURCE ": no route table");
    int idx = rt_table_upstream_index(t, name);
    const rt_upstream_def *d = rt_table_upstream_def(t, idx);
    if (idx < 0)
        return fail(status, 404, err, errlen, SOURCE ": no upstream \"%.80s\"", name);
    if (!d || !d->from_routes)
        return fail(status, 409, err, errlen,
                    SOURCE ": upstreams.%.80s: defined in gateway.json, not in the routes source: "
                    "remove it there", name);
    if (!seeded(t, name)) {
        json_t *refs = rt_upstream_referrers(t, name);
        if (!refs)
            return fail(status, 500, err, errlen, SOURCE ": out of memory");
        if (json_array_size(refs) > 0) {
            char first[300];
            snprintf(first, sizeof first, "%s", json_string_value(json_array_get(refs, 0)));
            fail(status, 409, err, errlen,
                 SOURCE ": upstreams.%.80s: still in use by %zu referrer(s), first %s",
                 name, json_array_size(refs), first);
            if (referrers)
                *referrers = refs;
            else
                json_decref(refs);
            return NULL;
        }
        json_decref(refs);
    }
    json_t *ups, *doc = doc_of(t, &ups);
    if (!doc)
        return fail(status, 500, err, errlen, SOURCE ": out of memory");
    json_object_del(ups, name);
    return commit(t, doc, status, err, errlen);
}
