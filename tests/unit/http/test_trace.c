/* test_trace.c — W3C traceparent parsing and formatting, tracestate passing, and the trace
 * headers in the request head sent upstream. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "http/http1.h"
#include "http/trace.h"

#define H(n, v) { GW_SLICE_LIT(n), GW_SLICE_LIT(v) }
#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define PID "00f067aa0ba902b7"

static int parses(const char *v)
{
    char t[33], p[17];
    uint8_t f;
    return gw_traceparent_parse(gw_slice_of(v), t, p, &f) == 0;
}

static void test_valid_version_00(void **state)
{
    (void)state;
    char t[33], p[17];
    uint8_t f = 0xee;
    assert_int_equal(gw_traceparent_parse(gw_slice_of("00-" TID "-" PID "-01"), t, p, &f), 0);
    assert_string_equal(t, TID);
    assert_string_equal(p, PID);
    assert_int_equal(f, 1);
    assert_int_equal(gw_traceparent_parse(gw_slice_of(" 00-" TID "-" PID "-00\t"), t, p, &f), 0);
    assert_int_equal(f, 0);
}

static void test_invalid_versions(void **state)
{
    (void)state;
    assert_false(parses("ff-" TID "-" PID "-01"));   /* ff is forbidden */
    assert_false(parses("0g-" TID "-" PID "-01"));   /* not hex */
    assert_false(parses("0A-" TID "-" PID "-01"));   /* uppercase */
    assert_false(parses("00-" TID "-" PID "-01-x")); /* 00 has exactly four fields */
    assert_false(parses("00-" TID "-" PID "-011"));
}

static void test_future_versions(void **state)
{
    (void)state;
    char t[33], p[17];
    uint8_t f;
    /* a later version: the 00 fields are read, what follows a '-' is ignored */
    assert_int_equal(gw_traceparent_parse(gw_slice_of("cc-" TID "-" PID "-01-what-the-future"),
                                          t, p, &f), 0);
    assert_string_equal(t, TID);
    assert_int_equal(f, 1);
    assert_true(parses("01-" TID "-" PID "-01"));
    assert_false(parses("cc-" TID "-" PID "-01x")); /* more, but not after a '-' */
    assert_false(parses("cc-" TID "-" PID "-0"));   /* shorter than 00's fields */
}

static void test_all_zero_ids(void **state)
{
    (void)state;
    assert_false(parses("00-00000000000000000000000000000000-" PID "-01"));
    assert_false(parses("00-" TID "-0000000000000000-01"));
    assert_true(parses("00-00000000000000000000000000000001-0000000000000001-01"));
}

static void test_uppercase_and_bad_hex(void **state)
{
    (void)state;
    assert_false(parses("00-4BF92F3577B34DA6A3CE929D0E0E4736-" PID "-01"));
    assert_false(parses("00-" TID "-00F067AA0BA902B7-01"));
    assert_false(parses("00-" TID "-" PID "-0A"));
    assert_false(parses("00-" TID "-" PID "-zz"));
    assert_false(parses("00-" TID "-" PID "+01"));
    assert_false(parses("00_" TID "-" PID "-01"));
}

static void test_wrong_lengths(void **state)
{
    (void)state;
    assert_false(parses(""));
    assert_false(parses("00"));
    assert_false(parses("00-" TID "0-" PID "-01"));        /* 33-digit trace-id */
    assert_false(parses("00-4bf92f3577b34da6a3ce929d0e0e473-" PID "-01")); /* 31 */
    assert_false(parses("00-" TID "-" PID "0-01"));        /* 17-digit parent-id */
    assert_false(parses("00-" TID "-00f067aa0ba902b-01"));  /* 15 */
    assert_false(parses("00-" TID "-" PID "-1"));
    gw_slice none = { NULL, 0 };
    char t[33], p[17];
    uint8_t f;
    assert_int_equal(gw_traceparent_parse(none, t, p, &f), -1);
}

static int lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return strlen(s) == n;
}

static void test_begin_continues_or_starts(void **state)
{
    (void)state;
    gw_trace t;
    gw_header ok[] = { H("Host", "a"), H("traceparent", "00-" TID "-" PID "-00") };
    gw_trace_begin(&t, ok, 2);
    assert_int_equal(t.origin, GW_TRACE_CONTINUED);
    assert_string_equal(t.trace_id, TID);
    assert_string_equal(t.parent_id, PID);
    assert_int_equal(t.flags, 0); /* not sampled stays not sampled */
    assert_true(lower_hex(t.span_id, 16));
    assert_string_not_equal(t.span_id, PID);

    gw_header bad[] = { H("TraceParent", "00-" TID "-" PID "-01-extra") };
    gw_trace_begin(&t, bad, 1);
    assert_int_equal(t.origin, GW_TRACE_STARTED);
    assert_string_not_equal(t.trace_id, TID);
    assert_true(lower_hex(t.trace_id, 32));
    assert_true(lower_hex(t.span_id, 16));
    assert_string_equal(t.parent_id, "");
    assert_int_equal(t.flags, GW_TRACE_SAMPLED);

    gw_header two[] = { H("traceparent", "00-" TID "-" PID "-01"),
                        H("traceparent", "00-" TID "-" PID "-01") };
    gw_trace_begin(&t, two, 2);
    assert_int_equal(t.origin, GW_TRACE_STARTED);

    /* only the sampled bit of the flags is passed on */
    gw_header flags[] = { H("traceparent", "00-" TID "-" PID "-ff") };
    gw_trace_begin(&t, flags, 1);
    assert_int_equal(t.flags, 1);
}

static void test_child_has_new_parent_id(void **state)
{
    (void)state;
    gw_trace t;
    gw_header h[] = { H("traceparent", "00-" TID "-" PID "-01") };
    gw_trace_begin(&t, h, 1);
    char a[GW_TRACEPARENT_LEN + 1], b[GW_TRACEPARENT_LEN + 1], span[17];
    gw_trace_child(&t, a, span);
    gw_trace_child(&t, b, NULL);
    assert_int_equal(strlen(a), GW_TRACEPARENT_LEN);
    assert_true(parses(a));
    assert_memory_equal(a, "00-" TID "-", 36);
    assert_memory_equal(a + 52, "-01", 3);
    assert_memory_equal(a + 36, span, 16);
    assert_memory_not_equal(a + 36, PID, 16);
    assert_memory_not_equal(a + 36, b + 36, 16); /* one span per upstream request */
}

static void test_tracestate(void **state)
{
    (void)state;
    gw_trace t;
    char out[GW_TRACESTATE_MAX + 1];
    gw_header h[] = { H("traceparent", "00-" TID "-" PID "-01"), H("tracestate", "congo=t61rcWkgMzE"),
                      H("Accept", "*/*"), H("Tracestate", " rojo=00f067aa0ba902b7 ,, gw=x ") };
    gw_trace_begin(&t, h, 4);
    assert_int_equal(gw_trace_state(&t, h, 4, NULL, out, sizeof out),
                     strlen("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,gw=x"));
    assert_string_equal(out, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,gw=x");
    /* the shadow mark goes first; our key's old member is dropped */
    gw_trace_state(&t, h, 4, GW_TRACE_MARK_SHADOW, out, sizeof out);
    assert_string_equal(out, "gw=shadow,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
    /* whole members only */
    char small[24];
    gw_trace_state(&t, h, 4, NULL, small, sizeof small);
    assert_string_equal(small, "congo=t61rcWkgMzE");
    /* a trace started here passes no tracestate: the client's belongs to another trace */
    gw_header nt[] = { H("traceparent", "garbage"), H("tracestate", "congo=t61rcWkgMzE") };
    gw_trace_begin(&t, nt, 2);
    assert_int_equal(gw_trace_state(&t, nt, 2, NULL, out, sizeof out), 0);
    assert_string_equal(out, "");
    gw_trace_state(&t, nt, 2, GW_TRACE_MARK_SHADOW, out, sizeof out);
    assert_string_equal(out, "gw=shadow");
}

static void test_ctx_lines(void **state)
{
    (void)state;
    gw_trace t;
    gw_trace_ctx c;
    char lines[GW_TRACE_LINES_MAX];
    gw_header h[] = { H("traceparent", "00-" TID "-" PID "-00"), H("tracestate", "a=1, b=2") };
    gw_trace_begin(&t, h, 2);
    gw_trace_ctx_from(&c, &t, h, 2);
    size_t n = gw_trace_ctx_lines(&c, lines, NULL);
    assert_int_equal(n, strlen(lines));
    assert_memory_equal(lines, "traceparent: 00-" TID "-", 13 + 36);
    assert_string_equal(lines + 13 + 52, "-00\r\ntracestate: a=1,b=2\r\n");
    assert_int_equal(gw_trace_ctx_lines(NULL, lines, NULL), 0);
    assert_string_equal(lines, "");
}

static void test_upstream_head_replaces_trace_headers(void **state)
{
    (void)state;
    static char out[4096];
    gw_header h[] = { H("Host", "c"), H("traceparent", "00-" TID "-" PID "-01"),
                      H("tracestate", "congo=1"), H("Accept", "*/*") };
    gw_trace t;
    gw_trace_begin(&t, h, 4);
    gw_fwd f = {
        .method = GW_SLICE_LIT("GET"), .target = GW_SLICE_LIT("/x"), .host = GW_SLICE_LIT("up"),
        .client_ip = "10.0.0.1", .proto = "http", .request_id = "r", .content_length = -1,
        .trace = &t,
    };
    int n = gw_build_upstream_request(h, 4, &f, out, sizeof out - 1);
    assert_true(n > 0);
    out[n] = '\0';
    assert_non_null(strstr(out, "\r\ntraceparent: 00-" TID "-"));
    assert_null(strstr(out, PID)); /* the client's parent-id is replaced by our child span */
    assert_non_null(strstr(out, "\r\ntracestate: congo=1\r\n"));
    const char *first = strstr(out, "traceparent");
    assert_null(strstr(first + 1, "traceparent"));
    f.trace_mark = GW_TRACE_MARK_SHADOW;
    n = gw_build_upstream_request(h, 4, &f, out, sizeof out - 1);
    out[n] = '\0';
    assert_non_null(strstr(out, "\r\ntracestate: gw=shadow,congo=1\r\n"));
    /* without a trace, the headers pass as they came */
    f.trace = NULL;
    n = gw_build_upstream_request(h, 4, &f, out, sizeof out - 1);
    out[n] = '\0';
    assert_non_null(strstr(out, "\r\ntraceparent: 00-" TID "-" PID "-01\r\n"));
}

/* New traces are sampled with the configured ratio (default: all); a continued trace keeps
 * the client's flag whatever the ratio; the ctx lines hand out the span they made. */
static void test_sample_ratio(void **state)
{
    (void)state;
    gw_trace t;
    int sampled = 0;
    gw_trace_set_sample_ratio(0.0);
    for (int i = 0; i < 100; i++) {
        gw_trace_start(&t);
        sampled += t.flags & GW_TRACE_SAMPLED;
    }
    assert_int_equal(sampled, 0);
    gw_header h = { GW_SLICE_LIT("traceparent"),
                    GW_SLICE_LIT("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") };
    gw_trace_begin(&t, &h, 1);
    assert_int_equal(t.flags, GW_TRACE_SAMPLED);
    gw_trace_set_sample_ratio(0.25);
    sampled = 0;
    for (int i = 0; i < 4000; i++) {
        gw_trace_start(&t);
        sampled += t.flags & GW_TRACE_SAMPLED;
    }
    assert_in_range(sampled, 800, 1200); /* 1000 expected; 6+ sigma either side */
    gw_trace_set_sample_ratio(1.0);
    sampled = 0;
    for (int i = 0; i < 100; i++) {
        gw_trace_start(&t);
        sampled += t.flags & GW_TRACE_SAMPLED;
    }
    assert_int_equal(sampled, 100);
    gw_trace_ctx c;
    char lines[GW_TRACE_LINES_MAX], span[17];
    gw_trace_ctx_from(&c, &t, NULL, 0);
    gw_trace_ctx_lines(&c, lines, span);
    assert_int_equal(strlen(span), 16);
    assert_memory_equal(lines + 13 + 36, span, 16); /* "traceparent: 00-<32>-" then the span */
    gw_trace_ctx_lines(NULL, lines, span);
    assert_string_equal(span, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_version_00),
        cmocka_unit_test(test_invalid_versions),
        cmocka_unit_test(test_future_versions),
        cmocka_unit_test(test_all_zero_ids),
        cmocka_unit_test(test_uppercase_and_bad_hex),
        cmocka_unit_test(test_wrong_lengths),
        cmocka_unit_test(test_begin_continues_or_starts),
        cmocka_unit_test(test_child_has_new_parent_id),
        cmocka_unit_test(test_tracestate),
        cmocka_unit_test(test_ctx_lines),
        cmocka_unit_test(test_upstream_head_replaces_trace_headers),
        cmocka_unit_test(test_sample_ratio),
    };
    return cmocka_run_group_tests_name("trace", tests, NULL, NULL);
}
