/* edge.h — the strict checks at the HTTP/1.1 edge that llhttp (8.1, lenient flags off)
 * leaves to us: the request line (parsed here, so any token method and HTTP/1.x with a
 * higher minor are accepted while llhttp only ever sees a canonical line), field names,
 * Host, Content-Length, and whitespace before a chunk extension (RFC 9110, RFC 9112).
 * Pure functions on byte ranges: no state, no allocation. */
#ifndef GW_EDGE_H
#define GW_EDGE_H

#include <stdint.h>

#include "http/gw_slice.h"

/* A request line, as slices into the bytes given to gw_edge_request_line. */
typedef struct gw_reqline {
    gw_slice method;
    gw_slice target;    /* as sent */
    gw_slice authority; /* absolute-form: its authority ("host[:port]"), else empty */
    gw_slice origin;    /* the origin-form to route and forward: the target, or for an
                           absolute-form its path and query ("/" when its path is empty) */
    int major, minor;
    int asterisk;       /* OPTIONS * */
} gw_reqline;

/* Parses LINE[0..N) (the request line without its CRLF): method SP target SP HTTP/D.D,
 * exactly one SP between parts. LINE is writable: an absolute-form target with an empty
 * path and a query ("http://h?q") is shifted in place by one byte so that its origin-form
 * "/?q" is contiguous. Returns 0, or the status to answer (400, 414, 505) with *WHY set. */
int gw_edge_request_line(char *line, size_t n, size_t max_uri, gw_reqline *out,
                         const char **why);

/* 1 when S is a non-empty token (RFC 9110 §5.6.2). */
int gw_edge_is_token(gw_slice s);

/* 1 when S is uri-host [ ":" port ] (RFC 9112 §3.2, RFC 3986): a reg-name of unreserved
 * characters, an IPv4 address or an IP-literal; a port of 1 to 5 digits up to 65535; no
 * userinfo, no list, no whitespace. An empty value is valid (RFC 9112 §3.2). */
int gw_edge_host_valid(gw_slice s);

/* 1 when A and B name the same host and port (host case-insensitive). */
int gw_edge_host_same(gw_slice a, gw_slice b);

/* Content-Length: 1*DIGIT, no sign, no list, at most INT64_MAX. Returns 0 with *OUT set,
 * or -1. */
int gw_edge_content_length(gw_slice s, uint64_t *out);

/* The chunk-size line at P[0..N) (N: the bytes buffered, possibly less than the line).
 * Its extension is checked against RFC 9112 §7.1.1 (BWS around ';' and '=', token or
 * quoted-string values), which llhttp 8.1 is stricter than (no whitespace, no quoted-pair);
 * a valid one is then replaced in place by ";x" after the size, padded with leading zeros
 * to the same length ("5 ; a = b" becomes "0000005;x"). Extensions are not forwarded (the
 * body is re-framed). Returns 1 when the line is complete (llhttp then parses it), 0 when
 * more bytes are needed, -1 when it is longer than MAX, -2 when its extension is malformed. */
int gw_edge_chunk_line(char *p, size_t n, size_t max);

#endif
