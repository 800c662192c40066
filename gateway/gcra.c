/* gcra.c — see gcra.h. */
#include "gateway/gcra.h"

void gw_gcra_init(gw_gcra *g, uint32_t rate, uint64_t per_ms, uint32_t burst, uint32_t divisor)
{
    if (rate == 0)
        rate = 1;
    if (divisor == 0)
        divisor = 1;
    /* rate/divisor per instance: the interval grows by divisor; the burst shrinks with it
     * but never below one request */
    g->emission_ns = per_ms * 1000000ull * divisor / rate;
    if (g->emission_ns == 0)
        g->emission_ns = 1;
    uint32_t b = burst / divisor;
    g->burst = b ? b : 1;
    g->tolerance_ns = g->emission_ns * (g->burst - 1);
}

void gw_gcra_check(const gw_gcra *g, uint64_t *tat, uint64_t now_ns, gw_gcra_result *r)
{
    uint64_t t = *tat > now_ns ? *tat : now_ns;
    uint64_t ahead = t - now_ns; /* how far the key already runs ahead of now */
    if (ahead > g->tolerance_ns) {
        r->allowed = 0;
        r->remaining = 0;
        r->retry_after_ns = ahead - g->tolerance_ns;
        r->reset_ns = ahead;
        return;
    }
    *tat = t + g->emission_ns;
    r->allowed = 1;
    r->remaining = (uint32_t)((g->tolerance_ns - ahead) / g->emission_ns);
    r->retry_after_ns = 0;
    r->reset_ns = ahead + g->emission_ns;
}

uint32_t gw_gcra_batch_passed(uint64_t ahead, uint64_t t, uint64_t tau, uint32_t n)
{
    if (t == 0)
        t = 1;
    if (ahead > tau)
        return 0;
    uint64_t fit = (tau - ahead) / t + 1; /* requests that fit before the TAT passes tau */
    return fit < n ? (uint32_t)fit : n;
}

void gw_gcra_batch_result(uint64_t ahead, uint64_t t, uint64_t tau, uint32_t n, uint32_t index,
                          gw_gcra_result *r)
{
    if (t == 0)
        t = 1;
    uint32_t passed = gw_gcra_batch_passed(ahead, t, tau, n);
    if (index < passed) { /* the key is index * T further ahead for this one */
        uint64_t a = ahead + (uint64_t)index * t;
        r->allowed = 1;
        r->remaining = (uint32_t)((tau - a) / t);
        r->retry_after_ns = 0;
        r->reset_ns = (a + t) * 1000;
        return;
    }
    uint64_t a = ahead + (uint64_t)passed * t; /* where the passed ones left the key */
    r->allowed = 0;
    r->remaining = 0;
    r->retry_after_ns = (a - tau) * 1000;
    r->reset_ns = a * 1000;
}
