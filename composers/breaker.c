/* breaker.c — see breaker.h. */
#include "composers/breaker.h"

static void set_state(cmp_breaker *b, cmp_breaker_state st)
{
    b->state = st;
    if (b->mirror)
        atomic_store_explicit(b->mirror, (int)st, memory_order_relaxed);
}

void cmp_breaker_init(cmp_breaker *b, uint32_t threshold, uint32_t cooldown_ms, atomic_int *mirror)
{
    b->failures = 0;
    b->threshold = threshold ? threshold : 5;
    b->cooldown_ms = cooldown_ms;
    b->open_until_ms = 0;
    b->probe_in_flight = 0;
    b->mirror = mirror;
    set_state(b, CMP_BREAKER_CLOSED);
}

int cmp_breaker_allow(cmp_breaker *b, uint64_t now_ms)
{
    switch (b->state) {
    case CMP_BREAKER_CLOSED:
        return 1;
    case CMP_BREAKER_OPEN:
        if (now_ms < b->open_until_ms)
            return 0;
        set_state(b, CMP_BREAKER_HALF_OPEN);
        b->probe_in_flight = 1;
        return 1;
    case CMP_BREAKER_HALF_OPEN:
        if (b->probe_in_flight)
            return 0;
        b->probe_in_flight = 1;
        return 1;
    }
    return 1;
}

void cmp_breaker_success(cmp_breaker *b)
{
    b->failures = 0;
    b->probe_in_flight = 0;
    if (b->state != CMP_BREAKER_CLOSED)
        set_state(b, CMP_BREAKER_CLOSED);
}

void cmp_breaker_failure(cmp_breaker *b, uint64_t now_ms)
{
    b->probe_in_flight = 0;
    if (b->state == CMP_BREAKER_HALF_OPEN || ++b->failures >= b->threshold) {
        b->open_until_ms = now_ms + b->cooldown_ms;
        b->failures = 0;
        set_state(b, CMP_BREAKER_OPEN);
    }
}

void cmp_breaker_abandon(cmp_breaker *b)
{
    b->probe_in_flight = 0;
}
