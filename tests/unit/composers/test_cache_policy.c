/* test_cache_policy.c — composers/cache_policy: Cache-Control directives, what may be
 * stored and for how long, and the checks on stored header blocks. Pure functions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "composers/cache_policy.h"

#define NOW 1796385600 /* Fri, 04 Dec 2026 12:00:00 GMT */

static cmp_cache_policy parse(const char *h)
{
    cmp_cache_policy p;
    cmp_cache_policy_parse(h, strlen(h), &p);
    return p;
}

static uint32_t ttl_of(const char *h, uint32_t route_ttl)
{
    cmp_cache_policy p = parse(h);
    return cmp_cache_policy_ttl(&p, route_ttl, NOW);
}

static void test_no_headers_keep_the_route_ttl(void **state)
{
    (void)state;
    cmp_cache_policy p;
    cmp_cache_policy_parse(NULL, 0, &p);
    assert_int_equal(cmp_cache_policy_ttl(&p, 60000, NOW), 60000);
    assert_int_equal(ttl_of("ETag: \"x\"\r\nContent-Type: application/json\r\n", 60000), 60000);
    assert_int_equal(ttl_of("Cache-Control: public\r\n", 60000), 60000);
}

static void test_never_stored(void **state)
{
    (void)state;
    const char *never[] = {
        "Cache-Control: no-store\r\n",
        "Cache-Control: public, NO-STORE, max-age=60\r\n",
        "Cache-Control: max-age=60\r\nCache-Control: no-store\r\n", /* a second line */
        "Cache-Control: Private\r\n",
        "Cache-Control: private=\"Set-Cookie\", max-age=60\r\n",
        "Cache-Control:   max-age=60 ,  private  \r\n",
        "Set-Cookie: a=1\r\n",
        "set-cookie: a=1\r\nCache-Control: public, max-age=600\r\n",
        "Vary: *\r\n",
        "Vary: Accept, * \r\n",
        "Cache-Control: no-cache\r\n",
        "Cache-Control: max-age=0\r\n",
        "Cache-Control: max-age=abc\r\n", /* malformed: stale */
        "Cache-Control: max-age\r\n",
        "Cache-Control: s-maxage=0, max-age=600\r\n",
    };
    for (size_t i = 0; i < sizeof never / sizeof *never; i++) {
        if (ttl_of(never[i], 60000) != 0)
            fail_msg("stored: %s", never[i]);
    }
}

static void test_directive_names_in_values_do_not_count(void **state)
{
    (void)state;
    /* "no-store" inside a quoted value or as part of another name is no directive */
    assert_int_equal(ttl_of("Cache-Control: community=\"no-store, private\"\r\n", 60000), 60000);
    assert_int_equal(ttl_of("Cache-Control: x-no-store, privateish\r\n", 60000), 60000);
    assert_int_equal(ttl_of("Vary: Accept-Encoding\r\n", 60000), 60000);
    assert_int_equal(ttl_of("X-Cache-Control: no-store\r\n", 60000), 60000);
}

static void test_max_age_caps(void **state)
{
    (void)state;
    assert_int_equal(ttl_of("Cache-Control: max-age=5\r\n", 60000), 5000);
    assert_int_equal(ttl_of("Cache-Control: public, max-age=\"7\"\r\n", 60000), 7000);
    assert_int_equal(ttl_of("Cache-Control: max-age=600\r\n", 60000), 60000); /* never above */
    assert_int_equal(ttl_of("Cache-Control: max-age=99999999999999999999\r\n", 60000), 60000);
    /* s-maxage wins over max-age, both ways */
    assert_int_equal(ttl_of("Cache-Control: max-age=600, s-maxage=2\r\n", 60000), 2000);
    assert_int_equal(ttl_of("Cache-Control: max-age=2, s-maxage=30\r\n", 60000), 30000);
    /* two max-age: the smaller */
    assert_int_equal(ttl_of("Cache-Control: max-age=30\r\nCache-Control: max-age=3\r\n", 60000),
                     3000);
    cmp_cache_policy p = parse("Cache-Control: MAX-AGE=42 , S-MAXAGE=9\r\n");
    assert_int_equal(p.max_age, 42);
    assert_int_equal(p.s_maxage, 9);
}

/* Expires only counts without max-age / s-maxage; anything not an HTTP-date is the past. */
static void test_expires(void **state)
{
    (void)state;
    assert_int_equal(ttl_of("Expires: Fri, 04 Dec 2026 12:00:30 GMT\r\n", 60000), 30000);
    assert_int_equal(ttl_of("Expires: Friday, 04-Dec-26 12:00:10 GMT\r\n", 60000), 10000);
    assert_int_equal(ttl_of("Expires: Fri Dec  4 12:00:05 2026\r\n", 60000), 5000);
    assert_int_equal(ttl_of("Expires: Sat, 05 Dec 2026 12:00:00 GMT\r\n", 60000), 60000);
    const char *past[] = { "Expires: 0\r\n", "Expires: -1\r\n", "Expires: \r\n",
                           "Expires: Fri, 04 Dec 2026 12:00:00 GMT\r\n",
                           "Expires: Thu, 01 Jan 1970 00:00:00 GMT\r\n",
                           "Expires: Fri, 04 Dec 2026 12:00:30 GMT trailing\r\n",
                           "Expires: Sat, 05 Dec 2026 12:00:00 GMT\r\nExpires: 0\r\n" };
    for (size_t i = 0; i < sizeof past / sizeof *past; i++)
        if (ttl_of(past[i], 60000) != 0)
            fail_msg("stored: %s", past[i]);
    /* max-age wins over Expires, both ways */
    assert_int_equal(ttl_of("Expires: 0\r\nCache-Control: max-age=20\r\n", 60000), 20000);
    assert_int_equal(ttl_of("Cache-Control: max-age=20\r\nExpires: Fri, 04 Dec 2026 12:00:05 GMT\r\n",
                            60000), 20000);
}

static void test_headers_valid(void **state)
{
    (void)state;
    const char *ok[] = { "", "ETag: \"x\"\r\n", "Content-Type: text/html\r\nVary: Accept\r\n",
                         "location:/a\r\n" };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (!cmp_headers_valid(ok[i], strlen(ok[i])))
            fail_msg("refused: %s", ok[i]);
    const char *bad[] = { "ETag: x", "ETag: x\n", "ETag: x\r", "ETag x\r\n", ": x\r\n",
                          "X-Evil: 1\r\n", "Content-Length: 3\r\n", "ETag: a\nb\r\n",
                          "E Tag: x\r\n" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (cmp_headers_valid(bad[i], strlen(bad[i])))
            fail_msg("accepted: %s", bad[i]);
    assert_false(cmp_headers_valid("ETag: a\0b\r\n", 11));
}

static void test_headers_has_and_without(void **state)
{
    (void)state;
    const char *h = "ETag: \"a\"\r\nSet-Cookie: a=1\r\nVary: X\r\nset-cookie: b=2\r\n";
    size_t n = strlen(h);
    assert_true(cmp_headers_has(h, n, "SET-COOKIE"));
    assert_true(cmp_headers_has(h, n, "vary"));
    assert_false(cmp_headers_has(h, n, "Location"));
    assert_false(cmp_headers_has(NULL, 0, "ETag"));
    char out[128];
    size_t w = cmp_headers_without(h, n, "Set-Cookie", out);
    assert_int_equal(w, strlen("ETag: \"a\"\r\nVary: X\r\n"));
    assert_memory_equal(out, "ETag: \"a\"\r\nVary: X\r\n", w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_headers_keep_the_route_ttl),
        cmocka_unit_test(test_never_stored),
        cmocka_unit_test(test_directive_names_in_values_do_not_count),
        cmocka_unit_test(test_max_age_caps),
        cmocka_unit_test(test_expires),
        cmocka_unit_test(test_headers_valid),
        cmocka_unit_test(test_headers_has_and_without),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
