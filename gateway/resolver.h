/* resolver.h — upstream endpoint names re-resolved in the background, as HAProxy's
 * "resolvers" and nginx's "resolve" do, so that a service behind DNS can move without a
 * restart.
 *
 * The main loop resolves every name the route table's upstreams use (uv_getaddrinfo: on the
 * threadpool, never blocking a loop), each every upstreams.NAME.resolve_ms. Every address is
 * kept, IPv4 and IPv6 (at most GW_RESOLVE_MAX_ADDRS per name). When a name's set changes,
 * the workers are told (rt_current_touch) and rebuild that upstream's endpoints with one
 * endpoint per address (round robin over all of them, each with its own pool; the old
 * endpoints drain as after a definition change). A failed resolution keeps the last good
 * addresses, is logged once per failure streak and counted in /metrics. Until a name's first
 * background answer, the address it resolved to when its definition was read is used. */
#ifndef GW_RESOLVER_H
#define GW_RESOLVER_H

#include <stddef.h>
#include <uv.h>

#include "http/upstream_conf.h"

#define GW_RESOLVE_MAX_ADDRS 16
#define GW_RESOLVE_MAX_NAMES 128
#define GW_RESOLVE_TICK_MS 250 /* how often due names are looked for */
#define GW_RESOLVE_MAX_LOOKUPS 2 /* in flight at once on the shared threadpool */

typedef struct gw_resolver gw_resolver;

/* Starts resolving on LOOP (the main loop); NULL when out of memory. */
gw_resolver *gw_resolver_start(uv_loop_t *loop);
/* Stops: the timer closes, lookups under way are cancelled; freed from the callbacks. */
void gw_resolver_stop(gw_resolver *r);

/* Any thread: IN with each name endpoint replaced by one endpoint per address it resolves to
 * now (in the order of the addresses; at most GW_MAX_ENDPOINTS in all), into OUT. */
void gw_resolved_expand(const gw_upstream_conf *in, gw_upstream_conf *out);
/* Any thread: when the background resolver has an answer for name endpoint ADDRESS, its
 * first address into ADDR/LEN and 1; else 0. Reading an upstream definition asks this
 * first, so a name already known costs no blocking lookup, survives a DNS outage, and keeps
 * the same address from one route change to the next (its pools stay). */
int gw_resolved_first(const char *address, struct sockaddr_storage *addr, socklen_t *len);
/* Whether the endpoint lists of A and B name the same addresses in the same order. */
int gw_endpoints_same(const gw_upstream_conf *a, const gw_upstream_conf *b);
/* Whether ADDRESS ("host:port", "[v6]:port") names a host rather than a numeric address;
 * fills host and port. */
int gw_endpoint_is_name(const char *address, char *host, size_t hostlen, char *port,
                        size_t portlen);

/* For tests: sets NAME:PORT's addresses as a lookup would (a change bumps the generation). */
void gw__resolved_set(const char *host, const char *port, const struct sockaddr_storage *addrs,
                      const socklen_t *lens, int n);
void gw__resolved_reset(void);
/* For tests: lookups under way. */
int gw__resolver_in_flight(const gw_resolver *r);

/* gateway_upstream_resolutions_total{result}, gateway_upstream_address_changes_total and
 * gateway_upstream_resolved_addresses{endpoint} appended to *TEXT. 0, or -1 out of memory. */
int gw_resolver_metrics(char **text, size_t *len);

#endif
