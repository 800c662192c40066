/* test_tls_sni.c — the pure parts of TLS: SNI name matching (exact, then wildcard, then
 * none: the caller's default), ALPN selection, ticket key derivation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "http/gw_errors.h"
#include "http/tls.h"
#include "http/tls_sni.h"

static int lookup(const gw_sni_table *t, const char *host)
{
    return gw_sni_lookup(t, host, strlen(host));
}

static void test_exact_then_wildcard_then_none(void **state)
{
    (void)state;
    gw_sni_table t = { 0 };
    assert_int_equal(gw_sni_add(&t, "example.com", 0), 0);
    assert_int_equal(gw_sni_add(&t, "*.example.com", 1), 0);
    assert_int_equal(gw_sni_add(&t, "api.example.com", 2), 0);
    assert_int_equal(gw_sni_add(&t, "Other.Test", 3), 0);
    assert_int_equal(lookup(&t, "example.com"), 0);
    assert_int_equal(lookup(&t, "api.example.com"), 2);   /* exact beats the wildcard */
    assert_int_equal(lookup(&t, "www.example.com"), 1);   /* wildcard */
    assert_int_equal(lookup(&t, "WWW.Example.COM"), 1);   /* case-insensitive */
    assert_int_equal(lookup(&t, "www.example.com."), 1);  /* trailing dot */
    assert_int_equal(lookup(&t, "a.b.example.com"), -1);  /* one label only */
    assert_int_equal(lookup(&t, ".example.com"), -1);     /* the label must not be empty */
    assert_int_equal(lookup(&t, "other.test"), 3);
    assert_int_equal(lookup(&t, "example.org"), -1);
    assert_int_equal(lookup(&t, "com"), -1);
    assert_int_equal(lookup(&t, ""), -1);
    assert_int_equal(gw_sni_lookup(&t, NULL, 0), -1);
    gw_sni_free(&t);
}

static void test_first_certificate_keeps_a_name(void **state)
{
    (void)state;
    gw_sni_table t = { 0 };
    assert_int_equal(gw_sni_add(&t, "a.test", 0), 0);
    assert_int_equal(gw_sni_add(&t, "A.TEST", 5), 0);
    assert_int_equal(gw_sni_add(&t, "*.a.test", 1), 0);
    assert_int_equal(gw_sni_add(&t, "*.a.test", 6), 0);
    assert_int_equal(t.n, 2);
    assert_int_equal(lookup(&t, "a.test"), 0);
    assert_int_equal(lookup(&t, "x.a.test"), 1);
    gw_sni_free(&t);
}

static void test_invalid_names_refused(void **state)
{
    (void)state;
    gw_sni_table t = { 0 };
    assert_int_equal(gw_sni_add(&t, "", 0), GW_EINVAL);
    assert_int_equal(gw_sni_add(&t, "*.", 0), GW_EINVAL);
    assert_int_equal(gw_sni_add(&t, "a b", 0), GW_EINVAL);
    assert_int_equal(gw_sni_add(&t, "a*.test", 0), GW_EINVAL);
    assert_int_equal(gw_sni_add(&t, "x/y", 0), GW_EINVAL);
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(gw_sni_add(&t, longname, 0), GW_EINVAL);
    assert_int_equal(t.n, 0);
    gw_sni_free(&t);
}

static void test_many_names_grow(void **state)
{
    (void)state;
    gw_sni_table t = { 0 };
    char name[32];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "host%d.test", i);
        assert_int_equal(gw_sni_add(&t, name, i), 0);
    }
    assert_int_equal(lookup(&t, "host0.test"), 0);
    assert_int_equal(lookup(&t, "host99.test"), 99);
    gw_sni_free(&t);
}

static void test_alpn_our_preference_wins(void **state)
{
    (void)state;
    static const unsigned char ours[] = "\x08http/1.1\x02h2";
    static const unsigned char offer_h2_first[] = "\x02h2\x08http/1.1";
    static const unsigned char offer_other[] = "\x06spdy/3\x03foo";
    static const unsigned char offer_bad[] = "\x09http/1.1"; /* length past the end */
    const unsigned char *out = NULL;
    unsigned char outlen = 0;
    assert_int_equal(gw_tls_alpn_select(ours, sizeof ours - 1, offer_h2_first,
                                        sizeof offer_h2_first - 1, &out, &outlen), 1);
    assert_int_equal(outlen, 8);
    assert_memory_equal(out, "http/1.1", 8);
    assert_int_equal(gw_tls_alpn_select(ours, sizeof ours - 1, offer_other,
                                        sizeof offer_other - 1, &out, &outlen), 0);
    assert_int_equal(gw_tls_alpn_select(ours, sizeof ours - 1, offer_bad,
                                        sizeof offer_bad - 1, &out, &outlen), 0);
}

static void test_ticket_keys_per_period(void **state)
{
    (void)state;
    unsigned char secret[32], other[32];
    memset(secret, 7, sizeof secret);
    memset(other, 8, sizeof other);
    unsigned char n1[16], a1[32], h1[32], n2[16], a2[32], h2[32];
    gw_tls_ticket_keys(secret, 100, n1, a1, h1);
    gw_tls_ticket_keys(secret, 100, n2, a2, h2);
    /* the same secret and period give the same keys: instances sharing a file agree */
    assert_memory_equal(n1, n2, 16);
    assert_memory_equal(a1, a2, 32);
    assert_memory_equal(h1, h2, 32);
    /* a new period, or another secret, gives other keys */
    gw_tls_ticket_keys(secret, 101, n2, a2, h2);
    assert_memory_not_equal(n1, n2, 16);
    assert_memory_not_equal(a1, a2, 32);
    gw_tls_ticket_keys(other, 100, n2, a2, h2);
    assert_memory_not_equal(n1, n2, 16);
    assert_memory_not_equal(h1, h2, 32);
    /* the three keys of one period differ from each other */
    assert_memory_not_equal(a1, h1, 32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_then_wildcard_then_none),
        cmocka_unit_test(test_first_certificate_keeps_a_name),
        cmocka_unit_test(test_invalid_names_refused),
        cmocka_unit_test(test_many_names_grow),
        cmocka_unit_test(test_alpn_our_preference_wins),
        cmocka_unit_test(test_ticket_keys_per_period),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
