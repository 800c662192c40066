/* lookup.c — cached, coalesced lookups (see lookup.h).
 *
 * One inflight per key under way, with its waiters. The inflight owns the cache read and the
 * upstream fetch, so a waiter that gives up (its client left, its deadline passed) changes
 * nothing for the others; the answer still fills the cache. Stored values are
 * "<status>\n<body>". */
#include "composers/lookup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "composers/fetch.h"
#include "composers/worker_int.h"

#define KEY_MAX 1024

typedef struct inflight inflight;

struct cmp_wait {
    gw_queue node;           /* in inflight->waiters */
    inflight *in;
    cmp_lookup_cb cb;
    void *arg;
};

struct inflight {
    gw_queue node;           /* in worker->inflight */
    cmp_worker *w;
    rt_table *table;
    char key[KEY_MAX];
    char request_id[72];
    char client_ip[64];
    uint32_t timeout_ms;
    gw_queue waiters;
    cmp_fetch *fetch;
    int cache_pending;       /* the cache read has not called back yet */
    int dead;                /* finished while the cache read was pending: free it then */
    int no_store;            /* the path changed while this was under way: don't cache it */
    char *stale;             /* a copy past its ttl, for stale-if-error */
    size_t stale_len;
    int stale_status;
};

#define ADD(m, f) atomic_fetch_add_explicit(&(m)->f, 1, memory_order_relaxed)

static void free_inflight(inflight *in)
{
    rt_table_unref(in->table);
    free(in->stale);
    free(in);
}

static void finish(inflight *in, int status, const char *body, size_t len, cmp_source src,
                   const char *why, int timed_out, const char *upstream)
{
    gw_queue_remove(&in->node);
    while (!gw_queue_empty(&in->waiters)) {
        cmp_wait *wt = GW_QUEUE_DATA(in->waiters.next, cmp_wait, node);
        gw_queue_remove(&wt->node);
        cmp_lookup_cb cb = wt->cb;
        void *arg = wt->arg;
        free(wt);
        cb(status, body, len, src, why, timed_out, upstream, arg);
    }
    if (in->cache_pending) {
        in->dead = 1; /* the cache always calls back: free then */
        return;
    }
    free_inflight(in);
}

static int parse_value(const char *v, size_t n, int *status, const char **body, size_t *len)
{
    const char *nl = memchr(v, '\n', n);
    if (!nl || nl - v > 3)
        return -1;
    *status = atoi(v);
    *body = nl + 1;
    *len = n - (size_t)(nl + 1 - v);
    return (*status == 200 || *status == 404) ? 0 : -1;
}

static void on_fetched(int status, const char *body, size_t len, const char *why, int timed_out,
                       const char *upstream, void *arg)
{
    inflight *in = arg;
    cmp_worker *w = in->w;
    in->fetch = NULL;
    if ((status == 200 || status == 404) && !in->no_store) {
        const gw_config *cfg = w->cfg;
        uint32_t ttl = status == 200 ? cfg->cache.ttl_ms : cfg->cache.negative_ttl_ms;
        char *v = malloc(len + 5);
        if (v) {
            int hl = snprintf(v, 5, "%d\n", status);
            memcpy(v + hl, body, len);
            cmp_cache_set(w->cache, in->key, v, (size_t)hl + len, ttl,
                          status == 200 ? cfg->cache.stale_ms : 0);
            free(v);
        }
        finish(in, status, body, len, CMP_FROM_UPSTREAM, NULL, 0, upstream);
        return;
    }
    if (status == 200 || status == 404) {
        finish(in, status, body, len, CMP_FROM_UPSTREAM, NULL, 0, upstream);
        return;
    }
    if ((status == 0 || status >= 500) && in->stale) {
        /* stale-if-error: a recent copy beats no answer */
        ADD(w->metrics, cache_stale);
        char *s = in->stale;
        in->stale = NULL;
        finish(in, in->stale_status, s, in->stale_len, CMP_FROM_STALE, NULL, 0, "cache");
        free(s);
        return;
    }
    finish(in, status, body, len, CMP_FROM_UPSTREAM, why, timed_out, upstream);
}

static void fetch_now(inflight *in)
{
    in->fetch = cmp_fetch_start(in->w, in->table, in->key, in->request_id, in->client_ip,
                                in->timeout_ms, on_fetched, in);
    if (!in->fetch)
        finish(in, 0, NULL, 0, CMP_FROM_UPSTREAM, "out of memory", 0, NULL);
}

static void on_cached(cmp_cache_status st, const char *value, size_t len, uint64_t age_ms, void *arg)
{
    inflight *in = arg;
    cmp_worker *w = in->w;
    int status;
    const char *body;
    size_t blen;
    in->cache_pending = 0;
    if (in->dead) {
        free_inflight(in);
        return;
    }
    if (st == CMP_CACHE_HIT && parse_value(value, len, &status, &body, &blen) == 0) {
        uint32_t ttl = status == 200 ? w->cfg->cache.ttl_ms : w->cfg->cache.negative_ttl_ms;
        if (age_ms <= ttl) {
            ADD(w->metrics, cache_hits);
            finish(in, status, body, blen, CMP_FROM_CACHE, NULL, 0, "cache");
            return;
        }
        if (status == 200) { /* too old to serve, unless the upstream fails */
            in->stale = malloc(blen ? blen : 1);
            if (in->stale) {
                memcpy(in->stale, body, blen);
                in->stale_len = blen;
                in->stale_status = status;
            }
        }
        ADD(w->metrics, cache_misses);
    } else if (st == CMP_CACHE_ERROR) {
        ADD(w->metrics, cache_errors); /* fail open: the upstream answers */
    } else {
        ADD(w->metrics, cache_misses);
    }
    fetch_now(in);
}

cmp_wait *cmp_lookup_start(cmp_worker *w, rt_table *table, const char *path,
                           const char *request_id, const char *client_ip, uint32_t timeout_ms,
                           cmp_lookup_cb cb, void *arg)
{
    if (strlen(path) >= KEY_MAX)
        return NULL;
    cmp_wait *wt = calloc(1, sizeof *wt);
    if (!wt)
        return NULL;
    wt->cb = cb;
    wt->arg = arg;
    gw_queue *q;
    for (q = w->inflight.next; q != &w->inflight; q = q->next) {
        inflight *in = GW_QUEUE_DATA(q, inflight, node);
        if (strcmp(in->key, path) == 0) {
            ADD(w->metrics, cache_coalesced);
            wt->in = in;
            gw_queue_insert_tail(&in->waiters, &wt->node);
            return wt;
        }
    }
    inflight *in = calloc(1, sizeof *in);
    if (!in) {
        free(wt);
        return NULL;
    }
    in->w = w;
    rt_table_ref(table);
    in->table = table;
    snprintf(in->key, sizeof in->key, "%s", path);
    snprintf(in->request_id, sizeof in->request_id, "%s", request_id);
    snprintf(in->client_ip, sizeof in->client_ip, "%s", client_ip);
    in->timeout_ms = timeout_ms;
    gw_queue_init(&in->waiters);
    gw_queue_insert_tail(&w->inflight, &in->node);
    wt->in = in;
    gw_queue_insert_tail(&in->waiters, &wt->node);
    in->cache_pending = 1;
    cmp_cache_get(w->cache, in->key, on_cached, in); /* answers on a later loop turn */
    return wt;
}

void cmp_lookup_cancel(cmp_wait *wt)
{
    if (!wt)
        return;
    gw_queue_remove(&wt->node); /* the inflight goes on for the others (and the cache) */
    free(wt);
}

void cmp_lookup_shutdown(cmp_worker *w)
{
    while (!gw_queue_empty(&w->detached)) {
        gw_queue *q = w->detached.next;
        gw_queue_remove(q);
        gw_queue_insert_tail(&w->inflight, q);
    }
    while (!gw_queue_empty(&w->inflight)) {
        inflight *in = GW_QUEUE_DATA(w->inflight.next, inflight, node);
        cmp_fetch_cancel(in->fetch);
        in->fetch = NULL;
        finish(in, 0, NULL, 0, CMP_FROM_UPSTREAM, "shutting down", 0, NULL);
    }
}

void cmp_lookup_invalidate(cmp_worker *w, const char *path)
{
    if (!w)
        return;
    /* a lookup under way read the old data: its answer must not be stored, and lookups
     * from now on must not join it */
    gw_queue *q, *n;
    GW_QUEUE_FOREACH_SAFE(q, n, &w->inflight)
    {
        inflight *in = GW_QUEUE_DATA(q, inflight, node);
        if (strcmp(in->key, path) == 0) {
            in->no_store = 1;
            gw_queue_remove(&in->node);
            gw_queue_insert_tail(&w->detached, &in->node); /* still cancelled at shutdown */
        }
    }
    if (w->cache)
        cmp_cache_del(w->cache, path);
}
