/* lookup.c — cached, coalesced lookups (see lookup.h), and the handler that answers a
 * client's GET on a cached route with one.
 *
 * A key is "<route id>:<upstream name>:<path>": the route the path's GET matches and the
 * upstream that answers it (the one the route picks now), so a flip, a split change or a
 * rollback switches key space at once. One inflight per key under way, with its waiters.
 * The inflight owns the cache read and the upstream fetch, so a waiter that gives up (its
 * client left, its deadline passed) changes nothing for the others; the answer still fills
 * the cache.
 *
 * Stored values (composers/cache_value.h) hold the upstream's kept headers (never
 * Set-Cookie) and the fresh time its Cache-Control allowed; version 1 values (older
 * gateways sharing the Redis) are served with the configured ttl and Content-Type:
 * application/json; anything else is a miss. */
#include "composers/lookup.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http/gw_errors.h"
#include "http/request_id.h"
#include "routes/policy.h"
#include "composers/cache_policy.h"
#include "composers/cache_value.h"
#include "composers/fetch.h"
#include "composers/json_check.h"
#include "composers/worker_int.h"

#define KEY_MAX 1024                 /* a path; longer ones are fetched, not cached */
#define KEY_SIZE (KEY_MAX + 2 * 130) /* route id and upstream name added */

typedef struct inflight inflight;

struct cmp_wait {
    gw_queue node;           /* in inflight->waiters */
    inflight *in;
    cmp_lookup_cb cb;
    void *arg;
    int origin;              /* started the inflight: the only one given Set-Cookie */
};

struct inflight {
    gw_queue node;           /* in worker->inflight */
    cmp_worker *w;
    rt_table *table;
    int ui;                  /* the upstream that answers (index in w->upstreams) */
    const char *route_id;    /* the cached route's id (in TABLE, held): for the counters */
    uint64_t fetched_at;     /* wall-clock us the fetch started; 0 before */
    char key[KEY_SIZE];
    char path[KEY_MAX];
    char request_id[72];
    gw_trace_ctx trace;      /* the first asker's: a coalesced fetch is a child of its span */
    char client_ip[64];
    uint32_t timeout_ms;
    gw_queue waiters;
    cmp_fetch *fetch;
    int cache_pending;       /* the cache read has not called back yet */
    int dead;                /* finished while the cache read was pending: free it then */
    int no_store;            /* the path changed while this was under way: don't cache it */
    char *stale;             /* a copy past its ttl, for stale-if-error: its header lines */
    size_t stale_hlen;       /* then its body */
    size_t stale_len;
    int stale_status;
    uint64_t stale_age_ms;
};

/* ---- marks: what a change made unservable, on every worker of this process ------------ */

/* A successful change of a path stamps the path's slot with the wall-clock time; an answer
 * fetched at or before its path's stamp is neither served, stored nor joined, on any
 * worker. This covers what a DEL cannot: the other workers' LRUs, a DEL Redis did not
 * confirm in time, and a fetch begun before the change whose SET lands after the DEL.
 * Paths share slots by hash: a collision costs a miss, never a stale answer. */
#define MARK_SLOTS 16384
static _Atomic uint64_t marks[MARK_SLOTS];

static _Atomic uint64_t *mark_slot(const char *path)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)path; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    return &marks[h & (MARK_SLOTS - 1)];
}

/* Microseconds, not milliseconds: a fetch begun in the millisecond of a change (a GET sent
 * the moment the PUT's answer is read) is after it, and must be storable. */
static uint64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Fetched at or before the last change of PATH (same microsecond included: not served). */
static int marked(const char *path, uint64_t fetched_at)
{
    return fetched_at <= atomic_load(mark_slot(path));
}

static void mark(const char *path)
{
    _Atomic uint64_t *m = mark_slot(path);
    uint64_t now = wall_us(), old = atomic_load(m);
    while (old < now && !atomic_compare_exchange_weak(m, &old, now))
        ;
}

static int make_key(char *out, size_t size, const char *route_id, const char *upstream,
                    const char *path)
{
    int n = snprintf(out, size, "%s:%s:%s", route_id, upstream, path);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

static const char *upstream_of(const inflight *in)
{
    return in->w->upstreams[in->ui].name; /* outlives a retired set's conf */
}

/* A lookup that read data older than a change: not joined from now on, not stored. */
static void detach(inflight *in)
{
    in->no_store = 1;
    gw_queue_remove(&in->node);
    gw_queue_insert_tail(&in->w->detached, &in->node); /* still cancelled at shutdown */
}

static void free_inflight(inflight *in)
{
    rt_table_unref(in->table);
    free(in->stale);
    free(in);
}

/* Every waiter gets A; the ones that joined another's fetch get it without Set-Cookie (a
 * cookie is for one client, never shared). */
static void finish(inflight *in, const cmp_answer *a)
{
    gw_queue_remove(&in->node);
    cmp_answer shared = *a;
    char *cut = NULL;
    int has_cookie = cmp_headers_has(a->hdrs.p, a->hdrs.n, "Set-Cookie");
    while (!gw_queue_empty(&in->waiters)) {
        cmp_wait *wt = GW_QUEUE_DATA(in->waiters.next, cmp_wait, node);
        gw_queue_remove(&wt->node);
        cmp_lookup_cb cb = wt->cb;
        void *arg = wt->arg;
        int origin = wt->origin;
        free(wt);
        if (!origin && has_cookie && !cut) {
            cut = malloc(a->hdrs.n);
            shared.hdrs.p = cut;
            shared.hdrs.n = cut ? cmp_headers_without(a->hdrs.p, a->hdrs.n, "Set-Cookie", cut) : 0;
        }
        cb(origin ? a : &shared, arg);
    }
    free(cut);
    if (in->cache_pending) {
        in->dead = 1; /* the cache always calls back: free then */
        return;
    }
    free_inflight(in);
}

static void finish_failed(inflight *in, const char *why)
{
    cmp_answer a = { .source = CMP_FROM_UPSTREAM, .why = why };
    finish(in, &a);
}

/* Stores the answer as a version 2 value, fresh for TTL_MS. */
static void store(inflight *in, int status, uint32_t ttl_ms, uint32_t stale_ms,
                  const cmp_headers *h, const char *body, size_t len)
{
    cmp_value sv = { status, in->fetched_at, ttl_ms, h->p, h->n, body, len };
    size_t n;
    char *v = cmp_value_format(&sv, &n);
    if (!v)
        return;
    cmp_cache_set(in->w->cache, in->key, v, n, ttl_ms, stale_ms);
    free(v);
}

/* The upstream's answer. A 200 with a JSON body and a 404 are stored, for the route's ttl
 * (negative ttl) or less when the answer's Cache-Control says so, unless it must not be
 * stored at all (cache_policy.h): then it is passed on as CMP_FROM_BYPASS and any older
 * copy is deleted, so it cannot come back as a stale copy. Other 2xx and 3xx answers are
 * passed on as CMP_FROM_BYPASS too; a failure or a 5xx is answered by a stale copy when
 * there is one. */
static void on_fetched(int status, const char *body, size_t len, const cmp_headers *h,
                       const char *why, int timed_out, const char *upstream, void *arg)
{
    inflight *in = arg;
    cmp_worker *w = in->w;
    in->fetch = NULL;
    cmp_answer a = { status, body, len, *h, CMP_FROM_UPSTREAM, 0, why, timed_out, upstream };
    if ((status == 200 && cmp_json_valid(body ? body : "", len)) || status == 404) {
        const cmp_conf *cfg = &w->conf;
        uint32_t route_ttl = status == 200 ? cfg->cache.ttl_ms : cfg->cache.negative_ttl_ms;
        cmp_cache_policy pol;
        cmp_cache_policy_parse(h->p, h->n, &pol);
        uint32_t ttl = h->truncated ? 0 : cmp_cache_policy_ttl(&pol, route_ttl, time(NULL));
        a.why = NULL;
        if (route_ttl && !ttl) {
            a.source = CMP_FROM_BYPASS;
            cmp_report_cache(w, in->route_id, upstream_of(in), CMP_CACHE_EV_BYPASS);
            cmp_cache_del(w->cache, in->key);
        } else if (!in->no_store && !marked(in->path, in->fetched_at)) {
            /* a route ttl of 0 stores nothing: cmp_cache_set deletes */
            store(in, status, ttl, status == 200 ? cfg->cache.stale_ms : 0, h, body, len);
        }
        finish(in, &a);
        return;
    }
    if ((status == 0 || status >= 500) && in->stale) {
        /* stale-if-error: a recent copy beats no answer */
        cmp_report_cache(w, in->route_id, upstream_of(in), CMP_CACHE_EV_STALE);
        char *s = in->stale;
        in->stale = NULL;
        cmp_answer st = { in->stale_status, s + in->stale_hlen, in->stale_len,
                          { s, in->stale_hlen, 0 }, CMP_FROM_STALE, in->stale_age_ms, NULL, 0,
                          upstream_of(in) };
        finish(in, &st);
        free(s);
        return;
    }
    if (status >= 200 && status < 400) {
        a.source = CMP_FROM_BYPASS; /* answered as it came, not stored */
        a.why = NULL;
        cmp_report_cache(w, in->route_id, upstream_of(in), CMP_CACHE_EV_BYPASS);
        cmp_cache_del(w->cache, in->key);
    }
    finish(in, &a);
}

static void fetch_now(inflight *in)
{
    in->fetched_at = wall_us();
    in->fetch = cmp_fetch_start_on(in->w, in->table, in->path, in->ui, in->request_id,
                                   &in->trace, in->client_ip, in->timeout_ms, on_fetched, in);
    if (!in->fetch)
        finish_failed(in, "out of memory");
}

static void on_cached(cmp_cache_status st, const char *value, size_t len, uint64_t age_ms, void *arg)
{
    inflight *in = arg;
    cmp_worker *w = in->w;
    cmp_value v;
    in->cache_pending = 0;
    if (in->dead) {
        free_inflight(in);
        return;
    }
    if (st == CMP_CACHE_HIT && cmp_value_parse(value, len, &v) == 0 && !marked(in->path, v.fetched_at)) {
        uint32_t ttl = v.status == 200 ? w->conf.cache.ttl_ms : w->conf.cache.negative_ttl_ms;
        if (v.fresh_ms >= 0 && v.fresh_ms < ttl)
            ttl = (uint32_t)v.fresh_ms; /* the upstream's max-age; a lower configured ttl still wins */
        if (age_ms <= ttl) {
            cmp_report_cache(w, in->route_id, upstream_of(in), CMP_CACHE_EV_HIT);
            cmp_answer a = { v.status, v.body, v.len, { v.hdrs, v.hlen, 0 }, CMP_FROM_CACHE,
                             age_ms, NULL, 0, upstream_of(in) };
            finish(in, &a);
            return;
        }
        if (v.status == 200) { /* too old to serve, unless the upstream fails */
            in->stale = malloc(v.hlen + v.len + 1);
            if (in->stale) {
                memcpy(in->stale, v.hdrs, v.hlen);
                memcpy(in->stale + v.hlen, v.body, v.len);
                in->stale_hlen = v.hlen;
                in->stale_len = v.len;
                in->stale_status = v.status;
                in->stale_age_ms = age_ms;
            }
        }
        cmp_report_cache(w, in->route_id, upstream_of(in), CMP_CACHE_EV_MISS);
    } else if (st == CMP_CACHE_ERROR) {
        /* fail open: the upstream answers */
        cmp_report_cache(w, in->route_id, upstream_of(in), CMP_CACHE_EV_ERROR);
    } else {
        cmp_report_cache(w, in->route_id, upstream_of(in), CMP_CACHE_EV_MISS);
    }
    fetch_now(in);
}

cmp_wait *cmp_lookup_start(cmp_worker *w, rt_table *table, const char *path,
                           const char *request_id, const gw_trace_ctx *trace,
                           const char *client_ip, uint32_t timeout_ms, cmp_lookup_cb cb,
                           void *arg)
{
    return cmp_lookup_start_on(w, table, path, -1, request_id, trace, client_ip, timeout_ms, cb,
                               arg);
}

cmp_wait *cmp_lookup_start_on(cmp_worker *w, rt_table *table, const char *path, int ui,
                              const char *request_id, const gw_trace_ctx *trace,
                              const char *client_ip, uint32_t timeout_ms, cmp_lookup_cb cb,
                              void *arg)
{
    size_t plen = strlen(path);
    rt_match m;
    char key[KEY_SIZE];
    if (plen >= KEY_MAX || !table ||
        rt_table_match(table, GW_SLICE_LIT("GET"), (gw_slice){ path, plen }, &m) != 0 ||
        !m.route->cache)
        return NULL;
    if (ui < 0 || ui >= w->n_upstreams)
        ui = rt_route_pick(m.route, (gw_slice){ NULL, 0 }, gw_random64());
    if (make_key(key, sizeof key, m.route->id, w->upstreams[ui].conf->name, path) < 0)
        return NULL;
    cmp_wait *wt = calloc(1, sizeof *wt);
    if (!wt)
        return NULL;
    wt->cb = cb;
    wt->arg = arg;
    gw_queue *q, *n;
    GW_QUEUE_FOREACH_SAFE(q, n, &w->inflight)
    {
        inflight *in = GW_QUEUE_DATA(q, inflight, node);
        if (strcmp(in->key, key) != 0)
            continue;
        if (in->fetched_at && marked(in->path, in->fetched_at)) {
            detach(in); /* it fetched before a change (on another worker, or this one) */
            continue;
        }
        cmp_report_cache(w, in->route_id, upstream_of(in), CMP_CACHE_EV_COALESCED);
        wt->in = in;
        gw_queue_insert_tail(&in->waiters, &wt->node);
        return wt;
    }
    inflight *in = calloc(1, sizeof *in);
    if (!in) {
        free(wt);
        return NULL;
    }
    in->w = w;
    rt_table_ref(table);
    in->table = table;
    in->ui = ui;
    in->route_id = m.route->id;
    memcpy(in->key, key, sizeof key);
    memcpy(in->path, path, plen + 1);
    snprintf(in->request_id, sizeof in->request_id, "%s", request_id);
    if (trace)
        in->trace = *trace;
    snprintf(in->client_ip, sizeof in->client_ip, "%s", client_ip);
    in->timeout_ms = timeout_ms;
    gw_queue_init(&in->waiters);
    gw_queue_insert_tail(&w->inflight, &in->node);
    wt->in = in;
    wt->origin = 1;
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
        finish_failed(in, "shutting down");
    }
}

/* One eviction the caller waits for; freed when the cache calls back (it always does, at
 * the latest at its close), whether or not the caller is still there. */
struct cmp_evict {
    cmp_evicted_cb cb;       /* NULL once cancelled */
    void *arg;
    int returned;            /* cmp_lookup_evict returned it: the callback may run */
    int done;                /* the cache called back inside cmp_lookup_evict (closing) */
};

static void evicted(cmp_cache_status st, const char *v, size_t n, uint64_t age, void *arg)
{
    cmp_evict *e = arg;
    (void)st, (void)v, (void)n, (void)age; /* unconfirmed: the mark covers this process */
    if (!e->returned) {
        e->done = 1;
        return;
    }
    if (e->cb)
        e->cb(e->arg);
    free(e);
}

cmp_evict *cmp_lookup_evict(cmp_worker *w, rt_table *table, const char *path, cmp_evicted_cb cb,
                            void *arg)
{
    if (!w)
        return NULL;
    mark(path); /* first: from now on no worker here serves, stores or joins older answers */
    gw_queue *q, *nq;
    GW_QUEUE_FOREACH_SAFE(q, nq, &w->inflight)
    {
        inflight *in = GW_QUEUE_DATA(q, inflight, node);
        if (strcmp(in->path, path) == 0)
            detach(in);
    }
    size_t plen = strlen(path);
    rt_match m;
    if (!w->cache || !table || plen >= KEY_MAX ||
        rt_table_match(table, GW_SLICE_LIT("GET"), (gw_slice){ path, plen }, &m) != 0 ||
        !m.route->cache)
        return NULL;
    /* the path under every upstream, not only the one the route names now: a copy from
     * before a flip must not come back with the rollback */
    char **keys = calloc((size_t)w->n_upstreams, sizeof *keys);
    cmp_evict *e = calloc(1, sizeof *e);
    int ok = keys && e, n = 0;
    for (int i = 0; ok && i < w->n_upstreams; i++) {
        const char *name = w->upstreams[i].conf->name;
        if (name[0] == '\0')
            continue; /* a slot no upstream uses (yet) */
        size_t sz = strlen(m.route->id) + strlen(name) + plen + 3;
        keys[n] = malloc(sz);
        ok = keys[n] && make_key(keys[n], sz, m.route->id, name, path) == 0;
        n++;
    }
    if (ok && n > 0) {
        e->cb = cb;
        e->arg = arg;
        cmp_cache_del_confirmed(w->cache, (const char *const *)keys, n, evicted, e);
    }
    for (int i = 0; keys && i < n; i++)
        free(keys[i]);
    free(keys);
    if (!ok || n == 0 || e->done) { /* out of memory, the cache is closing, or no upstream
                                      * is named at all: marked only */
        free(e);
        return NULL;
    }
    e->returned = 1;
    return e;
}

void cmp_evict_cancel(cmp_evict *e)
{
    if (e)
        e->cb = NULL; /* the DEL goes on; E is freed when it calls back */
}

/* ---- a client's GET on a cached route ------------------------------------------------ */

/* One per client request, freed in one place (cached_free) after its timer closed; it ends
 * exactly once (cached_end): answered, out of time, or its client gone. */
typedef struct cmp_cached {
    cmp_worker *w;
    gw_request *req;         /* NULL once answered or the client went away */
    rt_table *table;
    const char *route_id;    /* in table */
    int ui;                  /* the upstream the route picked for this client */
    cmp_wait *wait;          /* the lookup, or */
    cmp_fetch *fetch;        /* a plain fetch (a URL with a query) */
    uv_timer_t timer;        /* the deadline */
    uint64_t started_ms;
    int ended;
    char url[CMP_CACHED_URL_MAX];
    char client_ip[64];
    char request_id[72];
    gw_trace_ctx trace;
} cmp_cached;

static void cached_free(uv_handle_t *h)
{
    cmp_cached *c = h->data;
    rt_table_unref(c->table);
    free(c);
}

/* Answers with status, kept headers and body as the upstream (or the cache) gave them.
 * X-Cache: HIT, MISS or STALE for a 200 with a JSON body and a 404 (with Age on a copy),
 * BYPASS for those when they could not be stored and for the other 2xx and 3xx; none on
 * other 4xx and 5xx. Content-Type: application/json is added to a JSON body that came
 * without one (version 1 copies stored no headers). */
static void pass_answer(gw_request *req, const cmp_answer *a)
{
    static const char *const names[] = { "HIT", "MISS", "STALE", "BYPASS" };
    const char *body = a->body ? a->body : "";
    size_t len = a->body ? a->len : 0;
    int json = cmp_json_valid(body, len);
    int cacheable = (a->status == 200 && json) || a->status == 404;
    const char *xcache = cacheable ? names[a->source] : a->status < 400 ? "BYPASS" : NULL;
    char *hdr = malloc(a->hdrs.n + 160);
    if (!hdr) {
        gw_response_error(req, 502, "upstream failed: out of memory");
        return;
    }
    size_t hl = 0;
    if (xcache)
        hl += (size_t)sprintf(hdr + hl, "X-Cache: %s\r\n", xcache);
    if (a->source == CMP_FROM_CACHE || a->source == CMP_FROM_STALE)
        hl += (size_t)sprintf(hdr + hl, "Age: %llu\r\n", (unsigned long long)(a->age_ms / 1000));
    if (json && !cmp_headers_has(a->hdrs.p, a->hdrs.n, "Content-Type"))
        hl += (size_t)sprintf(hdr + hl, "Content-Type: application/json\r\n");
    if (a->hdrs.n)
        memcpy(hdr + hl, a->hdrs.p, a->hdrs.n);
    hl += a->hdrs.n;
    req->upstream_name = a->upstream;
    int r = gw_response_begin(req, a->status, hdr, hl, (int64_t)len);
    free(hdr);
    if (r < 0)
        return;
    if (len && gw_response_body(req, body, len) < 0)
        return;
    gw_response_end(req);
}

/* The answer, or the gateway's 502/504 when there is none. */
static void cached_answer(gw_request *req, const cmp_answer *a)
{
    if (a->status >= 200) {
        pass_answer(req, a);
        return;
    }
    char msg[200];
    snprintf(msg, sizeof msg, "upstream failed: %s",
             a->status ? "unexpected status" : a->why ? a->why : "no answer");
    req->upstream_name = NULL; /* the gateway answers */
    gw_response_error(req, a->timed_out ? 504 : 502, msg);
}

/* COUNTED: the exchange ended with a result (reported like a composition leg); not when the
 * deadline or the client cut it. A: the answer (NULL when there is none to give). */
static void cached_end(cmp_cached *c, int counted, const cmp_answer *a)
{
    if (c->ended)
        return;
    c->ended = 1;
    cmp_lookup_cancel(c->wait);
    c->wait = NULL;
    cmp_fetch_cancel(c->fetch);
    c->fetch = NULL;
    uv_timer_stop(&c->timer);
    if (counted)
        cmp_report_leg(c->w, c->route_id, c->route_id, (double)(uv_now(c->w->loop) - c->started_ms));
    gw_request *req = c->req;
    if (req) {
        c->req = NULL;
        req->data = NULL;
        cached_answer(req, a);
    }
    uv_close((uv_handle_t *)&c->timer, cached_free);
}

static void cached_end_failed(cmp_cached *c, int counted, const char *why, int timed_out)
{
    cmp_answer a = { .source = CMP_FROM_UPSTREAM, .why = why, .timed_out = timed_out };
    cached_end(c, counted, &a);
}

static void cached_looked_up(const cmp_answer *a, void *arg)
{
    cmp_cached *c = arg;
    c->wait = NULL;
    cached_end(c, 1, a);
}

/* A URL with a query: fetched, never stored (X-Cache says MISS, as for any fetched copy,
 * or BYPASS for what could not have been stored). */
static void cached_fetched(int status, const char *body, size_t len, const cmp_headers *h,
                           const char *why, int timed_out, const char *upstream, void *arg)
{
    cmp_cached *c = arg;
    c->fetch = NULL;
    cmp_answer a = { status, body, len, *h, CMP_FROM_UPSTREAM, 0, why, timed_out, upstream };
    cached_end(c, 1, &a);
}

static void cached_deadline(uv_timer_t *t)
{
    cached_end_failed(t->data, 0, "deadline", 1);
}

int cmp_cached_start(cmp_worker *w, rt_table *table, gw_request *req, const char *route_id,
                     int ui, uint32_t timeout_ms)
{
    if (req->url.n >= CMP_CACHED_URL_MAX)
        return GW_EINVAL; /* the router proxies these */
    cmp_cached *c = calloc(1, sizeof *c);
    if (!c)
        return GW_ENOMEM;
    c->w = w;
    c->req = req;
    rt_table_ref(table);
    c->table = table;
    c->route_id = route_id;
    c->ui = ui;
    memcpy(c->url, req->url.p, req->url.n);
    c->url[req->url.n] = '\0';
    snprintf(c->client_ip, sizeof c->client_ip, "%s", req->client_addr);
    snprintf(c->request_id, sizeof c->request_id, "%s", req->request_id);
    gw_trace_ctx_from(&c->trace, &req->trace, req->headers, req->n_headers);
    uv_timer_init(w->loop, &c->timer);
    c->timer.data = c;
    c->started_ms = uv_now(w->loop);
    uv_timer_start(&c->timer, cached_deadline, timeout_ms, 0);
    req->data = c;
    /* a query makes it a different resource: fetched, not cached */
    const char *qm = strchr(c->url, '?');
    gw_slice path = { c->url, qm ? (size_t)(qm - c->url) : strlen(c->url) };
    rt_match m;
    if (!qm && rt_table_match(table, GW_SLICE_LIT("GET"), path, &m) == 0 && m.route->cache)
        c->wait = cmp_lookup_start_on(w, table, c->url, ui, c->request_id, &c->trace,
                                      c->client_ip, timeout_ms, cached_looked_up, c);
    if (!c->wait)
        c->fetch = cmp_fetch_start_on(w, table, c->url, ui, c->request_id, &c->trace,
                                      c->client_ip, timeout_ms, cached_fetched, c);
    if (!c->wait && !c->fetch)
        cached_end_failed(c, 1, "out of memory", 0);
    return 0;
}

/* A GET: its body (if any) is never pulled, so no bytes arrive here, and the end of one
 * changes nothing. */
static void cached_on_body(gw_request *req, const char *p, size_t n)
{
    (void)req, (void)p, (void)n;
}

static void cached_on_body_end(gw_request *req)
{
    (void)req;
}

/* The answer leaves in one piece (gw_response_simple): nothing waits for a drain. */
static void cached_on_drain(gw_request *req)
{
    (void)req;
}

static void cached_on_abort(gw_request *req, int err)
{
    (void)err;
    cmp_cached *c = req->data;
    if (!c)
        return; /* answered already */
    req->data = NULL;
    c->req = NULL; /* no answer; the lookup is let go (it still fills the cache for others) */
    cached_end_failed(c, 0, NULL, 0);
}

const gw_handler cmp_cached_handler = {
    .on_request = NULL,
    .on_body = cached_on_body,
    .on_body_end = cached_on_body_end,
    .on_drain = cached_on_drain,
    .on_abort = cached_on_abort,
};
