/* test_cache_value.c — composers/cache_value: stored values of the user cache, version 2
 * written and read back, version 1 (older gateways) read, and every malformed or foreign
 * value refused. Pure functions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "composers/cache_value.h"

static int parse(const char *v, cmp_value *out)
{
    return cmp_value_parse(v, strlen(v), out);
}

static void test_round_trip(void **state)
{
    (void)state;
    const char h[] = "ETag: \"e\"\r\nCache-Control: max-age=5\r\n";
    const char b[] = "{\"id\":1}";
    cmp_value in = { 200, 1764800000123456ULL, 5000, h, sizeof h - 1, b, sizeof b - 1 }, out;
    size_t n;
    char *v = cmp_value_format(&in, &n);
    assert_non_null(v);
    assert_memory_equal(v, "v2 200 1764800000123456 5000 37\n", 32);
    assert_int_equal(cmp_value_parse(v, n, &out), 0);
    assert_int_equal(out.status, 200);
    assert_true(out.fetched_at == in.fetched_at);
    assert_int_equal(out.fresh_ms, 5000);
    assert_int_equal(out.hlen, sizeof h - 1);
    assert_memory_equal(out.hdrs, h, out.hlen);
    assert_int_equal(out.len, sizeof b - 1);
    assert_memory_equal(out.body, b, out.len);
    free(v);

    /* no headers, empty body, a 404, fresh 0 (a route ttl of 0 with a stale window) */
    cmp_value e = { 404, 7, 0, NULL, 0, NULL, 0 };
    v = cmp_value_format(&e, &n);
    assert_non_null(v);
    assert_int_equal(cmp_value_parse(v, n, &out), 0);
    assert_int_equal(out.status, 404);
    assert_int_equal(out.fresh_ms, 0);
    assert_int_equal(out.hlen, 0);
    assert_int_equal(out.len, 0);
    free(v);
}

static void test_version_1(void **state)
{
    (void)state;
    cmp_value out;
    assert_int_equal(parse("200 1764800000123456\n{\"old\":true}", &out), 0);
    assert_int_equal(out.status, 200);
    assert_int_equal(out.fresh_ms, -1);
    assert_int_equal(out.hlen, 0);
    assert_int_equal(out.len, 12);
    assert_memory_equal(out.body, "{\"old\":true}", 12);
    assert_int_equal(parse("404 1\n", &out), 0);
    assert_int_equal(out.len, 0);
}

static void test_refused(void **state)
{
    (void)state;
    const char *bad[] = {
        "", "200", "200 1", "v2 200 1 5 0", "302 1\nx", "v2 302 1 5 0\n", "v2 200 1 5 9\n{}",
        "v2 200 -1 5 0\n{}", "-200 1\n{}", "200 -1\n{}", "v2 200 1 -5 0\n{}", "v2  200 1 5 0\n",
        "v2 200 1 5 0 \n", " 200 1\n", "200 1 2\n", "v3 200 1 5 0\n", "v2 200 1 5\n",
        "v2 200 1 5 0 0\n", "v2 200 1 4294967296 0\n", "200 99999999999999999999\n",
        "v2 2OO 1 5 0\n",
        "v2 200 1 5 11\nX-Evil: 1\r\n{}",     /* a header the gateway does not keep */
        "v2 200 1 5 15\nSet-Cookie: a\r\n{}", /* never stored */
        "v2 200 1 5 7\nETag: x{}",            /* no CRLF */
        "v2 200 1 5 9\nETag: \nx\r\n",        /* LF inside */
        "v2 200 1 5 15\nS",                  /* header bytes past the end, rest < 9 */
        "v2 200 1 5 2\nS",
        "200 1 and a very long first line that never ends before the sixty-four byte cap\n{}",
    };
    cmp_value out;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (parse(bad[i], &out) == 0)
            fail_msg("accepted: %s", bad[i]);
    assert_int_equal(cmp_value_parse(NULL, 0, &out), -1);
    /* a leading zero is still a number: "0200" is 200 (the version 1 reader took it too) */
    assert_int_equal(parse("0200 1\n{}", &out), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_version_1),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
