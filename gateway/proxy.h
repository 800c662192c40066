/* proxy.h — the gateway's request handler: route the request, rewrite it, send it to an
 * upstream endpoint (pooled connection, one retry when nothing was sent), stream both
 * bodies with backpressure, and map failures to the gateway's JSON errors. */
#ifndef GW_PROXY_H
#define GW_PROXY_H

#include "http/server.h"

/* The handler; gw_server_opts.data must point to the gw_worker. */
extern const gw_handler gw_proxy_handler;

/* Frees this thread's recycled request state: call when a worker's loop has ended. */
void gw_proxy_thread_cleanup(void);

/* Whether PATH has a "." or ".." segment (also percent-encoded): such paths are refused so
 * that prefix routes cannot be escaped. */
int gw_path_has_dot_segment(gw_slice path);

#endif
