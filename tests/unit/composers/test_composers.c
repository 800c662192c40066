/* test_composers.c — the composition engine's pure parts: JSON validity check, URL
 * templates, composition spec validation, circuit breaker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <string.h>

#include "composers/breaker.h"
#include "composers/json_check.h"
#include "composers/spec.h"
#include "composers/template.h"

static int valid(const char *s) { return cmp_json_valid(s, strlen(s)); }

static void test_json_check_accepts_values(void **state)
{
    (void)state;
    const char *ok[] = { "{}", "[]", " {\"a\":[1,2.5,-3e4,true,false,null,\"x\\u00e9\\n\"]} ",
                         "\"s\"", "0", "-0.1E+2", "{\"a\":{\"b\":{\"c\":[]}}}", "[\"\\\\\",\"\\/\"]" };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_true(valid(ok[i]));
}

static void test_json_check_rejects_broken(void **state)
{
    (void)state;
    const char *bad[] = { "", "{", "{\"broken\": ", "[1,]", "{\"a\":1,}", "{'a':1}", "01", "1.",
                          "-", "tru", "nul", "\"abc", "\"a\\x\"", "\"\\u12g4\"", "{} {}", "[1 2]",
                          "{\"a\" 1}", "\"tab\tin\"", "+1", ".5" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (valid(bad[i]))
            fail_msg("accepted %s", bad[i]);
    }
}

static void test_json_check_depth_limit(void **state)
{
    (void)state;
    char deep[1200];
    memset(deep, '[', 600);
    memset(deep + 600, ']', 600);
    deep[1200 - 1] = ']';
    assert_false(cmp_json_valid(deep, 1200)); /* 600 deep: over the limit, no stack blow-up */
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    assert_true(cmp_json_valid(deep, 200));
}

static cmp_spec *parse(const char *doc, char *err)
{
    return cmp_spec_parse(doc, strlen(doc), "c.json", err, 512);
}

static const char *GOOD =
    "{\"compositions\":[{\"id\":\"od\",\"path\":\"/api/orders/{id}/details\",\"deadline_ms\":500,"
    "\"legs\":[{\"name\":\"order\",\"url\":\"/api/orders/{id}\",\"required\":true,\"timeout_ms\":900},"
    "{\"name\":\"user\",\"url\":\"/api/users/{order.user_id}\"},"
    "{\"name\":\"shipment\",\"url\":\"/api/orders/{id}/shipment\",\"after\":[\"order\"]}]}]}";

static void test_spec_parses_dependencies_and_clamps_timeouts(void **state)
{
    (void)state;
    char err[512];
    cmp_spec *s = parse(GOOD, err);
    assert_non_null(s);
    const cmp_composition *c = &s->comps[0];
    assert_int_equal(c->n_legs, 3);
    assert_int_equal(c->legs[0].deps, 0);
    assert_int_equal(c->legs[1].deps, 1u << 0); /* from {order.user_id} */
    assert_int_equal(c->legs[2].deps, 1u << 0); /* from "after" */
    assert_int_equal(c->legs[0].timeout_ms, 500); /* never beyond the deadline */
    assert_true(c->legs[0].required);
    cmp_params p;
    assert_ptr_equal(cmp_spec_match(s, GW_SLICE_LIT("GET"), GW_SLICE_LIT("/api/orders/77/details"), &p), c);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.values[0].n, 2);
    assert_null(cmp_spec_match(s, GW_SLICE_LIT("POST"), GW_SLICE_LIT("/api/orders/77/details"), &p));
    assert_null(cmp_spec_match(s, GW_SLICE_LIT("GET"), GW_SLICE_LIT("/api/orders/77"), &p));
    assert_null(cmp_spec_match(s, GW_SLICE_LIT("GET"), GW_SLICE_LIT("/api/orders//details"), &p));
    cmp_spec_free(s);
}

static void test_spec_errors_name_the_field(void **state)
{
    (void)state;
    struct { const char *doc, *msg; } cases[] = {
        { "{\"compositions\":[{\"id\":\"a\",\"path\":\"/x/{id}\",\"legs\":[{\"name\":\"l\",\"url\":\"/y/{nope}\"}]}]}",
          "c.json: compositions[0].legs[0].url: {nope} is not a parameter of the composition's path" },
        { "{\"compositions\":[{\"id\":\"a\",\"path\":\"/x\",\"legs\":[{\"name\":\"l\",\"url\":\"/y/{ghost.id}\"}]}]}",
          "c.json: compositions[0].legs[0].url: refers to an unknown leg in {ghost.id}" },
        { "{\"compositions\":[{\"id\":\"a\",\"path\":\"/x\",\"legs\":[{\"name\":\"a\",\"url\":\"/{b.x}\"},{\"name\":\"b\",\"url\":\"/{a.x}\"}]}]}",
          "c.json: compositions[0].legs: dependency cycle between legs" },
        { "{\"compositions\":[{\"id\":\"a\",\"path\":\"/x\",\"legs\":[]}]}",
          "c.json: compositions[0].legs: required: 1 to 16 legs" },
        { "{\"compositions\":[{\"id\":\"a\",\"path\":\"x\",\"legs\":[{\"name\":\"l\",\"url\":\"/y\"}]}]}",
          "c.json: compositions[0].path: required: literal and {param} segments, starting with '/'" },
        { "{\"compositions\":[{\"id\":\"a\",\"path\":\"/x\",\"legs\":[{\"name\":\"l\",\"url\":\"/y\",\"colour\":1}]}]}",
          "c.json: compositions[0].legs[0]: unknown field \"colour\"" },
        { "{\"compositions\":[{\"id\":\"a\",\"path\":\"/x\",\"legs\":[{\"name\":\"l\",\"url\":\"/y\",\"timeout_ms\":0}]}]}",
          "c.json: compositions[0].legs[0]: timeout_ms: must be an integer from 1 to 3600000" },
        { "{\"compositions\":[{\"id\":\"a\",\"path\":\"/x\",\"legs\":[{\"name\":\"l\",\"url\":\"/y\"},{\"name\":\"l\",\"url\":\"/z\"}]}]}",
          "c.json: compositions[0].legs[1]: name: duplicate leg \"l\"" },
        { "{\"compositions\":[{\"id\":\"a\",\"path\":\"/x\",\"max_in_flight\":0,\"legs\":[{\"name\":\"l\",\"url\":\"/y\"}]}]}",
          "c.json: compositions[0].max_in_flight: must be an integer from 1 to 1000000" },
        { "[1]", "c.json: (root): must be an object" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "";
        cmp_spec *s = parse(cases[i].doc, err);
        assert_null(s);
        assert_string_equal(err, cases[i].msg);
    }
}

static void test_template_expands_params_and_leg_fields(void **state)
{
    (void)state;
    char err[512], out[256];
    cmp_spec *s = parse(GOOD, err);
    assert_non_null(s);
    const cmp_composition *c = &s->comps[0];
    cmp_params p = { 1, { GW_SLICE_LIT("id") }, { GW_SLICE_LIT("a b/../c") } };
    json_t *legs[3] = { json_pack("{s:s, s:{s:i}}", "user_id", "u?1&x=2", "nested", "n", 42), NULL, NULL };
    /* parameters and leg fields are percent-encoded: they cannot add segments or a query */
    assert_int_equal(cmp_expand("/api/orders/{id}", &p, c->legs, legs, 3, out, sizeof out), 26);
    assert_string_equal(out, "/api/orders/a%20b%2F..%2Fc");
    assert_true(cmp_expand("/api/users/{order.user_id}", &p, c->legs, legs, 3, out, sizeof out) > 0);
    assert_string_equal(out, "/api/users/u%3F1%26x%3D2");
    assert_true(cmp_expand("/n/{order.nested.n}", &p, c->legs, legs, 3, out, sizeof out) > 0);
    assert_string_equal(out, "/n/42");
    /* missing field, leg without an answer, buffer too small */
    assert_int_equal(cmp_expand("/{order.missing}", &p, c->legs, legs, 3, out, sizeof out), -1);
    assert_int_equal(cmp_expand("/{user.id}", &p, c->legs, legs, 3, out, sizeof out), -1);
    assert_int_equal(cmp_expand("/api/orders/{id}", &p, c->legs, legs, 3, out, 8), -1);
    json_decref(legs[0]);
    cmp_spec_free(s);
}

static void test_breaker_opens_probes_and_closes(void **state)
{
    (void)state;
    atomic_int mirror = 0;
    cmp_breaker b;
    cmp_breaker_init(&b, 3, 1000, &mirror);
    assert_true(cmp_breaker_allow(&b, 0));
    cmp_breaker_failure(&b, 0);
    cmp_breaker_failure(&b, 0);
    cmp_breaker_success(&b); /* consecutive failures only */
    cmp_breaker_failure(&b, 0);
    cmp_breaker_failure(&b, 0);
    assert_int_equal(mirror, CMP_BREAKER_CLOSED);
    cmp_breaker_failure(&b, 10);
    assert_int_equal(mirror, CMP_BREAKER_OPEN);
    assert_false(cmp_breaker_allow(&b, 500));
    assert_true(cmp_breaker_allow(&b, 1010)); /* the one probe */
    assert_int_equal(mirror, CMP_BREAKER_HALF_OPEN);
    assert_false(cmp_breaker_allow(&b, 1011));
    cmp_breaker_failure(&b, 1020); /* probe failed: open again */
    assert_int_equal(mirror, CMP_BREAKER_OPEN);
    assert_false(cmp_breaker_allow(&b, 1500));
    assert_true(cmp_breaker_allow(&b, 2020));
    cmp_breaker_abandon(&b); /* a probe cut off lets the next one through */
    assert_true(cmp_breaker_allow(&b, 2021));
    cmp_breaker_success(&b);
    assert_int_equal(mirror, CMP_BREAKER_CLOSED);
    assert_true(cmp_breaker_allow(&b, 2022));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_check_accepts_values),
        cmocka_unit_test(test_json_check_rejects_broken),
        cmocka_unit_test(test_json_check_depth_limit),
        cmocka_unit_test(test_spec_parses_dependencies_and_clamps_timeouts),
        cmocka_unit_test(test_spec_errors_name_the_field),
        cmocka_unit_test(test_template_expands_params_and_leg_fields),
        cmocka_unit_test(test_breaker_opens_probes_and_closes),
    };
    return cmocka_run_group_tests_name("composers", tests, NULL, NULL);
}
