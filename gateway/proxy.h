/* proxy.h — the proxy: the handler of a request the router (router.h) sends upstream. It
 * rewrites the request, sends it to an upstream endpoint (pooled connection, one retry when
 * nothing was sent; the route's fallback), shadows it when the route says so, streams both
 * bodies with backpressure, and maps failures to the gateway's JSON errors. */
#ifndef GW_PROXY_H
#define GW_PROXY_H

#include "http/server.h"
#include "routes/route_table.h"

typedef struct gw_worker gw_worker;

/* The proxy's handler (body, drain, abort) for a request handed to it with
 * gw_request_set_handler before gw_proxy_start. Its on_request is NULL. */
extern const gw_handler gw_proxy_handler;

/* Proxies REQ on MATCH's route (MATCH slices REQ's path) to upstream UI of worker W: the
 * route's body limit (413), the rewritten head, the shadow copy, then the upstream. TABLE is
 * the worker's pinned route table (ref'd for the request). Answers at once on errors. */
void gw_proxy_start(gw_request *req, gw_worker *w, rt_table *table, const rt_match *match, int ui);
/* The protocol REQ asks to switch to that ROUTE's "upgrade" allows (the route's spelling),
 * or NULL: then the request is served as plain HTTP/1.1 (its Upgrade is hop-by-hop). */
const char *gw_proxy_upgrade_of(const rt_route *route, const gw_request *req);

/* Frees this thread's recycled request state: call when a worker's loop has ended. */
void gw_proxy_thread_cleanup(void);

/* Whether PATH has a "." or ".." segment (also percent-encoded, with a ";params" tail, or
 * between encoded slashes or backslashes): such paths are refused so that prefix routes
 * cannot be escaped. */
int gw_path_has_dot_segment(gw_slice path);
/* Whether PATH has an encoded slash or backslash ("%2F", "%5C", any case): refused unless
 * the route says "allow_encoded_slashes". */
int gw_path_has_encoded_slash(gw_slice path);

#endif
