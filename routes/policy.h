// policy.h — per-request cutover decisions for a matched route: which upstream answers
// (split, sticky, override), whether to shadow a copy, whether to fall back, and the upstream
// path for whichever upstream was chosen. All of them are pure functions of the route and
// their arguments: no allocation, no locks, safe on any worker thread while the table is
// pinned. Upstream indexes are the table's (the list given to rt_table_parse).
//
// A route's policies (routes.json):
//   "rewrites": { "order-service": { "template": "/orders/{id}" } }
//       that upstream's own rewrite, whenever it is chosen (primary, split, override, shadow,
//       fallback); other upstreams use "rewrite" (or none). {} means "no rewrite".
//   "split": { "legacy": 90, "order-service": 10 }
//       weights 0..100000, at least one > 0, known upstreams; when present it decides, not
//       "upstream".
//   "sticky": { "header": "X-User-Id" } | { "cookie": "uid" }
//       only with split: the same value always lands on the same side; no value: random.
//   "override": { "header": "X-Gateway-Upstream-Override" }   (header optional, that default)
//       a request whose header names one of the route's upstreams goes there.
//   "shadow": { "upstream": "order-service", "percent": 100, "methods": ["GET","HEAD"],
//               "ignore_fields": ["meta.generated_at"] }
//       percent 0..100 (default 100), methods default GET, HEAD, OPTIONS.
//   "fallback": { "upstream": "legacy", "on": ["404", "5xx", "connect"] }
//       GET, HEAD and OPTIONS only; upstream defaults to legacy_upstream, on to all three.
#ifndef RT_POLICY_H
#define RT_POLICY_H

#include <stdint.h>

#include "routes/route_table.h"

#define RT_OVERRIDE_HEADER "X-Gateway-Upstream-Override"

// The upstream that answers a request. Without a split: the primary (r->upstream_index).
// With one: sides are chosen in proportion to their weights — by hashing STICKY_VALUE when
// it is non-empty (deterministic: the same value gives the same side in every process and
// table version with the same weights), else by RANDOM (any uniformly random 64-bit value).
int rt_route_pick(const rt_route *r, gw_slice sticky_value, uint64_t random);

// Where the request is sticky by: the header or cookie name, or NULL (at most one is set).
// The caller reads that header (or rt_cookie_value of the Cookie header) and passes the value
// to rt_route_pick; an absent value is an empty slice.
const char *rt_route_sticky_header(const rt_route *r);
const char *rt_route_sticky_cookie(const rt_route *r);

// The override header name, or NULL when the route allows none.
const char *rt_route_override_header(const rt_route *r);
// The upstream VALUE (the override header's value) names, when the route allows overrides
// and VALUE names its primary, a side of its split, its shadow or its fallback upstream;
// else -1 (the request then goes by rt_route_pick). Names are compared exactly.
int rt_route_override(const rt_route *r, gw_slice value);

// The upstream to send a shadow copy of the request to, or -1: no shadow, METHOD not in the
// shadow's methods, or RANDOM (uniform 64-bit) not within the shadow's percent. The caller
// skips the copy when the index is the upstream the request itself went to.
int rt_route_shadow(const rt_route *r, gw_slice method, uint64_t random);

// The upstream to retry a failed request on, or -1. STATUS_OR_NEG_ERR is the response status
// from the chosen upstream, or a negative value when it could not be reached (connect
// failure). Falls back only for GET, HEAD and OPTIONS, and only for the route's conditions:
// 404, any 5xx, connect. The caller does not fall back when the index is the upstream that
// just failed, nor after any of the response was sent to the client.
int rt_route_fallback(const rt_route *r, gw_slice method, int status_or_neg_err);

// rt_rewrite for UPSTREAM_INDEX: that upstream's "rewrites" entry, else the route's
// "rewrite". Same return as rt_rewrite: the length written, or -1 when it does not fit.
int rt_rewrite_for(const rt_match *m, int upstream_index, gw_slice path, gw_slice query,
                   char *out, size_t outlen);

// The value of cookie NAME in a Cookie header ("a=1; uid=42"): a slice of COOKIE_HEADER,
// without surrounding double quotes; {NULL, 0} when absent. The first one wins.
gw_slice rt_cookie_value(gw_slice cookie_header, const char *name);

#endif
