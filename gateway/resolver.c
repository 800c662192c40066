/* resolver.c — see resolver.h. The set of names and their addresses is process-wide (the
 * workers read it when they rebuild an upstream), guarded by a mutex taken only by the main
 * loop's lookups and by workers' rebuilds: never per request. */
#include "gateway/resolver.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routes/upstreams.h"

typedef struct name_entry {
    char host[256];
    char port[8];
    int used;                 /* a slot in g_names */
    int have;                 /* a background lookup answered at least once */
    int failing;              /* the last lookup failed (logged once per streak) */
    int in_flight;            /* a lookup is under way */
    uint32_t every_ms;        /* the smallest resolve_ms of the upstreams naming it */
    uint64_t due_ms;          /* uv_now() of the next lookup */
    uint64_t seen_tick;       /* the last tick an upstream in force named it */
    int n;
    struct sockaddr_storage addrs[GW_RESOLVE_MAX_ADDRS];
    socklen_t lens[GW_RESOLVE_MAX_ADDRS];
} name_entry;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static name_entry g_names[GW_RESOLVE_MAX_NAMES];
static _Atomic uint64_t g_ok, g_failed, g_changes;

typedef struct lookup {
    uv_getaddrinfo_t req;
    struct gw_resolver *r;
    int slot;                 /* in r->lookups */
    char host[256];
    char port[8];
} lookup;

struct gw_resolver {
    uv_loop_t *loop;
    uv_timer_t timer;
    uint64_t tick;
    int stopping;
    int pending;              /* lookups under way + the timer until closed */
    int running;              /* lookups under way (at most GW_RESOLVE_MAX_LOOKUPS) */
    int cursor;               /* the g_names slot the next tick looks at first */
    lookup *lookups[GW_RESOLVE_MAX_NAMES]; /* under way, cancelled by gw_resolver_stop */
};

int gw_endpoint_is_name(const char *address, char *host, size_t hostlen, char *port,
                        size_t portlen)
{
    if (address[0] == '[')
        return 0; /* bracketed: a numeric IPv6 address */
    const char *colon = strrchr(address, ':');
    if (!colon || (size_t)(colon - address) >= hostlen || strlen(colon + 1) >= portlen)
        return 0;
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    snprintf(port, portlen, "%s", colon + 1);
    struct in_addr a4;
    return inet_pton(AF_INET, host, &a4) != 1;
}

/* Locked. */
static name_entry *find(const char *host, const char *port)
{
    for (int i = 0; i < GW_RESOLVE_MAX_NAMES; i++) {
        name_entry *e = &g_names[i];
        if (e->used && strcmp(e->host, host) == 0 && strcmp(e->port, port) == 0)
            return e;
    }
    return NULL;
}

void gw_resolved_expand(const gw_upstream_conf *in, gw_upstream_conf *out)
{
    *out = *in;
    if (!in->resolve_ms)
        return; /* never re-resolved: the addresses read with the definition, even when
                 * another upstream has the same name looked up in the background */
    int n = 0;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < in->n_endpoints && n < GW_MAX_ENDPOINTS; i++) {
        const gw_endpoint_conf *ep = &in->endpoints[i];
        char host[256], port[8];
        name_entry *e = gw_endpoint_is_name(ep->address, host, sizeof host, port, sizeof port)
                            ? find(host, port) : NULL;
        if (!e || !e->have || e->n == 0) {
            out->endpoints[n++] = *ep;
            continue;
        }
        for (int k = 0; k < e->n && n < GW_MAX_ENDPOINTS; k++) {
            out->endpoints[n] = *ep;
            memcpy(&out->endpoints[n].addr, &e->addrs[k], e->lens[k]);
            out->endpoints[n].addrlen = e->lens[k];
            n++;
        }
    }
    pthread_mutex_unlock(&g_lock);
    out->n_endpoints = n;
}

int gw_resolved_first(const char *address, struct sockaddr_storage *addr, socklen_t *len)
{
    char host[256], port[8];
    if (!gw_endpoint_is_name(address, host, sizeof host, port, sizeof port))
        return 0;
    int found = 0;
    pthread_mutex_lock(&g_lock);
    name_entry *e = find(host, port);
    if (e && e->have && e->n > 0) {
        memset(addr, 0, sizeof *addr);
        memcpy(addr, &e->addrs[0], e->lens[0]);
        *len = e->lens[0];
        found = 1;
    }
    pthread_mutex_unlock(&g_lock);
    return found;
}

int gw_endpoints_same(const gw_upstream_conf *a, const gw_upstream_conf *b)
{
    if (a->n_endpoints != b->n_endpoints)
        return 0;
    for (int i = 0; i < a->n_endpoints; i++) {
        const gw_endpoint_conf *x = &a->endpoints[i], *y = &b->endpoints[i];
        if (x->addrlen != y->addrlen || memcmp(&x->addr, &y->addr, x->addrlen) != 0 ||
            strcmp(x->address, y->address) != 0)
            return 0;
    }
    return 1;
}

static int addr_cmp(const void *pa, const void *pb)
{
    const struct sockaddr_storage *a = pa, *b = pb;
    if (a->ss_family != b->ss_family)
        return a->ss_family == AF_INET ? -1 : 1; /* IPv4 first, as the one-shot pick did */
    return memcmp(a, b, a->ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                                : sizeof(struct sockaddr_in6));
}

/* Stores N addresses for HOST:PORT (sorted: a reordered answer is no change). Returns 1 when
 * the set changed. Locked by the caller. */
static int store(name_entry *e, struct sockaddr_storage *addrs, int n)
{
    qsort(addrs, (size_t)n, sizeof *addrs, addr_cmp);
    int changed = !e->have || e->n != n;
    for (int i = 0; !changed && i < n; i++)
        changed = addr_cmp(&e->addrs[i], &addrs[i]) != 0;
    for (int i = 0; i < n; i++) {
        e->addrs[i] = addrs[i];
        e->lens[i] = addrs[i].ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                                   : sizeof(struct sockaddr_in6);
    }
    e->n = n;
    e->have = 1;
    return changed;
}

void gw__resolved_set(const char *host, const char *port, const struct sockaddr_storage *addrs,
                      const socklen_t *lens, int n)
{
    struct sockaddr_storage copy[GW_RESOLVE_MAX_ADDRS];
    (void)lens;
    if (n > GW_RESOLVE_MAX_ADDRS)
        n = GW_RESOLVE_MAX_ADDRS;
    memcpy(copy, addrs, (size_t)n * sizeof *copy);
    pthread_mutex_lock(&g_lock);
    name_entry *e = find(host, port);
    for (int i = 0; !e && i < GW_RESOLVE_MAX_NAMES; i++) {
        if (!g_names[i].used) {
            e = &g_names[i];
            memset(e, 0, sizeof *e);
            e->used = 1;
            snprintf(e->host, sizeof e->host, "%s", host);
            snprintf(e->port, sizeof e->port, "%s", port);
        }
    }
    if (e)
        store(e, copy, n);
    pthread_mutex_unlock(&g_lock);
}

void gw__resolved_reset(void)
{
    pthread_mutex_lock(&g_lock);
    memset(g_names, 0, sizeof g_names);
    pthread_mutex_unlock(&g_lock);
}

/* ---- the main loop's side ---------------------------------------------------------------- */

static void resolver_unref(gw_resolver *r)
{
    if (--r->pending == 0)
        free(r);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    lookup *l = req->data;
    gw_resolver *r = l->r;
    struct sockaddr_storage addrs[GW_RESOLVE_MAX_ADDRS];
    int n = 0;
    for (struct addrinfo *ai = status == 0 ? res : NULL; ai && n < GW_RESOLVE_MAX_ADDRS;
         ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof addrs[0])
            continue;
        struct sockaddr_storage a;
        memset(&a, 0, sizeof a);
        memcpy(&a, ai->ai_addr, ai->ai_addrlen);
        int dup = 0;
        for (int k = 0; k < n && !dup; k++)
            dup = addr_cmp(&addrs[k], &a) == 0;
        if (!dup)
            addrs[n++] = a;
    }
    if (res)
        uv_freeaddrinfo(res);
    /* uv_cancel of a getaddrinfo request reports UV_EAI_CANCELED */
    int cancelled = status == UV_ECANCELED || status == UV_EAI_CANCELED;
    int changed = 0, log_fail = 0, log_back = 0, was = 0;
    pthread_mutex_lock(&g_lock);
    name_entry *e = find(l->host, l->port);
    if (e) {
        e->in_flight = 0;
        e->due_ms = uv_now(r->loop) + e->every_ms;
        was = e->n;
        if (cancelled) {
            /* stopping: nothing to count */
        } else if (n == 0) {
            log_fail = !e->failing;
            e->failing = 1;
        } else {
            log_back = e->failing;
            e->failing = 0;
            changed = store(e, addrs, n);
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (e && !cancelled) {
        atomic_fetch_add(n ? &g_ok : &g_failed, 1);
        if (log_fail)
            fprintf(stderr, "gateway: resolve %s:%s failed (%s): the last good addresses (%d) "
                    "stay in use\n", l->host, l->port, status ? uv_strerror(status)
                    : "no IPv4 or IPv6 address", was);
        if (log_back)
            fprintf(stderr, "gateway: resolve %s:%s answers again\n", l->host, l->port);
    }
    if (changed && !r->stopping) {
        atomic_fetch_add(&g_changes, 1);
        fprintf(stderr, "gateway: resolve %s:%s: %d address%s (was %d)\n", l->host, l->port, n,
                n == 1 ? "" : "es", was);
        rt_current_touch(); /* the workers rebuild the upstreams that use it */
    }
    r->lookups[l->slot] = NULL;
    r->running--;
    free(l);
    resolver_unref(r);
}

static void start_lookup(gw_resolver *r, name_entry *e)
{
    int slot = 0;
    while (slot < GW_RESOLVE_MAX_NAMES && r->lookups[slot])
        slot++;
    lookup *l = slot < GW_RESOLVE_MAX_NAMES ? calloc(1, sizeof *l) : NULL;
    if (!l)
        return;
    l->r = r;
    l->slot = slot;
    l->req.data = l;
    memcpy(l->host, e->host, sizeof l->host); /* same sizes, NUL-terminated */
    memcpy(l->port, e->port, sizeof l->port);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICSERV };
    if (uv_getaddrinfo(r->loop, &l->req, on_resolved, l->host, l->port, &hints) != 0) {
        free(l);
        return;
    }
    e->in_flight = 1;
    r->lookups[slot] = l;
    r->running++;
    r->pending++;
}

/* Notes every name the upstreams in force use (creating entries), starts the due lookups,
 * and forgets names no upstream uses any more. */
static void on_tick(uv_timer_t *t)
{
    gw_resolver *r = t->data;
    rt_table *table = rt_current_acquire();
    uint64_t now = uv_now(r->loop);
    r->tick++;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; table && i < rt_table_upstream_count(table); i++) {
        const rt_upstream_def *d = rt_table_upstream_def(table, i);
        for (int k = 0; d && d->conf.resolve_ms && k < d->conf.n_endpoints; k++) {
            char host[256], port[8];
            if (!gw_endpoint_is_name(d->conf.endpoints[k].address, host, sizeof host, port,
                                     sizeof port))
                continue;
            name_entry *e = find(host, port);
            for (int j = 0; !e && j < GW_RESOLVE_MAX_NAMES; j++) {
                if (!g_names[j].used) {
                    e = &g_names[j];
                    memset(e, 0, sizeof *e);
                    e->used = 1;
                    e->due_ms = now; /* first lookup at once */
                    e->every_ms = d->conf.resolve_ms;
                    snprintf(e->host, sizeof e->host, "%s", host);
                    snprintf(e->port, sizeof e->port, "%s", port);
                }
            }
            if (!e)
                continue; /* more names than slots: they keep their load-time address */
            if (e->seen_tick != r->tick || d->conf.resolve_ms < e->every_ms)
                e->every_ms = d->conf.resolve_ms;
            e->seen_tick = r->tick;
        }
    }
    /* The threadpool is shared by every loop (access log, admin changes, route parses,
     * certificate reloads): a few lookups at a time, so names whose DNS times out cannot
     * occupy it. The scan starts after the last name started, so every due name gets its
     * turn however long the others take. */
    int forgot = 0, next = r->cursor;
    for (int k = 0; k < GW_RESOLVE_MAX_NAMES; k++) {
        int i = (r->cursor + k) % GW_RESOLVE_MAX_NAMES;
        name_entry *e = &g_names[i];
        if (!e->used)
            continue;
        if (e->seen_tick != r->tick && !e->in_flight) {
            forgot |= e->have;
            e->used = 0;
        } else if (e->seen_tick == r->tick && !e->in_flight && now >= e->due_ms &&
                   r->running < GW_RESOLVE_MAX_LOOKUPS) {
            start_lookup(r, e);
            next = (i + 1) % GW_RESOLVE_MAX_NAMES;
        }
    }
    r->cursor = next;
    pthread_mutex_unlock(&g_lock);
    if (table)
        rt_table_unref(table);
    (void)forgot; /* a removed name's upstream was rebuilt with the table change already */
}

static void on_timer_closed(uv_handle_t *h)
{
    resolver_unref(h->data);
}

gw_resolver *gw_resolver_start(uv_loop_t *loop)
{
    gw_resolver *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->loop = loop;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    r->pending = 1;
    uv_timer_start(&r->timer, on_tick, 0, GW_RESOLVE_TICK_MS);
    return r;
}

void gw_resolver_stop(gw_resolver *r)
{
    if (!r || r->stopping)
        return;
    r->stopping = 1;
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
    /* a lookup not started yet is cancelled; one running ends; their callbacks free */
    for (int i = 0; i < GW_RESOLVE_MAX_NAMES; i++)
        if (r->lookups[i])
            uv_cancel((uv_req_t *)&r->lookups[i]->req);
}

/* One gateway_upstream_resolved_addresses line at most: every name and port at full length. */
#define METRIC_LINE_MAX (sizeof "gateway_upstream_resolved_addresses{endpoint=\":\"} \n" + \
                         sizeof ((name_entry *)0)->host + sizeof ((name_entry *)0)->port + 12)

int gw__resolver_in_flight(const gw_resolver *r)
{
    return r->running;
}

int gw_resolver_metrics(char **text, size_t *len)
{
    /* sized for every name at full length: a line is never cut (the scrape stays valid) */
    size_t cap = 1024 + GW_RESOLVE_MAX_NAMES * METRIC_LINE_MAX;
    char *buf = malloc(cap);
    if (!buf)
        return -1;
    int n = snprintf(buf, cap,
                     "# HELP gateway_upstream_resolutions_total Background lookups of upstream "
                     "endpoint names.\n"
                     "# TYPE gateway_upstream_resolutions_total counter\n"
                     "gateway_upstream_resolutions_total{result=\"ok\"} %" PRIu64 "\n"
                     "gateway_upstream_resolutions_total{result=\"failed\"} %" PRIu64 "\n"
                     "# HELP gateway_upstream_address_changes_total Lookups that changed a name's "
                     "addresses.\n"
                     "# TYPE gateway_upstream_address_changes_total counter\n"
                     "gateway_upstream_address_changes_total %" PRIu64 "\n"
                     "# HELP gateway_upstream_resolved_addresses Addresses in use per endpoint "
                     "name.\n"
                     "# TYPE gateway_upstream_resolved_addresses gauge\n",
                     (uint64_t)atomic_load(&g_ok), (uint64_t)atomic_load(&g_failed),
                     (uint64_t)atomic_load(&g_changes));
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < GW_RESOLVE_MAX_NAMES && n > 0 && (size_t)n < cap; i++) {
        const name_entry *e = &g_names[i];
        if (e->used && e->have)
            n += snprintf(buf + n, cap - (size_t)n,
                          "gateway_upstream_resolved_addresses{endpoint=\"%s:%s\"} %d\n",
                          e->host, e->port, e->n);
    }
    pthread_mutex_unlock(&g_lock);
    if (n < 0 || (size_t)n >= cap)
        n = (int)strlen(buf);
    char *p = realloc(*text, *len + (size_t)n + 1);
    if (!p) {
        free(buf);
        return -1;
    }
    memcpy(p + *len, buf, (size_t)n + 1);
    free(buf);
    *text = p;
    *len += (size_t)n;
    return 0;
}
