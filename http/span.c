/* span.c — see span.h. */
#include "http/span.h"

#include <stdlib.h>
#include <string.h>

#include "http/trace.h"

static _Thread_local gw_span_ring *ring;

gw_span_ring *gw_span_ring_new(uint32_t cap)
{
    uint32_t n = 16;
    while (n < cap && n < (1u << 24))
        n <<= 1;
    gw_span_ring *r = calloc(1, sizeof *r + (size_t)n * sizeof(gw_span));
    if (r)
        r->mask = n - 1;
    return r;
}

void gw_span_ring_free(gw_span_ring *r)
{
    free(r);
}

size_t gw_span_ring_take(gw_span_ring *r, gw_span *out, size_t max)
{
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    size_t n = 0;
    for (; tail != head && n < max; tail++, n++)
        out[n] = r->slots[tail & r->mask];
    atomic_store_explicit(&r->tail, tail, memory_order_release);
    return n;
}

void gw_span_attach(gw_span_ring *r)
{
    ring = r;
}

int gw_span_enabled(uint8_t trace_flags)
{
    return ring && (trace_flags & GW_TRACE_SAMPLED);
}

gw_span *gw_span_begin(uint8_t trace_flags)
{
    gw_span_ring *r = ring;
    if (!r || !(trace_flags & GW_TRACE_SAMPLED))
        return NULL;
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    if (head - atomic_load_explicit(&r->tail, memory_order_acquire) > r->mask) {
        atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
        return NULL;
    }
    gw_span *s = &r->slots[head & r->mask];
    memset(s, 0, offsetof(gw_span, start_ns));
    return s;
}

void gw_span_commit(void)
{
    gw_span_ring *r = ring;
    atomic_store_explicit(&r->head, atomic_load_explicit(&r->head, memory_order_relaxed) + 1,
                          memory_order_release);
}

void gw_span_copy(char *out, size_t n, const char *s, size_t sn)
{
    if (sn >= n)
        sn = n - 1;
    if (sn)
        memcpy(out, s, sn);
    out[sn] = '\0';
}
