/* snapshot.c — table lifetime and the process-wide current table, after Varnish's VCL swap:
 * the current pointer changes under a mutex, each request pins (refs) the table it started
 * with, and a replaced table is freed by whoever drops its last reference — usually the last
 * in-flight request, never the publisher while a request still uses it. Also the table's
 * read-only accessors. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "routes/matcher.h"

void rt_table_ref(rt_table *t)
{
    /* Relaxed is enough: whoever refs already holds a reference, so the table is alive. */
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void rt_table_unref(rt_table *t)
{
    if (!t)
        return;
    /* acq_rel: every thread's last use of the table happens before the free. */
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1)
        rt__table_free(t);
}

uint64_t rt_table_version(const rt_table *t)
{
    return t ? t->version : 0;
}

void rt_table_set_version(rt_table *t, uint64_t version)
{
    t->version = version;
}

int rt_table_count(const rt_table *t)
{
    return t ? t->n_routes : 0;
}

const rt_route *rt_table_route(const rt_table *t, int i)
{
    return t && i >= 0 && i < t->n_routes ? &t->routes[i] : NULL;
}

/* Linear: admin use only. */
const rt_route *rt_table_find(const rt_table *t, const char *id)
{
    for (int i = 0; t && id && i < t->n_routes; i++) {
        if (strcmp(t->routes[i].id, id) == 0)
            return &t->routes[i];
    }
    return NULL;
}

int rt_table_upstream_count(const rt_table *t)
{
    return t ? t->n_upstreams : 0;
}

const char *rt_table_upstream(const rt_table *t, int i)
{
    return t && i >= 0 && i < t->n_upstreams ? t->upstreams[i] : NULL;
}

const char *rt_table_legacy_upstream(const rt_table *t)
{
    return t ? t->legacy : NULL;
}

int rt_table_legacy_index(const rt_table *t)
{
    return t ? t->legacy_index : -1;
}

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static rt_table *g_current;          /* guarded by g_lock */
static uint64_t g_last_version;      /* guarded by g_lock */
static _Atomic uint64_t g_generation;

rt_table *rt_current_acquire(void)
{
    pthread_mutex_lock(&g_lock);
    rt_table *t = g_current;
    if (t)
        rt_table_ref(t);
    pthread_mutex_unlock(&g_lock);
    return t;
}

/* Swaps in T (taking over the caller's reference) and returns the table it replaced, whose
 * reference the caller must drop — outside the lock, since that may free a large table. */
static rt_table *swap_current_as(rt_table *t, int exact)
{
    pthread_mutex_lock(&g_lock);
    rt_table *old = g_current;
    if (t && exact) {
        if (t->version > g_last_version)
            g_last_version = t->version;
    } else if (t) {
        /* Versions only go up. A source that set its own (e.g. a database revision) keeps
         * it when it is higher than the last one published. */
        if (t->version <= g_last_version)
            t->version = g_last_version + 1;
        g_last_version = t->version;
    }
    g_current = t;
    /* Bumped after the swap: a worker that sees the new generation and then acquires is
     * sure to get the new table (or a later one). */
    atomic_fetch_add_explicit(&g_generation, 1, memory_order_release);
    pthread_mutex_unlock(&g_lock);
    return old;
}

static rt_table *swap_current(rt_table *t)
{
    return swap_current_as(t, 0);
}

void rt_current_publish(rt_table *t)
{
    if (t)
        rt_table_unref(swap_current(t));
}

void rt_current_publish_exact(rt_table *t)
{
    if (t)
        rt_table_unref(swap_current_as(t, 1));
}

uint64_t rt_current_generation(void)
{
    return atomic_load_explicit(&g_generation, memory_order_acquire);
}

void rt_current_touch(void)
{
    atomic_fetch_add_explicit(&g_generation, 1, memory_order_release);
}

void rt_current_clear(void)
{
    rt_table_unref(swap_current(NULL));
}
