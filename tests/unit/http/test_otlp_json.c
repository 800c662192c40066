/* test_otlp_json.c — the OTLP/HTTP JSON encoding of spans (http/otlp_json.h): the document
 * parses, the shape is the OTLP JSON mapping (hex ids, string nanoseconds, enum numbers),
 * text is escaped, and a large batch grows the buffer. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/otlp_json.h"

static gw_span server_span(void)
{
    gw_span s;
    memset(&s, 0, sizeof s);
    s.kind = GW_SPAN_SERVER;
    s.status = 200;
    strcpy(s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    strcpy(s.span_id, "00f067aa0ba902b7");
    strcpy(s.parent_id, "b7ad6b7169203331");
    strcpy(s.method, "GET");
    strcpy(s.route, "users");
    strcpy(s.upstream, "user-service");
    strcpy(s.peer, "10.0.0.7");
    s.start_ns = 1000;
    s.end_ns = 2500;
    return s;
}

static json_t *parse(const gw_otlp_buf *b)
{
    json_error_t e;
    json_t *doc = json_loadb(b->p, b->len, 0, &e);
    if (!doc)
        fail_msg("not JSON: %s: %.*s", e.text, (int)b->len, b->p);
    return doc;
}

static const char *attr(json_t *span, const char *key, json_int_t *iv)
{
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(span, "attributes"), i, a)
    {
        if (strcmp(json_string_value(json_object_get(a, "key")), key) != 0)
            continue;
        json_t *v = json_object_get(a, "value");
        json_t *sv = json_object_get(v, "stringValue");
        if (sv)
            return json_string_value(sv);
        *iv = strtoll(json_string_value(json_object_get(v, "intValue")), NULL, 10);
        return "";
    }
    return NULL;
}

static void test_shape(void **state)
{
    (void)state;
    gw_span sp[2] = { server_span(), server_span() };
    sp[1].kind = GW_SPAN_CLIENT;
    strcpy(sp[1].span_id, "1111111111111111");
    strcpy(sp[1].parent_id, sp[0].span_id);
    strcpy(sp[1].role, "proxy");
    sp[1].status = 0;
    sp[1].error = 1;
    strcpy(sp[1].error_text, "ECONNECT");
    sp[0].parent_id[0] = '\0'; /* a root span: no parentSpanId */
    gw_otlp_buf b = { 0 };
    /* 1.7e18: a Unix time in 2023, past 2^53 (JSON numbers would lose it: strings) */
    assert_int_equal(gw_otlp_encode(sp, 2, "gw \"edge\"", 1700000000000000000ll, &b), 0);
    json_t *doc = parse(&b);
    json_t *rs = json_array_get(json_object_get(doc, "resourceSpans"), 0);
    json_t *svc = json_array_get(json_object_get(json_object_get(rs, "resource"), "attributes"), 0);
    assert_string_equal(json_string_value(json_object_get(svc, "key")), "service.name");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(svc, "value"), "stringValue")),
        "gw \"edge\"");
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(ss, "scope"), "name")), "gateway");
    json_t *spans = json_object_get(ss, "spans");
    assert_int_equal(json_array_size(spans), 2);
    json_t *s0 = json_array_get(spans, 0), *s1 = json_array_get(spans, 1);
    assert_string_equal(json_string_value(json_object_get(s0, "traceId")), sp[0].trace_id);
    assert_string_equal(json_string_value(json_object_get(s0, "spanId")), sp[0].span_id);
    assert_null(json_object_get(s0, "parentSpanId"));
    assert_string_equal(json_string_value(json_object_get(s0, "name")), "GET users");
    assert_int_equal(json_integer_value(json_object_get(s0, "kind")), 2);
    assert_string_equal(json_string_value(json_object_get(s0, "startTimeUnixNano")),
                        "1700000000000001000");
    assert_string_equal(json_string_value(json_object_get(s0, "endTimeUnixNano")),
                        "1700000000000002500");
    assert_null(json_object_get(s0, "status")); /* unset: not an error */
    json_int_t iv = 0;
    assert_string_equal(attr(s0, "http.request.method", &iv), "GET");
    assert_non_null(attr(s0, "http.response.status_code", &iv));
    assert_int_equal(iv, 200);
    assert_string_equal(attr(s0, "http.route", &iv), "users");
    assert_string_equal(attr(s0, "client.address", &iv), "10.0.0.7");
    assert_string_equal(attr(s0, "gateway.upstream", &iv), "user-service");

    assert_string_equal(json_string_value(json_object_get(s1, "parentSpanId")), sp[0].span_id);
    assert_string_equal(json_string_value(json_object_get(s1, "name")), "GET user-service");
    assert_int_equal(json_integer_value(json_object_get(s1, "kind")), 3);
    json_t *st = json_object_get(s1, "status");
    assert_int_equal(json_integer_value(json_object_get(st, "code")), 2);
    assert_string_equal(json_string_value(json_object_get(st, "message")), "ECONNECT");
    assert_null(attr(s1, "http.response.status_code", &iv)); /* no answer came */
    assert_string_equal(attr(s1, "gateway.role", &iv), "proxy");
    assert_string_equal(attr(s1, "error.type", &iv), "ECONNECT");
    json_decref(doc);
    gw_otlp_buf_free(&b);
}

/* Client-controlled text (the route of a 404 is "", a peer, an upstream name from config
 * are safe, but the method bytes come from the wire) is escaped: the document still parses
 * and says what was sent. */
static void test_escaping_and_empty(void **state)
{
    (void)state;
    gw_span s = server_span();
    strcpy(s.method, "G\"\\\x01\xff");
    s.route[0] = '\0';
    s.upstream[0] = '\0';
    gw_otlp_buf b = { 0 };
    assert_int_equal(gw_otlp_encode(&s, 1, "gateway", 0, &b), 0);
    json_t *doc = parse(&b);
    json_t *sp = json_array_get(
        json_object_get(json_array_get(json_object_get(json_array_get(
                                           json_object_get(doc, "resourceSpans"), 0),
                                                       "scopeSpans"),
                                       0),
                        "spans"),
        0);
    json_int_t iv;
    assert_string_equal(json_string_value(json_object_get(sp, "name")), "G\"\\\x01\xc3\xbf");
    assert_null(attr(sp, "http.route", &iv));
    assert_string_equal(attr(sp, "gateway.upstream", &iv), "gateway");
    json_decref(doc);
    /* no spans: still a valid request */
    assert_int_equal(gw_otlp_encode(NULL, 0, "gateway", 0, &b), 0);
    doc = parse(&b);
    json_decref(doc);
    gw_otlp_buf_free(&b);
}

/* A large batch grows the buffer (the buffer is reused between batches). */
static void test_large_batch(void **state)
{
    (void)state;
    enum { N = 2000 };
    gw_span *sp = calloc(N, sizeof *sp);
    for (int i = 0; i < N; i++) {
        sp[i] = server_span();
        snprintf(sp[i].span_id, sizeof sp[i].span_id, "%016x", i + 1);
    }
    gw_otlp_buf b = { 0 };
    assert_int_equal(gw_otlp_encode(sp, N, "gateway", 0, &b), 0);
    assert_int_equal(gw_otlp_encode(sp, N, "gateway", 0, &b), 0);
    json_t *doc = parse(&b);
    json_t *spans = json_object_get(
        json_array_get(json_object_get(json_array_get(json_object_get(doc, "resourceSpans"), 0),
                                       "scopeSpans"),
                       0),
        "spans");
    assert_int_equal(json_array_size(spans), N);
    assert_string_equal(json_string_value(json_object_get(json_array_get(spans, N - 1), "spanId")),
                        "00000000000007d0");
    json_decref(doc);
    gw_otlp_buf_free(&b);
    free(sp);
}

/* The recording side (http/span.h): nothing without a ring or for an unsampled trace; a full
 * ring refuses and counts; the consumer takes them in order and frees room. */
static void test_ring(void **state)
{
    (void)state;
    assert_null(gw_span_begin(0x01)); /* no ring on this thread */
    gw_span_ring *r = gw_span_ring_new(10); /* rounded up to 16 */
    gw_span_attach(r);
    assert_false(gw_span_enabled(0x00));
    assert_true(gw_span_enabled(0x01));
    assert_null(gw_span_begin(0x00));
    for (int i = 0; i < 20; i++) {
        gw_span *s = gw_span_begin(0x01);
        if (i >= 16) {
            assert_null(s);
            continue;
        }
        assert_non_null(s);
        s->status = (uint16_t)(200 + i);
        gw_span_commit();
    }
    assert_int_equal(atomic_load(&r->dropped), 4);
    gw_span out[8];
    assert_int_equal(gw_span_ring_take(r, out, 8), 8);
    assert_int_equal(out[0].status, 200);
    assert_int_equal(out[7].status, 207);
    assert_non_null(gw_span_begin(0x01)); /* room again */
    gw_span_commit();
    assert_int_equal(gw_span_ring_take(r, out, 8), 8);
    assert_int_equal(gw_span_ring_take(r, out, 8), 1);
    assert_int_equal(out[0].status, 0); /* a begun slot starts cleared */
    gw_span_attach(NULL);
    gw_span_ring_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shape),
        cmocka_unit_test(test_escaping_and_empty),
        cmocka_unit_test(test_large_batch),
        cmocka_unit_test(test_ring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
