// route_edit.h — the route table as JSON, and the changes operators make to it (admin API,
// gatewayctl). A table is immutable: each change builds and validates a NEW table from the
// old one's document plus the edit, with the upstream names the old one was parsed with.
// The caller publishes it (rt_current_publish) and, for the file source, writes
// rt_table_to_json of it back (rt_file_source_write). Not for the request path.
//
// Every change returns a table holding one reference, whose version is the old one's + 1
// (rt_current_publish may raise it), or NULL with err set:
//   routes: no route "x"                                        -- unknown id
//   routes: routes["orders"].upstream: unknown upstream "nope"  -- the edit does not validate
//   routes: legacy_upstream: unknown upstream "legacy"          -- rollback without a legacy
// Routes are named by id in these errors when the id is a plain one of up to 64 bytes, by
// position ("routes[3]") otherwise.
#ifndef RT_ROUTE_EDIT_H
#define RT_ROUTE_EDIT_H

#include <jansson.h>

#include "routes/route_table.h"

// The canonical document: "version", "legacy_upstream" (when known), "routes" with every
// field explicit (defaults written out: shadow percent and methods, fallback upstream and
// on, override header). rt_table_parse of it gives an equivalent table. New reference, or
// NULL when out of memory.
json_t *rt_table_to_json(const rt_table *t);
json_t *rt_route_to_json(const rt_route *r);

// PUT: ROUTE (a whole route object) replaces route ID, or is appended when there is none.
// ROUTE's "id" may be absent; when present it must be ID.
rt_table *rt_table_with_route(const rt_table *t, const char *id, const json_t *route,
                              char *err, size_t errlen);
// PATCH: PATCH is merged into route ID as a JSON merge patch (RFC 7396): objects merge key
// by key, null deletes a field, anything else replaces it. {"split": null} drops a split;
// {"split": {"legacy": 0}} changes one weight and keeps the others.
rt_table *rt_table_patch_route(const rt_table *t, const char *id, const json_t *patch,
                               char *err, size_t errlen);
// DELETE.
rt_table *rt_table_delete_route(const rt_table *t, const char *id, char *err, size_t errlen);

// flip: UPSTREAM becomes the primary; split and sticky are dropped (sticky needs a split).
rt_table *rt_table_flip(const rt_table *t, const char *id, const char *upstream, char *err,
                        size_t errlen);
// split: WEIGHTS ({"legacy": 90, "order-service": 10}) replaces the split; sticky is kept.
rt_table *rt_table_split(const rt_table *t, const char *id, const json_t *weights, char *err,
                         size_t errlen);
// shadow: copies go to UPSTREAM; an existing shadow keeps its percent, methods and
// ignore_fields. unshadow drops the shadow (no shadow: an unchanged copy).
rt_table *rt_table_shadow(const rt_table *t, const char *id, const char *upstream, char *err,
                          size_t errlen);
rt_table *rt_table_unshadow(const rt_table *t, const char *id, char *err, size_t errlen);
// rollback: route ID, or every route when ID is NULL, back to legacy_upstream in one table:
// primary = legacy, split, sticky and fallback dropped; shadow and rewrites kept.
rt_table *rt_table_rollback(const rt_table *t, const char *id, char *err, size_t errlen);
// cutover step (cutover plans, cutover_plan.h): route ID at WEIGHT percent on TARGET, the
// rest on LEGACY. -1: LEGACY alone (no split, no shadow to TARGET); 0: LEGACY answers and
// every copy of its requests goes to TARGET as a shadow (an existing shadow's percent,
// methods and ignore_fields are kept); 1..99: split {LEGACY: 100-W, TARGET: W} (sticky kept),
// no shadow to TARGET; 100: TARGET answers (split and sticky dropped). Rewrites and fallback
// are kept throughout.
rt_table *rt_table_cutover_step(const rt_table *t, const char *id, const char *legacy,
                                const char *target, int weight, char *err, size_t errlen);

#endif
