/* h2.h — HTTP/2 framing of a client connection (nghttp2), internal to http/. A connection
 * switches to it once: after a TLS handshake that selected ALPN "h2", or on a cleartext
 * listener with h2c enabled when its first bytes are the HTTP/2 connection preface. From
 * then on the connection is in state CS_H2 and client.c hands every read, write completion,
 * timeout, posted run, drain and close here.
 *
 * Each stream becomes a gw_request like an HTTP/1.1 one (same handler, same API): the
 * response calls in client_response.c and the body calls switch on req->stream to the
 * gw__h2_* functions below. Nothing here runs inside an HTTP/1.1 request's path. */
#ifndef GW_H2_H
#define GW_H2_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct gw_client gw_client;
typedef struct gw_request gw_request;

/* The connection becomes HTTP/2. 0, or <0 (the caller closes it). */
int gw__h2_start(gw_client *c);
/* Cleartext listener with h2c, first request: 1 when the buffered bytes are (a prefix of)
 * the connection preface — the connection then is (or waits to become) HTTP/2 — else 0. */
int gw__h2_preface(gw_client *c);

/* client.c's events for a CS_H2 connection. */
void gw__h2_read(gw_client *c, ssize_t nread);
void gw__h2_written(gw_client *c);
void gw__h2_timeout(gw_client *c);
void gw__h2_run_posted(gw_client *c);
int gw__h2_want_read(const gw_client *c);
void gw__h2_drain(gw_client *c);            /* GOAWAY: finish the streams begun, then close */
void gw__h2_close(gw_client *c, int err);   /* every stream aborted and reported */
void gw__h2_free(gw_client *c);             /* the session freed (the handle has closed) */

/* The request API for a request carried by a stream (req->stream != NULL). */
int gw__h2_response_begin(gw_request *req, int status, const char *headers, size_t hlen,
                          int64_t body_len);
int gw__h2_response_body(gw_request *req, const char *p, size_t n);
void gw__h2_response_end(gw_request *req);
void gw__h2_response_fail(gw_request *req);
int gw__h2_read_body(gw_request *req);
void gw__h2_pause_body(gw_request *req);

#endif
