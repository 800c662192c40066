/* tls.h — TLS termination for the server side (OpenSSL 3).
 *
 * Two parts:
 * - A certificate snapshot (gw_tls_ctx): every certificate of one listener loaded and
 *   checked, grouped into SSL_CTXs by name set (one RSA and one ECDSA certificate for the
 *   same names share an SSL_CTX; OpenSSL picks by the client's signature algorithms), the
 *   SNI table, the ticket-key secret. Immutable and refcounted: it is built aside (blocking
 *   file reads: never on a worker loop), published in a gw_tls_slot with one pointer swap,
 *   and each connection pins the snapshot it started with — a reload drops no connection.
 * - The transport (tls.c): OpenSSL over a memory BIO on the connection's loop, under the
 *   HTTP/1.1 framing of client.c (server_int.h). Only ciphertext passes through libuv.
 */
#ifndef GW_TLS_H
#define GW_TLS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "http/tls_conf.h"

typedef struct gw_tls_ctx gw_tls_ctx;

/* One certificate as loaded, for listings and expiry metrics. */
typedef struct gw_tls_cert_info {
    char file[GW_TLS_PATH_MAX];
    char subject[256];
    char sans[1024];   /* "a.example.com, *.example.com" */
    char key_type[32]; /* "RSA-2048", "EC-P-256" */
    char issuer[256];
    time_t not_before, not_after;
} gw_tls_cert_info;

/* Loads every certificate of CONF. NULL on failure with "FILE: reason" in err (the first
 * pair that failed; nothing of CONF is used then). Blocking: call off the worker loops. */
gw_tls_ctx *gw_tls_ctx_new(const gw_tls_conf *conf, char *err, size_t errlen);
void gw_tls_ctx_ref(gw_tls_ctx *x);
void gw_tls_ctx_unref(gw_tls_ctx *x);
int gw_tls_ctx_cert_count(const gw_tls_ctx *x);
const gw_tls_cert_info *gw_tls_ctx_cert(const gw_tls_ctx *x, int i);
const gw_tls_conf *gw_tls_ctx_conf(const gw_tls_ctx *x);

/* The current snapshot of one listener, swapped whole by a reload. */
typedef struct gw_tls_slot {
    pthread_mutex_t mu;
    gw_tls_ctx *cur;
    atomic_uint_fast64_t gen; /* bumped by each swap: servers re-pin only when it moved */
} gw_tls_slot;

void gw_tls_slot_init(gw_tls_slot *s, gw_tls_ctx *initial); /* takes the reference */
/* A new reference to the current snapshot (NULL when none). */
gw_tls_ctx *gw_tls_slot_acquire(gw_tls_slot *s);
/* Publishes NEXT (takes its reference); the old one is released (connections that pinned
 * it keep it until they close). */
void gw_tls_slot_swap(gw_tls_slot *s, gw_tls_ctx *next);
void gw_tls_slot_destroy(gw_tls_slot *s);

/* What the transport reports (gw_server_opts.on_tls_event): handshakes and errors by kind. */
enum gw_tls_event {
    GW_TLS_HANDSHAKE,         /* a full handshake completed */
    GW_TLS_RESUMED,           /* a handshake completed by resumption (ticket or session id) */
    GW_TLS_ERR_TIMEOUT,       /* no complete handshake within handshake_timeout_ms */
    GW_TLS_ERR_EOF,           /* the client went away during the handshake */
    GW_TLS_ERR_VERSION,       /* no protocol version in common */
    GW_TLS_ERR_CIPHER,        /* no cipher suite (or group / signature algorithm) in common */
    GW_TLS_ERR_ALPN,          /* no ALPN protocol in common */
    GW_TLS_ERR_NOT_TLS,       /* plain HTTP (or other non-TLS bytes) on a TLS listener */
    GW_TLS_ERR_ALERT,         /* the client sent a fatal alert (e.g. it refused our certificate) */
    GW_TLS_ERR_HANDSHAKE,     /* any other handshake failure */
    GW_TLS_ERR_RECORD,        /* a bad record after the handshake */
    GW_TLS__EVENTS
};
const char *gw_tls_event_name(enum gw_tls_event ev); /* "handshake", "timeout", ... */

/* ALPN selection over WIRE (the listener's list, in preference order) against the client's
 * offer; pure, for tests. 1 with out and outlen set, or 0 when nothing is in common. */
int gw_tls_alpn_select(const unsigned char *wire, size_t wlen, const unsigned char *offer,
                       size_t olen, const unsigned char **out, unsigned char *outlen);

/* Ticket keys for PERIOD from SECRET (32 bytes): a 16-byte name, 32-byte AES and HMAC keys.
 * Deterministic, so instances sharing a secret agree; pure, for tests. */
void gw_tls_ticket_keys(const unsigned char secret[32], uint64_t period, unsigned char name[16],
                        unsigned char aes[32], unsigned char hmac[32]);

/* Frees this thread's TLS 1.2 session cache and OpenSSL's per-thread state (tls_cache.c):
 * a worker calls it at exit. */
void gw_tls_thread_cleanup(void);
/* Frees OpenSSL's per-thread state (error queue, random generators) of a thread that
 * outlives its use of OpenSSL, e.g. a threadpool thread after a certificate load: those
 * threads are joined only at process exit, after OpenSSL's own cleanup. */
void gw_tls_thread_stop(void);

#endif
