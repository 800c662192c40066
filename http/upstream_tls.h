/* upstream_tls.h — TLS to an upstream endpoint (upstreams.NAME.tls), internal to
 * upstream_conn.c: OpenSSL in client mode over a memory BIO on the worker's loop, like the
 * server side (tls.c). The connection owns the socket; this layer reads it while it needs
 * ciphertext, hands plaintext to the connection's own alloc/read callbacks, and writes
 * records through the same uv_try_write/queue path (pending counts ciphertext). */
#ifndef GW_UPSTREAM_TLS_H
#define GW_UPSTREAM_TLS_H

#include <uv.h>

#include "http/upstream_conf.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_session_st SSL_SESSION;
typedef struct gw_utls gw_utls;

/* What the connection gives this layer: its socket, its write accounting, and callbacks. */
typedef struct gw_utls_owner {
    uv_loop_t *loop;
    uv_stream_t *stream;
    /* the socket's callbacks: the owner's, calling gw__utls_sock_alloc/_read */
    uv_alloc_cb sock_alloc;
    uv_read_cb sock_read;
    size_t *pending_write;
    uv_write_cb on_write;
    void (*queued)(void *owner); /* records left queued (pending_write > 0); NULL: not told */
    void (*alloc)(void *owner, uv_buf_t *out);   /* a plaintext buffer (len 0: full) */
    void (*deliver)(void *owner, ssize_t nread); /* plaintext, or UV_EOF / an error */
    void (*ready)(void *owner);                  /* the handshake completed */
    void (*failed)(void *owner, int err);        /* the handshake failed (GW_ECONNECT) */
    int (*gone)(void *owner);                    /* the connection is closing */
    void *owner;
} gw_utls_owner;

/* The client SSL_CTX for CONF (verification against tls_ca_file or the system's CAs).
 * NULL with err set on failure. */
SSL_CTX *gw__utls_ctx_new(const gw_upstream_conf *conf, char *err, size_t errlen);
void gw__utls_ctx_free(SSL_CTX *ctx);
/* (upstream_tls_ctx.c) Builds CONF's context where the definition is read (not on a worker
 * loop) and keeps it, shared, for its (ca_file, verify); 0, or -1 with err set
 * ("upstreams.NAME.tls.ca_file: ..."): the definition is refused. No-op without tls. */
int gw_utls_ctx_prepare(const gw_upstream_conf *conf, char *err, size_t errlen);
/* A reference (SSL_CTX_free it) to the context kept for CONF's settings; built here when
 * none was prepared. NULL (logged) when it cannot be built. */
SSL_CTX *gw__utls_ctx_get(const gw_upstream_conf *conf);
/* Prepares a handshake on a connected socket (gw__utls_begin starts it); SNI and the verified name: tls_server_name,
 * else the upstream's host, else the endpoint's host part. NULL: no memory. */
gw_utls *gw__utls_start(SSL_CTX *ctx, const gw_upstream_conf *conf, const gw_endpoint_conf *ep,
                        const gw_utls_owner *owner, SSL_SESSION **session);
/* SESSION (the endpoint's, per worker) is offered for resumption and replaced by each new
 * session the server hands out (TLS 1.3 tickets come after the handshake); free it with
 * gw__utls_session_free. Whether this connection resumed one: */
int gw__utls_resumed(const gw_utls *t);
void gw__utls_session_free(SSL_SESSION **session);
/* Sends the ClientHello (after the owner stored the pointer: failed may be called). */
void gw__utls_begin(gw_utls *t);
/* Closes its timer handle, then frees it and calls DONE(owner) (like a handle's close). */
void gw__utls_close(gw_utls *t, void (*done)(void *owner));
/* For the owner's socket callbacks. */
void gw__utls_sock_alloc(gw_utls *t, uv_buf_t *out);
void gw__utls_sock_read(gw_utls *t, ssize_t nread);
/* The connection wants plaintext (1) or not (0). Plaintext already decrypted or buffered
 * is delivered from a zero timer, never from inside this call. */
void gw__utls_want_read(gw_utls *t, int want);
/* Encrypts and writes. 0 or <0. */
int gw__utls_write(gw_utls *t, uv_buf_t *bufs, unsigned n);
/* Frees this thread's scratch buffer (at worker exit). */
void gw__utls_thread_cleanup(void);

#endif
