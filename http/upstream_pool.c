/* upstream_pool.c — a named upstream on one worker: its endpoints, round robin that skips
 * endpoints marked down, and the per-endpoint idle keep-alive pools.
 *
 * A definition change (gw_upstream_reconfigure) builds a new endpoint set beside the old one
 * and switches to it, HAProxy-generation style: the old set is retired — its idle pooled
 * connections closed at once, the busy ones finish their exchange and close instead of being
 * pooled — and freed when its last connection (or background exchange) is gone. Connections
 * point at their gw_endpoint, which lives in its set, so nothing in flight moves. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/upstream.h"
#include "http/upstream_tls.h"

struct gw_endpoint_set {
    gw_queue node;            /* in up->retired once replaced */
    int retired;
    int n;
    gw_upstream_conf conf;    /* this generation's definition (a copy: the caller's may go) */
    SSL_CTX *tls_ctx;         /* conf.tls: this generation's client context (a reference) */
    gw_endpoint endpoints[];  /* n */
};

static gw_endpoint_set *set_new(gw_upstream *up, const gw_upstream_conf *conf, int n)
{
    gw_endpoint_set *s = calloc(1, sizeof *s + (size_t)n * sizeof s->endpoints[0]);
    if (!s)
        return NULL;
    s->n = n;
    s->conf = *conf;
    /* its own reference: a connection of a retired set keeps that set's CA and verify;
     * NULL (logged): its TLS connections fail (502) */
    if (conf->tls && n > 0)
        s->tls_ctx = gw__utls_ctx_get(conf);
    gw_queue_init(&s->node);
    for (int i = 0; i < n; i++) {
        gw_endpoint *ep = &s->endpoints[i];
        ep->up = up;
        ep->set = s;
        ep->index = i;
        ep->conf = &s->conf.endpoints[i];
        ep->def = &s->conf;
        gw_queue_init(&ep->idle);
    }
    return s;
}

static void set_install(gw_upstream *up, gw_endpoint_set *s, int n)
{
    up->set = s;
    up->conf = &s->conf;
    memcpy(up->name, s->conf.name, sizeof up->name);
    up->endpoints = s->endpoints;
    up->n_endpoints = n;
}

static void set_free(gw_endpoint_set *s)
{
    for (int i = 0; i < s->n; i++)
        gw__utls_session_free(&s->endpoints[i].tls_session);
    gw__utls_ctx_free(s->tls_ctx);
    free(s);
}

static void close_idle_of(gw_endpoint_set *s)
{
    for (int i = 0; i < s->n; i++) {
        gw_endpoint *ep = &s->endpoints[i];
        while (!gw_queue_empty(&ep->idle)) {
            /* gw_uconn's layout is private: release through the public abort */
            gw_uconn_abort(gw__uconn_from_pool_node(ep->idle.next));
        }
    }
}

static int set_in_use(const gw_endpoint_set *s)
{
    for (int i = 0; i < s->n; i++) {
        const gw_endpoint *ep = &s->endpoints[i];
        if (ep->n_conns || ep->n_background || ep->n_idle)
            return 1;
    }
    return 0;
}

static void reap(gw_upstream *up)
{
    gw_queue *q = up->retired.next;
    while (q != &up->retired) {
        gw_endpoint_set *s = GW_QUEUE_DATA(q, gw_endpoint_set, node);
        q = q->next;
        if (!set_in_use(s)) {
            gw_queue_remove(&s->node);
            set_free(s);
        }
    }
}

void gw_upstream_init(gw_upstream *up, uv_loop_t *loop, const gw_upstream_conf *conf)
{
    memset(up, 0, sizeof *up);
    up->loop = loop;
    gw_queue_init(&up->retired);
    /* no endpoints (a slot no upstream uses yet): no set; CONF must outlive UP then */
    gw_endpoint_set *s = conf->n_endpoints > 0 ? set_new(up, conf, conf->n_endpoints) : NULL;
    if (!s) { /* or out of memory at start: an upstream without endpoints answers 503 */
        up->conf = conf;
        memcpy(up->name, conf->name, sizeof up->name);
        return;
    }
    set_install(up, s, conf->n_endpoints);
}

int gw_upstream_reconfigure(gw_upstream *up, const gw_upstream_conf *conf)
{
    gw_endpoint_set *old = up->set;
    const gw_upstream_conf *keep = conf ? conf : up->conf;
    gw_endpoint_set *s = set_new(up, keep, conf ? conf->n_endpoints : 0);
    if (!s)
        return -1;
    set_install(up, s, conf ? conf->n_endpoints : 0);
    up->rr = 0;
    if (old) {
        old->retired = 1;
        gw_queue_insert_tail(&up->retired, &old->node);
        close_idle_of(old);
        reap(up);
    }
    return 0;
}

int gw_upstream_retired_count(const gw_upstream *up)
{
    int n = 0;
    for (const gw_queue *q = up->retired.next; q && q != &up->retired; q = q->next)
        n++;
    return n;
}

void gw__endpoint_released(gw_endpoint *ep)
{
    if (ep->set && ep->set->retired)
        reap(ep->up);
}

void gw_upstream_free(gw_upstream *up)
{
    while (up->retired.next && !gw_queue_empty(&up->retired)) {
        gw_endpoint_set *s = GW_QUEUE_DATA(up->retired.next, gw_endpoint_set, node);
        gw_queue_remove(&s->node);
        set_free(s);
    }
    if (up->set)
        set_free(up->set);
    up->set = NULL;
    up->endpoints = NULL;
    up->n_endpoints = 0;
}

const gw_upstream_conf *gw__endpoint_upstream_conf(const gw_endpoint *ep)
{
    return ep->def;
}

SSL_CTX *gw__endpoint_tls_ctx(const gw_endpoint *ep)
{
    return ep->set->tls_ctx;
}

gw_endpoint *gw_upstream_pick(gw_upstream *up, int exclude)
{
    uint64_t now = uv_now(up->loop);
    for (int tries = 0; tries < up->n_endpoints; tries++) {
        gw_endpoint *ep = &up->endpoints[up->rr++ % (unsigned)up->n_endpoints];
        if (ep->index == exclude || ep->down_until_ms > now)
            continue;
        return ep;
    }
    return NULL;
}

void gw_endpoint_mark_down(gw_endpoint *ep)
{
    ep->down_until_ms = uv_now(ep->up->loop) + ep->def->down_ms;
}

void gw_upstream_close_idle(gw_upstream *up)
{
    up->closing = 1;
    if (up->set)
        close_idle_of(up->set);
    for (gw_queue *q = up->retired.next; q && q != &up->retired; q = q->next)
        close_idle_of(GW_QUEUE_DATA(q, gw_endpoint_set, node));
}
