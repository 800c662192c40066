/* test_deadline.c — the timeout lists of http/deadline.h on a real loop: expiry in deadline
 * order across lists, clear and set again, a list that gets mixed values stays sorted, a
 * timer that wakes up for a cleared head sleeps on, an expiry that sets a new deadline, and
 * the loop closes with no handle left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "http/deadline.h"

typedef struct item {
    gw_timeout t;
    int id;
    int again_ms; /* on expiry: set again for this long in list 0 (0: not) */
} item;

static gw_timeouts T;
static int fired[16], n_fired;

static void on_expire(gw_timeout *t)
{
    item *it = GW_QUEUE_DATA(t, item, t);
    assert_false(gw_timeout_active(t)); /* cleared before the call */
    fired[n_fired++] = it->id;
    if (it->again_ms) {
        int ms = it->again_ms;
        it->again_ms = 0;
        gw_timeout_set(&T, t, 0, (uint64_t)ms);
    }
}

static void run(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT); /* returns once the timer is no longer armed */
}

static void close_all(uv_loop_t *loop)
{
    gw_timeouts_close(&T, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void test_expiry_in_deadline_order_across_lists(void **st)
{
    (void)st;
    uv_loop_t loop;
    uv_loop_init(&loop);
    gw_timeouts_init(&T, &loop, on_expire);
    n_fired = 0;
    item a = { .id = 1 }, b = { .id = 2 }, c = { .id = 3 }, d = { .id = 4 };
    gw_timeout_init(&a.t);
    gw_timeout_init(&b.t);
    gw_timeout_init(&c.t);
    gw_timeout_init(&d.t);
    gw_timeout_set(&T, &a.t, 1, 60);
    gw_timeout_set(&T, &b.t, 0, 20);
    gw_timeout_set(&T, &c.t, 2, 40);
    gw_timeout_set(&T, &d.t, 0, 20);
    gw_timeout_clear(&d.t); /* never fires */
    assert_false(gw_timeout_active(&d.t));
    run(&loop);
    assert_int_equal(n_fired, 3);
    assert_int_equal(fired[0], 2);
    assert_int_equal(fired[1], 3);
    assert_int_equal(fired[2], 1);
    close_all(&loop);
}

static void test_mixed_values_in_one_list_stay_sorted(void **st)
{
    (void)st;
    uv_loop_t loop;
    uv_loop_init(&loop);
    gw_timeouts_init(&T, &loop, on_expire);
    n_fired = 0;
    item a = { .id = 1 }, b = { .id = 2 }, c = { .id = 3 };
    gw_timeout_init(&a.t);
    gw_timeout_init(&b.t);
    gw_timeout_init(&c.t);
    gw_timeout_set(&T, &a.t, 0, 80);
    gw_timeout_set(&T, &b.t, 0, 50);
    gw_timeout_set(&T, &c.t, 0, 10); /* earlier than both: the timer is moved */
    run(&loop);
    assert_int_equal(n_fired, 3);
    assert_int_equal(fired[0], 3);
    assert_int_equal(fired[1], 2);
    assert_int_equal(fired[2], 1);
    close_all(&loop);
}

static void test_cleared_head_and_set_again(void **st)
{
    (void)st;
    uv_loop_t loop;
    uv_loop_init(&loop);
    gw_timeouts_init(&T, &loop, on_expire);
    n_fired = 0;
    item a = { .id = 1 }, b = { .id = 2, .again_ms = 30 };
    gw_timeout_init(&a.t);
    gw_timeout_init(&b.t);
    gw_timeout_set(&T, &a.t, 0, 10);  /* the timer is armed for this one ... */
    gw_timeout_set(&T, &b.t, 0, 40);
    gw_timeout_clear(&a.t);           /* ... which goes: the wake-up finds nothing due */
    gw_timeout_set(&T, &a.t, 1, 100); /* set again, elsewhere, later */
    uint64_t t0 = uv_now(&loop);
    run(&loop);
    /* b at 40, b again (from its own expiry) at ~70, a at 100 */
    assert_int_equal(n_fired, 3);
    assert_int_equal(fired[0], 2);
    assert_int_equal(fired[1], 2);
    assert_int_equal(fired[2], 1);
    assert_true(uv_now(&loop) - t0 >= 100);
    close_all(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expiry_in_deadline_order_across_lists),
        cmocka_unit_test(test_mixed_values_in_one_list_stay_sorted),
        cmocka_unit_test(test_cleared_head_and_set_again),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
