/* tls_cache.c — the TLS 1.2 session-id cache, one per worker thread (like nginx's builtin
 * cache): no lock shared between workers, bounded (direct-mapped: a new session takes its
 * slot from whichever one hashed there before). TLS 1.3 and ticket-capable TLS 1.2 clients
 * resume with tickets (tls_ctx.c) and never need it. OpenSSL calls these on the worker that
 * runs the handshake. */
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

#include "http/tls.h"
#include "http/tls_record.h"
#include "http/tls_transport.h"

typedef struct cache_slot {
    SSL_SESSION *sess;   /* one reference held by the cache */
    unsigned char id[SSL_MAX_SSL_SESSION_ID_LENGTH];
    unsigned idlen;
} cache_slot;

static _Thread_local cache_slot *slots;
static _Thread_local size_t n_slots;

static size_t slot_of(const unsigned char *id, unsigned len)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a: ids are random already */
    for (unsigned i = 0; i < len; i++)
        h = (h ^ id[i]) * 0x100000001b3ULL;
    return (size_t)(h % n_slots);
}

/* SSL_CTX_sess_set_new_cb: 1 = the cache keeps the reference OpenSSL handed over. */
int gw__tls_cache_new(SSL *ssl, SSL_SESSION *sess, size_t size)
{
    (void)ssl;
    unsigned len;
    const unsigned char *id = SSL_SESSION_get_id(sess, &len);
    if (!size || len == 0 || len > SSL_MAX_SSL_SESSION_ID_LENGTH)
        return 0;
    if (!slots) {
        if (!(slots = calloc(size, sizeof *slots)))
            return 0;
        n_slots = size;
    }
    cache_slot *s = &slots[slot_of(id, len)];
    if (s->sess)
        SSL_SESSION_free(s->sess);
    s->sess = sess;
    memcpy(s->id, id, len);
    s->idlen = len;
    return 1;
}

SSL_SESSION *gw__tls_cache_get(SSL *ssl, const unsigned char *id, int len, int *copy)
{
    (void)ssl;
    *copy = 1; /* OpenSSL takes its own reference: the cache keeps its one */
    if (!slots || len <= 0 || len > SSL_MAX_SSL_SESSION_ID_LENGTH)
        return NULL;
    cache_slot *s = &slots[slot_of(id, (unsigned)len)];
    if (s->sess && s->idlen == (unsigned)len && memcmp(s->id, id, (size_t)len) == 0)
        return s->sess;
    return NULL;
}

int gw__tls_cache_holds(const SSL_SESSION *sess)
{
    unsigned len;
    const unsigned char *id = SSL_SESSION_get_id(sess, &len);
    return slots && len && len <= SSL_MAX_SSL_SESSION_ID_LENGTH &&
           slots[slot_of(id, len)].sess == sess;
}

void gw__tls_cache_forget(const unsigned char *id, unsigned len, const void *token)
{
    if (!slots || len == 0 || len > SSL_MAX_SSL_SESSION_ID_LENGTH)
        return;
    cache_slot *s = &slots[slot_of(id, len)];
    if (s->sess && (const void *)s->sess == token && s->idlen == len &&
        memcmp(s->id, id, len) == 0) {
        SSL_SESSION_free(s->sess);
        s->sess = NULL;
    }
}

void gw__tls_ticket_cache_clear(void); /* tls_ctx.c */

void gw__tls_cache_remove(SSL_CTX *ctx, SSL_SESSION *sess)
{
    (void)ctx;
    unsigned len;
    const unsigned char *id = SSL_SESSION_get_id(sess, &len);
    if (!slots || len == 0 || len > SSL_MAX_SSL_SESSION_ID_LENGTH)
        return;
    cache_slot *s = &slots[slot_of(id, len)];
    if (s->sess == sess) {
        SSL_SESSION_free(s->sess);
        s->sess = NULL;
    }
}

void gw_tls_thread_cleanup(void)
{
    for (size_t i = 0; slots && i < n_slots; i++)
        if (slots[i].sess)
            SSL_SESSION_free(slots[i].sess);
    free(slots);
    slots = NULL;
    n_slots = 0;
    gw_tls_rec_thread_cleanup();
    gw__tls_ticket_cache_clear();
    OPENSSL_thread_stop(); /* this thread's error queue and random generators */
}

void gw_tls_thread_stop(void)
{
    OPENSSL_thread_stop();
}
