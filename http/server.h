/* server.h — the server side of HTTP/1.1 on a libuv loop: a listener and, per accepted
 * socket, a client connection (llhttp parser, explicit states, timeouts, limits, request-
 * smuggling defence, keep-alive, pipelining in order, streamed bodies with backpressure).
 *
 * What answers a request is a gw_handler: the gateway's proxy, the admin API, mockd. The
 * handler gets a gw_request once its head has passed every protocol check, pulls the body
 * when it is ready for it, and writes exactly one response. The server owns the request and
 * frees it; after gw_response_end (or after on_abort) the handler must not touch it again.
 */
#ifndef GW_SERVER_H
#define GW_SERVER_H

#include <stdint.h>
#include <string.h>
#include <uv.h>

#include "http/gw_slice.h"
#include "http/tls.h"
#include "http/trace.h"

#define GW_MAX_HEADERS 256 /* hard cap; gw_limits.max_headers is usually lower */

typedef struct gw_server gw_server;
typedef struct gw_client gw_client;
typedef struct gw_request gw_request;

typedef struct gw_header {
    gw_slice name, value;
} gw_header;

typedef struct gw_handler {
    /* The head arrived and is valid. The handler must eventually call gw_response_end (or
     * one of the one-shot responders) or be told on_abort. */
    void (*on_request)(gw_request *req);
    /* Body bytes (de-chunked), only after gw_request_read_body. p is only valid during the
     * call: write it on or copy it. */
    void (*on_body)(gw_request *req, const char *p, size_t n);
    /* The whole body arrived (also called, with no on_body, for a request without a body,
     * once gw_request_read_body was called). */
    void (*on_body_end)(gw_request *req);
    /* The client took the response bytes that were queued when gw_response_body returned 1. */
    void (*on_drain)(gw_request *req);
    /* The request is void (client gone, timeout, server stopping): release what you hold.
     * No other callback follows; req is freed when this returns. */
    void (*on_abort)(gw_request *req, int err);
} gw_handler;

typedef struct gw_server_limits {
    uint32_t max_uri_bytes, max_header_bytes, max_headers;
    uint64_t max_body_bytes; /* default per request; the handler may lower/raise it per route */
    uint32_t header_timeout_ms, body_timeout_ms, idle_timeout_ms, send_timeout_ms;
    uint32_t read_buffer_bytes; /* per connection with a request; at least max_header_bytes
                                   (0: 16 KiB) */
    uint32_t max_connections;   /* open client connections; above it new ones are closed at
                                   once (0: no cap) */
} gw_server_limits;

/* How a finished request is reported to the application (access log, metrics): the server
 * calls on_request_done exactly once per request that reached a handler or got an answer. */
typedef struct gw_request_report {
    const char *url;           /* the request target as received (truncated to 511 bytes) */
    double total_ms;           /* first byte of the request to its last response byte written
                                  (or to the moment it was cut) */
    int err;                   /* 0: the response went out whole; else why it was cut (GW_E*) */
} gw_request_report;

enum gw_conn_event {
    GW_CONN_ACCEPTED,          /* a new client connection is served */
    GW_CONN_REJECTED_MAX,      /* closed at once: limits.max_connections reached */
};

/* HTTP/2 to clients (http/h2.c): what the application counts. */
enum gw_h2_event {
    GW_H2_CONN_OPEN,     /* a connection became HTTP/2 (the active gauge +1) */
    GW_H2_CONN_CLOSE,    /* ... and closed (-1) */
    GW_H2_STREAM,        /* a request stream opened by the client */
    GW_H2_RESET,         /* an RST_STREAM received */
    GW_H2_RESET_LIMITED, /* a connection ended for resets over the rate limit */
    GW_H2_GOAWAY,        /* a GOAWAY sent */
    GW_H2__EVENTS
};

typedef struct gw_h2_limits {
    uint32_t max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS (0: 128) */
    uint32_t stream_window;          /* request body bytes buffered per stream (0: 65535) */
    uint32_t connection_window;      /* ... per connection (0: 1 MiB) */
    uint32_t reset_burst, reset_rate;/* RST_STREAM token bucket: burst, per second (0: 1000,
                                        33: nghttp2's); over it the connection gets GOAWAY */
} gw_h2_limits;

typedef struct gw_server_opts {
    gw_server_limits limits;
    int gateway_headers;      /* add X-Request-Id and X-Gateway-Upstream to every response */
    int reuseport;            /* SO_REUSEPORT: each worker binds the same address */
    int worker_id;            /* folded into generated request ids */
    /* Hooks for the application, on the server's loop; each may be NULL. REQ is read-only
     * and gone when the hook returns. */
    void (*on_request_done)(const gw_request *req, const gw_request_report *r, void *hook_data);
    void (*on_connection)(enum gw_conn_event ev, void *hook_data);
    /* TLS listeners: the certificate snapshot slot (NULL: cleartext), the handshake
     * deadline (accept -> handshake done; 0: 10 s), and handshakes and errors by kind. */
    gw_tls_slot *tls;
    uint32_t tls_handshake_timeout_ms;
    void (*on_tls_event)(enum gw_tls_event ev, void *hook_data);
    /* HTTP/2: chosen by ALPN "h2" on TLS listeners (tls_conf), by the connection preface
     * on cleartext ones with h2c set; its limits and events. */
    int h2c;
    gw_h2_limits h2;
    void (*on_h2_event)(enum gw_h2_event ev, void *hook_data);
    void *hook_data;
    void *data;               /* for the handler: gw_request_server(req)->opts.data */
} gw_server_opts;

struct gw_request {
    gw_client *client;
    gw_server *server;
    struct h2_stream *stream;  /* the HTTP/2 stream carrying it; NULL: HTTP/1.x */
    /* Who gets this request's callbacks after on_request: the server's handler unless
     * on_request (a router) hands the request to another one with gw_request_set_handler. */
    const gw_handler *handler;
    /* The head: slices into the connection's read buffer, valid until the first call to
     * gw_request_read_body or until the response ends, whichever comes first. */
    gw_slice method, url, path, query;
    int http_major, http_minor;
    int n_headers;             /* headers[0..n_headers), at the end of this struct */
    gw_slice host;             /* Host header value (may be empty) */
    int64_t content_length;    /* -1 when absent */
    unsigned chunked : 1;      /* Transfer-Encoding: chunked */
    unsigned has_body : 1;     /* chunked or Content-Length > 0 */
    unsigned keep_alive : 1;   /* client wants the connection kept */
    unsigned expect_continue : 1;
    unsigned is_head : 1;      /* HEAD: the response has no body */
    unsigned tls : 1;          /* arrived over TLS (X-Forwarded-Proto: https) */
    char method_buf[16];       /* copies kept for the whole request (logs, retries) */
    char request_id[72];       /* propagated X-Request-Id, or generated */
    gw_trace trace;            /* W3C trace context: continued or started (http/trace.h) */
    char client_addr[64];      /* "ip" of the peer */
    uint64_t max_body_bytes;   /* 0 = unlimited; starts at the server's limit */
    /* Filled by the handler for the access log and the X-Gateway-Upstream header. */
    const char *route_id;      /* NULL: "-"; set with gw_request_set_route (it is copied:
                                  the route table may be released before the log line) */
    char route_buf[64];
    const char *upstream_name; /* NULL: "gateway" */
    uint64_t route_version;
    double upstream_ms;        /* -1 when no upstream answered */
    /* Kept by the server. */
    uint64_t conn_id;          /* unique per server: which connection carried the request */
    uint64_t start_ns;
    uint64_t bytes_in, bytes_out;
    int status;                /* response status, once begun */
    void *data;                /* the handler's per-request state */
    /* The application's holds on concurrency slots, released when the request is reported
     * (cleared with the request): 1 + the upstream's index (0: none), a route's counter. */
    unsigned hold_upstream;
    void *hold_route;
    /* Extra response head lines the application adds to whatever answers the request
     * (rate-limit headers on an allowed request): resp_extra[0..resp_extra_n). */
    uint16_t resp_extra_n;
    /* Last, so that recycling a request clears only what comes before it. */
    gw_header headers[GW_MAX_HEADERS];
    char resp_extra[320]; /* not cleared: only resp_extra_n counts */
};

/* Starts listening on addr (with SO_REUSEPORT when opts->reuseport). */
int gw_server_init(gw_server **out, uv_loop_t *loop, const struct sockaddr *addr,
                   const gw_server_opts *opts, const gw_handler *handler);
/* Graceful stop: stop accepting, close idle keep-alive connections at once, let the others
 * finish their current request (then close), call done when the last handle is closed.
 * done may free s with gw_server_free; with done == NULL, s is freed automatically. */
void gw_server_drain(gw_server *s, void (*done)(gw_server *s));
/* Hard stop: every request is aborted, every handle closed, then done as above. Calling it
 * during a drain turns the drain into a hard stop. */
void gw_server_close(gw_server *s, void (*done)(gw_server *s));
void gw_server_free(gw_server *s);
int gw_server_active(const gw_server *s); /* open client connections */
const gw_server_opts *gw_server_options(const gw_server *s);
uv_loop_t *gw_server_loop(const gw_server *s);
int gw_server_port(const gw_server *s); /* the bound port (useful with port 0) */

/* From on_request: HANDLER's on_body, on_body_end, on_drain and on_abort serve this
 * request from now on (its on_request is not called). */
static inline void gw_request_set_handler(gw_request *req, const gw_handler *handler)
{
    req->handler = handler;
}

/* Names the route (and table version) for the access log and metrics; ID is copied. */
void gw_request_set_route(gw_request *req, const char *id, uint64_t version);

/* The first header named NAME (case-insensitive), or an empty slice {NULL,0}. */
gw_slice gw_request_header(const gw_request *req, const char *name);

/* Pull the body: sends "100 Continue" first when the client asked for it. Body bytes then
 * arrive through on_body, then on_body_end. Call again to resume after gw_request_pause_body. */
int gw_request_read_body(gw_request *req); /* 0, GW_ETOOBIG (Content-Length over max_body_bytes: answer 413), or <0 */
/* Stop reading the client (backpressure); bytes already read stay queued in the server. */
void gw_request_pause_body(gw_request *req);

/* Response head: STATUS, then HEADERS — a block of "Name: value\r\n" lines (may be NULL) in
 * which the handler must not put Date, Connection, Content-Length, Transfer-Encoding or (with
 * gateway_headers) X-Request-Id / X-Gateway-Upstream: the server writes those. body_len >= 0
 * is the Content-Length; -1 streams (chunked to HTTP/1.1 clients, close-delimited to 1.0).
 * For HEAD requests and 204/304 no body is sent whatever body_len says. Returns 0 or <0. */
int gw_response_begin(gw_request *req, int status, const char *headers, size_t hlen,
                      int64_t body_len);
/* (Out of memory: GW_ENOMEM, and on_abort follows; the client connection is closed.) */
/* Body bytes (framed by the server). Returns 0, 1 when the client is slow (stop producing
 * until on_drain), or <0 on error (the connection is going away: on_abort follows). */
int gw_response_body(gw_request *req, const char *p, size_t n);
/* Ends the response. After this, req belongs to the server again: it is reported (and
 * the next pipelined request parsed) once the response bytes have been written. */
void gw_response_end(gw_request *req);
/* The response could not be completed (upstream died mid-body): the connection is closed
 * without a clean end so the client sees a truncated message. req is gone afterwards. */
void gw_response_fail(gw_request *req);
/* Like gw_response_fail, but the connection ends with a TCP reset (SO_LINGER 0) once what
 * was queued is written: for fault injection and for peers that must not reuse it. */
void gw_response_reset(gw_request *req);
/* Switches the connection to protocol the client asked for in its Upgrade header: writes
 * "101 Switching Protocols" with HEADERS (the handler gives Upgrade and Connection: upgrade
 * among them), reports the request (status 101) and frees it, and gives the connection as a
 * byte stream in *OUT (http/end.h), which the caller binds. Only for an HTTP/1.1 request
 * without a body, before any response began, while the server is not draining; else
 * GW_EINVAL and nothing changed. On success req is gone. */
struct gw_end;
int gw_request_upgrade(gw_request *req, const char *headers, size_t hlen, struct gw_end *out);
/* One-shot complete responses. */
void gw_response_simple(gw_request *req, int status, const char *content_type,
                        const char *body, size_t n, const char *extra_headers);
/* The gateway's own error: {"error": MSG, "status": N, "request_id": "..."}. */
void gw_response_error(gw_request *req, int status, const char *msg);
/* The same with EXTRA_HEADERS ("Name: value\r\n" lines, may be NULL): Retry-After, ... */
void gw_response_error_headers(gw_request *req, int status, const char *msg,
                               const char *extra_headers);
/* Lines ("Name: value\r\n") the response head will carry whoever writes it; N up to
 * sizeof req->resp_extra (longer: ignored). */
static inline void gw_request_set_response_headers(gw_request *req, const char *h, size_t n)
{
    if (n <= sizeof req->resp_extra) {
        memcpy(req->resp_extra, h, n);
        req->resp_extra_n = (uint16_t)n;
    }
}
/* Closes the connection after this response even if the client wants keep-alive. */
void gw_request_close_after(gw_request *req);

/* Reason phrase for a status code ("OK", "Bad Gateway", ...). */
const char *gw_status_reason(int status);
/* The Date header value for now, cached per second per thread. */
const char *gw_http_date(uv_loop_t *loop);

#endif
