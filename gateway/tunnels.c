/* tunnels.c — see tunnels.h. Opening and closing a tunnel takes a mutex: tunnels open at
 * the rate of upgrades, not of requests. */
#include "gateway/tunnels.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 64 /* upstream names are shorter (GW_NAME_MAX); route ids have no bound */

struct gw_tunnel_pair {
    char *route;      /* whole: a cut id would hide long ids' tunnels and merge ids */
    char upstream[KEY_MAX];
    int64_t active;
    uint64_t total;
    uint64_t closed[GW_TUNNEL_REASONS]; /* by gw_tunnel_close_reason */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static gw_tunnel_pair pairs[GW_TUNNEL_PAIRS];
static int n_pairs;

static void copy_key(char *dst, const char *s)
{
    size_t n = strnlen(s ? s : "-", KEY_MAX - 1);
    memcpy(dst, s ? s : "-", n);
    dst[n] = '\0';
}

gw_tunnel_pair *gw_tunnels_opened(const char *route, const char *upstream)
{
    const char *r = route ? route : "-";
    char u[KEY_MAX];
    copy_key(u, upstream);
    gw_tunnel_pair *p = NULL;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < n_pairs && !p; i++)
        if (!strcmp(pairs[i].route, r) && !strcmp(pairs[i].upstream, u))
            p = &pairs[i];
    if (!p && n_pairs < GW_TUNNEL_PAIRS) {
        char *id = strdup(r); /* once per new pair: kept for the process's life */
        if (id) {
            p = &pairs[n_pairs++];
            p->route = id;
            memcpy(p->upstream, u, sizeof u);
        }
    }
    if (p) {
        p->active++;
        p->total++;
    }
    pthread_mutex_unlock(&mu);
    return p;
}

void gw_tunnels_closed(gw_tunnel_pair *p, const gw_tunnel_stats *st)
{
    if (!p)
        return;
    pthread_mutex_lock(&mu);
    p->active--;
    if ((unsigned)st->reason < GW_TUNNEL_REASONS)
        p->closed[st->reason]++;
    pthread_mutex_unlock(&mu);
}

void gw_tunnels_of_route(const char *route,
                         void (*fn)(const char *upstream, int64_t active, void *arg), void *arg)
{
    pthread_mutex_lock(&mu);
    for (int i = 0; i < n_pairs; i++)
        if (!strcmp(pairs[i].route, route))
            fn(pairs[i].upstream, pairs[i].active, arg);
    pthread_mutex_unlock(&mu);
}

typedef struct out {
    char *p;
    size_t len, cap;
    int oom;
} out;

static void emit(out *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = o->oom ? 0 : vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (o->oom || n < 0)
            return;
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        char *nb = realloc(o->p, o->cap * 2 + (size_t)n);
        if (!nb) {
            o->oom = 1;
            return;
        }
        o->p = nb;
        o->cap = o->cap * 2 + (size_t)n;
    }
}

int gw_tunnels_metrics_render(char **res, size_t *len)
{
    out o = { malloc(4096), 0, 4096, 0 };
    if (!o.p)
        return -1;
    static const char *const why[GW_TUNNEL_REASONS] = {
        "client_closed", "upstream_closed", "idle_timeout", "drain", "client_send_timeout",
        "upstream_send_timeout",
    };
    emit(&o, "# HELP gateway_tunnels_active Open tunnels (WebSocket and other upgrades) by route "
             "and upstream; an open tunnel does not follow a flip.\n"
             "# TYPE gateway_tunnels_active gauge\n"
             "# HELP gateway_tunnels_total Tunnels opened (upstream answered 101).\n"
             "# TYPE gateway_tunnels_total counter\n"
             "# HELP gateway_tunnels_closed_total Tunnels closed, by reason.\n"
             "# TYPE gateway_tunnels_closed_total counter\n");
    pthread_mutex_lock(&mu);
    for (int i = 0; i < n_pairs; i++) {
        const gw_tunnel_pair *p = &pairs[i];
        emit(&o, "gateway_tunnels_active{route=\"%s\",upstream=\"%s\"} %" PRId64 "\n"
                 "gateway_tunnels_total{route=\"%s\",upstream=\"%s\"} %" PRIu64 "\n",
             p->route, p->upstream, p->active, p->route, p->upstream, p->total);
        for (int r = 0; r < GW_TUNNEL_REASONS; r++)
            emit(&o, "gateway_tunnels_closed_total{route=\"%s\",upstream=\"%s\",reason=\"%s\"} %" PRIu64 "\n",
                 p->route, p->upstream, why[r], p->closed[r]);
    }
    pthread_mutex_unlock(&mu);
    if (o.oom) {
        free(o.p);
        return -1;
    }
    *res = o.p;
    *len = o.len;
    return 0;
}
