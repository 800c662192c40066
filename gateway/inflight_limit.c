/* inflight_limit.c — see inflight_limit.h. */
#include "gateway/inflight_limit.h"

#include <inttypes.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct up_limit {
    struct gw_inflight *owner;
    int ui;
    uint32_t max;           /* this worker's share; 0 = unlimited */
    uint32_t in_flight;
    uint32_t queue_max, n_queued;
    uint32_t timeout_ms;
    gw_queue waiters;       /* oldest first */
    uv_timer_t timer;       /* grants freed slots (0 ms) and expires the oldest waiter */
    int timer_open;
} up_limit;

struct gw_inflight {
    uv_loop_t *loop;
    int n;
    int open_timers;
    int closing;
    up_limit up[GW_MAX_UPSTREAMS];
};

/* process-wide counters for /metrics, by upstream index */
static atomic_uint_fast64_t shed_full[GW_MAX_UPSTREAMS], shed_timeout[GW_MAX_UPSTREAMS],
    queued_total[GW_MAX_UPSTREAMS], shed_fallback[GW_MAX_UPSTREAMS],
    shed_shadow[GW_MAX_UPSTREAMS];
static atomic_int in_flight_now[GW_MAX_UPSTREAMS];

static void on_timer(uv_timer_t *t);

gw_inflight *gw_inflight_new(uv_loop_t *loop, const gw_config *cfg, int workers)
{
    int any = 0;
    for (int i = 0; i < cfg->n_upstreams; i++)
        any |= cfg->upstreams[i].max_in_flight > 0;
    if (!any)
        return NULL;
    gw_inflight *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->loop = loop;
    f->n = cfg->n_upstreams;
    if (workers < 1)
        workers = 1;
    for (int i = 0; i < f->n; i++) {
        up_limit *u = &f->up[i];
        const gw_upstream_conf *c = &cfg->upstreams[i];
        u->owner = f;
        u->ui = i;
        gw_queue_init(&u->waiters);
        if (!c->max_in_flight)
            continue;
        u->max = c->max_in_flight / (uint32_t)workers;
        if (u->max == 0)
            u->max = 1;
        u->queue_max = c->queue_max;
        u->timeout_ms = c->queue_timeout_ms ? c->queue_timeout_ms : 1000;
        uv_timer_init(loop, &u->timer);
        u->timer.data = u;
        u->timer_open = 1;
        f->open_timers++;
    }
    return f;
}

int gw_inflight_limited(const gw_inflight *f, int ui)
{
    return f && ui >= 0 && ui < f->n && f->up[ui].max > 0;
}

int gw_inflight_enter(gw_inflight *f, int ui, gw_inflight_waiter *w)
{
    up_limit *u = &f->up[ui];
    if (u->in_flight < u->max && u->n_queued == 0) {
        u->in_flight++;
        atomic_fetch_add_explicit(&in_flight_now[ui], 1, memory_order_relaxed);
        return GW_INFLIGHT_GO;
    }
    if (u->n_queued >= u->queue_max || f->closing) {
        atomic_fetch_add_explicit(&shed_full[ui], 1, memory_order_relaxed);
        return GW_INFLIGHT_FULL;
    }
    w->ui = ui;
    w->deadline = uv_now(f->loop) + u->timeout_ms;
    gw_queue_insert_tail(&u->waiters, &w->node);
    u->n_queued++;
    atomic_fetch_add_explicit(&queued_total[ui], 1, memory_order_relaxed);
    if (!uv_is_active((uv_handle_t *)&u->timer))
        uv_timer_start(&u->timer, on_timer, u->timeout_ms, 0);
    return GW_INFLIGHT_QUEUED;
}

int gw_inflight_try(gw_inflight *f, int ui)
{
    if (!gw_inflight_limited(f, ui))
        return 1;
    up_limit *u = &f->up[ui];
    if (u->in_flight >= u->max || u->n_queued) {
        atomic_fetch_add_explicit(&shed_fallback[ui], 1, memory_order_relaxed);
        return 0;
    }
    u->in_flight++;
    atomic_fetch_add_explicit(&in_flight_now[ui], 1, memory_order_relaxed);
    return 1;
}

int gw_inflight_busy(const gw_inflight *f, int ui)
{
    if (!gw_inflight_limited(f, ui))
        return 0;
    const up_limit *u = &f->up[ui];
    if (u->in_flight >= u->max || u->n_queued) {
        atomic_fetch_add_explicit(&shed_shadow[ui], 1, memory_order_relaxed);
        return 1;
    }
    return 0;
}

void gw_inflight_leave(gw_inflight *f, int ui)
{
    up_limit *u = &f->up[ui];
    if (u->in_flight == 0)
        return;
    u->in_flight--;
    atomic_fetch_sub_explicit(&in_flight_now[ui], 1, memory_order_relaxed);
    /* the oldest waiter gets it from the loop, not from inside the caller's teardown */
    if (u->n_queued && u->timer_open && !f->closing)
        uv_timer_start(&u->timer, on_timer, 0, 0);
}

void gw_inflight_cancel(gw_inflight *f, gw_inflight_waiter *w)
{
    up_limit *u = &f->up[w->ui];
    gw_queue_remove(&w->node);
    u->n_queued--;
}

static void on_timer(uv_timer_t *t)
{
    up_limit *u = t->data;
    uint64_t now = uv_now(u->owner->loop);
    while (u->n_queued && u->in_flight < u->max) {
        gw_inflight_waiter *w = GW_QUEUE_DATA(u->waiters.next, gw_inflight_waiter, node);
        gw_queue_remove(&w->node);
        u->n_queued--;
        u->in_flight++;
        atomic_fetch_add_explicit(&in_flight_now[u->ui], 1, memory_order_relaxed);
        w->ready(w, 1);
    }
    while (u->n_queued) {
        gw_inflight_waiter *w = GW_QUEUE_DATA(u->waiters.next, gw_inflight_waiter, node);
        if (w->deadline > now)
            break;
        gw_queue_remove(&w->node);
        u->n_queued--;
        atomic_fetch_add_explicit(&shed_timeout[u->ui], 1, memory_order_relaxed);
        w->ready(w, 0);
    }
    if (u->n_queued) {
        gw_inflight_waiter *w = GW_QUEUE_DATA(u->waiters.next, gw_inflight_waiter, node);
        uv_timer_start(&u->timer, on_timer, w->deadline - now, 0);
    }
}

void gw_inflight_release_request(gw_inflight *f, const gw_request *req)
{
    if (req->hold_upstream && f && (int)req->hold_upstream - 1 < f->n)
        gw_inflight_leave(f, (int)req->hold_upstream - 1);
    if (req->hold_route)
        atomic_fetch_sub_explicit((atomic_int *)req->hold_route, 1, memory_order_relaxed);
}

int gw_inflight_switch(gw_inflight *f, gw_request *req, int fb)
{
    if (!gw_inflight_try(f, fb))
        return 0;
    if (req->hold_upstream)
        gw_inflight_leave(f, (int)req->hold_upstream - 1);
    req->hold_upstream = gw_inflight_limited(f, fb) ? (unsigned)fb + 1 : 0;
    return 1;
}

static void on_timer_closed(uv_handle_t *h)
{
    up_limit *u = h->data;
    gw_inflight *f = u->owner;
    if (--f->open_timers == 0)
        free(f);
}

void gw_inflight_close(gw_inflight *f)
{
    if (!f || f->closing)
        return;
    f->closing = 1;
    for (int i = 0; i < f->n; i++) {
        up_limit *u = &f->up[i];
        while (u->n_queued) {
            gw_inflight_waiter *w = GW_QUEUE_DATA(u->waiters.next, gw_inflight_waiter, node);
            gw_queue_remove(&w->node);
            u->n_queued--;
            w->ready(w, 0);
        }
        atomic_fetch_sub_explicit(&in_flight_now[i], (int)u->in_flight, memory_order_relaxed);
        u->in_flight = 0;
        if (u->timer_open) {
            u->timer_open = 0;
            uv_close((uv_handle_t *)&u->timer, on_timer_closed);
        }
    }
}

/* ---- per route, process-wide: route id -> atomic count (insert-only) ---- */
#define ROUTE_SLOTS 4096
typedef struct route_slot {
    atomic_int used;
    char id[64];
    atomic_int in_flight;
    atomic_uint_fast64_t shed;
} route_slot;
static route_slot route_slots[ROUTE_SLOTS];
static pthread_mutex_t route_mu = PTHREAD_MUTEX_INITIALIZER;

static route_slot *route_slot_of(const char *id)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    for (unsigned i = 0; i < ROUTE_SLOTS; i++) {
        route_slot *s = &route_slots[(h + i) % ROUTE_SLOTS];
        if (!atomic_load_explicit(&s->used, memory_order_acquire))
            break;
        if (strncmp(s->id, id, sizeof s->id) == 0)
            return s;
    }
    route_slot *found = NULL;
    pthread_mutex_lock(&route_mu);
    for (unsigned i = 0; i < ROUTE_SLOTS && !found; i++) {
        route_slot *s = &route_slots[(h + i) % ROUTE_SLOTS];
        if (!atomic_load_explicit(&s->used, memory_order_acquire)) {
            snprintf(s->id, sizeof s->id, "%s", id);
            atomic_store_explicit(&s->used, 1, memory_order_release);
            found = s;
        } else if (strncmp(s->id, id, sizeof s->id) == 0) {
            found = s;
        }
    }
    pthread_mutex_unlock(&route_mu);
    return found;
}

int gw_route_inflight_enter(const char *id, uint32_t max, gw_request *req)
{
    route_slot *s = route_slot_of(id);
    if (!s)
        return 1; /* no room to count: not limited rather than refused */
    int n = atomic_fetch_add_explicit(&s->in_flight, 1, memory_order_relaxed);
    if ((uint32_t)n >= max) {
        atomic_fetch_sub_explicit(&s->in_flight, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->shed, 1, memory_order_relaxed);
        return 0;
    }
    req->hold_route = &s->in_flight;
    return 1;
}

/* Appends to a growing buffer; -1 when out of memory. */
static int emitf(char **b, size_t *cap, size_t *k, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int emitf(char **b, size_t *cap, size_t *k, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(*b + *k, *cap - *k, fmt, ap);
        va_end(ap);
        if (m < 0)
            return -1;
        if ((size_t)m < *cap - *k) {
            *k += (size_t)m;
            return 0;
        }
        char *nb = realloc(*b, *cap * 2 + (size_t)m);
        if (!nb)
            return -1;
        *b = nb;
        *cap = *cap * 2 + (size_t)m;
    }
}

int gw_inflight_metrics_render(char **out, size_t *len, const char *const *names, int n)
{
    size_t cap = 4096, k = 0;
    char *b = malloc(cap);
    if (!b)
        return -1;
#define EMIT(...)                                                                           \
    do {                                                                                    \
        if (emitf(&b, &cap, &k, __VA_ARGS__) != 0) {                                        \
            free(b);                                                                        \
            return -1;                                                                      \
        }                                                                                   \
    } while (0)
    EMIT("# HELP gateway_upstream_in_flight Requests holding a slot of an upstream with "
         "max_in_flight.\n# TYPE gateway_upstream_in_flight gauge\n"
         "# HELP gateway_upstream_shed_total Requests not sent to an upstream at its "
         "max_in_flight, by reason (full: 503 at once, queue_timeout: 503 after waiting, "
         "fallback and shadow: shed first).\n# TYPE gateway_upstream_shed_total counter\n"
         "# HELP gateway_upstream_queued_total Requests that waited for a slot.\n"
         "# TYPE gateway_upstream_queued_total counter\n");
    for (int i = 0; i < n && i < GW_MAX_UPSTREAMS; i++) {
        if (!names[i] || !names[i][0])
            continue; /* a slot without an upstream (routes/upstreams.h) */
        EMIT("gateway_upstream_in_flight{upstream=\"%s\"} %d\n", names[i],
             atomic_load(&in_flight_now[i]));
        EMIT("gateway_upstream_queued_total{upstream=\"%s\"} %" PRIu64 "\n", names[i],
             (uint64_t)atomic_load(&queued_total[i]));
        static const char *const why[] = { "full", "queue_timeout", "fallback", "shadow" };
        atomic_uint_fast64_t *c[] = { &shed_full[i], &shed_timeout[i], &shed_fallback[i],
                                      &shed_shadow[i] };
        for (int r = 0; r < 4; r++)
            EMIT("gateway_upstream_shed_total{upstream=\"%s\",reason=\"%s\"} %" PRIu64 "\n",
                 names[i], why[r], (uint64_t)atomic_load(c[r]));
    }
    EMIT("# HELP gateway_route_shed_total Requests answered 503 at a route's max_in_flight.\n"
         "# TYPE gateway_route_shed_total counter\n");
    for (unsigned i = 0; i < ROUTE_SLOTS; i++) {
        route_slot *s = &route_slots[i];
        if (atomic_load_explicit(&s->used, memory_order_acquire))
            EMIT("gateway_route_shed_total{route=\"%s\"} %" PRIu64 "\n", s->id,
                 (uint64_t)atomic_load(&s->shed));
    }
#undef EMIT
    *out = b;
    *len = k;
    return 0;
}
