/* test_dashboard_stats.c — the dashboard's sampler (gateway/dashboard_stats.h): sides summed
 * over several accumulations per sample, per-second series, windowed figures that stop at
 * GW_DASH_WINDOW, a side appearing after the baseline counting from zero, the cache window,
 * the quantiles, the domain of a route id and a route's share on new services. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "gateway/dashboard_stats.h"

static rt_cut_side side(uint64_t req, uint64_t err)
{
    rt_cut_side s;
    memset(&s, 0, sizeof s);
    s.requests = req;
    s.errors = err;
    s.lat[0] = req; /* all in the first bucket */
    return s;
}

/* One sample with ORDERS' cumulative counters given as two workers' halves. */
static void sample(gw_dash_stats *st, uint64_t req, uint64_t err)
{
    rt_cut_side a = side(req / 2, err / 2), b = side(req - req / 2, err - err / 2);
    gw_dash_stats_begin(st);
    assert_int_equal(gw_dash_stats_accumulate(st, "orders", "legacy", &a), 0);
    assert_int_equal(gw_dash_stats_accumulate(st, "orders", "legacy", &b), 0);
    gw_dash_stats_end(st);
}

static void test_series_and_window(void **state)
{
    (void)state;
    gw_dash_stats *st = calloc(1, sizeof *st);
    assert_non_null(st);
    gw_dash_stats_init(st);
    rt_cut_side w;
    sample(st, 1000, 10); /* the baseline: what came before is not this second's traffic */
    int i = gw_dash_stats_find(st, "orders", "legacy");
    assert_true(i >= 0);
    assert_int_equal(gw_dash_stats_find(st, "orders", "order-service"), -1);
    assert_int_equal(gw_dash_stats_window(st, i, &w), 0); /* no figures from one sample */
    uint64_t total = 1000, errs = 10;
    for (int s = 1; s <= 15; s++) {
        total += 100 * (uint64_t)s;
        errs += (uint64_t)s % 3 == 0 ? 5 : 0;
        sample(st, total, errs);
    }
    /* the window: the last 10 seconds (s = 6..15): 100 * (6 + ... + 15) requests */
    assert_int_equal(gw_dash_stats_window(st, i, &w), GW_DASH_WINDOW);
    assert_int_equal(w.requests, 100 * (6 + 7 + 8 + 9 + 10 + 11 + 12 + 13 + 14 + 15));
    assert_int_equal(w.errors, 5 * 4); /* s = 6, 9, 12, 15 */
    uint32_t req[GW_DASH_SERIES], err[GW_DASH_SERIES];
    gw_dash_stats_series(st, i, req, err);
    assert_int_equal(req[GW_DASH_SERIES - 1], 1500);
    assert_int_equal(req[GW_DASH_SERIES - 15], 100);
    assert_int_equal(req[GW_DASH_SERIES - 16], 0); /* the baseline is not a second of traffic */
    assert_int_equal(err[GW_DASH_SERIES - 1], 5);
    assert_int_equal(err[GW_DASH_SERIES - 2], 0);
    gw_dash_stats_free(st);
    free(st);
}

static void test_new_side_counts_from_zero(void **state)
{
    (void)state;
    gw_dash_stats *st = calloc(1, sizeof *st);
    assert_non_null(st);
    gw_dash_stats_init(st);
    sample(st, 10, 0);
    sample(st, 20, 0);
    /* order-service first answers after the baseline: all its requests are new */
    rt_cut_side l = side(30, 0), t = side(7, 1);
    gw_dash_stats_begin(st);
    gw_dash_stats_accumulate(st, "orders", "legacy", &l);
    gw_dash_stats_accumulate(st, "orders", "order-service", &t);
    gw_dash_stats_end(st);
    rt_cut_side w;
    int i = gw_dash_stats_find(st, "orders", "order-service");
    assert_int_equal(gw_dash_stats_window(st, i, &w), 2);
    assert_int_equal(w.requests, 7);
    assert_int_equal(w.errors, 1);
    assert_int_equal(gw_dash_stats_window(st, gw_dash_stats_find(st, "orders", "legacy"), &w), 2);
    assert_int_equal(w.requests, 20);
    uint32_t req[GW_DASH_SERIES], err[GW_DASH_SERIES];
    gw_dash_stats_series(st, i, req, err);
    assert_int_equal(req[GW_DASH_SERIES - 1], 7);
    assert_int_equal(req[GW_DASH_SERIES - 2], 0);
    /* a counter that went backwards (never should) floors at zero */
    l = side(5, 0);
    gw_dash_stats_begin(st);
    gw_dash_stats_accumulate(st, "orders", "legacy", &l);
    gw_dash_stats_end(st);
    gw_dash_stats_series(st, gw_dash_stats_find(st, "orders", "legacy"), req, err);
    assert_int_equal(req[GW_DASH_SERIES - 1], 0);
    gw_dash_stats_free(st);
    free(st);
}

static void test_cache_window(void **state)
{
    (void)state;
    gw_dash_stats *st = calloc(1, sizeof *st);
    assert_non_null(st);
    gw_dash_stats_init(st);
    uint64_t h, l;
    for (int s = 0; s < 20; s++) {
        gw_dash_stats_begin(st);
        gw_dash_stats_cache(st, 3 * (uint64_t)s, 4 * (uint64_t)s);
        gw_dash_stats_end(st);
    }
    assert_int_equal(gw_dash_stats_cache_window(st, &h, &l), GW_DASH_WINDOW);
    assert_int_equal(h, 30);
    assert_int_equal(l, 40);
    gw_dash_stats_free(st);
    free(st);
}

/* The user cache per side: the window's difference of cumulative counts, two workers' slots
 * summed (the side is added by its first cache figures); a side first seen after the
 * baseline counts from zero; an unknown side has none. */
static void test_side_cache_window(void **state)
{
    (void)state;
    gw_dash_stats *st = calloc(1, sizeof *st);
    assert_non_null(st);
    gw_dash_stats_init(st);
    uint64_t c[GW_SIDE_CACHE__N];
    for (int s = 0; s < 20; s++) {
        gw_dash_stats_begin(st);
        uint64_t w1[GW_SIDE_CACHE__N] = { 2 * (uint64_t)s, 0, (uint64_t)s };
        uint64_t w2[GW_SIDE_CACHE__N] = { (uint64_t)s, 1, 0 };
        gw_dash_stats_side_cache(st, "users", "user-service", w1); /* a new side */
        gw_dash_stats_side_cache(st, "users", "user-service", w2);
        if (s >= 15) { /* first seen after the baseline: all its counts are new (its slot
                        * exists from its first lookup on, so nothing came before) */
            uint64_t late[GW_SIDE_CACHE__N] = { 100 + (uint64_t)s, 0, 0 };
            gw_dash_stats_side_cache(st, "people", "user-service", late);
        }
        gw_dash_stats_end(st);
    }
    int u = gw_dash_stats_find(st, "users", "user-service");
    assert_true(u >= 0);
    assert_int_equal(gw_dash_stats_side_cache_window(st, u, c), GW_DASH_WINDOW);
    assert_int_equal(c[GW_SIDE_CACHE_HIT], 30); /* 3 a second over 10 s */
    assert_int_equal(c[GW_SIDE_CACHE_STALE], 0);
    assert_int_equal(c[GW_SIDE_CACHE_MISS], 10);
    int p = gw_dash_stats_find(st, "people", "user-service");
    assert_true(p >= 0);
    gw_dash_stats_side_cache_window(st, p, c);
    assert_int_equal(c[GW_SIDE_CACHE_HIT], 119); /* from zero: all it has */
    assert_int_equal(gw_dash_stats_side_cache_window(st, 99, c), GW_DASH_WINDOW);
    assert_int_equal(c[GW_SIDE_CACHE_HIT], 0);
    gw_dash_stats_free(st);
    free(st);
}

static void test_quantiles(void **state)
{
    (void)state;
    rt_cut_side s;
    memset(&s, 0, sizeof s);
    assert_true(gw_dash_quantile_ms(&s, 0.5) < 0);
    s.lat[rt_cut_lat_bucket(100)] = 60;   /* 60 fast */
    s.lat[rt_cut_lat_bucket(20000)] = 40; /* 40 slow */
    double fast = (double)rt_cut_lat_bounds_us[rt_cut_lat_bucket(100)] / 1000.0;
    double slow = (double)rt_cut_lat_bounds_us[rt_cut_lat_bucket(20000)] / 1000.0;
    assert_true(gw_dash_quantile_ms(&s, 0.5) == fast);
    assert_true(gw_dash_quantile_ms(&s, 0.6) == fast);
    assert_true(gw_dash_quantile_ms(&s, 0.61) == slow);
    assert_true(gw_dash_quantile_ms(&s, 0.99) == rt_cut_p99_ms(&s));
}

static void test_domain(void **state)
{
    (void)state;
    char d[16];
    gw_dash_domain("orders", d, sizeof d);
    assert_string_equal(d, "orders");
    gw_dash_domain("orders.get", d, sizeof d);
    assert_string_equal(d, "orders");
    gw_dash_domain("users-by-email", d, sizeof d);
    assert_string_equal(d, "users");
    gw_dash_domain("-odd", d, sizeof d);
    assert_string_equal(d, "-odd");
    gw_dash_domain("averyveryverylongdomain.x", d, sizeof d);
    assert_string_equal(d, "averyveryverylo");
}

static void test_new_share(void **state)
{
    (void)state;
    rt_route r;
    memset(&r, 0, sizeof r);
    r.id = "orders";
    r.upstream = "legacy";
    assert_true(gw_dash_new_share(&r, "legacy") == 0.0);
    r.upstream = "order-service";
    assert_true(gw_dash_new_share(&r, "legacy") == 100.0);
    rt_split_side sides[3] = { { "legacy", 0, 90 }, { "order-service", 1, 8 }, { "order-v2", 2, 2 } };
    r.upstream = "legacy";
    r.split = sides;
    r.n_split = 3;
    r.split_total = 100;
    assert_true(gw_dash_new_share(&r, "legacy") == 10.0); /* both new services count */
    sides[0].weight = 0;
    r.split_total = 10;
    assert_true(gw_dash_new_share(&r, "legacy") == 100.0);
    assert_true(gw_dash_new_share(&r, "") == 100.0); /* no legacy upstream named */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_series_and_window),
        cmocka_unit_test(test_new_side_counts_from_zero),
        cmocka_unit_test(test_cache_window),
        cmocka_unit_test(test_side_cache_window),
        cmocka_unit_test(test_quantiles),
        cmocka_unit_test(test_domain),
        cmocka_unit_test(test_new_share),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
