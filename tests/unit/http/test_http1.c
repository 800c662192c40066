/* test_http1.c — header rewriting, chunk framing, dot segments, request ids. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "http/http1.h"
#include "gateway/proxy.h"
#include "http/request_id.h"

#define H(n, v) { GW_SLICE_LIT(n), GW_SLICE_LIT(v) }

static char out[8192];

static gw_fwd default_fwd(void)
{
    gw_fwd f = {
        .method = GW_SLICE_LIT("GET"),
        .target = GW_SLICE_LIT("/users/7?x=1"),
        .host = GW_SLICE_LIT("client.example"),
        .client_host = GW_SLICE_LIT("client.example"),
        .client_ip = "10.0.0.9",
        .proto = "http",
        .request_id = "rid-1",
        .content_length = -1,
        .chunked = 0,
    };
    return f;
}

static void test_request_line_and_forwarding_headers(void **state)
{
    (void)state;
    gw_header h[] = { H("Host", "client.example"), H("Accept", "*/*") };
    gw_fwd f = default_fwd();
    int n = gw_build_upstream_request(h, 2, &f, out, sizeof out);
    assert_true(n > 0);
    out[n] = '\0';
    assert_string_equal(out, "GET /users/7?x=1 HTTP/1.1\r\n"
                             "Host: client.example\r\n"
                             "Accept: */*\r\n"
                             "X-Forwarded-For: 10.0.0.9\r\n"
                             "X-Forwarded-Proto: http\r\n"
                             "X-Forwarded-Host: client.example\r\n"
                             "Via: 1.1 gateway\r\n"
                             "X-Request-Id: rid-1\r\n"
                             "\r\n");
}

/* An allowed upgrade goes as "Connection: upgrade" + "Upgrade: <protocol>", whatever the
 * client's own Connection/Upgrade said (those stay hop-by-hop); the offers are read only
 * when Connection lists "upgrade". */
static void test_upgrade_forwarded_and_offers(void **state)
{
    (void)state;
    gw_header h[] = { H("Host", "a"), H("Connection", "keep-alive, Upgrade"),
                      H("Upgrade", "h2c, WebSocket"), H("Sec-WebSocket-Key", "k==") };
    gw_fwd f = default_fwd();
    f.upgrade = "websocket";
    int n = gw_build_upstream_request(h, 4, &f, out, sizeof out);
    assert_true(n > 0);
    out[n] = '\0';
    assert_non_null(strstr(out, "\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"));
    assert_non_null(strstr(out, "\r\nSec-WebSocket-Key: k==\r\n"));
    assert_null(strstr(out, "h2c"));
    assert_null(strstr(out, "keep-alive"));
    f.upgrade = NULL;
    n = gw_build_upstream_request(h, 4, &f, out, sizeof out);
    out[n] = '\0';
    assert_null(strstr(out, "pgrade"));
    gw_slice o[4];
    assert_int_equal(gw_upgrade_offers(h, 4, o, 4), 2);
    assert_true(gw_slice_eq(o[0], "h2c") && gw_slice_eq(o[1], "WebSocket"));
    gw_header no_conn[] = { H("Host", "a"), H("Connection", "keep-alive"), H("Upgrade", "websocket") };
    assert_int_equal(gw_upgrade_offers(no_conn, 3, o, 4), 0);
    gw_header two[] = { H("Connection", "UPGRADE"), H("Upgrade", " a ,, b/2 "), H("upgrade", "c") };
    assert_int_equal(gw_upgrade_offers(two, 3, o, 2), 2); /* up to MAX */
    assert_true(gw_slice_eq(o[0], "a") && gw_slice_eq(o[1], "b/2"));
}

static void test_hop_by_hop_and_connection_tokens_removed(void **state)
{
    (void)state;
    gw_header h[] = {
        H("Host", "a"), H("Connection", "keep-alive, X-Secret"), H("X-Secret", "s"),
        H("Keep-Alive", "timeout=5"), H("Proxy-Authorization", "basic x"), H("TE", "trailers"),
        H("Trailer", "X"), H("Upgrade", "websocket"), H("Proxy-Connection", "close"),
        H("X-Keep", "yes"), H("Expect", "100-continue"),
    };
    gw_fwd f = default_fwd();
    int n = gw_build_upstream_request(h, (int)(sizeof h / sizeof h[0]), &f, out, sizeof out);
    assert_true(n > 0);
    out[n] = '\0';
    const char *gone[] = { "Connection:", "X-Secret", "Keep-Alive", "Proxy-", "TE:", "Trailer",
                           "Upgrade", "Expect" };
    for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++)
        assert_null(strstr(out, gone[i]));
    assert_non_null(strstr(out, "X-Keep: yes\r\n"));
}

static void test_forwarded_for_and_via_are_appended(void **state)
{
    (void)state;
    gw_header h[] = { H("Host", "a"), H("X-Forwarded-For", "1.2.3.4"), H("X-Forwarded-For", "5.6.7.8"),
                      H("Via", "1.0 edge"), H("X-Forwarded-Proto", "https"), H("X-Request-Id", "old") };
    gw_fwd f = default_fwd();
    int n = gw_build_upstream_request(h, 6, &f, out, sizeof out);
    assert_true(n > 0);
    out[n] = '\0';
    assert_non_null(strstr(out, "X-Forwarded-For: 1.2.3.4, 5.6.7.8, 10.0.0.9\r\n"));
    assert_non_null(strstr(out, "Via: 1.0 edge, 1.1 gateway\r\n"));
    /* replaced, not duplicated */
    assert_non_null(strstr(out, "X-Forwarded-Proto: http\r\n"));
    assert_null(strstr(out, "https"));
    assert_null(strstr(out, "X-Request-Id: old"));
}

static void test_framing_headers_are_replaced(void **state)
{
    (void)state;
    gw_header h[] = { H("Host", "a"), H("Content-Length", "5"), H("Transfer-Encoding", "chunked") };
    gw_fwd f = default_fwd();
    f.content_length = 5;
    int n = gw_build_upstream_request(h, 3, &f, out, sizeof out);
    out[n] = '\0';
    assert_non_null(strstr(out, "Content-Length: 5\r\n"));
    assert_null(strstr(out, "Transfer-Encoding"));
    f.content_length = -1;
    f.chunked = 1;
    n = gw_build_upstream_request(h, 3, &f, out, sizeof out);
    out[n] = '\0';
    assert_non_null(strstr(out, "Transfer-Encoding: chunked\r\n"));
    assert_null(strstr(out, "Content-Length"));
}

static void test_host_rewritten_when_upstream_sets_one(void **state)
{
    (void)state;
    gw_header h[] = { H("Host", "public.example") };
    gw_fwd f = default_fwd();
    f.host = GW_SLICE_LIT("users.internal");
    f.client_host = GW_SLICE_LIT("public.example");
    int n = gw_build_upstream_request(h, 1, &f, out, sizeof out);
    out[n] = '\0';
    assert_non_null(strstr(out, "\r\nHost: users.internal\r\n"));
    assert_non_null(strstr(out, "X-Forwarded-Host: public.example\r\n"));
    assert_null(strstr(out, "Host: public.example\r\n\r\n"));
}

static void test_overflow_reports_minus_one(void **state)
{
    (void)state;
    gw_header h[] = { H("Host", "a") };
    gw_fwd f = default_fwd();
    char small[40];
    assert_int_equal(gw_build_upstream_request(h, 1, &f, small, sizeof small), -1);
}

static void test_response_headers_filtered(void **state)
{
    (void)state;
    gw_header h[] = { H("Content-Type", "application/json"), H("Connection", "close, X-Internal"),
                      H("X-Internal", "1"), H("Content-Length", "10"), H("Transfer-Encoding", "chunked"),
                      H("Date", "x"), H("X-Request-Id", "up"), H("X-Gateway-Upstream", "spoof"),
                      H("Keep-Alive", "1"), H("Set-Cookie", "a=b") };
    int n = gw_build_response_headers(h, (int)(sizeof h / sizeof h[0]), out, sizeof out);
    assert_true(n > 0);
    out[n] = '\0';
    assert_string_equal(out, "Content-Type: application/json\r\nSet-Cookie: a=b\r\n");
}

static void test_request_header_names_classified_exactly(void **state)
{
    (void)state;
    /* every name the builder replaces or drops, in odd case, next to near misses that
     * must pass through untouched */
    gw_header h[] = { H("HOST", "a"), H("te", "trailers"), H("TRAILER", "x"), H("Upgrade", "h2c"),
                      H("proxy-Authorization", "p"), H("EXPECT", "100-continue"),
                      H("x-forwarded-HOST", "spoof"), H("VIA", "1.0 old"), H("Keep-Alive", "1"),
                      H("CONNECTION", "X-Custom"), H("x-custom", "drop me"),
                      H("Hosts", "keep1"), H("Via-Extra", "keep2"), H("Te2", "keep3"),
                      H("Dates", "keep4"), H("Proxy", "keep5"), H("X-Forwarded-Fo", "keep6") };
    gw_fwd f = default_fwd();
    int n = gw_build_upstream_request(h, (int)(sizeof h / sizeof h[0]), &f, out, sizeof out);
    assert_true(n > 0);
    out[n] = '\0';
    for (const char *gone = "te:|TRAILER:|Upgrade:|proxy-Authorization:|EXPECT:|spoof|Keep-Alive:|"
                            "CONNECTION:|x-custom:|HOST: a";
         *gone;) {
        const char *bar = strchr(gone, '|');
        size_t len = bar ? (size_t)(bar - gone) : strlen(gone);
        char needle[40];
        memcpy(needle, gone, len);
        needle[len] = '\0';
        assert_null(strstr(out, needle));
        gone += len + (bar ? 1 : 0);
    }
    assert_non_null(strstr(out, "Via: 1.0 old, 1.1 gateway\r\n"));
    for (int i = 1; i <= 6; i++) {
        char keep[16];
        snprintf(keep, sizeof keep, "keep%d", i);
        assert_non_null(strstr(out, keep));
    }
}

static void test_hop_by_hop_is_case_insensitive(void **state)
{
    (void)state;
    gw_header h[] = { H("connection", "X-FOO") };
    assert_true(gw_is_hop_by_hop(GW_SLICE_LIT("x-foo"), h, 1));
    assert_true(gw_is_hop_by_hop(GW_SLICE_LIT("PROXY-anything"), h, 0));
    assert_false(gw_is_hop_by_hop(GW_SLICE_LIT("x-foo-bar"), h, 1));
    assert_false(gw_is_hop_by_hop(GW_SLICE_LIT("Proxy"), h, 0));
}

static void test_chunk_size_line(void **state)
{
    (void)state;
    char b[24];
    size_t n = gw_chunk_size_line(b, 0);
    assert_int_equal(n, 3);
    assert_memory_equal(b, "0\r\n", 3);
    n = gw_chunk_size_line(b, 255);
    assert_memory_equal(b, "ff\r\n", n);
    n = gw_chunk_size_line(b, 65536);
    assert_memory_equal(b, "10000\r\n", n);
    n = gw_chunk_size_line(b, SIZE_MAX);
    assert_int_equal(n, 18);
}

static void test_put_u64(void **state)
{
    (void)state;
    char b[24];
    assert_int_equal(gw_put_u64(b, 0) - b, 1);
    assert_memory_equal(b, "0", 1);
    assert_int_equal(gw_put_u64(b, 204) - b, 3);
    assert_memory_equal(b, "204", 3);
    assert_int_equal(gw_put_u64(b, 65536) - b, 5);
    assert_memory_equal(b, "65536", 5);
    assert_int_equal(gw_put_u64(b, UINT64_MAX) - b, 20);
    assert_memory_equal(b, "18446744073709551615", 20);
}

static void test_dot_segments(void **state)
{
    (void)state;
    const char *bad[] = { "/api/../admin", "/./x", "/a/..", "/a/%2e%2e/b", "/a/.%2E/b", "/%2e", "/a/." };
    const char *good[] = { "/", "/api/users/1", "/a/...", "/a/.well-known", "/a/..b", "/a/%2e%2e%2e" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_true(gw_path_has_dot_segment(gw_slice_of(bad[i])));
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_false(gw_path_has_dot_segment(gw_slice_of(good[i])));
}

static void test_request_ids(void **state)
{
    (void)state;
    char a[40], b[40];
    gw_request_id_generate(a);
    gw_request_id_generate(b);
    assert_int_equal(strlen(a), 36);
    assert_string_not_equal(a, b);
    assert_int_equal(a[14], '4'); /* version nibble */
    assert_true(gw_request_id_valid(gw_slice_of(a)));
    assert_false(gw_request_id_valid(gw_slice_of("")));
    assert_false(gw_request_id_valid(gw_slice_of("has space")));
    assert_false(gw_request_id_valid(gw_slice_of("new\r\nline")));
    assert_true(gw_request_id_valid(gw_slice_of("Az09-_.:")));
    assert_false(gw_request_id_valid(gw_slice_of("a/b")));
    assert_false(gw_request_id_valid(gw_slice_of("caf\xc3\xa9")));
    char longid[80];
    memset(longid, 'a', 65);
    longid[65] = '\0';
    assert_false(gw_request_id_valid(gw_slice_of(longid)));
}

/* Peer addresses as inet_ntop writes them: every IPv4 octet pattern that matters, IPv6
 * through inet_ntop itself, and a buffer too small gives an empty string, never a cut one. */
static void test_addr_text_matches_inet_ntop(void **state)
{
    (void)state;
    uint64_t seed = 7;
    for (int i = 0; i < 20000; i++) {
        uint8_t a[16];
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        for (int k = 0; k < 16; k++)
            a[k] = (uint8_t)(seed >> (k * 4));
        if (i < 256)
            memset(a, i, 4); /* 0.0.0.0 ... 255.255.255.255 */
        char want[64], got[64];
        int fam = i % 3 == 0 ? AF_INET6 : AF_INET;
        assert_non_null(inet_ntop(fam, a, want, sizeof want));
        gw_addr_text(fam, a, got, sizeof got);
        assert_string_equal(got, want);
    }
    uint8_t v4[4] = { 255, 255, 255, 255 };
    char small[16];
    gw_addr_text(AF_INET, v4, small, sizeof small);
    assert_string_equal(small, "255.255.255.255");
    gw_addr_text(AF_INET, v4, small, 15);
    assert_string_equal(small, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_text_matches_inet_ntop),
        cmocka_unit_test(test_request_line_and_forwarding_headers),
        cmocka_unit_test(test_hop_by_hop_and_connection_tokens_removed),
        cmocka_unit_test(test_forwarded_for_and_via_are_appended),
        cmocka_unit_test(test_framing_headers_are_replaced),
        cmocka_unit_test(test_host_rewritten_when_upstream_sets_one),
        cmocka_unit_test(test_overflow_reports_minus_one),
        cmocka_unit_test(test_response_headers_filtered),
        cmocka_unit_test(test_hop_by_hop_is_case_insensitive),
        cmocka_unit_test(test_chunk_size_line),
        cmocka_unit_test(test_put_u64),
        cmocka_unit_test(test_request_header_names_classified_exactly),
        cmocka_unit_test(test_dot_segments),
        cmocka_unit_test(test_request_ids),
        cmocka_unit_test(test_upgrade_forwarded_and_offers),
    };
    return cmocka_run_group_tests_name("http1", tests, NULL, NULL);
}
