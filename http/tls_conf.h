/* tls_conf.h — what a TLS listener needs: its certificate/key files, protocol range, cipher
 * lists, ALPN protocols, handshake timeout and session resumption settings. Filled by the
 * application (gateway.json "listeners[].tls"); read-only for http/. Plain arrays, no
 * pointers: a gw_config is copied whole. */
#ifndef GW_TLS_CONF_H
#define GW_TLS_CONF_H

#include <stddef.h>
#include <stdint.h>

#define GW_TLS_MAX_CERTS 16
#define GW_TLS_PATH_MAX 512

enum { GW_TLS_V12 = 1 << 0, GW_TLS_V13 = 1 << 1 }; /* gw_tls_conf.protocols */

typedef struct gw_tls_cert_conf {
    char cert[GW_TLS_PATH_MAX]; /* PEM: the certificate, then its chain */
    char key[GW_TLS_PATH_MAX];  /* PEM private key (RSA or EC), unencrypted */
} gw_tls_cert_conf;

typedef struct gw_tls_conf {
    gw_tls_cert_conf certs[GW_TLS_MAX_CERTS]; /* the first is the default (no SNI match) */
    int n_certs;
    unsigned protocols;            /* GW_TLS_V12 | GW_TLS_V13 (a contiguous range) */
    char ciphers[512];             /* TLS 1.2 cipher list (OpenSSL syntax); "" = default */
    char ciphersuites[256];        /* TLS 1.3 suites; "" = OpenSSL's default */
    unsigned char alpn[64];        /* ALPN protocols, wire format (length-prefixed) */
    size_t alpn_len;               /* 0: no ALPN */
    uint32_t handshake_timeout_ms; /* accept -> handshake done; default 10000 */
    /* TLS 1.3 (and 1.2) session tickets: keys derived from a secret per period, so every
     * instance that shares the secret's file issues and accepts the same tickets */
    char ticket_key_file[GW_TLS_PATH_MAX]; /* "" = a random secret per process */
    uint32_t ticket_rotate_s;      /* a ticket key is current this long; default 3600 */
    uint32_t session_cache_size;   /* TLS 1.2 session-id cache entries per worker; 0 = off */
} gw_tls_conf;

#endif
