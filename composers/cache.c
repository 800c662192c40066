/* cache.c — the cache front: configuration, the get/set/del entry points, request
 * bookkeeping (a free list, the deferred queue delivered by a uv_idle), stats and the
 * two-phase close. The stores are in cache_lru.c (no Redis) and cache_redis.c.
 *
 * Life of a get: a cmp__req is taken from the free list; an LRU answer, or an immediate
 * ERROR (Redis not connected), is queued on c->deferred and delivered by the idle handle on
 * the next loop iteration; a Redis GET goes on c->inflight until its reply or its deadline
 * (cache_redis.c). Either way cmp__finish delivers the outcome exactly once. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "composers/cache_int.h"

#define CMP__FREE_REQS_MAX 256
#define CMP__REQ_BUSY 0x8 /* the owner's callback is running: do not recycle yet */

const char *cmp_cache_status_str(cmp_cache_status st)
{
    switch (st) {
    case CMP_CACHE_HIT: return "hit";
    case CMP_CACHE_MISS: return "miss";
    case CMP_CACHE_ERROR: return "error";
    }
    return "?";
}

/* The Redis topology CONF asks for into *OUT (kind NONE: the LRU); -1 when invalid. */
static int cmp__topology(const cmp_cache_conf *conf, cmp_redis_conf *out)
{
    if (conf->topology != NULL && conf->topology->kind != CMP_REDIS_NONE) {
        *out = *conf->topology;
        return cmp_redis_conf_error(out) ? -1 : 0;
    }
    memset(out, 0, sizeof *out);
    if (conf->redis == NULL || conf->redis[0] == '\0')
        return 0;
    return cmp_redis_conf_single(out, conf->redis);
}

const char *cmp_cache_conf_error(const cmp_cache_conf *conf)
{
    cmp_redis_conf topo;

    int bad;

    if (conf == NULL)
        return "no configuration";
    bad = cmp__topology(conf, &topo) != 0;
    explicit_bzero(&topo, sizeof topo); /* the copy's credentials */
    if (bad)
        return "redis: invalid address (want \"host:port\" or \"[ipv6]:port\")";
    if (conf->prefix != NULL && strlen(conf->prefix) > 1024)
        return "prefix: longer than 1024 bytes";
    return NULL;
}

void cmp__log(const cmp_cache *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "gateway: cache: redis %s: %s\n", c->where ? c->where : "-", msg);
}

/* ---- requests ------------------------------------------------------------------------ */
cmp__req *cmp__req_new(cmp_cache *c, int kind)
{
    cmp__req *r;

    if (!gw_queue_empty(&c->free_reqs)) {
        r = GW_QUEUE_DATA(c->free_reqs.next, cmp__req, node);
        gw_queue_remove(&r->node);
        c->n_free--;
    } else if ((r = malloc(sizeof *r)) == NULL) {
        return NULL;
    }
    memset(r, 0, sizeof *r);
    gw_queue_init(&r->node);
    r->c = c;
    r->kind = (uint8_t)kind;
    c->n_live++;
    return r;
}

/* Clears FLAG; recycles R once nothing holds it. */
void cmp__req_release(cmp__req *r, unsigned flag)
{
    cmp_cache *c = r->c;

    r->flags &= (uint8_t)~flag;
    if (r->flags & (CMP__REQ_OWED | CMP__REQ_HIREDIS | CMP__REQ_BUSY))
        return;
    c->n_live--;
    if (c->n_free < CMP__FREE_REQS_MAX) {
        gw_queue_insert_head(&c->free_reqs, &r->node);
        c->n_free++;
    } else {
        free(r);
    }
}

void cmp__finish(cmp__req *r, cmp_cache_status st, const char *v, size_t len, uint64_t age)
{
    cmp_cache *c = r->c;

    gw_queue_remove(&r->node);
    if (r->flags & CMP__REQ_DEFERRED) {
        c->n_deferred--;
        r->flags &= (uint8_t)~CMP__REQ_DEFERRED;
    }
    /* BUSY: the owner may close the cache from its callback, which makes hiredis release
     * its hold on R right now; R must survive until we are back here. */
    r->flags = (uint8_t)((r->flags & ~CMP__REQ_OWED) | CMP__REQ_BUSY);
    if (r->kind == CMP__REQ_GET) {
        if (st == CMP_CACHE_HIT)
            c->st.hits++;
        else if (st == CMP_CACHE_MISS)
            c->st.misses++;
        else
            c->st.errors++;
        if (st == CMP_CACHE_HIT)
            r->cb(st, v, len, age, r->arg);
        else
            r->cb(st, NULL, 0, 0, r->arg);
    } else {
        if (st == CMP_CACHE_ERROR)
            c->st.errors++;
        if (r->cb != NULL) /* a confirmed del */
            r->cb(st, NULL, 0, 0, r->arg);
    }
    if (r->entry != NULL) {
        cmp__entry_unref(r->entry);
        r->entry = NULL;
    }
    cmp__req_release(r, CMP__REQ_BUSY);
}

/* Delivers c->deferred, at most what was queued when the iteration started (answers queued
 * by the callbacks wait for the next iteration). */
static void cmp__on_idle(uv_idle_t *h)
{
    cmp_cache *c = h->data;
    uint32_t n = c->n_deferred;
    uint64_t now = uv_now(c->loop);

    while (n-- > 0 && !gw_queue_empty(&c->deferred)) {
        cmp__req *r = GW_QUEUE_DATA(c->deferred.next, cmp__req, node);
        const char *v = NULL;
        size_t len = 0;
        uint64_t stored = now;

        if (r->st == CMP_CACHE_HIT && r->entry != NULL) /* not for a confirmed del */
            v = cmp__entry_value(r->entry, &len, &stored);
        cmp__finish(r, r->st, v, len, now > stored ? now - stored : 0);
    }
    if (gw_queue_empty(&c->deferred) && !(c->flags & CMP__F_CLOSING))
        uv_idle_stop(&c->idle);
}

void cmp__defer(cmp_cache *c, cmp__req *r, cmp_cache_status st)
{
    r->st = st;
    r->flags |= CMP__REQ_OWED | CMP__REQ_DEFERRED;
    gw_queue_insert_tail(&c->deferred, &r->node);
    c->n_deferred++;
    if (!uv_is_active((uv_handle_t *)&c->idle))
        uv_idle_start(&c->idle, cmp__on_idle);
}

/* ---- API ----------------------------------------------------------------------------- */
cmp_cache *cmp_cache_new(uv_loop_t *loop, const cmp_cache_conf *conf)
{
    cmp_redis_conf topo;
    char where[512];
    int redis;
    cmp_cache *c;

    if (loop == NULL || cmp_cache_conf_error(conf) != NULL || cmp__topology(conf, &topo) != 0)
        return NULL; /* not valid: cmp__topology copied no credentials */
    redis = topo.kind != CMP_REDIS_NONE;
    if ((c = calloc(1, sizeof *c)) == NULL)
        goto fail;
    c->loop = loop;
    c->timeout_ms = conf->timeout_ms ? conf->timeout_ms : CMP_CACHE_DEFAULT_TIMEOUT_MS;
    gw_queue_init(&c->deferred);
    gw_queue_init(&c->free_reqs);
    gw_queue_init(&c->inflight);
    if (conf->prefix != NULL && conf->prefix[0] != '\0') {
        c->prefix_len = strlen(conf->prefix);
        if ((c->prefix = strdup(conf->prefix)) == NULL)
            goto fail_c;
    }
    if (redis) {
        cmp_redis_conf_describe(&topo, where, sizeof where);
        if ((c->where = strdup(where)) == NULL)
            goto fail_prefix;
        c->cluster = topo.kind == CMP_REDIS_CLUSTER;
        c->rstate = CMP__R_WAIT;
    } else {
        if (cmp__lru_init(&c->lru, conf->lru_entries ? conf->lru_entries
                                                      : CMP_CACHE_DEFAULT_LRU_ENTRIES) != 0)
            goto fail_prefix;
        c->rstate = CMP__R_OFF;
    }
    if (redis && cmp__redis_start(c, &topo) != 0)
        goto fail_where;
    /* nothing below fails: the handles need a close (and a loop run) once initialised */
    uv_idle_init(loop, &c->idle);
    uv_timer_init(loop, &c->cmd_timer);
    c->idle.data = c->cmd_timer.data = c;
    explicit_bzero(&topo, sizeof topo); /* the client has its own copy */
    return c;

fail_where:
    free(c->where);
fail_prefix:
    free(c->prefix);
fail_c:
    free(c);
fail:
    explicit_bzero(&topo, sizeof topo);
    return NULL;
}

void cmp_cache_get(cmp_cache *c, const char *key, cmp_cache_get_cb cb, void *arg)
{
    cmp__req *r;

    if ((c->flags & CMP__F_CLOSING) || (r = cmp__req_new(c, CMP__REQ_GET)) == NULL) {
        /* closing (documented) or out of memory: the only synchronous answers */
        c->st.errors++;
        cb(CMP_CACHE_ERROR, NULL, 0, 0, arg);
        return;
    }
    r->cb = cb;
    r->arg = arg;
    if (c->rstate == CMP__R_OFF) {
        r->entry = cmp__lru_get(&c->lru, key, strlen(key), uv_now(c->loop));
        cmp__defer(c, r, r->entry != NULL ? CMP_CACHE_HIT : CMP_CACHE_MISS);
    } else if (cmp__redis_send(c, r, key, NULL, 0, 0) != 0) {
        cmp__defer(c, r, CMP_CACHE_ERROR); /* fail open, at once */
    }
}

/* A del, COUNTED in the stats or not (a set that stores nothing clears the old value). */
static void cmp__del(cmp_cache *c, const char *key, int counted)
{
    cmp__req *r;

    if (c->flags & CMP__F_CLOSING)
        return;
    if (c->rstate == CMP__R_OFF) {
        cmp__lru_del(&c->lru, key, strlen(key));
        c->st.dels += (uint64_t)counted;
        return;
    }
    if ((r = cmp__req_new(c, CMP__REQ_DEL)) == NULL || cmp__redis_send(c, r, key, NULL, 0, 0) != 0) {
        c->st.errors++; /* dropped */
        if (r != NULL)
            cmp__req_release(r, 0);
        return;
    }
    c->st.dels += (uint64_t)counted;
}

void cmp_cache_del(cmp_cache *c, const char *key)
{
    cmp__del(c, key, 1);
}

void cmp_cache_del_confirmed(cmp_cache *c, const char *const *keys, int n, cmp_cache_get_cb cb,
                             void *arg)
{
    cmp__req *r;

    if ((c->flags & CMP__F_CLOSING) || (r = cmp__req_new(c, CMP__REQ_DEL)) == NULL) {
        c->st.errors++;
        cb(CMP_CACHE_ERROR, NULL, 0, 0, arg);
        return;
    }
    r->cb = cb;
    r->arg = arg;
    if (c->rstate == CMP__R_OFF) {
        for (int i = 0; i < n; i++)
            cmp__lru_del(&c->lru, keys[i], strlen(keys[i]));
        c->st.dels++;
        cmp__defer(c, r, CMP_CACHE_HIT);
    } else if (cmp__redis_send_del(c, r, keys, n) != 0) {
        cmp__defer(c, r, CMP_CACHE_ERROR); /* not connected: the caller marks the keys */
    } else {
        c->st.dels++;
    }
}

void cmp_cache_set(cmp_cache *c, const char *key, const char *value, size_t len,
                   uint32_t ttl_ms, uint32_t stale_ms)
{
    uint64_t keep = (uint64_t)ttl_ms + stale_ms;
    cmp__req *r;

    if (c->flags & CMP__F_CLOSING)
        return;
    if (len > CMP_CACHE_MAX_VALUE || keep == 0) {
        cmp__del(c, key, 0);
        return;
    }
    if (c->rstate == CMP__R_OFF) {
        if (cmp__lru_set(&c->lru, key, strlen(key), value, len, uv_now(c->loop), keep) == 0)
            c->st.sets++;
        else
            c->st.errors++;
        return;
    }
    if ((r = cmp__req_new(c, CMP__REQ_SET)) == NULL ||
        cmp__redis_send(c, r, key, value, len, keep) != 0) {
        c->st.errors++; /* dropped: Redis not connected */
        if (r != NULL)
            cmp__req_release(r, 0);
        return;
    }
    c->st.sets++;
}

void cmp__maybe_free(cmp_cache *c)
{
    if (!(c->flags & CMP__F_CLOSING) || c->handles_open > 0)
        return;
    if (c->n_live > 0) { /* a hold we do not know about: leak rather than crash */
        cmp__log(c, "BUG: %u request(s) still held at close; leaking the cache", c->n_live);
        return;
    }
    while (!gw_queue_empty(&c->free_reqs)) {
        cmp__req *r = GW_QUEUE_DATA(c->free_reqs.next, cmp__req, node);
        gw_queue_remove(&r->node);
        free(r);
    }
    cmp__lru_free(&c->lru);
    free(c->scratch);
    free(c->where);
    free(c->prefix);
    free(c);
}

void cmp__on_handle_closed(uv_handle_t *h)
{
    cmp_cache *c = h->data;

    c->handles_open--;
    cmp__maybe_free(c);
}

void cmp_cache_close(cmp_cache *c)
{
    if (c == NULL || (c->flags & CMP__F_CLOSING))
        return;
    c->flags |= CMP__F_CLOSING;
    c->handles_open = 2;
    uv_close((uv_handle_t *)&c->idle, cmp__on_handle_closed);
    uv_close((uv_handle_t *)&c->cmd_timer, cmp__on_handle_closed);
    if (c->rstate != CMP__R_OFF)
        cmp__redis_close(c); /* pending commands fire now with a NULL reply: ERROR */
    /* what is left: gets queued for delivery, and commands of a context whose free hiredis
     * deferred because we are inside one of its callbacks (their NULL replies come later
     * and only release the hold) */
    while (!gw_queue_empty(&c->inflight))
        cmp__finish(GW_QUEUE_DATA(c->inflight.next, cmp__req, node), CMP_CACHE_ERROR, NULL, 0, 0);
    while (!gw_queue_empty(&c->deferred))
        cmp__finish(GW_QUEUE_DATA(c->deferred.next, cmp__req, node), CMP_CACHE_ERROR, NULL, 0, 0);
}

void cmp_cache_stats_get(const cmp_cache *c, cmp_cache_stats *out)
{
    *out = c->st;
    if (c->rc != NULL)
        out->reconnects = cmp_redis_reconnects(c->rc);
    out->connected = c->rstate == CMP__R_OFF || c->rstate == CMP__R_UP;
}
