/* test_breaker_live.c — a live upstream change reaches the composition legs' breaker of that
 * upstream (cmp_worker_upstream_changed): the new failures/cooldown settings apply, the
 * state is kept. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "composers/worker_int.h"
#include "gateway/config.h"
#include "http/upstream.h"

static void test_breaker_takes_new_settings_keeps_state(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    gw_upstream_conf c;
    gw_config_upstream_defaults(&c);
    snprintf(c.name, sizeof c.name, "svc");
    c.breaker_failures = 2;
    c.breaker_cooldown_ms = 100;
    gw_upstream ups[2];
    gw_upstream_init(&ups[0], &loop, &c);
    gw_upstream_init(&ups[1], &loop, &c);
    cmp_conf conf = { .cache = { .lru_entries = 16, .ttl_ms = 1000 } };
    cmp_worker *w = cmp_worker_new(&loop, NULL, &conf, ups, 2, NULL);
    assert_non_null(w);
    assert_int_equal(w->breakers[0].threshold, 2);
    cmp_breaker_failure(&w->breakers[0], 1);
    cmp_breaker_failure(&w->breakers[0], 1);
    assert_int_equal(w->breakers[0].state, CMP_BREAKER_OPEN);

    c.breaker_failures = 7;
    c.breaker_cooldown_ms = 9000;
    assert_int_equal(gw_upstream_reconfigure(&ups[0], &c), 0);
    cmp_worker_upstream_changed(w, 0);
    assert_int_equal(w->breakers[0].threshold, 7);
    assert_int_equal(w->breakers[0].cooldown_ms, 9000);
    assert_int_equal(w->breakers[0].state, CMP_BREAKER_OPEN); /* kept */
    assert_int_equal(w->breakers[1].threshold, 2);            /* the other one untouched */
    cmp_worker_upstream_changed(w, 5);                         /* out of range: ignored */
    cmp_worker_upstream_changed(NULL, 0);

    cmp_worker_close(w);
    uv_run(&loop, UV_RUN_DEFAULT);
    cmp_worker_free(w);
    gw_upstream_free(&ups[0]);
    gw_upstream_free(&ups[1]);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_breaker_takes_new_settings_keeps_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
