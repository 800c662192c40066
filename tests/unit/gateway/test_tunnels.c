/* test_tunnels.c — tunnel counts per route and upstream: route ids are compared whole, so a
 * route with a long id shows its tunnels and two long ids sharing a prefix stay apart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/tunnels.h"

typedef struct seen {
    int n;
    int64_t active;
    char upstream[64];
} seen;

static void count(const char *upstream, int64_t active, void *arg)
{
    seen *s = arg;
    s->n++;
    s->active += active;
    strncpy(s->upstream, upstream, sizeof s->upstream - 1);
}

static seen of_route(const char *route)
{
    seen s = { 0 };
    gw_tunnels_of_route(route, count, &s);
    return s;
}

static void test_long_route_ids(void **state)
{
    (void)state;
    char a[201], b[201];
    memset(a, 'r', 200);
    a[200] = '\0';
    memcpy(b, a, sizeof a);
    b[199] = 's'; /* the same first 199 characters */
    gw_tunnel_pair *pa = gw_tunnels_opened(a, "user-service");
    gw_tunnel_pair *pb = gw_tunnels_opened(b, "user-service");
    assert_non_null(pa);
    assert_non_null(pb);
    assert_ptr_not_equal(pa, pb);
    assert_ptr_equal(gw_tunnels_opened(a, "user-service"), pa); /* the same pair again */
    seen s = of_route(a);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.active, 2);
    assert_string_equal(s.upstream, "user-service");
    s = of_route(b);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.active, 1);
    assert_int_equal(of_route("r").n, 0);
    gw_tunnel_stats st = { .reason = GW_TUNNEL_CLIENT_CLOSED };
    gw_tunnels_closed(pa, &st);
    assert_int_equal(of_route(a).active, 1);
    char *text;
    size_t len;
    assert_int_equal(gw_tunnels_metrics_render(&text, &len), 0);
    assert_non_null(strstr(text, b)); /* the metrics' label is the whole id */
    free(text);
}

/* Every reason has its own label; a send timeout on either side is told apart from a close. */
static void test_close_reasons(void **state)
{
    (void)state;
    gw_tunnel_pair *p = gw_tunnels_opened("reasons", "up");
    assert_non_null(p);
    gw_tunnels_closed(p, &(gw_tunnel_stats){ .reason = GW_TUNNEL_UPSTREAM_SEND_TIMEOUT });
    p = gw_tunnels_opened("reasons", "up");
    gw_tunnels_closed(p, &(gw_tunnel_stats){ .reason = GW_TUNNEL_CLIENT_SEND_TIMEOUT });
    p = gw_tunnels_opened("reasons", "up");
    gw_tunnels_closed(p, &(gw_tunnel_stats){ .reason = GW_TUNNEL_UPSTREAM_SEND_TIMEOUT });
    char *text;
    size_t len;
    assert_int_equal(gw_tunnels_metrics_render(&text, &len), 0);
    static const char *const want[] = {
        "{route=\"reasons\",upstream=\"up\",reason=\"client_closed\"} 0\n",
        "{route=\"reasons\",upstream=\"up\",reason=\"upstream_closed\"} 0\n",
        "{route=\"reasons\",upstream=\"up\",reason=\"idle_timeout\"} 0\n",
        "{route=\"reasons\",upstream=\"up\",reason=\"drain\"} 0\n",
        "{route=\"reasons\",upstream=\"up\",reason=\"client_send_timeout\"} 1\n",
        "{route=\"reasons\",upstream=\"up\",reason=\"upstream_send_timeout\"} 2\n",
        "gateway_tunnels_active{route=\"reasons\",upstream=\"up\"} 0\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        if (!strstr(text, want[i]))
            fail_msg("no '%s' in:\n%s", want[i], text);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_long_route_ids),
        cmocka_unit_test(test_close_reasons),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
