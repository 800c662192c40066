/* router.h — the gateway's request handler: decides once per request who answers it and
 * hands the request over (gw_request_set_handler):
 *
 *   request ─ router ─┬─ the gateway's own error (400 dot segment, 503 no table, 404 no route)
 *                     ├─ a composition ────────── the composition engine (cmp_compose_handler)
 *                     ├─ a GET on a cached route ─ the cached lookup (cmp_cached_handler)
 *                     └─ any other route ──────── the proxy (gw_proxy_handler)
 *
 * From then on the chosen handler alone gets the request's body, drain and abort. */
#ifndef GW_ROUTER_H
#define GW_ROUTER_H

#include "http/server.h"
#include "routes/route_table.h"
#include "composers/compose.h"
#include "composers/spec.h"

typedef struct gw_worker gw_worker;

/* The server's handler; gw_server_opts.data must point to the gw_worker. */
extern const gw_handler gw_router_handler;

typedef enum gw_route_to {
    GW_TO_ERROR,       /* the gateway answers: status, msg */
    GW_TO_COMPOSITION, /* composition, params (slices of the request's path) */
    GW_TO_CACHED,      /* match, ui: answered through the user cache */
    GW_TO_PROXY,       /* match, ui: proxied to upstream ui */
} gw_route_to;

typedef struct gw_route_decision {
    gw_route_to to;
    int status;
    const char *msg;
    const cmp_composition *composition;
    cmp_params params;
    rt_match match;
    int ui;            /* the upstream: a tester's override, the split, or the primary */
} gw_route_decision;

/* The decision for REQ, with nothing done yet: TABLE is the route table (NULL: none loaded),
 * SPEC the compositions (NULL: none), CACHE whether the user cache can answer. Reads only
 * REQ's head; the only randomness is the route's weighted split. */
void gw_router_decide(const gw_request *req, const rt_table *table, const cmp_spec *spec,
                      int cache, gw_route_decision *d);

/* The worker's composition engine and user cache, set from its configuration and reporting
 * into its metrics; NULL when it cannot be opened (no compositions, no cache then). */
cmp_worker *gw_router_composer_new(gw_worker *w);

#endif
