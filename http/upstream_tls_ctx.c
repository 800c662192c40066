/* upstream_tls_ctx.c — the client SSL_CTXs of TLS upstreams, built where a definition is
 * read (gateway.json at start, the routes source on the threadpool) and shared by every
 * worker: reading a CA bundle (the system's holds ~140 certificates) never runs on a worker
 * loop, and a CA file that loads no certificate is refused with the definition.
 *
 * One context per (ca_file, verify), the newest build kept: reading a definition again
 * (a reload, a route change) reads the file again, so a rewritten bundle is taken. A worker
 * takes its own reference per endpoint set (SSL_CTX_up_ref), so replacing or evicting an
 * entry never frees a context in use. */
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "http/upstream_tls.h"

#define CTX_SLOTS 64 /* distinct TLS settings kept; past that the oldest is replaced */

typedef struct {
    char ca_file[sizeof ((gw_upstream_conf *)0)->tls_ca_file];
    int verify;
    SSL_CTX *ctx;
    uint64_t built;           /* for replacing the oldest */
} ctx_slot;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static ctx_slot g_slots[CTX_SLOTS];
static uint64_t g_builds;

static ctx_slot *slot_of(const gw_upstream_conf *conf, int for_insert)
{
    ctx_slot *free_slot = NULL, *oldest = NULL;
    for (int i = 0; i < CTX_SLOTS; i++) {
        ctx_slot *s = &g_slots[i];
        if (!s->ctx) {
            free_slot = free_slot ? free_slot : s;
            continue;
        }
        if (s->verify == conf->tls_verify && strcmp(s->ca_file, conf->tls_ca_file) == 0)
            return s;
        if (!oldest || s->built < oldest->built)
            oldest = s;
    }
    return for_insert ? (free_slot ? free_slot : oldest) : NULL;
}

static void keep(const gw_upstream_conf *conf, SSL_CTX *ctx)
{
    pthread_mutex_lock(&g_lock);
    ctx_slot *s = slot_of(conf, 1);
    SSL_CTX *old = s->ctx;
    snprintf(s->ca_file, sizeof s->ca_file, "%s", conf->tls_ca_file);
    s->verify = conf->tls_verify;
    s->ctx = ctx;
    s->built = ++g_builds;
    pthread_mutex_unlock(&g_lock);
    if (old)
        SSL_CTX_free(old); /* workers hold their own references */
}

int gw_utls_ctx_prepare(const gw_upstream_conf *conf, char *err, size_t errlen)
{
    if (!conf->tls)
        return 0;
    SSL_CTX *ctx = gw__utls_ctx_new(conf, err, errlen);
    if (!ctx)
        return -1;
    keep(conf, ctx);
    return 0;
}

SSL_CTX *gw__utls_ctx_get(const gw_upstream_conf *conf)
{
    pthread_mutex_lock(&g_lock);
    ctx_slot *s = slot_of(conf, 0);
    SSL_CTX *ctx = s ? s->ctx : NULL;
    if (ctx)
        SSL_CTX_up_ref(ctx);
    pthread_mutex_unlock(&g_lock);
    if (ctx)
        return ctx;
    /* not prepared (a definition not read through the config, or evicted): build it here */
    char err[700];
    if (!(ctx = gw__utls_ctx_new(conf, err, sizeof err))) {
        fprintf(stderr, "gateway: %s\n", err);
        return NULL;
    }
    SSL_CTX_up_ref(ctx);
    keep(conf, ctx);
    return ctx;
}
