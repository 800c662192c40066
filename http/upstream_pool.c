/* upstream_pool.c — a named upstream on one worker: its endpoints, round robin that skips
 * endpoints marked down, and the per-endpoint idle keep-alive pools. */
#include <stdio.h>
#include <string.h>

#include "http/upstream.h"
#include "http/upstream_tls.h"

void gw_upstream_init(gw_upstream *up, uv_loop_t *loop, const gw_upstream_conf *conf)
{
    memset(up, 0, sizeof *up);
    up->loop = loop;
    up->conf = conf;
    up->n_endpoints = conf->n_endpoints;
    for (int i = 0; i < conf->n_endpoints; i++) {
        gw_endpoint *ep = &up->endpoints[i];
        ep->up = up;
        ep->index = i;
        ep->conf = &conf->endpoints[i];
        gw_queue_init(&ep->idle);
    }
    if (conf->tls) {
        char err[700];
        if (!(up->tls_ctx = gw__utls_ctx_new(conf, err, sizeof err)))
            fprintf(stderr, "gateway: %s\n", err);
    }
}

void gw_upstream_free(gw_upstream *up)
{
    for (int i = 0; i < up->n_endpoints; i++)
        gw__utls_session_free(&up->endpoints[i].tls_session);
    gw__utls_ctx_free(up->tls_ctx);
    up->tls_ctx = NULL;
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
    ep->down_until_ms = uv_now(ep->up->loop) + ep->up->conf->down_ms;
}

void gw_upstream_close_idle(gw_upstream *up)
{
    up->closing = 1;
    for (int i = 0; i < up->n_endpoints; i++) {
        gw_endpoint *ep = &up->endpoints[i];
        while (!gw_queue_empty(&ep->idle)) {
            /* gw_uconn's layout is private: release through the public abort */
            gw_queue *q = ep->idle.next;
            gw_uconn *u = gw__uconn_from_pool_node(q);
            gw_uconn_abort(u);
        }
    }
}
