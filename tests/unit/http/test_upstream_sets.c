/* test_upstream_sets.c — an endpoint set keeps its own definition's TLS settings
 * (http/upstream.h): after a definition change, a connection still open on a retired set
 * starts its handshake with that set's CA, verify and SNI, never the new definition's (which
 * may have turned TLS off, or changed the CA). */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retired_set_keeps_its_tls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
