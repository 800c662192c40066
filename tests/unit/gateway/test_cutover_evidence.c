/* test_cutover_evidence.c — the evidence behind cutover plans: per (route, upstream) side
 * counters summed over workers (requests, 5xx, latency buckets, fallbacks, shadow
 * comparisons), the mismatch examples ring, and the sliding window over snapshots. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "gateway/cutover_window.h"
#include "gateway/metrics.h"

static void test_side_counters_sum_over_workers(void **state)
{
    (void)state;
    gw_metrics *w[2] = { calloc(1, sizeof(gw_metrics)), calloc(1, sizeof(gw_metrics)) };
    assert_non_null(w[0]);
    assert_non_null(w[1]);
    gw_metrics_request(w[0], "orders", "order-service", 200, 1.0);
    gw_metrics_request(w[0], "orders", "order-service", 503, 2.0);
    gw_metrics_request(w[1], "orders", "order-service", 200, 1.0);
    gw_metrics_request(w[1], "orders", "legacy", 200, 1.0);
    gw_metrics_request(w[1], "users", "order-service", 500, 1.0);  /* another route */
    gw_metrics_request(w[1], "-", "order-service", 500, 1.0);      /* no route: not counted */
    gw_metrics_side_fallback(w[0], "orders", "order-service");
    gw_metrics_side_shadow(w[1], "orders", "order-service", 1);
    gw_metrics_side_shadow(w[1], "orders", "order-service", 0);
    rt_cut_side s;
    gw_metrics_side_read(w, 2, "orders", "order-service", &s);
    assert_int_equal(s.requests, 3);
    assert_int_equal(s.errors, 1);
    assert_int_equal(s.fallbacks, 1);
    assert_int_equal(s.shadow_compared, 2);
    assert_int_equal(s.shadow_mismatched, 1);
    assert_int_equal(s.lat[rt_cut_lat_bucket(1000)], 2);
    assert_int_equal(s.lat[rt_cut_lat_bucket(2000)], 1);
    gw_metrics_side_read(w, 2, "orders", "legacy", &s);
    assert_int_equal(s.requests, 1);
    gw_metrics_side_read(w, 2, "nothing", "legacy", &s);
    assert_int_equal(s.requests, 0);
    free(w[0]);
    free(w[1]);
}

static void test_mismatch_ring(void **state)
{
    (void)state;
    uint64_t seq = 0;
    gw_mismatch_sample out[GW_MISMATCH_RING];
    int n = gw_metrics_mismatches_since(&seq, out, GW_MISMATCH_RING);
    assert_int_equal(n, 0);
    gw_metrics_mismatch_sample("orders", "order-service", "rid-1", "body differs at \"total\"");
    gw_metrics_mismatch_sample("orders", "order-service", "rid-2", "status 200 vs 500");
    n = gw_metrics_mismatches_since(&seq, out, GW_MISMATCH_RING);
    assert_int_equal(n, 2);
    assert_string_equal(out[0].request_id, "rid-1");
    assert_string_equal(out[1].diff, "status 200 vs 500");
    assert_int_equal(gw_metrics_mismatches_since(&seq, out, GW_MISMATCH_RING), 0);
    /* more than the ring holds: the oldest are gone, the newest come in order */
    for (int i = 0; i < GW_MISMATCH_RING + 10; i++)
        gw_metrics_mismatch_sample("orders", "x", "r", "d");
    n = gw_metrics_mismatches_since(&seq, out, GW_MISMATCH_RING);
    assert_int_equal(n, GW_MISMATCH_RING);
    for (int i = 1; i < n; i++)
        assert_int_equal(out[i].seq, out[i - 1].seq + 1);
}

static void test_window(void **state)
{
    (void)state;
    gw_cut_window *w = malloc(sizeof *w);
    assert_non_null(w);
    gw_cut_window_reset(w);
    rt_cut_evidence e;
    assert_int_equal(gw_cut_window_evidence(w, 0, &e), -1);
    rt_cut_side l = { 0 }, t = { 0 };
    /* one snapshot a second for longer than the ring holds; 10 target requests a second */
    for (int i = 0; i < GW_CUT_RING + 50; i++) {
        t.requests = 10u * (unsigned)i;
        l.requests = 100u * (unsigned)i;
        gw_cut_window_push(w, 1000LL * i, &l, &t);
    }
    int64_t now = 1000LL * (GW_CUT_RING + 49);
    assert_int_equal(gw_cut_window_evidence(w, now - 30000, &e), 0);
    assert_int_equal(e.window_ms, 30000);
    assert_int_equal(e.target.requests, 300);
    assert_int_equal(e.legacy.requests, 3000);
    /* between two snapshots: the next one at or after it */
    assert_int_equal(gw_cut_window_evidence(w, now - 29500, &e), 0);
    assert_int_equal(e.target.requests, 290);
    /* older than the ring: from the oldest held */
    assert_int_equal(gw_cut_window_evidence(w, 0, &e), 0);
    assert_int_equal(e.window_ms, 1000ull * (GW_CUT_RING - 1));
    /* newer than the newest: nothing yet */
    assert_int_equal(gw_cut_window_evidence(w, now + 1, &e), -1);
    assert_int_equal(e.target.requests, 0);
    /* counters that went down (a restart) count as zero, never as a huge number */
    t.requests = 0;
    gw_cut_window_push(w, now + 1000, &l, &t);
    assert_int_equal(gw_cut_window_evidence(w, now, &e), 0);
    assert_int_equal(e.target.requests, 0);
    free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_side_counters_sum_over_workers),
        cmocka_unit_test(test_mismatch_ring),
        cmocka_unit_test(test_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
