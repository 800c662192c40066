/* tls_transport.h — the TLS transport under a server connection's HTTP/1.1 framing
 * (client.c). Internal to http/: the framing calls these instead of libuv when c->tls is
 * set; tls.c calls the framing back through the gw__client_* functions of client_int.h.
 *
 * Reading: the socket's ciphertext goes into a small per-connection buffer (taken while
 * bytes wait, freed when it is empty), OpenSSL decrypts from it through a memory BIO, and
 * the plaintext goes straight into the framing's read buffer — only while the framing
 * wants to read, which is the backpressure: a framing that stops reading stops the socket
 * once the ciphertext buffer is full. Writing: plaintext is encrypted into the server's
 * scratch buffer and written like cleartext (uv_try_write, the rest queued and counted in
 * pending_write), so the framing's high-water marks see the bytes really queued.
 *
 * HTTP/2 slots in at gw__client_tls_ready: once the handshake is done, the ALPN protocol
 * OpenSSL selected ("h2" or "http/1.1") decides which framing gets the plaintext (h2.c or
 * client.c); the transport itself knows no HTTP. */
#ifndef GW_TLS_TRANSPORT_H
#define GW_TLS_TRANSPORT_H

#include <uv.h>

#include "http/tls.h"

typedef struct gw_client gw_client;
typedef struct gw_tls_conn gw_tls_conn;
struct ssl_st;
struct ssl_session_st;

/* A connection's TLS state pinned to snapshot X (a reference is taken). NULL: no memory. */
gw_tls_conn *gw__tls_conn_new(gw_tls_ctx *x, gw_client *c);
void gw__tls_conn_free(gw_tls_conn *t);
int gw__tls_handshake_done(const gw_tls_conn *t);
/* 1 when ALPN selected "h2" (the connection's framing is then HTTP/2: h2.c). */
int gw__tls_alpn_h2(const gw_tls_conn *t);
/* 1 once the client sent a TLS 1.3 close_notify: it closed its direction only (RFC 8446
 * §6.1), so the response under way is finished, then our close_notify, then the close. (A
 * TLS 1.2 close_notify closes both ways, RFC 5246 §7.2.1, as a cleartext client's FIN ends a
 * request the handler still works on.) */
int gw__tls_peer_half_closed(const gw_tls_conn *t);
/* Starts the handshake: the socket is read from now on. 0 or <0. */
int gw__tls_start(gw_client *c);
/* The framing wants plaintext (read_start) or not (read_stop), like uv_read_start/stop. */
void gw__tls_read_start(gw_client *c);
void gw__tls_read_stop(gw_client *c);
/* Encrypts and writes. 0 or <0. */
int gw__tls_write(gw_client *c, uv_buf_t *bufs, unsigned n);
/* Sends close_notify if it can go at once (best effort, never queued): before a shutdown
 * of the write side or a close. */
void gw__tls_close_notify(gw_client *c);
/* Posted work (gw__client_run_posted): decrypt what is buffered for a framing that asked
 * to read again. Returns 1 when it ran. */
int gw__tls_run_posted(gw_client *c);

/* The key log callback of the server SSL_CTXs (tls_ctx.c): takes the TLS 1.3 application
 * traffic secrets for the connection's own record layer (tls.c, tls_record.h). */
void gw__tls_keylog(const struct ssl_st *ssl, const char *line);

/* (tls_cache.c) Drops the session with id ID (LEN bytes) from this worker's TLS 1.2
 * session cache, if it is there and still the session TOKEN (its address, never read). */
void gw__tls_cache_forget(const unsigned char *id, unsigned len, const void *token);
/* (tls_cache.c) 1 when SESS is the very session this worker's cache holds under its id (a
 * ticket-resumed session is not: its id is the client's choice). */
int gw__tls_cache_holds(const struct ssl_session_st *sess);

/* (tls_ctx.c) The SSL_CTX a new connection starts with. */
struct ssl_ctx_st *gw__tls_ctx_default(const gw_tls_ctx *x);

#endif
