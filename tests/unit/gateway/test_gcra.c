/* test_gcra.c — gateway/gcra (pure, fake clock) and gateway/ratelimit_local (the in-process
 * store): what passes, what is refused, and the figures the 429 headers are made of. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/gcra.h"
#include "gateway/ratelimit.h"
#include "gateway/ratelimit_local.h"

#define MS 1000000ull
#define S 1000000000ull

/* An idle key takes exactly BURST at once, then one per emission interval. */
static void test_burst_then_rate(void **state)
{
    (void)state;
    gw_gcra g;
    gw_gcra_result r;
    uint64_t tat = 0, now = 1000 * S;
    gw_gcra_init(&g, 10, 1000, 5, 1); /* 10/s, 5 at once: T = 100 ms */
    assert_int_equal(g.emission_ns, 100 * MS);
    for (int i = 0; i < 5; i++) {
        gw_gcra_check(&g, &tat, now, &r);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, 4 - i);
    }
    gw_gcra_check(&g, &tat, now, &r);
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.retry_after_ns, 100 * MS); /* the next cell is due in one interval */
    assert_int_equal(r.reset_ns, 500 * MS);
    uint64_t before = tat;
    gw_gcra_check(&g, &tat, now + 99 * MS, &r); /* a refusal does not move the TAT */
    assert_false(r.allowed);
    assert_int_equal(tat, before);
    gw_gcra_check(&g, &tat, now + 100 * MS, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
}

/* Over a long run at twice the rate, exactly rate * time + burst pass. */
static void test_long_run_exact(void **state)
{
    (void)state;
    gw_gcra g;
    gw_gcra_result r;
    uint64_t tat = 0, now = 5 * S;
    int passed = 0;
    gw_gcra_init(&g, 100, 1000, 50, 1);
    for (int i = 0; i < 20000; i++) { /* 200 per second for 100 s */
        gw_gcra_check(&g, &tat, now + (uint64_t)i * 5 * MS, &r);
        passed += r.allowed;
    }
    /* 100 s at 100/s, the first 50 free: the last arrival is at 99.995 s */
    assert_in_range(passed, 100 * 100 + 50 - 1, 100 * 100 + 50);
}

/* The fallback share: rate / N and burst / N (at least 1). */
static void test_divisor(void **state)
{
    (void)state;
    gw_gcra g;
    gw_gcra_init(&g, 100, 1000, 50, 4);
    assert_int_equal(g.emission_ns, 40 * MS);
    assert_int_equal(g.burst, 12);
    gw_gcra_init(&g, 3, 1000, 1, 8);
    assert_int_equal(g.burst, 1);
    assert_int_equal(g.tolerance_ns, 0);
}

/* An idle key recovers its whole burst; a key whose TAT lags far behind is not "saved up"
 * beyond the burst. */
static void test_idle_recovers_burst_only(void **state)
{
    (void)state;
    gw_gcra g;
    gw_gcra_result r;
    uint64_t tat = 0, now = 10 * S;
    int passed = 0;
    gw_gcra_init(&g, 1, 1000, 3, 1);
    for (int i = 0; i < 10; i++) {
        gw_gcra_check(&g, &tat, now, &r);
        passed += r.allowed;
    }
    assert_int_equal(passed, 3);
    passed = 0;
    for (int i = 0; i < 10; i++) {
        gw_gcra_check(&g, &tat, now + 3600 * S, &r);
        passed += r.allowed;
    }
    assert_int_equal(passed, 3);
}

/* The store keeps one TAT per key: two keys do not share, one key does. */
static void test_local_store_keys(void **state)
{
    (void)state;
    gw_gcra g;
    gw_gcra_result r;
    gw_rl_local_reset();
    gw_gcra_init(&g, 1, 3600000, 2, 1);
    int a = 0, b = 0;
    for (int i = 0; i < 5; i++) {
        gw_rl_local_check(0xabc, &g, 7 * S, &r);
        a += r.allowed;
        gw_rl_local_check(0xdef, &g, 7 * S, &r);
        b += r.allowed;
    }
    assert_int_equal(a, 2);
    assert_int_equal(b, 2);
    gw_rl_local_reset();
}

/* Many keys: the store grows, then, full of keys still limited, starts a shard over rather
 * than growing without bound (counted as evictions); expired keys are dropped first. */
static void test_local_store_bounded(void **state)
{
    (void)state;
    gw_gcra g;
    gw_gcra_result r;
    gw_rl_local_reset();
    gw_gcra_init(&g, 1, 3600000, 1, 1);
    uint64_t ev0 = gw_rl_local_evictions();
    for (uint64_t k = 1; k <= (uint64_t)GW_RL_LOCAL_SHARDS * GW_RL_LOCAL_SHARD_MAX * 2; k++) {
        gw_rl_local_check(k * 0x9e3779b97f4a7c15ull, &g, 7 * S, &r);
        assert_true(r.allowed);
    }
    assert_true(gw_rl_local_evictions() > ev0);
    /* an hour later every key is whole again: nothing more is evicted while they expire */
    uint64_t ev1 = gw_rl_local_evictions();
    for (uint64_t k = 1; k <= 200000; k++)
        gw_rl_local_check((k + 10000000) * 0x9e3779b97f4a7c15ull, &g, 7 * S + 3601 * S, &r);
    assert_int_equal(gw_rl_local_evictions(), ev1);
    gw_rl_local_reset();
}

/* The headers of an allowed answer count down the burst; the ones of a refused answer say 0;
 * lines that do not fit the caller's buffer are left out whole, never cut. */
static void test_headers(void **state)
{
    (void)state;
    rt_route route = { .id = "users" };
    rt_rate_limit l = { .rate = 10, .per_ms = 60000, .burst = 3 };
    gw_gcra g;
    gw_gcra_init(&g, l.rate, l.per_ms, l.burst, 1);
    uint64_t tat = 0;
    gw_gcra_result r;
    char h[320];
    const char *want[] = { "2;t=6", "1;t=12", "0;t=18", "0;t=18" };
    for (int i = 0; i < 4; i++) {
        gw_gcra_check(&g, &tat, 7 * S, &r);
        assert_int_equal(r.allowed, i < 3);
        size_t n = gw_rl_headers(h, sizeof h, &route, &l, &r);
        assert_int_equal(n, strlen(h));
        char line[64];
        snprintf(line, sizeof line, "RateLimit: \"users\";r=%s\r\n", want[i]);
        assert_non_null(strstr(h, line));
        assert_non_null(strstr(h, "RateLimit-Policy: \"users\";q=10;w=60\r\n"));
        assert_non_null(strstr(h, "X-RateLimit-Limit: 10\r\n"));
        snprintf(line, sizeof line, "X-RateLimit-Remaining: %c\r\n", want[i][0]);
        assert_non_null(strstr(h, line));
    }
    assert_int_equal(gw_rl_headers(h, 40, &route, &l, &r), 0);

    /* byte for byte what one printf of the fields makes, for any values and buffer size */
    uint64_t seed = 99;
    for (int i = 0; i < 2000; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        rt_rate_limit x = { .rate = 1 + (uint32_t)(seed >> 40) % 1000000,
                            .per_ms = 1 + (seed >> 10) % 86400000, .burst = 1 };
        gw_gcra_result y = { .allowed = 1, .remaining = (uint32_t)(seed >> 33),
                             .reset_ns = seed >> (seed & 31) };
        char want[400], got[400];
        uint64_t reset = (y.reset_ns + 999999999ull) / 1000000000ull, w = (x.per_ms + 999) / 1000;
        int k = snprintf(want, sizeof want,
                         "RateLimit-Policy: \"users\";q=%u;w=%llu\r\n"
                         "RateLimit: \"users\";r=%u;t=%llu\r\n"
                         "X-RateLimit-Limit: %u\r\nX-RateLimit-Remaining: %u\r\n"
                         "X-RateLimit-Reset: %llu\r\n",
                         x.rate, (unsigned long long)w, y.remaining, (unsigned long long)reset,
                         x.rate, y.remaining, (unsigned long long)reset);
        size_t cap = (size_t)(seed >> 20) % 300 + 1;
        size_t n = gw_rl_headers(got, cap, &route, &x, &y);
        if ((size_t)k < cap) {
            assert_int_equal(n, (size_t)k);
            assert_string_equal(got, want);
        } else {
            assert_int_equal(n, 0);
        }
    }
}

/* The shared store decides a batch of requests on one key in one script call: each result
 * must be what the sequential algorithm gives the same requests at the same instant. */
static void test_batch_matches_sequential(void **state)
{
    (void)state;
    uint64_t seed = 12345;
    for (int round = 0; round < 20000; round++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t rate = 1 + (uint32_t)(seed >> 33) % 2000, burst = 1 + (uint32_t)(seed >> 45) % 50;
        uint64_t per_ms = 1 + (seed >> 20) % 5000;
        gw_gcra g;
        gw_gcra_init(&g, rate, per_ms, burst, 1);
        /* the store's unit is the microsecond: the same T and tau there */
        uint64_t t_us = per_ms * 1000 / rate, tau_us;
        if (t_us == 0)
            t_us = 1;
        tau_us = t_us * (burst - 1);
        g.emission_ns = t_us * 1000;
        g.tolerance_ns = tau_us * 1000;
        uint64_t now = 1000000000000ull, ahead_us = (seed >> 7) % (tau_us + 3 * t_us + 1);
        uint64_t tat = now + ahead_us * 1000;
        uint32_t n = 1 + (uint32_t)(seed >> 51) % 40, passed = 0;
        for (uint32_t i = 0; i < n; i++) {
            gw_gcra_result want, got;
            gw_gcra_check(&g, &tat, now, &want);
            gw_gcra_batch_result(ahead_us, t_us, tau_us, n, i, &got);
            passed += (uint32_t)want.allowed;
            assert_int_equal(got.allowed, want.allowed);
            assert_int_equal(got.remaining, want.remaining);
            assert_int_equal(got.retry_after_ns, want.retry_after_ns);
            assert_int_equal(got.reset_ns, want.reset_ns);
        }
        assert_int_equal(gw_gcra_batch_passed(ahead_us, t_us, tau_us, n), passed);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_matches_sequential),
        cmocka_unit_test(test_burst_then_rate),
        cmocka_unit_test(test_long_run_exact),
        cmocka_unit_test(test_divisor),
        cmocka_unit_test(test_idle_recovers_burst_only),
        cmocka_unit_test(test_local_store_keys),
        cmocka_unit_test(test_local_store_bounded),
        cmocka_unit_test(test_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
