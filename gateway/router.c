/* router.c — the router (see router.h): one decision per request, then one handler. */
#include "gateway/router.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "http/request_id.h"
#include "routes/policy.h"
#include "composers/lookup.h"
#include "gateway/inflight_limit.h"
#include "gateway/metrics.h"
#include "gateway/proxy.h"
#include "gateway/ratelimit.h"
#include "gateway/ratelimit_redis.h"
#include "gateway/worker.h"

/* Which upstream answers: a tester's override header when the route allows it, else the
 * route's split (sticky by header or cookie when configured), else its primary. */
static int choose_upstream(const rt_route *route, const gw_request *req)
{
    const char *oh = rt_route_override_header(route);
    if (oh) {
        gw_slice v = gw_request_header(req, oh);
        int idx = v.n ? rt_route_override(route, v) : -1;
        if (idx >= 0)
            return idx;
    }
    if (route->n_split == 0)
        return route->upstream_index;
    gw_slice sticky = { NULL, 0 };
    const char *sh = rt_route_sticky_header(route), *sc = rt_route_sticky_cookie(route);
    if (sh)
        sticky = gw_request_header(req, sh);
    else if (sc)
        sticky = rt_cookie_value(gw_request_header(req, "cookie"), sc);
    return rt_route_pick(route, sticky, gw_random64());
}

static void decide_error(gw_route_decision *d, int status, const char *msg)
{
    d->to = GW_TO_ERROR;
    d->status = status;
    d->msg = msg;
}

void gw_router_decide(const gw_request *req, const rt_table *table, const cmp_spec *spec,
                      int cache, gw_route_decision *d)
{
    memset(d, 0, sizeof *d);
    d->ui = -1;
    if (gw_path_has_dot_segment(req->path)) {
        decide_error(d, 400, "dot segments are not allowed in the path");
        return;
    }
    int enc_slash = gw_path_has_encoded_slash(req->path);
    /* compositions first: their paths are the gateway's own */
    if (table && spec && !enc_slash) {
        d->composition = cmp_spec_match(spec, req->method, req->path, &d->params);
        if (d->composition) {
            d->to = GW_TO_COMPOSITION;
            return;
        }
    }
    if (!table) {
        decide_error(d, 503, "no route table loaded yet");
        return;
    }
    if (rt_table_match(table, req->method, req->path, &d->match) != 0) {
        decide_error(d, 404, "no route");
        return;
    }
    const rt_route *route = d->match.route;
    if (enc_slash && !route->allow_encoded_slashes) {
        decide_error(d, 400, "encoded slash in the path (the route does not allow_encoded_slashes)");
        return;
    }
    d->ui = choose_upstream(route, req);
    d->to = cache && route->cache && !req->has_body && !gw_proxy_upgrade_of(route, req) &&
                    (req->is_head || gw_slice_eq(req->method, "GET")) && req->url.n < CMP_CACHED_URL_MAX
                ? GW_TO_CACHED
                : GW_TO_PROXY;
}

/* A proxied or cached route, once admitted: the cached lookup or the proxy takes REQ. */
static void dispatch(gw_request *req, gw_worker *w, rt_table *table, const gw_route_decision *d)
{
    const rt_route *route = d->match.route;
    const gw_upstream *up = &w->upstreams[d->ui];
    req->upstream_name = up->name; /* not conf's: a retired set may go first */
    if (d->to == GW_TO_CACHED) {
        gw_request_set_handler(req, &cmp_cached_handler);
        if (cmp_cached_start(w->composer, table, req, route->id, d->ui,
                             up->conf->response_timeout_ms) == 0)
            return;
        /* out of memory for the lookup: the upstream may still answer */
    }
    gw_request_set_handler(req, &gw_proxy_handler);
    gw_proxy_start(req, w, table, &d->match, d->ui);
}

/* ---- a request waiting before dispatch: for the shared rate limiter's answer, or for a
 * slot of its upstream (max_in_flight queue) ---- */
typedef struct pending {
    gw_request *req;
    gw_worker *w;
    rt_table *table;          /* pinned while waiting: the route lives in it */
    gw_rl_wait *wait;         /* waiting for Redis; NULL otherwise */
    const rt_rate_limit *rl;  /* the limit it waits on (the route's, or the default) */
    int queued;               /* on the upstream's queue (iw) */
    gw_inflight_waiter iw;
    gw_route_decision d;      /* match slices point into req, which outlives the wait */
} pending;

static pending *pending_new(gw_request *req, gw_worker *w, rt_table *table,
                            const gw_route_decision *d)
{
    pending *p = malloc(sizeof *p);
    if (!p)
        return NULL;
    p->req = req;
    p->w = w;
    p->table = table;
    p->wait = NULL;
    p->queued = 0;
    p->d = *d;
    rt_table_ref(table);
    return p;
}

static void pending_free(pending *p)
{
    if (p) {
        rt_table_unref(p->table);
        free(p);
    }
}

static void pending_on_abort(gw_request *req, int err)
{
    pending *p = req->data;
    (void)err;
    if (p->wait)
        gw_rl_redis_cancel(p->wait);
    if (p->queued)
        gw_inflight_cancel(p->w->inflight, &p->iw);
    pending_free(p);
}

static void pending_nothing(gw_request *req)
{
    (void)req; /* the body is not pulled before dispatch; nothing to drain */
}

static void pending_on_body(gw_request *req, const char *p, size_t n)
{
    (void)req, (void)p, (void)n;
}

static const gw_handler pending_handler = {
    .on_request = pending_nothing,
    .on_body = pending_on_body,
    .on_body_end = pending_nothing,
    .on_drain = pending_nothing,
    .on_abort = pending_on_abort,
};

static void park(pending *p)
{
    p->req->data = p;
    gw_request_set_handler(p->req, &pending_handler);
}

/* 503 with Retry-After: a concurrency limit is full. */
static void busy(gw_request *req, const char *msg)
{
    req->upstream_name = NULL;
    gw_response_error_headers(req, 503, msg, "Retry-After: 1\r\n");
}

static void on_slot(gw_inflight_waiter *iw, int granted)
{
    pending *p = (pending *)((char *)iw - offsetof(pending, iw));
    p->queued = 0;
    if (granted) {
        p->req->hold_upstream = (unsigned)p->d.ui + 1;
        dispatch(p->req, p->w, p->table, &p->d);
    } else {
        busy(p->req, "upstream busy (max_in_flight, queue wait timed out)");
    }
    pending_free(p);
}

/* Concurrency limits, then dispatch: the route's max_in_flight (503 at once), then the
 * upstream's (a slot, a place in its queue, or 503 at once). P, when the request already
 * waited (for Redis), is reused or freed. */
static void admit(gw_request *req, gw_worker *w, rt_table *table, const gw_route_decision *d,
                  pending *p)
{
    const rt_route *route = d->match.route;
    if (route->max_in_flight && !req->hold_route &&
        !gw_route_inflight_enter(route->id, route->max_in_flight, req)) {
        pending_free(p);
        busy(req, "route busy (max_in_flight)");
        return;
    }
    if (d->to == GW_TO_PROXY && gw_inflight_limited(w->inflight, d->ui)) {
        if (!p && !(p = pending_new(req, w, table, d))) {
            busy(req, "out of memory");
            return;
        }
        p->iw.ready = on_slot;
        switch (gw_inflight_enter(w->inflight, d->ui, &p->iw)) {
        case GW_INFLIGHT_GO:
            req->hold_upstream = (unsigned)d->ui + 1;
            break;
        case GW_INFLIGHT_QUEUED:
            p->queued = 1;
            park(p);
            return;
        default:
            pending_free(p);
            busy(req, "upstream busy (max_in_flight)");
            return;
        }
    }
    dispatch(req, w, table, d);
    pending_free(p); /* after dispatch: the proxy has its own table reference */
}

static void limited(gw_request *req, const rt_route *route, const rt_rate_limit *l,
                    const gw_gcra_result *r)
{
    req->upstream_name = NULL; /* the gateway answers */
    gw_rl_answer_limited(req, route, l, r);
}

static void on_rl_answer(void *arg, const gw_gcra_result *r)
{
    pending *p = arg;
    p->wait = NULL;
    if (r->allowed) {
        gw_rl_mark_allowed(p->req, p->d.match.route, p->rl, r);
        admit(p->req, p->w, p->table, &p->d, p);
        return;
    }
    limited(p->req, p->d.match.route, p->rl, r);
    pending_free(p);
}

/* Applies the route's rate limit: 1 when REQ may go on now; 0 when it was answered 429 or
 * waits for the shared limiter (which then admits or answers it). */
static int rate_limit_admits(gw_request *req, gw_worker *w, rt_table *table,
                             const gw_route_decision *d, const rt_rate_limit *l)
{
    const rt_route *route = d->match.route;
    gw_gcra_result r;
    pending *p = w->ratelimit ? pending_new(req, w, table, d) : NULL;
    if (p) {
        if ((p->rl = l, gw_rl_redis_check(w->ratelimit, route, l, req, on_rl_answer, p,
                                          &p->wait, &r)) == 0) {
            park(p);
            return 0;
        }
        pending_free(p); /* decided at once (Redis away): the local share */
    } else if (w->ratelimit) {
        gw_rl_decide_local(route, l, req, gw_rl_redis_divisor(w->ratelimit), GW_RL_FALLBACK, &r);
    } else {
        gw_rl_decide_local(route, l, req, 1, GW_RL_LOCAL, &r);
    }
    if (r.allowed) {
        gw_rl_mark_allowed(req, route, l, &r);
        return 1;
    }
    limited(req, route, l, &r);
    return 0;
}

static void router_on_request(gw_request *req)
{
    gw_worker *w = gw_server_options(req->server)->data;
    if (req->path.n == 1 && req->path.p[0] == '*') {
        /* OPTIONS * (the http layer lets "*" through only with OPTIONS): the gateway answers
         * for itself, with the methods it forwards (routes may narrow them) */
        req->upstream_name = NULL;
        gw_response_simple(req, 200, NULL, NULL, 0,
                           "Allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n");
        return;
    }
    rt_table *table = gw_worker_routes(w);
    gw_route_decision d;
    gw_router_decide(req, table, w->composer ? w->compositions : NULL, w->composer != NULL, &d);
    switch (d.to) {
    case GW_TO_ERROR:
        if (d.status == 404)
            req->route_version = rt_table_version(table);
        gw_response_error(req, d.status, d.msg);
        return;
    case GW_TO_COMPOSITION:
        gw_request_set_route(req, d.composition->id, rt_table_version(table));
        req->upstream_name = NULL; /* the gateway answers */
        if (d.composition->max_in_flight &&
            !gw_route_inflight_enter(d.composition->id, d.composition->max_in_flight, req)) {
            busy(req, "composition busy (max_in_flight)");
            return;
        }
        gw_request_set_handler(req, &cmp_compose_handler);
        cmp_compose_start(w->composer, table, req, d.composition, &d.params);
        return;
    case GW_TO_CACHED:
    case GW_TO_PROXY:
        break;
    }
    const rt_route *route = d.match.route;
    gw_request_set_route(req, route->id, rt_table_version(table));
    const rt_rate_limit *rl = gw_rl_for(route, &w->cfg->rate_limits.default_limit);
    if (rl && !rate_limit_admits(req, w, table, &d, rl))
        return; /* answered 429, or waiting for Redis */
    admit(req, w, table, &d, NULL);
}

/* The router answers or hands the request on inside on_request, so these only see a request
 * it answered itself (an abort posted by a failed write): nothing to release. */
static void router_on_body(gw_request *req, const char *p, size_t n)
{
    (void)req, (void)p, (void)n;
}

static void router_on_body_end(gw_request *req)
{
    (void)req;
}

static void router_on_drain(gw_request *req)
{
    (void)req;
}

static void router_on_abort(gw_request *req, int err)
{
    (void)req, (void)err;
}

const gw_handler gw_router_handler = {
    .on_request = router_on_request,
    .on_body = router_on_body,
    .on_body_end = router_on_body_end,
    .on_drain = router_on_drain,
    .on_abort = router_on_abort,
};

cmp_worker *gw_router_composer_new(gw_worker *w)
{
    const gw_config *cfg = w->cfg;
    cmp_conf conf = {
        .redis = cfg->redis,
        .redis_topo = &cfg->redis_topo,
        .cache = {
            .ttl_ms = cfg->cache.ttl_ms,
            .negative_ttl_ms = cfg->cache.negative_ttl_ms,
            .stale_ms = cfg->cache.stale_ms,
            .timeout_ms = cfg->cache.timeout_ms,
            .lru_entries = cfg->cache.lru_entries,
        },
    };
    cmp_report report;
    gw_metrics_composer_report(w->metrics, &report);
    return cmp_worker_new(&w->loop, w->compositions, &conf, w->upstreams, GW_MAX_UPSTREAMS, &report);
}
