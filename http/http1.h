/* http1.h — HTTP/1.1 message rewriting for a proxy, as pure functions (unit-tested):
 * the request head sent upstream and the response headers passed back, with hop-by-hop
 * headers removed (RFC 9110 §7.6.1) and the forwarding headers added. */
#ifndef GW_HTTP1_H
#define GW_HTTP1_H

#include <stddef.h>
#include <stdint.h>

#include "http/server.h"

/* Whether NAME must not be forwarded: Connection, Keep-Alive, Proxy-*, TE, Trailer,
 * Transfer-Encoding, Upgrade, or a name listed in a Connection header of HDRS. */
int gw_is_hop_by_hop(gw_slice name, const gw_header *hdrs, int n);

typedef struct gw_fwd {
    gw_slice method;
    gw_slice target;       /* upstream path with query */
    gw_slice host;         /* Host sent upstream */
    gw_slice client_host;  /* the client's Host, for X-Forwarded-Host */
    const char *client_ip; /* appended to X-Forwarded-For */
    const char *proto;     /* X-Forwarded-Proto */
    const char *request_id;
    /* W3C trace context: NULL passes the client's traceparent/tracestate as they came;
     * else they are replaced by a child span of TRACE (a new parent-id) and the tracestate
     * gw_trace_state gives, TRACE_MARK (may be NULL) first. */
    const struct gw_trace *trace;
    const char *trace_mark;
    char *span_out;         /* with TRACE: the new span id (17 bytes), may be NULL */
    int64_t content_length; /* -1: none */
    int chunked;            /* body sent with Transfer-Encoding: chunked */
    const char *upgrade;    /* NULL; or the protocol the route lets this request switch to:
                               sent as "Connection: upgrade" + "Upgrade: <it>" (the client's
                               own Connection and Upgrade are hop-by-hop as always) */
} gw_fwd;

/* The request head for the upstream. Client headers keep their order; Host, Content-Length,
 * Expect and the forwarding headers are replaced. Returns the length, or -1 when it does
 * not fit in cap. */
int gw_build_upstream_request(const gw_header *hdrs, int n, const gw_fwd *f, char *out, size_t cap);

/* The upstream's response headers as "Name: value\r\n" lines for gw_response_begin:
 * hop-by-hop, framing (Content-Length, Transfer-Encoding), Date and the gateway's own
 * X-Request-Id / X-Gateway-Upstream removed. Returns the length or -1. */
int gw_build_response_headers(const gw_header *hdrs, int n, char *out, size_t cap);

/* The protocols a request offers to switch to (RFC 9110 §7.8): the tokens of its Upgrade
 * headers, in order, when a Connection header lists "upgrade"; up to MAX into OUT (slices
 * into the headers). Returns how many. */
int gw_upgrade_offers(const gw_header *hdrs, int n, gw_slice *out, int max);

/* V in decimal at out (up to 20 bytes, no NUL); returns the end. printf-free: it runs a few
 * times per request. */
char *gw_put_u64(char *out, uint64_t v);

/* The text of a peer address (FAMILY AF_INET: 4 bytes at ADDR; AF_INET6: 16) into OUT
 * (n >= 46, NUL-terminated), as inet_ntop writes it. IPv4 without printf: glibc's
 * inet_ntop formats it with sprintf, ~1,700 instructions, a tenth of a proxied GET. */
void gw_addr_text(int family, const uint8_t *addr, char *out, size_t n);

/* Chunk framing: writes "<hex size>\r\n" (no NUL needed), returns its length. out >= 20. */
size_t gw_chunk_size_line(char *out, size_t n);

/* Appends s as a JSON string body (no quotes) to out[*len..cap), escaping as JSON needs;
 * stops (truncating) when full. Used by the log and the error bodies. */
void gw_json_escape(char *out, size_t *len, size_t cap, const char *s, size_t n);

#endif
