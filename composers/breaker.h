/* breaker.h — a circuit breaker per upstream per worker, for composition legs: after N
 * consecutive failures the circuit opens and legs to that upstream fail at once (no time
 * spent); after the cool-down one probe is let through (half-open): success closes it,
 * failure opens it again. */
#ifndef CMP_BREAKER_H
#define CMP_BREAKER_H

#include <stdatomic.h>
#include <stdint.h>

typedef enum { CMP_BREAKER_CLOSED = 0, CMP_BREAKER_OPEN = 1, CMP_BREAKER_HALF_OPEN = 2 } cmp_breaker_state;

typedef struct cmp_breaker {
    cmp_breaker_state state;
    uint32_t failures;       /* consecutive */
    uint32_t threshold;
    uint32_t cooldown_ms;
    uint64_t open_until_ms;
    int probe_in_flight;
    atomic_int *mirror;      /* where /metrics reads the state; may be NULL */
} cmp_breaker;

void cmp_breaker_init(cmp_breaker *b, uint32_t threshold, uint32_t cooldown_ms, atomic_int *mirror);
/* May a call go out now? In half-open, only the one probe may. */
int cmp_breaker_allow(cmp_breaker *b, uint64_t now_ms);
void cmp_breaker_success(cmp_breaker *b);
void cmp_breaker_failure(cmp_breaker *b, uint64_t now_ms);
/* A call that was let through ended without a result (cut by a deadline or a client that
 * left): a half-open circuit may let the next probe through. */
void cmp_breaker_abandon(cmp_breaker *b);

#endif
