// upstreams.h — upstream definitions as part of the route table: a routes document (file or
// PostgreSQL) may hold "upstreams": { NAME: {...} } next to "routes", in gateway.json's shape.
// They are validated with the routes that use them, swapped with the table (an in-flight
// request keeps the snapshot, and so the definitions, it started with) and written back with
// it. gateway.json's upstreams seed the set; a definition of the same name in the routes
// source wins over gateway.json's.
//
// Index stability: workers keep their pools in an array indexed like the table's upstream
// list, and a request may use an index of the table it pinned after a newer table is
// published. So gateway.json's upstreams keep the positions they were given in, and an
// upstream the routes source adds keeps one slot (after those) for as long as any table
// names it; a slot is reused only once no table alive names its old upstream.
#ifndef RT_UPSTREAMS_H
#define RT_UPSTREAMS_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "http/upstream_conf.h"
#include "routes/route_table.h"

typedef struct rt_upstream_def {
    atomic_uint refs;
    uint64_t gen;          // unique in the process: a changed definition has a new one
    int from_routes;       // defined by the routes source (written back with it)
    json_t *json;          // the definition as written when from_routes, else NULL
    gw_upstream_conf conf;
} rt_upstream_def;

// The application's reader of one upstream object (gateway/config_upstream.c): fills OUT
// (defaults included) or writes "SOURCE: upstreams.NAME.field: reason" into err and returns
// nonzero. LIVE: a routes-source definition (some keys are gateway.json-only).
typedef int (*rt_upstream_parse_fn)(json_t *def, const char *name, const char *source,
                                    int live, gw_upstream_conf *out, char *err, size_t errlen);
// A definition as JSON, for gateway.json's (which keeps none as written).
typedef json_t *(*rt_upstream_json_fn)(const gw_upstream_conf *conf);
void rt_upstreams_set_hooks(rt_upstream_parse_fn parse, rt_upstream_json_fn to_json);

// gateway.json's upstreams, before the first table is built. Tables built with seed names
// that match get these definitions. 0, or -1 (out of memory).
int rt_upstreams_seed(const gw_upstream_conf *confs, int n);
// Drops the seeds (process end, tests).
void rt_upstreams_reset(void);

// The definition at index I of T (NULL: a hole, an index past the end, or a name the table
// was given without a definition, as unit tests do). Borrowed: lives as long as T.
const rt_upstream_def *rt_table_upstream_def(const rt_table *t, int i);
// The index of upstream NAME in T, or -1.
int rt_table_upstream_index(const rt_table *t, const char *name);
// A definition as JSON (new reference): as written for the routes source's, else from the
// hook. "source": "routes" | "gateway.json" is added when WITH_SOURCE.
json_t *rt_upstream_def_json(const rt_upstream_def *d, int with_source);
void rt_upstream_def_ref(const rt_upstream_def *d);
void rt_upstream_def_unref(const rt_upstream_def *d);

// What names upstream NAME in T: a JSON array of strings such as "routes[\"users\"].split"
// or "legacy_upstream" (empty: nothing). New reference, NULL when out of memory.
json_t *rt_upstream_referrers(const rt_table *t, const char *name);

// Changes (admin API, gatewayctl), like route_edit.h's: a new table (version + 1) or NULL
// with err set and *status the HTTP status (404 no such upstream, 409 still referenced or
// defined in gateway.json, 422 invalid). *referrers (may be NULL) gets the array of what
// still refers to it on a 409 for that reason (new reference).
// PUT: DEF (a whole upstream object) becomes NAME's definition in the routes source.
rt_table *rt_table_with_upstream(const rt_table *t, const char *name, const json_t *def,
                                 int *status, char *err, size_t errlen);
// PATCH: a JSON merge patch (RFC 7396) on NAME's definition in force (gateway.json's when
// the routes source has none: the result is then defined in the routes source).
rt_table *rt_table_patch_upstream(const rt_table *t, const char *name, const json_t *patch,
                                  int *status, char *err, size_t errlen);
// DELETE: drops the routes source's definition of NAME. A name gateway.json also defines
// goes back to gateway.json's definition; one only gateway.json defines cannot be removed
// here (409); one still named by a route cannot be removed (409, *referrers).
rt_table *rt_table_delete_upstream(const rt_table *t, const char *name, json_t **referrers,
                                   int *status, char *err, size_t errlen);

#endif
