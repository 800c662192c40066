/* test_limits.c — routes/limits.c: a route's "rate_limit" and "max_in_flight", what they
 * become, the exact error for each malformed one, and the round trip through
 * rt_route_to_json (admin edits re-serialize the table). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routes/route_edit.h"
#include "routes/route_table.h"

static const char *const UPSTREAMS[] = { "legacy" };

/* A table with one route "r" whose extra fields are EXTRA (single quotes for double). */
static rt_table *parse_route(const char *extra, char *err, size_t errlen)
{
    char doc[1024];
    snprintf(doc, sizeof doc, "{'routes':[{'id':'r','path':'/a','upstream':'legacy'%s%s}]}",
             *extra ? "," : "", extra);
    for (char *p = doc; *p; p++)
        if (*p == '\'')
            *p = '"';
    return rt_table_parse(doc, strlen(doc), "x.json", UPSTREAMS, 1, err, errlen);
}

static void test_defaults(void **state)
{
    (void)state;
    char err[512];
    rt_table *t = parse_route("'rate_limit':{'rate':100}", err, sizeof err);
    assert_non_null(t);
    const rt_route *r = rt_table_route(t, 0);
    assert_int_equal(r->rate_limit.rate, 100);
    assert_int_equal(r->rate_limit.per_ms, 1000);
    assert_int_equal(r->rate_limit.burst, 100); /* a full window at once */
    assert_int_equal(r->rate_limit.key, RT_RL_KEY_CLIENT_IP);
    assert_int_equal(r->max_in_flight, 0);
    rt_table_unref(t);
    t = parse_route("", err, sizeof err);
    assert_int_equal(rt_table_route(t, 0)->rate_limit.rate, 0);
    rt_table_unref(t);
}

static void test_full_and_round_trip(void **state)
{
    (void)state;
    char err[512];
    rt_table *t = parse_route("'rate_limit':{'rate':5,'per':'90s','burst':2,"
                              "'key':'header:X-Api-Key'},'max_in_flight':7",
                              err, sizeof err);
    assert_non_null(t);
    const rt_route *r = rt_table_route(t, 0);
    assert_int_equal(r->rate_limit.per_ms, 90000);
    assert_int_equal(r->rate_limit.burst, 2);
    assert_int_equal(r->rate_limit.key, RT_RL_KEY_HEADER);
    assert_string_equal(r->rate_limit.key_header, "x-api-key");
    assert_int_equal(r->max_in_flight, 7);
    json_t *j = rt_route_to_json(r);
    char *s = json_dumps(json_object_get(j, "rate_limit"), JSON_SORT_KEYS | JSON_COMPACT);
    assert_string_equal(s, "{\"burst\":2,\"key\":\"header:x-api-key\",\"per\":\"90s\",\"rate\":5}");
    assert_int_equal(json_integer_value(json_object_get(j, "max_in_flight")), 7);
    free(s);
    json_decref(j);
    rt_table_unref(t);
    t = parse_route("'rate_limit':{'rate':1,'per':'1500ms','key':'route'}", err, sizeof err);
    assert_non_null(t);
    assert_int_equal(rt_table_route(t, 0)->rate_limit.key, RT_RL_KEY_ROUTE);
    j = rt_route_to_json(rt_table_route(t, 0));
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "rate_limit"), "per")),
                        "1500ms");
    json_decref(j);
    rt_table_unref(t);
}

static void expect_error(const char *extra, const char *want)
{
    char err[512];
    rt_table *t = parse_route(extra, err, sizeof err);
    if (t) {
        rt_table_unref(t);
        fail_msg("accepted: %s", extra);
    }
    assert_string_equal(err, want);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("'rate_limit':{'rate':0}",
                 "x.json: routes[0].rate_limit.rate: must be an integer from 1 to 1000000");
    expect_error("'rate_limit':{'rate':'10'}",
                 "x.json: routes[0].rate_limit.rate: must be an integer from 1 to 1000000");
    expect_error("'rate_limit':{'per':'1s'}", "x.json: routes[0].rate_limit.rate: missing");
    expect_error("'rate_limit':{'rate':1,'per':'1 s'}",
                 "x.json: routes[0].rate_limit.per: must be a duration like \"500ms\", \"1s\", "
                 "\"1m\", \"1h\" (at most 24h)");
    expect_error("'rate_limit':{'rate':1,'per':'25h'}",
                 "x.json: routes[0].rate_limit.per: must be a duration like \"500ms\", \"1s\", "
                 "\"1m\", \"1h\" (at most 24h)");
    expect_error("'rate_limit':{'rate':1,'burst':0}",
                 "x.json: routes[0].rate_limit.burst: must be an integer from 1 to 1000000");
    expect_error("'rate_limit':{'rate':1,'key':'cookie:a'}",
                 "x.json: routes[0].rate_limit.key: unknown key kind \"cookie:a\" (client_ip, "
                 "route or header:NAME)");
    expect_error("'rate_limit':{'rate':1,'key':'header:a b'}",
                 "x.json: routes[0].rate_limit.key: \"a b\": not a valid header name");
    expect_error("'rate_limit':{'rate':1,'window':1}",
                 "x.json: routes[0].rate_limit.window: unknown field");
    expect_error("'rate_limit':5", "x.json: routes[0].rate_limit: must be an object");
    expect_error("'max_in_flight':0",
                 "x.json: routes[0].max_in_flight: must be an integer from 1 to 1000000");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full_and_round_trip),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
