/* admin_dashboard.c — the cutover dashboard's page and its JSON (see admin_dashboard.h).
 *
 * GET /admin/dashboard answers at once from what the sampler holds:
 *   {"generated_ms", "version", "legacy_upstream", "window_s", "series_s",
 *    "progress": {"overall": P, "domains": [P + "domain"]},
 *        P = {"routes", "routes_new" (routes weighted by their share of split weight on new
 *             services), "route_share" %, "requests", "requests_new", "traffic_share" %}
 *    "routes": [{"id","path","domain","primary","split"|null,"shadow"|null,"fallback"|null,
 *                "cache","new_share","rps","error_rate","fallbacks",
 *                "cache_stats": {"hits" (fresh + stale),"stale","lookups","hit_rate"},
 *                "upgrade" (bool), "tunnels": {upstream: open tunnels}, "tunnels_open",
 *                "shadow_stats": {"compared","mismatched","mismatch_rate","latest"|null},
 *                "sides": [{"upstream","role","weight","rps","requests","errors",
 *                           "error_rate","p50_ms","p99_ms","fallbacks","shadow_compared",
 *                           "shadow_mismatched","series":{"rps":[60],"errors":[60]}|null}]}],
 *    "cache": {"hits","lookups","hit_rate"}, "plans": [...], "history": [...],
 *    "sides_dropped"}
 * Rates are per second over the last window_s seconds (up to 10); -1 where there is no
 * sample (no requests: no error rate, no percentile). */
#include "gateway/admin_dashboard.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/cutover.h"
#include "gateway/dashboard_stats.h"
#include "gateway/tunnels.h"
#include "routes/route_table.h"

#define SAMPLE_MS 1000
#define IDLE_STOP_MS 60000     /* no poll for this long: the sampler stops (and forgets) */
#define HISTORY_SHOWN 20
#define LATEST_MISMATCHES 64   /* routes whose latest differing fields are kept */

typedef struct gw_dashboard {
    gw_admin *a;
    uv_timer_t timer;
    int timer_running;
    int closing;
    int timer_closed;
    int history_pending;       /* a gw_route_store_history read is in flight */
    uint64_t last_poll;        /* uv_now of the latest GET /admin/dashboard */
    uint64_t history_version;  /* the table version the history was read at; 0 none */
    json_t *history;           /* the newest changes, newest first (a reference) or NULL */
    uint64_t mismatch_seq;
    int n_latest;
    gw_mismatch_sample latest[LATEST_MISMATCHES]; /* the newest per route */
    gw_dash_stats stats;
} gw_dashboard;

/* ---- the page ---------------------------------------------------------------------- */

int gw_admin_dashboard_page(gw_admin *a, gw_request *req, gw_slice path)
{
    (void)a;
    if (path.n < 10 || memcmp(path.p, "/dashboard", 10) != 0)
        return 0;
    if (gw_slice_eq(path, "/dashboard/"))
        path.n = 10;
    for (int i = 0; i < gw_dash_n_assets; i++) {
        const gw_dash_asset *f = &gw_dash_assets[i];
        if (!gw_slice_eq(path, f->path))
            continue;
        if (!gw_slice_eq(req->method, "GET") && !gw_slice_eq(req->method, "HEAD")) {
            gw_response_error(req, 405, "method not allowed");
            return 1;
        }
        /* The page only talks to its own origin and runs only its own script; it must not
         * be framed (its buttons change routes). */
        gw_response_simple(req, 200, f->type, (const char *)f->data, f->len,
                           "Cache-Control: no-cache\r\n"
                           "Content-Security-Policy: default-src 'self'; img-src 'self' data:; "
                           "frame-ancestors 'none'\r\n"
                           "X-Frame-Options: DENY\r\n"
                           "X-Content-Type-Options: nosniff\r\n");
        return 1;
    }
    if (path.n == 10 || path.p[10] == '/') {
        gw_response_error(req, 404, "not found");
        return 1;
    }
    return 0; /* "/dashboardX": not ours */
}

/* ---- sampling ---------------------------------------------------------------------- */

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static void keep_mismatches(gw_dashboard *d)
{
    gw_mismatch_sample buf[16];
    int n;
    while ((n = gw_metrics_mismatches_since(&d->mismatch_seq, buf, 16)) > 0) {
        for (int k = 0; k < n; k++) {
            int at = -1, oldest = 0;
            for (int i = 0; i < d->n_latest; i++) {
                if (strcmp(d->latest[i].route, buf[k].route) == 0)
                    at = i;
                if (d->latest[i].seq < d->latest[oldest].seq)
                    oldest = i;
            }
            if (at < 0)
                at = d->n_latest < LATEST_MISMATCHES ? d->n_latest++ : oldest;
            d->latest[at] = buf[k];
        }
        if (n < 16)
            break;
    }
}

static void sample(gw_dashboard *d)
{
    gw_admin *a = d->a;
    gw_dash_stats *st = &d->stats;
    gw_dash_stats_begin(st);
    uint64_t hits = 0, lookups = 0;
    for (int w = 0; w < a->n_workers; w++) {
        const gw_metrics *m = a->metrics[w];
        for (int i = 0; i < GW_SIDE_SLOTS; i++) {
            const gw_side_slot *s = &m->sides[i];
            if (!atomic_load_explicit(&s->used, memory_order_acquire))
                continue;
            rt_cut_side x;
            x.requests = LD(s->requests);
            x.errors = LD(s->errors);
            x.fallbacks = LD(s->fallbacks);
            x.shadow_compared = LD(s->shadow_compared);
            x.shadow_mismatched = LD(s->shadow_mismatched);
            for (int b = 0; b <= RT_CUT_LAT_BUCKETS; b++)
                x.lat[b] = LD(s->lat[b]);
            (void)gw_dash_stats_accumulate(st, s->route, s->upstream, &x);
            uint64_t c[GW_SIDE_CACHE__N], any = 0;
            for (int k = 0; k < GW_SIDE_CACHE__N; k++)
                any |= c[k] = LD(s->cache[k]);
            if (any)
                gw_dash_stats_side_cache(st, s->route, s->upstream, c);
        }
        uint64_t h = LD(m->cache_hits) + LD(m->cache_stale);
        hits += h;
        lookups += h + LD(m->cache_misses);
    }
    gw_dash_stats_cache(st, hits, lookups);
    gw_dash_stats_end(st);
    keep_mismatches(d);
}

static void maybe_free(gw_dashboard *d)
{
    if (!d->closing || !d->timer_closed || d->history_pending)
        return;
    json_decref(d->history);
    gw_dash_stats_free(&d->stats);
    free(d);
}

static void on_history(int status, const char *err, json_t *result, void *arg)
{
    gw_dashboard *d = arg;
    (void)err;
    d->history_pending = 0;
    if (status == 0 && result && !d->closing) {
        json_t *changes = json_object_get(result, "changes");
        if (json_is_array(changes)) {
            json_decref(d->history);
            d->history = json_incref(changes);
        }
    } else if (status != 0) {
        d->history_version = 0; /* read again on the next sample */
    }
    maybe_free(d);
}

/* Re-reads the audit history when the table in force is not the one it was read at. */
static void refresh_history(gw_dashboard *d)
{
    if (d->history_pending || d->closing || !d->a->store)
        return;
    rt_table *t = rt_current_acquire();
    uint64_t v = t ? rt_table_version(t) : 0;
    if (t)
        rt_table_unref(t);
    if (v == 0 || v == d->history_version)
        return;
    d->history_version = v;
    d->history_pending = 1;
    gw_route_store_history(d->a->store, HISTORY_SHOWN, on_history, d);
}

static void on_tick(uv_timer_t *t)
{
    gw_dashboard *d = t->data;
    if (uv_now(t->loop) - d->last_poll > IDLE_STOP_MS) {
        /* nobody looks: stop, and start from a fresh baseline when someone does again */
        uv_timer_stop(t);
        d->timer_running = 0;
        gw_dash_stats_free(&d->stats);
        return;
    }
    sample(d);
    refresh_history(d);
}

static void on_timer_closed(uv_handle_t *h)
{
    gw_dashboard *d = h->data;
    d->timer_closed = 1;
    maybe_free(d);
}

static gw_dashboard *dashboard(gw_admin *a)
{
    if (a->dashboard)
        return a->dashboard;
    gw_dashboard *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->a = a;
    gw_dash_stats_init(&d->stats);
    uv_timer_init(a->loop, &d->timer);
    d->timer.data = d;
    /* examples recorded before anyone looked are not news: start after them */
    gw_mismatch_sample skip[1];
    while (gw_metrics_mismatches_since(&d->mismatch_seq, skip, 1) > 0)
        ;
    a->dashboard = d;
    return d;
}

void gw_admin_dashboard_close(gw_admin *a)
{
    gw_dashboard *d = a->dashboard;
    if (!d)
        return;
    a->dashboard = NULL;
    d->closing = 1;
    uv_close((uv_handle_t *)&d->timer, on_timer_closed);
}

/* ---- the JSON ---------------------------------------------------------------------- */

static double rate(uint64_t part, uint64_t whole)
{
    return whole ? 100.0 * (double)part / (double)whole : -1.0;
}

static json_t *real_or_null(double v)
{
    return v < 0 ? json_null() : json_real(v);
}

static json_t *series_json(const uint32_t *v)
{
    json_t *arr = json_array();
    for (int k = 0; k < GW_DASH_SERIES; k++)
        json_array_append_new(arr, json_integer(v[k]));
    return arr;
}

/* One side of a route: its figures over the window (I: the tracked side, -1 none). */
static json_t *side_json(const gw_dashboard *d, int i, const char *upstream, const char *role,
                         double weight, int secs, rt_cut_side *win)
{
    gw_dash_stats_window(&d->stats, i, win);
    uint32_t req[GW_DASH_SERIES], err[GW_DASH_SERIES];
    gw_dash_stats_series(&d->stats, i, req, err);
    json_t *s = json_pack("{s:s, s:s}", "upstream", upstream, "role", role);
    json_object_set_new(s, "weight", real_or_null(weight));
    json_object_set_new(s, "rps", json_real(secs ? (double)win->requests / secs : 0.0));
    json_object_set_new(s, "requests", json_integer((json_int_t)win->requests));
    json_object_set_new(s, "errors", json_integer((json_int_t)win->errors));
    json_object_set_new(s, "error_rate", real_or_null(rate(win->errors, win->requests)));
    json_object_set_new(s, "p50_ms", real_or_null(gw_dash_quantile_ms(win, 0.5)));
    json_object_set_new(s, "p99_ms", real_or_null(rt_cut_p99_ms(win)));
    json_object_set_new(s, "fallbacks", json_integer((json_int_t)win->fallbacks));
    json_object_set_new(s, "shadow_compared", json_integer((json_int_t)win->shadow_compared));
    json_object_set_new(s, "shadow_mismatched", json_integer((json_int_t)win->shadow_mismatched));
    uint64_t any = 0;
    for (int k = 0; k < GW_DASH_SERIES; k++)
        any |= req[k] | err[k];
    /* a side without traffic in the last minute: no series (keeps a large table's answer
     * small; the page draws a flat line) */
    json_object_set_new(s, "series", any ? json_pack("{s:o, s:o}", "rps", series_json(req),
                                                     "errors", series_json(err))
                                         : json_null());
    return s;
}

typedef struct progress {
    double routes, routes_new;
    uint64_t requests, requests_new;
} progress;

static json_t *progress_json(const progress *p)
{
    json_t *o = json_object();
    json_object_set_new(o, "routes", json_integer((json_int_t)p->routes));
    json_object_set_new(o, "routes_new", json_real(p->routes_new));
    json_object_set_new(o, "route_share", json_real(p->routes ? 100.0 * p->routes_new / p->routes : 0.0));
    json_object_set_new(o, "requests", json_integer((json_int_t)p->requests));
    json_object_set_new(o, "requests_new", json_integer((json_int_t)p->requests_new));
    json_object_set_new(o, "traffic_share",
                        real_or_null(rate(p->requests_new, p->requests)));
    return o;
}

/* Adds the side (ROUTE's tracked UPSTREAM) to SIDES unless it is there; returns its window
 * through WIN (zeroed when it was there already). */
static void add_side(const gw_dashboard *d, json_t *sides, char *shown, const char *route,
                     const char *upstream, const char *role, double weight, int secs,
                     rt_cut_side *win)
{
    memset(win, 0, sizeof *win);
    size_t k;
    json_t *s;
    json_array_foreach(sides, k, s)
        if (strcmp(json_string_value(json_object_get(s, "upstream")), upstream) == 0)
            return;
    int i = gw_dash_stats_find(&d->stats, route, upstream);
    if (i >= 0)
        shown[i] = 1;
    json_array_append_new(sides, side_json(d, i, upstream, role, weight, secs, win));
}

typedef struct route_acc {
    uint64_t requests, errors, fallbacks, requests_new, compared, mismatched;
    uint64_t cache[GW_SIDE_CACHE__N]; /* user-cache lookups, over all its sides */
} route_acc;

static void acc_side(route_acc *acc, const rt_cut_side *w, const char *upstream,
                     const char *legacy)
{
    acc->requests += w->requests;
    acc->errors += w->errors;
    acc->fallbacks += w->fallbacks;
    acc->compared += w->shadow_compared;
    acc->mismatched += w->shadow_mismatched;
    if (strcmp(upstream, legacy) != 0)
        acc->requests_new += w->requests;
}

static void route_figures(json_t *o, const route_acc *acc, int secs, const gw_dashboard *d,
                          const char *id)
{
    json_object_set_new(o, "rps", json_real(secs ? (double)acc->requests / secs : 0.0));
    json_object_set_new(o, "error_rate", real_or_null(rate(acc->errors, acc->requests)));
    json_object_set_new(o, "fallbacks", json_integer((json_int_t)acc->fallbacks));
    /* the route's user cache over the window: hits (fresh and stale) of all lookups */
    uint64_t hits = acc->cache[GW_SIDE_CACHE_HIT] + acc->cache[GW_SIDE_CACHE_STALE];
    uint64_t lookups = hits + acc->cache[GW_SIDE_CACHE_MISS];
    json_object_set_new(o, "cache_stats",
                        json_pack("{s:I, s:I, s:I, s:o}", "hits", (json_int_t)hits, "stale",
                                  (json_int_t)acc->cache[GW_SIDE_CACHE_STALE], "lookups",
                                  (json_int_t)lookups, "hit_rate",
                                  real_or_null(rate(hits, lookups))));
    json_t *latest = json_null();
    for (int i = 0; i < d->n_latest; i++)
        if (strcmp(d->latest[i].route, id) == 0)
            latest = json_pack("{s:I, s:s, s:s, s:s}", "at_ms", (json_int_t)d->latest[i].at_ms,
                               "upstream", d->latest[i].upstream, "request_id",
                               d->latest[i].request_id, "diff", d->latest[i].diff);
    json_object_set_new(o, "shadow_stats",
                        json_pack("{s:I, s:I, s:o, s:o}", "compared", (json_int_t)acc->compared,
                                  "mismatched", (json_int_t)acc->mismatched, "mismatch_rate",
                                  real_or_null(rate(acc->mismatched, acc->compared)),
                                  "latest", latest));
}

/* Open tunnels of a route per upstream (tunnels.h): only the ones still open. */
typedef struct tunnels_acc {
    json_t *by_upstream;
    int64_t total;
} tunnels_acc;

static void add_tunnels(const char *upstream, int64_t active, void *arg)
{
    tunnels_acc *a = arg;
    if (active <= 0)
        return;
    json_object_set_new(a->by_upstream, upstream, json_integer(active));
    a->total += active;
}

static json_t *build(gw_dashboard *d, const rt_table *t)
{
    const char *legacy = rt_table_legacy_upstream(t);
    if (!legacy)
        legacy = ""; /* no legacy upstream named: everything counts as new */
    int secs = gw_dash_stats_window(&d->stats, -1, &(rt_cut_side){ 0 });
    char *shown = calloc((size_t)d->stats.n + 1, 1);
    json_t *routes = json_array(), *by_id = json_object(), *domains = json_object();
    progress all = { 0 };
    route_acc *accs = calloc((size_t)rt_table_count(t) + 1, sizeof *accs);
    if (!shown || !accs) {
        free(shown);
        free(accs);
        json_decref(routes);
        json_decref(by_id);
        json_decref(domains);
        return NULL;
    }
    rt_cut_side win;
    for (int ri = 0; ri < rt_table_count(t); ri++) {
        const rt_route *r = rt_table_route(t, ri);
        char dom[GW_METRICS_KEY_MAX];
        gw_dash_domain(r->id, dom, sizeof dom);
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "id", r->id, "path", r->path, "domain",
                              dom, "primary", r->upstream);
        json_t *split = json_null();
        if (r->n_split) {
            split = json_object();
            for (int k = 0; k < r->n_split; k++)
                json_object_set_new(split, r->split[k].upstream,
                                    json_integer(r->split[k].weight));
        }
        json_object_set_new(o, "split", split);
        json_object_set_new(o, "shadow", r->shadow.upstream ? json_string(r->shadow.upstream)
                                                            : json_null());
        json_object_set_new(o, "fallback", r->fallback.upstream
                                               ? json_string(r->fallback.upstream) : json_null());
        json_object_set_new(o, "cache", json_boolean(r->cache));
        tunnels_acc ta = { json_object(), 0 };
        gw_tunnels_of_route(r->id, add_tunnels, &ta);
        json_object_set_new(o, "upgrade", json_boolean(r->upgrade != NULL));
        json_object_set_new(o, "tunnels", ta.by_upstream);
        json_object_set_new(o, "tunnels_open", json_integer(ta.total));
        double share = gw_dash_new_share(r, legacy);
        json_object_set_new(o, "new_share", json_real(share));
        json_t *sides = json_array();
        route_acc *acc = &accs[ri];
        if (r->n_split && r->split_total) {
            for (int k = 0; k < r->n_split; k++) {
                add_side(d, sides, shown, r->id, r->split[k].upstream, "split",
                         100.0 * r->split[k].weight / (double)r->split_total, secs, &win);
                acc_side(acc, &win, r->split[k].upstream, legacy);
            }
        } else {
            add_side(d, sides, shown, r->id, r->upstream, "primary", 100.0, secs, &win);
            acc_side(acc, &win, r->upstream, legacy);
        }
        if (r->shadow.upstream) {
            add_side(d, sides, shown, r->id, r->shadow.upstream, "shadow", -1, secs, &win);
            acc_side(acc, &win, r->shadow.upstream, legacy);
        }
        if (r->fallback.upstream) {
            add_side(d, sides, shown, r->id, r->fallback.upstream, "fallback", -1, secs, &win);
            acc_side(acc, &win, r->fallback.upstream, legacy);
        }
        json_object_set_new(o, "sides", sides);
        json_array_append_new(routes, o);
        json_object_set_new(by_id, r->id, json_integer(ri));
    }
    /* sides that still had traffic in the window but are no longer in the route's policy
     * (just flipped or rolled back away from) */
    for (int i = 0; i < d->stats.n; i++) {
        if (shown[i])
            continue;
        const gw_dash_side *s = &d->stats.sides[i];
        json_t *ix = json_object_get(by_id, s->route);
        if (!ix)
            continue;
        gw_dash_stats_window(&d->stats, i, &win);
        if (!win.requests && !win.shadow_compared && !win.fallbacks)
            continue;
        json_int_t ri = json_integer_value(ix);
        json_t *o = json_array_get(routes, (size_t)ri);
        json_array_append_new(json_object_get(o, "sides"),
                              side_json(d, i, s->upstream, "previous", -1, secs, &win));
        acc_side(&accs[ri], &win, s->upstream, legacy);
    }
    for (int i = 0; i < d->stats.n; i++) { /* cache lookups, by route whatever the side */
        json_t *ix = json_object_get(by_id, d->stats.sides[i].route);
        uint64_t c[GW_SIDE_CACHE__N];
        if (!ix || !gw_dash_stats_side_cache_window(&d->stats, i, c))
            continue;
        for (int k = 0; k < GW_SIDE_CACHE__N; k++)
            accs[json_integer_value(ix)].cache[k] += c[k];
    }
    for (int ri = 0; ri < rt_table_count(t); ri++) {
        json_t *o = json_array_get(routes, (size_t)ri);
        const char *dom = json_string_value(json_object_get(o, "domain"));
        route_figures(o, &accs[ri], secs, d, rt_table_route(t, ri)->id);
        json_t *dp = json_object_get(domains, dom);
        if (!dp) {
            dp = json_pack("{s:s, s:f, s:f, s:I, s:I}", "domain", dom, "routes", 0.0,
                           "routes_new", 0.0, "requests", (json_int_t)0, "requests_new",
                           (json_int_t)0);
            json_object_set_new(domains, dom, dp);
        }
        double share = json_real_value(json_object_get(o, "new_share")) / 100.0;
        json_object_set_new(dp, "routes", json_real(json_real_value(json_object_get(dp, "routes")) + 1));
        json_object_set_new(dp, "routes_new",
                            json_real(json_real_value(json_object_get(dp, "routes_new")) + share));
        json_object_set_new(dp, "requests", json_integer(json_integer_value(json_object_get(dp, "requests")) +
                                                         (json_int_t)accs[ri].requests));
        json_object_set_new(dp, "requests_new",
                            json_integer(json_integer_value(json_object_get(dp, "requests_new")) +
                                         (json_int_t)accs[ri].requests_new));
        all.routes += 1;
        all.routes_new += share;
        all.requests += accs[ri].requests;
        all.requests_new += accs[ri].requests_new;
    }
    json_t *dom_arr = json_array();
    const char *key;
    json_t *dp;
    json_object_foreach(domains, key, dp) {
        progress p = { json_real_value(json_object_get(dp, "routes")),
                       json_real_value(json_object_get(dp, "routes_new")),
                       (uint64_t)json_integer_value(json_object_get(dp, "requests")),
                       (uint64_t)json_integer_value(json_object_get(dp, "requests_new")) };
        json_t *pj = progress_json(&p);
        json_object_set_new(pj, "domain", json_string(key));
        json_array_append_new(dom_arr, pj);
    }
    json_decref(domains);
    json_decref(by_id);
    free(shown);
    free(accs);

    uint64_t hits, lookups;
    gw_dash_stats_cache_window(&d->stats, &hits, &lookups);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_t *doc = json_object();
    json_object_set_new(doc, "generated_ms", json_integer((json_int_t)ts.tv_sec * 1000 +
                                                          ts.tv_nsec / 1000000));
    json_object_set_new(doc, "version", json_integer((json_int_t)rt_table_version(t)));
    json_object_set_new(doc, "legacy_upstream", json_string(legacy));
    json_object_set_new(doc, "window_s", json_integer(secs));
    json_object_set_new(doc, "series_s", json_integer(GW_DASH_SERIES));
    json_object_set_new(doc, "progress", json_pack("{s:o, s:o}", "overall", progress_json(&all),
                                                   "domains", dom_arr));
    json_object_set_new(doc, "routes", routes);
    json_object_set_new(doc, "cache", json_pack("{s:I, s:I, s:o}", "hits", (json_int_t)hits,
                                                "lookups", (json_int_t)lookups, "hit_rate",
                                                real_or_null(rate(hits, lookups))));
    json_t *plans = d->a->cutover ? gw_cutover_list(d->a->cutover) : NULL;
    json_t *list = plans ? json_object_get(plans, "cutovers") : NULL;
    json_object_set_new(doc, "plans", list ? json_incref(list) : json_array());
    json_decref(plans);
    json_object_set_new(doc, "history", d->history ? json_incref(d->history) : json_array());
    json_object_set_new(doc, "sides_dropped", json_integer((json_int_t)d->stats.dropped));
    return doc;
}

void gw_admin_dashboard_data(gw_admin *a, gw_request *req)
{
    if (!gw_slice_eq(req->method, "GET") && !gw_slice_eq(req->method, "HEAD")) {
        gw_response_error(req, 405, "method not allowed");
        return;
    }
    gw_dashboard *d = dashboard(a);
    rt_table *t = rt_current_acquire();
    if (!d || !t) {
        if (t)
            rt_table_unref(t);
        gw_response_error(req, d ? 503 : 500, d ? "no route table loaded" : "out of memory");
        return;
    }
    d->last_poll = uv_now(a->loop);
    if (!d->timer_running) {
        /* the first poll in a while: a baseline now, figures from the next second on */
        d->timer_running = 1;
        sample(d);
        refresh_history(d);
        uv_timer_start(&d->timer, on_tick, SAMPLE_MS, SAMPLE_MS);
    } else {
        refresh_history(d); /* a change since the last tick: read now, shown on the next poll */
    }
    json_t *doc = build(d, t);
    rt_table_unref(t);
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(doc);
    if (!text) {
        gw_response_error(req, 500, "out of memory");
        return;
    }
    gw_response_simple(req, 200, "application/json", text, strlen(text), "Cache-Control: no-store\r\n");
    free(text);
}
