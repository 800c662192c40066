/* test_edge.c — the pure checks of http/edge.h, vector by vector: request lines (methods,
 * versions, SP, absolute-form, OPTIONS *, URI length), tokens, Host syntax and comparison,
 * Content-Length range, chunk-size lines and their extensions (rewritten in place). The
 * integration tests (tests/integration/test_edge.py) prove the same rules end to end; these
 * pin each rule to its function. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "http/edge.h"

static int line(const char *s, gw_reqline *out, const char **why)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    return gw_edge_request_line(buf, strlen(buf), 100, out, why);
}

static void assert_slice(gw_slice s, const char *want)
{
    char got[256];
    snprintf(got, sizeof got, "%.*s", (int)s.n, s.p);
    assert_string_equal(got, want);
}

static void test_request_line_valid(void **state)
{
    (void)state;
    gw_reqline r;
    const char *why = NULL;
    assert_int_equal(line("GET /a?b=1 HTTP/1.1", &r, &why), 0);
    assert_slice(r.method, "GET");
    assert_slice(r.origin, "/a?b=1");
    assert_int_equal(r.major, 1);
    assert_int_equal(r.minor, 1);
    assert_int_equal(r.authority.n, 0);

    /* any token method, any case, unchanged */
    assert_int_equal(line("PURGE /x HTTP/1.1", &r, &why), 0);
    assert_slice(r.method, "PURGE");
    assert_int_equal(line("get /x HTTP/1.0", &r, &why), 0);
    assert_slice(r.method, "get");
    assert_int_equal(r.minor, 0);
    assert_int_equal(line("M-SEARCH! /x HTTP/1.1", &r, &why), 0);

    /* a higher minor is accepted (answered as 1.1 by the caller) */
    assert_int_equal(line("GET / HTTP/1.9", &r, &why), 0);
    assert_int_equal(r.minor, 9);

    /* absolute-form: routed on its path, the authority kept */
    assert_int_equal(line("GET http://Example.com:8080/p/q?x HTTP/1.1", &r, &why), 0);
    assert_slice(r.authority, "Example.com:8080");
    assert_slice(r.origin, "/p/q?x");
    assert_int_equal(line("GET http://h HTTP/1.1", &r, &why), 0);
    assert_slice(r.origin, "/");
    assert_int_equal(line("GET http://h?q=1 HTTP/1.1", &r, &why), 0);
    assert_slice(r.origin, "/?q=1"); /* shifted in place to be contiguous */
    assert_slice(r.authority, "h");

    assert_int_equal(line("OPTIONS * HTTP/1.1", &r, &why), 0);
    assert_int_equal(r.asterisk, 1);
}

static void test_request_line_refused(void **state)
{
    (void)state;
    gw_reqline r;
    const char *why = NULL;
    const char *bad400[] = {
        "GET  / HTTP/1.1",   /* two SP */
        "GET /  HTTP/1.1",   /* two SP before the version */
        "GET\t/ HTTP/1.1",   /* HTAB */
        " GET / HTTP/1.1",   /* leading SP */
        "GET / HTTP/1.1 ",   /* trailing SP */
        "GET /",             /* no version */
        "GET / HTTP/1",      /* short version */
        "GET / HTTP/1.x",
        "GET / http/1.1",    /* the version is case-sensitive */
        "G(T / HTTP/1.1",    /* method not a token */
        "/ HTTP/1.1",
        "",
        "GET * HTTP/1.1",    /* * only with OPTIONS */
        "GET http://a@b/ HTTP/1.1", /* userinfo */
        "GET x HTTP/1.1",    /* neither origin- nor absolute-form */
    };
    for (size_t i = 0; i < sizeof bad400 / sizeof *bad400; i++) {
        why = NULL;
        int rc = line(bad400[i], &r, &why);
        if (rc != 400)
            fail_msg("\"%s\": %d, want 400", bad400[i], rc);
        assert_non_null(why);
    }
    assert_int_equal(line("GET / HTTP/2.0", &r, &why), 505);
    assert_int_equal(line("GET / HTTP/0.9", &r, &why), 505);

    char longline[256];
    snprintf(longline, sizeof longline, "GET /%0150d HTTP/1.1", 0);
    assert_int_equal(line(longline, &r, &why), 414); /* max_uri 100 */
}

static void test_token(void **state)
{
    (void)state;
    assert_true(gw_edge_is_token(gw_slice_of("X-Api_Key.1~!#$%&'*+^`|")));
    assert_false(gw_edge_is_token(gw_slice_of("")));
    assert_false(gw_edge_is_token(gw_slice_of("Host ")));
    assert_false(gw_edge_is_token(gw_slice_of("a:b")));
    assert_false(gw_edge_is_token(gw_slice_of("a\"b")));
    assert_false(gw_edge_is_token((gw_slice){ "a\0b", 3 }));
    assert_false(gw_edge_is_token(gw_slice_of("caf\xc3\xa9")));
}

static void test_host(void **state)
{
    (void)state;
    const char *ok[] = { "example.com", "example.com:80", "EXAMPLE.com:65535", "127.0.0.1",
                         "127.0.0.1:8080", "[::1]", "[::1]:443", "a-b_c~d.e", "" };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (!gw_edge_host_valid(gw_slice_of(ok[i])))
            fail_msg("Host \"%s\" refused", ok[i]);
    const char *bad[] = { "a.com,b.com", "user@a.com", "a.com:", "a.com:65536", "a.com:123456",
                          "a.com:8x", "a .com", " a.com", "a.com\t", "[::1", "a/b", "a.com:-1" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (gw_edge_host_valid(gw_slice_of(bad[i])))
            fail_msg("Host \"%s\" accepted", bad[i]);

    assert_true(gw_edge_host_same(gw_slice_of("Example.COM:8080"), gw_slice_of("example.com:8080")));
    assert_false(gw_edge_host_same(gw_slice_of("example.com"), gw_slice_of("example.com:8080")));
    assert_false(gw_edge_host_same(gw_slice_of("a.com"), gw_slice_of("b.com")));
}

static void test_content_length(void **state)
{
    (void)state;
    uint64_t v = 1;
    assert_int_equal(gw_edge_content_length(gw_slice_of("0"), &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(gw_edge_content_length(gw_slice_of("0012"), &v), 0);
    assert_int_equal(v, 12);
    assert_int_equal(gw_edge_content_length(gw_slice_of("9223372036854775807"), &v), 0);
    assert_true(v == INT64_MAX);
    /* 2^63 used to wrap negative and leave the request unframed */
    const char *bad[] = { "9223372036854775808", "18446744073709551616", "-1", "+1", "1,1",
                          "1 ", " 1", "0x10", "", "1e3", "99999999999999999999999" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (gw_edge_content_length(gw_slice_of(bad[i]), &v) != -1)
            fail_msg("Content-Length \"%s\" accepted", bad[i]);
}

static int chunk(const char *in, char *out, size_t out_size)
{
    snprintf(out, out_size, "%s", in);
    return gw_edge_chunk_line(out, strlen(out), 4096);
}

static void test_chunk_line(void **state)
{
    (void)state;
    char b[256];
    assert_int_equal(chunk("5\r\n", b, sizeof b), 1);
    assert_string_equal(b, "5\r\n"); /* no extension: untouched */
    assert_int_equal(chunk("5", b, sizeof b), 0); /* incomplete: more bytes needed */
    assert_int_equal(chunk("5;a", b, sizeof b), 0);

    /* valid extensions, rewritten in place to ";x" with the size zero-padded */
    assert_int_equal(chunk("5 ; a = b\r\n", b, sizeof b), 1);
    assert_string_equal(b, "0000005;x\r\n");
    assert_int_equal(chunk("a;n=\"q\\\"x\"\r\n", b, sizeof b), 1);
    assert_int_equal(strlen(b), strlen("a;n=\"q\\\"x\"\r\n"));
    assert_memory_equal(b + strlen(b) - 4, ";x\r\n", 4);
    assert_int_equal(chunk("1;a;b=c\r\n", b, sizeof b), 1);

    /* malformed extensions */
    const char *bad[] = { "5;\r\n", "5;=b\r\n", "5;a=\r\n", "5;a=\"b\r\n", "5;a b\r\n",
                          "5;a=b c\r\n", "5;a=\x01\r\n" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (chunk(bad[i], b, sizeof b) != -2)
            fail_msg("chunk line \"%s\" not refused as malformed", bad[i]);

    /* over the cap */
    static char big[5000];
    memset(big, 'a', sizeof big - 1);
    big[0] = '5';
    big[1] = ';';
    assert_int_equal(gw_edge_chunk_line(big, sizeof big - 1, 4096), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_line_valid),
        cmocka_unit_test(test_request_line_refused),
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_host),
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_chunk_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
