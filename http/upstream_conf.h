/* upstream_conf.h — what the upstream client needs to know about one named upstream: its
 * endpoints (addresses resolved before they get here), timeouts, pool and breaker settings.
 * Filled by the application (gateway.json, the route store); read-only for http/. */
#ifndef GW_UPSTREAM_CONF_H
#define GW_UPSTREAM_CONF_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#define GW_MAX_ENDPOINTS 32
#define GW_MAX_UPSTREAMS 64 /* named upstreams in one configuration */
#define GW_NAME_MAX 64

typedef struct gw_endpoint_conf {
    char address[128]; /* as written: "127.0.0.1:9101" or "host:port" */
    struct sockaddr_storage addr; /* resolved at load time, then in the background
                                     (gateway/resolver.h); never on the request path */
    socklen_t addrlen;
} gw_endpoint_conf;

typedef struct gw_upstream_conf {
    char name[GW_NAME_MAX];
    gw_endpoint_conf endpoints[GW_MAX_ENDPOINTS];
    int n_endpoints;
    char host[256];               /* Host header sent upstream; "" keeps the client's Host */
    uint32_t connect_timeout_ms;  /* default 1000 */
    uint32_t response_timeout_ms; /* request sent -> response head complete; default 30000 */
    uint32_t read_timeout_ms;     /* between two reads of the response body; default 30000 */
    uint32_t send_timeout_ms;     /* a tunnel's bytes queued to the upstream and none taken
                                     this long (from the last write progress): closed;
                                     1..3600000 from config, default 30000 (nginx
                                     proxy_send_timeout); 0 only in confs built in code
                                     (span_export's OTLP upstream, tests): no send timeout,
                                     the flush after close bounded by read_timeout_ms */
    uint32_t pool_max_idle;       /* idle keep-alive connections kept per worker per endpoint; default 64 */
    uint32_t pool_idle_timeout_ms;/* default 30000 */
    uint32_t down_ms;             /* an endpoint that refused a connection is skipped this long; default 5000 */
    uint32_t breaker_failures;    /* composition legs: consecutive failures that open the circuit; default 5 */
    uint32_t breaker_cooldown_ms; /* open this long, then one probe (half-open); default 5000 */
    uint32_t resolve_ms;          /* endpoint names re-resolved this often in the background
                                     (gateway/resolver.c); 0 = once, at load; default 10000 */
    /* TLS to the endpoints ("tls": true or {...}): the server's certificate is verified
     * against ca_file (default: the system's CAs) and the name sent as SNI */
    int tls;
    int tls_verify;               /* default 1 */
    char tls_ca_file[512];        /* "" = the system's default CA paths */
    char tls_server_name[256];    /* SNI and the name checked; "" = host, else the
                                     endpoint's host part */
    /* load shedding (gateway/inflight_limit.c; read by the gateway, not by http/) */
    uint32_t max_in_flight;       /* requests at once per instance, split evenly between the
                                     workers (at least 1 each); 0 = unlimited (default) */
    uint32_t queue_max;           /* requests waiting for a slot per worker; default 0:
                                     above max_in_flight, 503 at once */
    uint32_t queue_timeout_ms;    /* the longest wait in that queue; then 503; default 1000 */
} gw_upstream_conf;

#endif
