/* test_upstream_sets.c — an endpoint set keeps its own definition (http/upstream.h): after a
 * definition change, a connection still open on a retired set starts its handshake with that
 * set's CA, verify and SNI, never the new definition's (which may have turned TLS off, or
 * changed the CA), and its timeouts, pool size and down time are that set's too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "gateway/config.h"
#include "http/upstream.h"

static void test_retired_set_keeps_its_tls(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    gw_upstream_conf a, b;
    gw_config_upstream_defaults(&a);
    snprintf(a.name, sizeof a.name, "svc");
    snprintf(a.endpoints[0].address, sizeof a.endpoints[0].address, "127.0.0.1:1");
    a.n_endpoints = 1;
    a.tls = 1;
    a.tls_verify = 0;
    snprintf(a.tls_server_name, sizeof a.tls_server_name, "a.internal");
    b = a;
    b.tls = 0;
    b.tls_server_name[0] = '\0';

    gw_upstream up;
    gw_upstream_init(&up, &loop, &a);
    gw_endpoint *old = &up.endpoints[0];
    assert_non_null(gw__endpoint_tls_ctx(old));
    old->n_conns = 1; /* a connection still open: the set is retired, not freed */
    assert_int_equal(gw_upstream_reconfigure(&up, &b), 0);
    assert_int_equal(gw_upstream_retired_count(&up), 1);
    assert_int_equal(gw__endpoint_upstream_conf(old)->tls, 1);
    assert_string_equal(gw__endpoint_upstream_conf(old)->tls_server_name, "a.internal");
    assert_non_null(gw__endpoint_tls_ctx(old));
    assert_int_equal(gw__endpoint_upstream_conf(&up.endpoints[0])->tls, 0);
    assert_null(gw__endpoint_tls_ctx(&up.endpoints[0]));
    old->n_conns = 0;
    gw__endpoint_released(old);
    assert_int_equal(gw_upstream_retired_count(&up), 0);
    gw_upstream_free(&up);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_retired_set_keeps_its_timeouts(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    gw_upstream_conf a, b;
    gw_config_upstream_defaults(&a);
    snprintf(a.name, sizeof a.name, "svc");
    snprintf(a.endpoints[0].address, sizeof a.endpoints[0].address, "127.0.0.1:1");
    a.n_endpoints = 1;
    a.down_ms = 1000;
    a.read_timeout_ms = 111;
    a.pool_max_idle = 7;
    b = a;
    b.down_ms = 60000;
    b.read_timeout_ms = 222;
    b.pool_max_idle = 0;

    gw_upstream up;
    gw_upstream_init(&up, &loop, &a);
    gw_endpoint *old = &up.endpoints[0];
    old->n_conns = 1;
    assert_int_equal(gw_upstream_reconfigure(&up, &b), 0);
    assert_int_equal(gw_upstream_retired_count(&up), 1);
    /* what upstream_conn.c reads for a connection of each set */
    assert_int_equal(old->def->read_timeout_ms, 111);
    assert_int_equal(old->def->pool_max_idle, 7);
    assert_int_equal(up.endpoints[0].def->read_timeout_ms, 222);
    /* a failure on the old connection takes that endpoint down for its own definition's
     * down_ms, not the new one's */
    uv_update_time(&loop);
    uint64_t now = uv_now(&loop);
    gw_endpoint_mark_down(old);
    assert_true(old->down_until_ms >= now + 1000 && old->down_until_ms < now + 2000);
    gw_endpoint_mark_down(&up.endpoints[0]);
    assert_true(up.endpoints[0].down_until_ms >= now + 60000);
    old->n_conns = 0;
    gw__endpoint_released(old);
    assert_int_equal(gw_upstream_retired_count(&up), 0);
    gw_upstream_free(&up);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retired_set_keeps_its_tls),
        cmocka_unit_test(test_retired_set_keeps_its_timeouts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
