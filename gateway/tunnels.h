/* tunnels.h — open tunnels (WebSocket and other upgrades, http/tunnel.h) counted per route
 * and upstream, process-wide: /metrics (gateway_tunnels_active, gateway_tunnels_total,
 * gateway_tunnels_closed_total), /admin/routes/{id} and the dashboard. An open tunnel does
 * not follow a flip, so an operator finishing a cutover waits for the old upstream's count
 * to reach zero. A fixed table (a route id is copied once, when its pair is new): a pair
 * that finds no slot is not counted. */
#ifndef GW_TUNNELS_H
#define GW_TUNNELS_H

#include <stddef.h>
#include <stdint.h>

#include "http/tunnel.h"

#define GW_TUNNEL_PAIRS 1024

typedef struct gw_tunnel_pair gw_tunnel_pair;

/* A tunnel opened on ROUTE to UPSTREAM: its pair (counted once more), or NULL (no slot). */
gw_tunnel_pair *gw_tunnels_opened(const char *route, const char *upstream);
/* The tunnel of PAIR (may be NULL) began closing, for ST->reason. */
void gw_tunnels_closed(gw_tunnel_pair *pair, const gw_tunnel_stats *st);
/* Calls FN for each upstream with tunnels on ROUTE (open now, or ever opened). Any thread. */
void gw_tunnels_of_route(const char *route,
                         void (*fn)(const char *upstream, int64_t active, void *arg), void *arg);
/* Prometheus text into a malloc'd buffer. 0 or -1. */
int gw_tunnels_metrics_render(char **out, size_t *len);

#endif
