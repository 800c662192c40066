/* gcra.h — the generic cell rate algorithm: one timestamp per key (the theoretical arrival
 * time, TAT), no background refill. Pure: the caller owns the TAT and gives the clock, so the
 * same arithmetic runs in-process (ratelimit_local.c), in tests with a fake clock, and — the
 * same formulas in Lua — inside Redis (ratelimit_redis.c).
 *
 *   T   = per / rate            the emission interval
 *   tau = T * (burst - 1)       how far ahead of now the TAT may run
 *   a request at NOW passes when max(TAT, NOW) - NOW <= tau; then TAT = max(TAT, NOW) + T.
 *
 * Times are nanoseconds on any monotonic clock. */
#ifndef GW_GCRA_H
#define GW_GCRA_H

#include <stdint.h>

typedef struct gw_gcra {
    uint64_t emission_ns;  /* T */
    uint64_t tolerance_ns; /* tau */
    uint32_t burst;
} gw_gcra;

typedef struct gw_gcra_result {
    int allowed;
    uint32_t remaining;      /* requests that would still pass at once after this one */
    uint64_t retry_after_ns; /* refused: when the next one would pass; 0 when allowed */
    uint64_t reset_ns;       /* when the whole burst is available again */
} gw_gcra_result;

/* RATE requests per PER_MS with BURST at once (burst >= 1, rate >= 1). DIVISOR > 1 makes
 * the limit rate / divisor (the per-instance share when the shared store is away). */
void gw_gcra_init(gw_gcra *g, uint32_t rate, uint64_t per_ms, uint32_t burst, uint32_t divisor);

/* Decides a request at NOW_NS against *TAT (0: a key never seen) and updates *TAT when it
 * passes. */
void gw_gcra_check(const gw_gcra *g, uint64_t *tat, uint64_t now_ns, gw_gcra_result *r);

/* A batch decided in one step by the shared store (ratelimit_redis.c): N requests on one key
 * at one instant, the key AHEAD ahead of that instant before them (max(TAT, now) - now), T
 * and TAU as in gw_gcra, all in the store's unit (microseconds). The requests pass in order
 * while they fit, exactly as N calls of gw_gcra_check at that instant would decide them.
 * Returns how many pass (the store moves the TAT by that many T). */
uint32_t gw_gcra_batch_passed(uint64_t ahead, uint64_t t, uint64_t tau, uint32_t n);
/* The decision for the INDEX-th (from 0) of those N requests, in nanoseconds. */
void gw_gcra_batch_result(uint64_t ahead, uint64_t t, uint64_t tau, uint32_t n, uint32_t index,
                          gw_gcra_result *r);

#endif
