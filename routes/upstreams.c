/* upstreams.c — upstream definitions in the route table (upstreams.h): the seeds from
 * gateway.json, the "upstreams" object of a routes document, the slot registry that keeps
 * an upstream's index stable across tables, and the accessors. */
#include "routes/upstreams.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/gw_errors.h"
#include "routes/parse.h"

static rt_upstream_parse_fn g_parse;
static rt_upstream_json_fn g_to_json;
static _Atomic uint64_t g_gen;

/* Guards the seeds and the slot registry. Taken only while a table is built or freed:
 * admin-rate, never per request. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static rt_upstream_def *g_seed[GW_MAX_UPSTREAMS];
static int g_n_seed;

/* An added upstream's slot: index n_seed + i in every table. TABLES counts the tables alive
 * that name it; at 0 the slot may go to another name. LATEST is the newest definition made
 * for the name, so that an unchanged definition keeps its generation (and its pools) when a
 * document is parsed again. */
typedef struct dyn_slot {
    char name[GW_NAME_MAX];
    int tables;
    rt_upstream_def *latest;
} dyn_slot;
static dyn_slot g_dyn[GW_MAX_UPSTREAMS];
/* The newest routes-source definition of a seed name (overrides), for the same reuse. */
static rt_upstream_def *g_override[GW_MAX_UPSTREAMS];

void rt_upstreams_set_hooks(rt_upstream_parse_fn parse, rt_upstream_json_fn to_json)
{
    g_parse = parse;
    g_to_json = to_json;
}

static rt_upstream_def *def_new(const gw_upstream_conf *conf, json_t *json, int from_routes)
{
    rt_upstream_def *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    atomic_init(&d->refs, 1);
    d->gen = atomic_fetch_add(&g_gen, 1) + 1;
    d->from_routes = from_routes;
    d->json = json ? json_deep_copy(json) : NULL;
    d->conf = *conf;
    if (json && !d->json) {
        free(d);
        return NULL;
    }
    return d;
}

void rt_upstream_def_ref(const rt_upstream_def *d)
{
    if (d)
        atomic_fetch_add_explicit(&((rt_upstream_def *)d)->refs, 1, memory_order_relaxed);
}

void rt_upstream_def_unref(const rt_upstream_def *d)
{
    rt_upstream_def *m = (rt_upstream_def *)d;
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1) {
        json_decref(m->json);
        free(m);
    }
}

static void set_ref(rt_upstream_def **slot, rt_upstream_def *d)
{
    rt_upstream_def_ref(d);
    rt_upstream_def_unref(*slot);
    *slot = d;
}

int rt_upstreams_seed(const gw_upstream_conf *confs, int n)
{
    pthread_mutex_lock(&g_lock);
    int rc = 0;
    for (int i = 0; i < g_n_seed; i++) {
        rt_upstream_def_unref(g_seed[i]);
        g_seed[i] = NULL;
    }
    g_n_seed = 0;
    for (int i = 0; i < n && i < GW_MAX_UPSTREAMS; i++) {
        if (!(g_seed[i] = def_new(&confs[i], NULL, 0))) {
            rc = -1;
            break;
        }
        g_n_seed = i + 1;
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

void rt_upstreams_reset(void)
{
    rt_upstreams_seed(NULL, 0);
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < GW_MAX_UPSTREAMS; i++) {
        rt_upstream_def_unref(g_override[i]);
        g_override[i] = NULL;
        if (g_dyn[i].tables == 0) {
            rt_upstream_def_unref(g_dyn[i].latest);
            g_dyn[i].latest = NULL;
        }
    }
    pthread_mutex_unlock(&g_lock);
}

/* The seed of NAME (a new reference), or NULL. Locked by the caller. */
static rt_upstream_def *seed_of(const char *name, int *pos)
{
    for (int i = 0; i < g_n_seed; i++) {
        if (strcmp(g_seed[i]->conf.name, name) == 0) {
            if (pos)
                *pos = i;
            rt_upstream_def_ref(g_seed[i]);
            return g_seed[i];
        }
    }
    return NULL;
}

/* ---- the table's list -------------------------------------------------------------------- */

int rt__table_upstreams_init(rt_table *t, const char *const *names, int n)
{
    int cap = n > GW_MAX_UPSTREAMS ? n : GW_MAX_UPSTREAMS;
    t->upstreams = calloc((size_t)cap + 1, sizeof *t->upstreams);
    t->defs = calloc((size_t)cap + 1, sizeof *t->defs);
    t->upstream_cap = cap;
    if (!t->upstreams || !t->defs)
        return GW_ENOMEM;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < n; i++) {
        if (!(t->upstreams[i] = strdup(names[i]))) {
            pthread_mutex_unlock(&g_lock);
            return GW_ENOMEM;
        }
        t->n_upstreams = t->n_seed = i + 1;
        t->defs[i] = seed_of(names[i], NULL);
    }
    pthread_mutex_unlock(&g_lock);
    return 0;
}

void rt__table_upstreams_free(rt_table *t)
{
    if (!t->upstreams)
        return;
    pthread_mutex_lock(&g_lock);
    for (int i = t->n_seed; i < t->n_upstreams; i++) {
        int d = i - t->n_seed;
        if (t->upstreams[i] && d < GW_MAX_UPSTREAMS && g_dyn[d].tables > 0)
            g_dyn[d].tables--;
    }
    pthread_mutex_unlock(&g_lock);
    for (int i = 0; t->defs && i < t->n_upstreams; i++)
        rt_upstream_def_unref(t->defs[i]);
    free(t->defs);
    t->defs = NULL;
    rt__names_free(t->upstreams, t->n_upstreams);
    t->upstreams = NULL;
}

/* A slot for added upstream NAME in a table with N_SEED seeds: the one it has (or had),
 * else a free one. Returns the table index, or -1 when all are taken. Locked. */
static int dyn_acquire(const char *name, int n_seed)
{
    int limit = GW_MAX_UPSTREAMS - n_seed, free_at = -1, fresh_at = -1;
    for (int d = 0; d < limit; d++) {
        if (strcmp(g_dyn[d].name, name) == 0) {
            g_dyn[d].tables++;
            return n_seed + d;
        }
        if (g_dyn[d].tables == 0 && !g_dyn[d].name[0] && fresh_at < 0)
            fresh_at = d;
        if (g_dyn[d].tables == 0 && free_at < 0)
            free_at = d;
    }
    int d = fresh_at >= 0 ? fresh_at : free_at; /* a never-used slot first */
    if (d < 0)
        return -1;
    snprintf(g_dyn[d].name, sizeof g_dyn[d].name, "%s", name);
    rt_upstream_def_unref(g_dyn[d].latest);
    g_dyn[d].latest = NULL;
    g_dyn[d].tables = 1;
    return n_seed + d;
}

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n < GW_NAME_MAX &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

/* The definition for NAME parsed from JSON: the previous one when JSON is the same (its
 * generation, and so the workers' pools, are kept), else a new one. Locked. */
static rt_upstream_def *def_for(rt_upstream_def **latest, const gw_upstream_conf *conf,
                                json_t *json)
{
    if (*latest && json_equal((*latest)->json, json) &&
        memcmp(&(*latest)->conf, conf, sizeof *conf) == 0) {
        rt_upstream_def_ref(*latest);
        return *latest;
    }
    rt_upstream_def *d = def_new(conf, json, 1);
    if (d)
        set_ref(latest, d);
    return d;
}

int rt__parse_upstreams(rt__parser *ps, json_t *root)
{
    rt_table *t = ps->t;
    json_t *ups = json_object_get(root, "upstreams"), *u;
    const char *name;
    if (!ups)
        return 0;
    if (!json_is_object(ups))
        return rt__fail(ps, "upstreams", "must be an object");
    if (!g_parse)
        return rt__fail(ps, "upstreams", "not supported here (no upstream reader)");
    json_object_foreach(ups, name, u) {
        if (!name_ok(name))
            return rt__fail(ps, "upstreams", "invalid upstream name \"%.80s\" (must match "
                            "[A-Za-z0-9_.-]{1,63})", name);
        gw_upstream_conf *conf = calloc(1, sizeof *conf);
        if (!conf)
            return rt__fail_nomem(ps);
        if (g_parse(u, name, ps->source, 1, conf, ps->err, ps->errlen) != 0) {
            free(conf);
            return -1;
        }
        int idx = -1;
        for (int i = 0; i < t->n_seed && idx < 0; i++)
            if (strcmp(t->upstreams[i], name) == 0)
                idx = i;
        rt_upstream_def *d = NULL;
        pthread_mutex_lock(&g_lock);
        if (idx >= 0) {
            if (idx < GW_MAX_UPSTREAMS)
                d = def_for(&g_override[idx], conf, u);
        } else if ((idx = dyn_acquire(name, t->n_seed)) >= 0) {
            d = def_for(&g_dyn[idx - t->n_seed].latest, conf, u);
        }
        pthread_mutex_unlock(&g_lock);
        free(conf);
        if (idx < 0)
            return rt__fail(ps, "upstreams", "more than %d upstreams in all (with gateway.json's)",
                            GW_MAX_UPSTREAMS);
        if (idx >= t->n_seed && !t->upstreams[idx]) {
            /* the slot is held from here: the table's free gives it back */
            if (idx >= t->n_upstreams)
                t->n_upstreams = idx + 1;
            if (!(t->upstreams[idx] = strdup(name))) {
                rt_upstream_def_unref(d);
                return rt__fail_nomem(ps);
            }
        }
        if (!d)
            return rt__fail_nomem(ps);
        rt_upstream_def_unref(t->defs[idx]);
        t->defs[idx] = d;
    }
    return 0;
}

/* ---- accessors ------------------------------------------------------------------------- */

const rt_upstream_def *rt_table_upstream_def(const rt_table *t, int i)
{
    return t && i >= 0 && i < t->n_upstreams ? t->defs[i] : NULL;
}

int rt_table_upstream_index(const rt_table *t, const char *name)
{
    for (int i = 0; t && name && i < t->n_upstreams; i++)
        if (t->upstreams[i] && strcmp(t->upstreams[i], name) == 0)
            return i;
    return -1;
}

json_t *rt_upstream_def_json(const rt_upstream_def *d, int with_source)
{
    if (!d)
        return NULL;
    json_t *j = d->from_routes ? json_deep_copy(d->json) : g_to_json ? g_to_json(&d->conf) : NULL;
    if (j && with_source)
        json_object_set_new(j, "source", json_string(d->from_routes ? "routes" : "gateway.json"));
    return j;
}

static int add_ref(json_t *a, const char *where, const char *field)
{
    char buf[400];
    snprintf(buf, sizeof buf, "%s%s%s", where, field ? "." : "", field ? field : "");
    return json_array_append_new(a, json_string(buf));
}

json_t *rt_upstream_referrers(const rt_table *t, const char *name)
{
    json_t *a = json_array();
    int idx = rt_table_upstream_index(t, name);
    if (!a || idx < 0)
        return a;
    char where[300];
    for (int i = 0; i < t->n_routes; i++) {
        const rt_route *r = &t->routes[i];
        rt__route_label(where, sizeof where, 1, r->id, (size_t)i);
        if (r->upstream_index == idx)
            add_ref(a, where, "upstream");
        for (int k = 0; k < r->n_split; k++)
            if (r->split[k].upstream_index == idx)
                add_ref(a, where, "split");
        for (int k = 0; k < r->n_rewrites; k++)
            if (r->rewrites[k].upstream_index == idx)
                add_ref(a, where, "rewrites");
        if (r->shadow.upstream_index == idx)
            add_ref(a, where, "shadow");
        if (r->fallback.upstream_index == idx)
            add_ref(a, where, "fallback");
    }
    if (t->legacy_index == idx)
        add_ref(a, "legacy_upstream", NULL);
    return a;
}
