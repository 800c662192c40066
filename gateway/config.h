/* config.h — gateway.json: the process configuration (listeners, workers, upstreams, limits,
 * logging, route source). Parsed with jansson and validated whole before anything starts. */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "composers/redis_client.h" /* cmp_redis_conf */
#include "http/tls_conf.h"
#include "http/upstream_conf.h" /* GW_MAX_UPSTREAMS */
#include "routes/route_table.h" /* rt_rate_limit */

#define GW_MAX_LISTENERS 8

/* One client listener: cleartext, or TLS with its certificates and settings. */
typedef struct gw_listener_conf {
    char listen[128];              /* "0.0.0.0:8443" */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int tls;                       /* 1: TLS with tls_conf */
    int h2c;                       /* cleartext: HTTP/2 by prior knowledge too ("h2c") */
    gw_tls_conf tls_conf;
} gw_listener_conf;

typedef struct gw_limits_conf {
    uint32_t max_uri_bytes;      /* 414 above; default 8192 */
    uint32_t max_header_bytes;   /* whole request head, request line included; 431 above; default 16384 */
    uint32_t max_headers;        /* 431 above; default 100 */
    uint64_t max_body_bytes;     /* 413 above, unless the route sets its own; default 10 MiB; 0 = unlimited */
    uint32_t header_timeout_ms;  /* first byte of a request -> end of its head (slowloris); default 10000 */
    uint32_t body_timeout_ms;    /* between two reads of a request body; default 30000 */
    uint32_t idle_timeout_ms;    /* keep-alive idle; default 60000 */
    uint32_t send_timeout_ms;    /* client not reading our response; default 30000 */
    uint32_t tunnel_idle_timeout_ms; /* a tunnel (after 101) with no byte either way; routes'
                                        tunnel_idle_timeout_ms override it; default 300000 */
    uint32_t read_buffer_bytes;  /* a client connection's read buffer while it has a request
                                    (idle ones hold none); at least max_header_bytes; default 65536 */
    uint32_t max_connections;    /* open client connections per worker; above, new ones are
                                    closed at once; default 10000 */
} gw_limits_conf;

#define GW_MAX_ADMIN_TOKENS 16

typedef struct gw_admin_token {
    char name[64];
    char token[256];
} gw_admin_token;

typedef enum gw_route_source_kind { GW_ROUTES_FILE = 0, GW_ROUTES_POSTGRES = 1 } gw_route_source_kind;

typedef struct gw_config {
    char path[1024];               /* the file this was read from */
    /* "listen": one cleartext listener, or "listeners": several, cleartext and TLS */
    gw_listener_conf listeners[GW_MAX_LISTENERS];
    int n_listeners;
    /* the first cleartext listener (else the first one): env GATEWAY_LISTEN replaces it */
    char listen[128];              /* "127.0.0.1:8080" */
    struct sockaddr_storage listen_addr;
    socklen_t listen_addrlen;
    char admin_listen[128];        /* "127.0.0.1:9090"; env GATEWAY_ADMIN_LISTEN */
    struct sockaddr_storage admin_addr;
    socklen_t admin_addrlen;
    char admin_token[256];         /* env GATEWAY_ADMIN_TOKEN; audit name "admin" */
    gw_admin_token admin_tokens[GW_MAX_ADMIN_TOKENS];
    int n_admin_tokens;
    int workers;                   /* 0 in the file = number of cores */
    gw_upstream_conf upstreams[GW_MAX_UPSTREAMS];
    int n_upstreams;
    gw_limits_conf limits;
    char access_log[1024];         /* "stderr", "stdout", "off" or a file path */
    uint32_t drain_timeout_ms;     /* graceful shutdown deadline; default 10000 */
    struct {                       /* one-shot exchanges no client waits for (shadow copies) */
        uint32_t max_in_flight;    /* per worker; above it they are skipped; default 256 */
        uint32_t max_connections_per_endpoint; /* per worker per endpoint; default 64 */
    } background;
    gw_route_source_kind routes_source;
    char routes_file[1024];        /* resolved relative to the config file's folder */
    char pg_conninfo[1024];        /* env GATEWAY_PG */
    char routes_cache_file[1024];  /* postgres source: last good table on disk */
    char redis[128];               /* "host:port" (one server); env GATEWAY_REDIS */
    cmp_redis_conf redis_topo;     /* any form of "redis" (kind NONE: no Redis) */
    char composers_file[1024];     /* compositions; "" = none */
    struct {
        uint32_t ttl_ms;           /* fresh for; default 60000 */
        uint32_t negative_ttl_ms;  /* a cached 404 is fresh for; default 5000 */
        uint32_t stale_ms;         /* kept past ttl for stale-if-error; default 300000 */
        uint32_t timeout_ms;       /* a Redis command slower than this is a miss; default 20 */
        uint32_t lru_entries;      /* in-process cache size when no Redis; default 10000 */
    } cache;
    struct {                       /* "rate_limits": how routes' rate_limit are enforced */
        int shared;                /* "shared" (default true): through "redis" when set */
        uint32_t instances;        /* N gateway instances: Redis slow or down, each keeps
                                      rate / N locally; 0 (default): N learned from the
                                      instances seen in Redis (1 until known) */
        uint32_t timeout_ms;       /* a Redis answer later than this: the local share
                                      decides; default 50 */
        rt_rate_limit default_limit; /* "default": for routes without "rate_limit" (rate 0:
                                      none); key_header points into default_header */
        char default_header[136];
    } rate_limits;
    struct {                       /* "http2": limits of HTTP/2 client connections */
        uint32_t max_concurrent_streams; /* default 128 */
        uint32_t stream_window_bytes;    /* default 65535 */
        uint32_t connection_window_bytes;/* default 1048576 */
        uint32_t reset_rate, reset_burst;/* RST_STREAM per second / burst: 33, 1000 */
    } http2;
    struct {                       /* "tracing": span export (config_tracing.c) */
        char otlp_endpoint[512];   /* "http://host:port/path"; "" = no export (default) */
        char hostport[128];        /* its "host:port", resolved into addr at load */
        struct sockaddr_storage addr;
        socklen_t addrlen;
        char path[384];            /* "/v1/traces" */
        char service_name[128];    /* resource service.name; default "gateway" */
        double sample_ratio;       /* share of new traces sampled; default 1 */
        uint32_t batch_size;       /* spans per POST; default 512 */
        uint32_t flush_ms;         /* the longest a span waits for its batch; default 1000 */
        uint32_t max_queue;        /* spans waiting, all workers together; default 8192 */
        uint32_t timeout_ms;       /* one POST's deadline (and the last flush's); default 2000 */
    } tracing;
} gw_config;

/* Reads and validates FILE, then applies the environment overrides. On failure returns a
 * negative code and writes "FILE: json.path: reason" into err (always NUL-terminated). */
int gw_config_load(gw_config *cfg, const char *file, char *err, size_t errlen);

/* Parses "host:port" / "[v6]:port" into addr. Resolves names (blocking: start-up only). */
int gw_parse_hostport(const char *s, struct sockaddr_storage *addr, socklen_t *len);

/* Hands gateway.json's upstreams to the route table as its seeds, and the reader of an
 * upstream definition to the routes sources (config_upstream.c). Before the first table. */
int gw_config_upstreams_install(const gw_config *cfg);
/* UP's defaults: what an upstream object without optional keys gives. */
void gw_config_upstream_defaults(gw_upstream_conf *up);
/* An upstream definition as gateway.json would write it (new reference). */
struct json_t;
struct json_t *gw_upstream_conf_json(const gw_upstream_conf *u);

/* The upstream named NAME, or NULL. */
const gw_upstream_conf *gw_config_upstream(const gw_config *cfg, const char *name, size_t namelen);

#endif
