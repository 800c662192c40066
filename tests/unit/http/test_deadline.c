/* test_deadline.c — the timeout lists of http/deadline.h on a real loop: expiry in deadline
 * order across lists, clear and set again, a list that gets mixed values stays sorted, a
 * timer that wakes up for a cleared head sleeps on, an expiry that sets a new deadline, and
 * the loop closes with no handle left. The lazy per-connection deadline with a wake-up
 * (gw_deadline_wake, an upgraded upstream connection's 0 ms delivery on the timer that also
 * holds its send timeout): the wake comes at once and the deadline still expires on time. */
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

/* ---- gw_deadline with gw_deadline_wake ---------------------------------------------- */

typedef struct dl_probe {
    gw_deadline d;
    uv_timer_t t;
    uint64_t t0;
    int calls;
    int expired[8];
    uint64_t at[8]; /* ms after t0 */
    uint64_t set_in_first_ms; /* the first callback sets the deadline this far (0: not) */
} dl_probe;

static void dl_on_timer(uv_timer_t *t)
{
    dl_probe *p = t->data;
    int e = gw_deadline_expired(&p->d, t, dl_on_timer);
    p->expired[p->calls] = e;
    p->at[p->calls] = uv_now(t->loop) - p->t0;
    if (p->calls++ == 0 && p->set_in_first_ms)
        gw_deadline_set(&p->d, t, dl_on_timer, p->set_in_first_ms);
}

static void dl_init(uv_loop_t *loop, dl_probe *p)
{
    memset(p, 0, sizeof *p);
    uv_loop_init(loop);
    uv_timer_init(loop, &p->t);
    p->t.data = p;
    p->t0 = uv_now(loop);
}

static void dl_close(uv_loop_t *loop, dl_probe *p)
{
    uv_close((uv_handle_t *)&p->t, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* An armed deadline, then a wake-up: the callback comes at once and finds the deadline not
 * due (it re-arms the timer for it); a later deadline set meanwhile does not move the timer
 * off the wake it set again; it wakes at the old deadline, finds it moved, sleeps on, and
 * expires at the new one. Nothing after that (the loop ends). */
static void test_wake_keeps_an_armed_deadline(void **st)
{
    (void)st;
    uv_loop_t loop;
    dl_probe p;
    dl_init(&loop, &p);
    p.set_in_first_ms = 200;
    gw_deadline_set(&p.d, &p.t, dl_on_timer, 100);
    gw_deadline_wake(&p.d, &p.t, dl_on_timer);
    assert_true(gw_deadline_active(&p.d));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(p.calls, 3);
    assert_int_equal(p.expired[0], 0);
    assert_true(p.at[0] < 90); /* the wake-up, not the deadline (slack for a loaded box) */
    assert_int_equal(p.expired[1], 0);
    assert_true(p.at[1] >= 100); /* the first deadline's wake-up: moved later, sleeps on */
    assert_int_equal(p.expired[2], 1);
    assert_true(p.at[2] >= 200 && p.at[2] >= p.at[1]);
    assert_false(gw_deadline_active(&p.d));
    dl_close(&loop, &p);
}

/* A wake-up with the deadline cleared before it comes: one callback, not expired, and the
 * timer is not set again (the 100 ms it was armed for is gone with the wake). */
static void test_wake_after_clear_delivers_only(void **st)
{
    (void)st;
    uv_loop_t loop;
    dl_probe p;
    dl_init(&loop, &p);
    gw_deadline_set(&p.d, &p.t, dl_on_timer, 100);
    gw_deadline_wake(&p.d, &p.t, dl_on_timer);
    gw_deadline_clear(&p.d);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(p.calls, 1);
    assert_int_equal(p.expired[0], 0);
    assert_true(p.at[0] < 90);
    dl_close(&loop, &p);
}

/* A deadline set while a wake-up is pending does not move the timer off it: the wake comes
 * first (0 ms), then the deadline on time. */
static void test_deadline_set_during_a_wake_expires_on_time(void **st)
{
    (void)st;
    uv_loop_t loop;
    dl_probe p;
    dl_init(&loop, &p);
    gw_deadline_wake(&p.d, &p.t, dl_on_timer);
    gw_deadline_set(&p.d, &p.t, dl_on_timer, 50);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(p.calls, 2);
    assert_int_equal(p.expired[0], 0);
    assert_true(p.at[0] < 45);
    assert_int_equal(p.expired[1], 1);
    assert_true(p.at[1] >= 50);
    dl_close(&loop, &p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expiry_in_deadline_order_across_lists),
        cmocka_unit_test(test_mixed_values_in_one_list_stay_sorted),
        cmocka_unit_test(test_cleared_head_and_set_again),
        cmocka_unit_test(test_wake_keeps_an_armed_deadline),
        cmocka_unit_test(test_wake_after_clear_delivers_only),
        cmocka_unit_test(test_deadline_set_during_a_wake_expires_on_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
