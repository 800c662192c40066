/* test_route_edit.c — routes/ mutations (route_edit.h): each builds a new validated table,
 * leaves the old one as it was, and names the route and field when the change is invalid.
 * Every test checks that no table is left alive. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routes/matcher.h"
#include "routes/policy.h"
#include "routes/route_edit.h"
#include "routes/route_table.h"

enum { LEGACY = 0, USERS = 1, ORDERS = 2 };
static const char *const UPSTREAMS[] = { "legacy", "user-service", "order-service" };

/* Single quotes for double ones, so JSON reads well in C. Returns a static buffer. */
static const char *dq(const char *squoted)
{
    static char buf[4096];
    snprintf(buf, sizeof(buf), "%s", squoted);
    for (char *p = buf; *p; p++) {
        if (*p == '\'')
            *p = '"';
    }
    return buf;
}

static json_t *js(const char *squoted)
{
    json_error_t e;
    json_t *j = json_loads(dq(squoted), 0, &e);
    if (!j)
        fail_msg("bad test JSON: %s", e.text);
    return j;
}

static const char BASE[] =
    "{'version':7,'routes':["
    "{'id':'orders','path':'/api/orders/{id}','upstream':'legacy',"
    " 'split':{'legacy':90,'order-service':10},'sticky':{'header':'X-User-Id'},"
    " 'fallback':{},'shadow':{'upstream':'order-service','percent':25,'methods':['GET']}},"
    "{'id':'users','path':'/api/users/{id}','upstream':'user-service',"
    " 'split':{'legacy':1,'user-service':1},'fallback':{'on':['connect']}},"
    "{'id':'rest','path':'/**','upstream':'order-service'}]}";

static int g_base_alive;

static int setup(void **state)
{
    g_base_alive = rt__tables_alive();
    const char *doc = dq(BASE);
    char err[512];
    rt_table *t = rt_table_parse(doc, strlen(doc), "x.json", UPSTREAMS, 3, err, sizeof(err));
    if (!t) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    rt_table_unref(*state);
    return rt__tables_alive() == g_base_alive ? 0 : -1; /* a leaked table fails the test */
}

static const rt_route *route(const rt_table *t, const char *id)
{
    const rt_route *r = rt_table_find(t, id);
    if (!r)
        fail_msg("no route %s", id);
    return r;
}

/* The old table is untouched by any change: the document it gives is the one it was
 * parsed from. */
static void assert_base_unchanged(const rt_table *t)
{
    json_t *want = js(BASE);
    json_t *now = rt_table_to_json(t);
    json_t *again = rt_table_to_json(t);
    const char *doc = dq(BASE);
    char err[512];
    rt_table *fresh = rt_table_parse(doc, strlen(doc), "x.json", UPSTREAMS, 3, err, sizeof(err));
    json_t *canon = rt_table_to_json(fresh);
    assert_true(json_equal(now, canon));
    assert_true(json_equal(now, again));
    assert_int_equal(json_integer_value(json_object_get(now, "version")), 7);
    json_decref(want);
    json_decref(now);
    json_decref(again);
    json_decref(canon);
    rt_table_unref(fresh);
}

static void expect_err(rt_table *n, const char *err, const char *want)
{
    if (n)
        fail_msg("accepted, expected: %s", want);
    assert_string_equal(err, want);
}

static void test_flip(void **state)
{
    rt_table *t = *state;
    char err[512];
    rt_table *n = rt_table_flip(t, "orders", "order-service", err, sizeof(err));
    assert_non_null(n);
    const rt_route *r = route(n, "orders");
    assert_int_equal(r->upstream_index, ORDERS);
    assert_string_equal(r->upstream, "order-service");
    assert_int_equal(r->n_split, 0);          /* flip drops the split */
    assert_null(rt_route_sticky_header(r));   /* and sticky, which needs one */
    assert_int_equal(r->fallback.upstream_index, LEGACY);  /* the rest stays */
    assert_int_equal(r->shadow.upstream_index, ORDERS);
    assert_int_equal(r->shadow.percent, 25);
    assert_int_equal(rt_route_pick(r, GW_SLICE_LIT("u1"), 0), ORDERS);
    assert_int_equal(rt_table_version(n), 8);
    /* The new table routes (its matcher was rebuilt) and keeps the other routes. */
    rt_match m;
    assert_int_equal(rt_table_match(n, GW_SLICE_LIT("GET"), GW_SLICE_LIT("/api/orders/5"), &m),
                     0);
    assert_ptr_equal(m.route, r);
    assert_int_equal(route(n, "users")->n_split, 2);
    assert_int_equal(rt_table_count(n), 3);
    assert_int_equal(route(t, "orders")->n_split, 2); /* old table unchanged */
    assert_base_unchanged(t);
    rt_table_unref(n);

    expect_err(rt_table_flip(t, "orders", "nope", err, sizeof(err)), err,
               "routes: routes[\"orders\"].upstream: unknown upstream \"nope\"");
    expect_err(rt_table_flip(t, "x", "legacy", err, sizeof(err)), err,
               "routes: no route \"x\"");
    expect_err(rt_table_flip(t, "orders", NULL, err, sizeof(err)), err,
               "routes: routes[\"orders\"].upstream: missing");
    expect_err(rt_table_flip(t, NULL, "legacy", err, sizeof(err)), err, "routes: no route id");
    expect_err(rt_table_flip(NULL, "orders", "legacy", err, sizeof(err)), err,
               "routes: no route table");
}

static void test_split(void **state)
{
    rt_table *t = *state;
    char err[512];
    json_t *w = js("{'legacy':50,'order-service':50,'user-service':0}");
    rt_table *n = rt_table_split(t, "orders", w, err, sizeof(err));
    json_decref(w);
    assert_non_null(n);
    const rt_route *r = route(n, "orders");
    assert_int_equal(r->n_split, 3);
    assert_int_equal(r->split_total, 100);
    assert_int_equal(r->split[2].upstream_index, USERS);
    assert_int_equal(r->split[2].weight, 0);
    assert_string_equal(rt_route_sticky_header(r), "X-User-Id"); /* kept */
    assert_int_equal(r->upstream_index, LEGACY);

    /* A split on a route that had none. */
    w = js("{'legacy':1}");
    rt_table *n2 = rt_table_split(n, "rest", w, err, sizeof(err));
    json_decref(w);
    assert_non_null(n2);
    assert_int_equal(rt_route_pick(route(n2, "rest"), GW_SLICE_LIT(""), 12345), LEGACY);
    rt_table_unref(n);
    rt_table_unref(n2);

    w = js("{'legacy':1,'nope':1}");
    expect_err(rt_table_split(t, "orders", w, err, sizeof(err)), err,
               "routes: routes[\"orders\"].split.nope: unknown upstream \"nope\"");
    json_decref(w);
    w = js("{}");
    expect_err(rt_table_split(t, "users", w, err, sizeof(err)), err,
               "routes: routes[\"users\"].split: at least one weight must be greater than 0");
    json_decref(w);
    w = js("{'legacy':100001}");
    expect_err(rt_table_split(t, "users", w, err, sizeof(err)), err,
               "routes: routes[\"users\"].split.legacy: must be an integer from 0 to 100000");
    json_decref(w);
    expect_err(rt_table_split(t, "users", NULL, err, sizeof(err)), err,
               "routes: routes[\"users\"].split: missing");
    w = js("[1]");
    expect_err(rt_table_split(t, "users", w, err, sizeof(err)), err,
               "routes: routes[\"users\"].split: must be an object");
    json_decref(w);
    w = js("{'legacy':1}");
    expect_err(rt_table_split(t, "nope", w, err, sizeof(err)), err, "routes: no route \"nope\"");
    json_decref(w);
    assert_base_unchanged(t);
}

static void test_shadow_unshadow(void **state)
{
    rt_table *t = *state;
    char err[512];
    rt_table *n = rt_table_shadow(t, "rest", "legacy", err, sizeof(err));
    assert_non_null(n);
    const rt_route *r = route(n, "rest");
    assert_int_equal(r->shadow.upstream_index, LEGACY);
    assert_int_equal(r->shadow.percent, 100);
    assert_int_equal(rt_route_shadow(r, GW_SLICE_LIT("GET"), 7), LEGACY);
    assert_int_equal(rt_route_shadow(r, GW_SLICE_LIT("POST"), 7), -1);

    /* Re-pointing an existing shadow keeps its settings. */
    rt_table *n2 = rt_table_shadow(n, "orders", "user-service", err, sizeof(err));
    assert_non_null(n2);
    r = route(n2, "orders");
    assert_int_equal(r->shadow.upstream_index, USERS);
    assert_int_equal(r->shadow.percent, 25);
    assert_int_equal(r->shadow.methods, RT_M_GET);

    rt_table *n3 = rt_table_unshadow(n2, "orders", err, sizeof(err));
    assert_non_null(n3);
    assert_int_equal(route(n3, "orders")->shadow.upstream_index, -1);
    assert_int_equal(rt_route_shadow(route(n3, "orders"), GW_SLICE_LIT("GET"), 0), -1);
    assert_int_equal(route(n3, "rest")->shadow.upstream_index, LEGACY);
    /* Unshadowing a route without one is not an error. */
    rt_table *n4 = rt_table_unshadow(n3, "orders", err, sizeof(err));
    assert_non_null(n4);
    assert_int_equal(route(n4, "orders")->shadow.upstream_index, -1);

    expect_err(rt_table_shadow(t, "rest", "nope", err, sizeof(err)), err,
               "routes: routes[\"rest\"].shadow.upstream: unknown upstream \"nope\"");
    expect_err(rt_table_shadow(t, "rest", NULL, err, sizeof(err)), err,
               "routes: routes[\"rest\"].shadow.upstream: missing");
    expect_err(rt_table_shadow(t, "x", "legacy", err, sizeof(err)), err,
               "routes: no route \"x\"");
    expect_err(rt_table_unshadow(t, "x", err, sizeof(err)), err, "routes: no route \"x\"");
    rt_table_unref(n);
    rt_table_unref(n2);
    rt_table_unref(n3);
    rt_table_unref(n4);
    assert_base_unchanged(t);
}

static void test_rollback_all(void **state)
{
    rt_table *t = *state;
    char err[512];
    rt_table *n = rt_table_rollback(t, NULL, err, sizeof(err));
    assert_non_null(n);
    for (int i = 0; i < rt_table_count(n); i++) {
        const rt_route *r = rt_table_route(n, i);
        assert_int_equal(r->upstream_index, LEGACY);
        assert_string_equal(r->upstream, "legacy");
        assert_int_equal(r->n_split, 0);
        assert_null(r->sticky_header);
        assert_int_equal(r->fallback.upstream_index, -1);
        assert_int_equal(rt_route_pick(r, GW_SLICE_LIT("k"), 99), LEGACY);
    }
    /* Shadow is kept: the comparison goes on while the legacy answers. */
    assert_int_equal(route(n, "orders")->shadow.upstream_index, ORDERS);
    assert_int_equal(route(n, "orders")->shadow.percent, 25);
    rt_table_unref(n);

    /* With another legacy_upstream, that is where everything goes. */
    const char *doc = dq("{'legacy_upstream':'user-service','routes':["
                         "{'id':'a','path':'/a','upstream':'order-service'}]}");
    rt_table *t2 = rt_table_parse(doc, strlen(doc), "x.json", UPSTREAMS, 3, err, sizeof(err));
    n = rt_table_rollback(t2, NULL, err, sizeof(err));
    assert_non_null(n);
    assert_int_equal(route(n, "a")->upstream_index, USERS);
    assert_string_equal(rt_table_legacy_upstream(n), "user-service");
    rt_table_unref(n);
    rt_table_unref(t2);

    /* No legacy upstream known: refused, with the reason. */
    static const char *const NEW_ONLY[] = { "order-service" };
    doc = dq("{'routes':[{'id':'a','path':'/a','upstream':'order-service'}]}");
    t2 = rt_table_parse(doc, strlen(doc), "x.json", NEW_ONLY, 1, err, sizeof(err));
    assert_non_null(t2);
    expect_err(rt_table_rollback(t2, NULL, err, sizeof(err)), err,
               "routes: legacy_upstream: unknown upstream \"legacy\"");
    expect_err(rt_table_rollback(t2, "a", err, sizeof(err)), err,
               "routes: legacy_upstream: unknown upstream \"legacy\"");
    rt_table_unref(t2);

    /* Empty table: nothing to do, still a new table. */
    doc = dq("{'routes':[]}");
    t2 = rt_table_parse(doc, strlen(doc), "x.json", UPSTREAMS, 3, err, sizeof(err));
    n = rt_table_rollback(t2, NULL, err, sizeof(err));
    assert_non_null(n);
    assert_int_equal(rt_table_count(n), 0);
    rt_table_unref(n);
    rt_table_unref(t2);
    assert_base_unchanged(t);
}

static void test_rollback_one(void **state)
{
    rt_table *t = *state;
    char err[512];
    rt_table *n = rt_table_rollback(t, "users", err, sizeof(err));
    assert_non_null(n);
    const rt_route *u = route(n, "users");
    assert_int_equal(u->upstream_index, LEGACY);
    assert_int_equal(u->n_split, 0);
    assert_int_equal(u->fallback.upstream_index, -1);
    /* The others are untouched. */
    assert_int_equal(route(n, "orders")->n_split, 2);
    assert_string_equal(route(n, "orders")->sticky_header, "X-User-Id");
    assert_int_equal(route(n, "orders")->fallback.upstream_index, LEGACY);
    assert_int_equal(route(n, "rest")->upstream_index, ORDERS);
    rt_table_unref(n);
    expect_err(rt_table_rollback(t, "x", err, sizeof(err)), err, "routes: no route \"x\"");
    assert_base_unchanged(t);
}

static void test_put_route(void **state)
{
    rt_table *t = *state;
    char err[512];
    /* Replace: the whole route, in place. */
    json_t *j = js("{'path':'/**','upstream':'legacy','methods':['GET']}");
    rt_table *n = rt_table_with_route(t, "rest", j, err, sizeof(err));
    json_decref(j);
    assert_non_null(n);
    assert_int_equal(rt_table_count(n), 3);
    assert_ptr_equal(rt_table_route(n, 2), route(n, "rest"));
    assert_int_equal(route(n, "rest")->methods, RT_M_GET);
    assert_int_equal(route(n, "rest")->upstream_index, LEGACY);
    rt_table_unref(n);

    /* Add: appended, routable. */
    j = js("{'id':'ship','path':'/api/orders/{id}/shipment','upstream':'order-service',"
           "'rewrites':{'order-service':{'template':'/shipments?order_id={id}'}}}");
    n = rt_table_with_route(t, "ship", j, err, sizeof(err));
    json_decref(j);
    assert_non_null(n);
    assert_int_equal(rt_table_count(n), 4);
    rt_match m;
    const char *p = "/api/orders/3/shipment";
    assert_int_equal(rt_table_match(n, GW_SLICE_LIT("GET"), gw_slice_of(p), &m), 0);
    assert_string_equal(m.route->id, "ship");
    char out[128];
    assert_true(rt_rewrite(&m, gw_slice_of(p), (gw_slice){ NULL, 0 }, out, sizeof(out)) > 0);
    assert_string_equal(out, "/shipments?order_id=3");
    rt_table_unref(n);

    j = js("{'id':'other','path':'/x','upstream':'legacy'}");
    expect_err(rt_table_with_route(t, "rest", j, err, sizeof(err)), err,
               "routes: routes[\"rest\"].id: must be \"rest\" (the id of the route changed)");
    json_decref(j);
    j = js("{'path':'/**','upstream':'legacy'}");
    expect_err(rt_table_with_route(t, "dup", j, err, sizeof(err)), err,
               "routes: routes[\"dup\"].path: same pattern as routes[2] (\"rest\") with "
               "overlapping methods");
    json_decref(j);
    j = js("{'path':'/q','upstream':'legacy','sticky':{'header':'X'}}");
    expect_err(rt_table_with_route(t, "q", j, err, sizeof(err)), err,
               "routes: routes[\"q\"].sticky: only allowed with \"split\"");
    json_decref(j);
    j = js("{'path':'/q','upstream':'legacy'}");
    expect_err(rt_table_with_route(t, "a/b", j, err, sizeof(err)), err,
               "routes: routes[3].id: \"a/b\": only letters, digits and \"-._~\" are allowed");
    json_decref(j);
    j = js("[]");
    expect_err(rt_table_with_route(t, "q", j, err, sizeof(err)), err,
               "routes: routes[\"q\"]: must be an object");
    json_decref(j);
    assert_base_unchanged(t);
}

static void test_patch_route(void **state)
{
    rt_table *t = *state;
    char err[512];
    /* Objects merge: one weight changes, the other stays. */
    json_t *j = js("{'split':{'legacy':0}}");
    rt_table *n = rt_table_patch_route(t, "orders", j, err, sizeof(err));
    json_decref(j);
    assert_non_null(n);
    const rt_route *r = route(n, "orders");
    assert_int_equal(r->n_split, 2);
    assert_int_equal(r->split[0].weight, 0);
    assert_int_equal(r->split[1].weight, 10);
    assert_int_equal(rt_route_pick(r, (gw_slice){ NULL, 0 }, 3), ORDERS);
    assert_string_equal(r->sticky_header, "X-User-Id");
    rt_table_unref(n);

    /* null deletes; arrays and scalars replace. */
    j = js("{'shadow':null,'methods':['GET','HEAD'],'max_body_bytes':10,'sticky':null}");
    n = rt_table_patch_route(t, "orders", j, err, sizeof(err));
    json_decref(j);
    assert_non_null(n);
    r = route(n, "orders");
    assert_int_equal(r->shadow.upstream_index, -1);
    assert_int_equal(r->methods, RT_M_GET | RT_M_HEAD);
    assert_int_equal(r->max_body_bytes, 10);
    assert_null(r->sticky_header);
    assert_int_equal(r->n_split, 2);
    rt_table_unref(n);

    /* An empty patch (or one naming its own id) changes nothing. */
    j = js("{'id':'orders'}");
    n = rt_table_patch_route(t, "orders", j, err, sizeof(err));
    json_decref(j);
    assert_non_null(n);
    json_t *a = rt_route_to_json(route(t, "orders")), *b = rt_route_to_json(route(n, "orders"));
    assert_true(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    rt_table_unref(n);

    j = js("{'path':'bad'}");
    expect_err(rt_table_patch_route(t, "orders", j, err, sizeof(err)), err,
               "routes: routes[\"orders\"].path: must start with \"/\"");
    json_decref(j);
    j = js("{'split':null}"); /* sticky is left without a split */
    expect_err(rt_table_patch_route(t, "orders", j, err, sizeof(err)), err,
               "routes: routes[\"orders\"].sticky: only allowed with \"split\"");
    json_decref(j);
    j = js("{'id':'renamed'}");
    expect_err(rt_table_patch_route(t, "orders", j, err, sizeof(err)), err,
               "routes: routes[\"orders\"].id: must be \"orders\" (the id of the route "
               "changed)");
    json_decref(j);
    j = js("{'upstream':null}");
    expect_err(rt_table_patch_route(t, "orders", j, err, sizeof(err)), err,
               "routes: routes[\"orders\"].upstream: missing");
    json_decref(j);
    j = js("[1]");
    expect_err(rt_table_patch_route(t, "orders", j, err, sizeof(err)), err,
               "routes: routes[\"orders\"]: a patch must be an object");
    json_decref(j);
    j = js("{}");
    expect_err(rt_table_patch_route(t, "nope", j, err, sizeof(err)), err,
               "routes: no route \"nope\"");
    json_decref(j);
    assert_base_unchanged(t);
}

static void test_delete_route(void **state)
{
    rt_table *t = *state;
    char err[512];
    rt_table *n = rt_table_delete_route(t, "users", err, sizeof(err));
    assert_non_null(n);
    assert_int_equal(rt_table_count(n), 2);
    assert_null(rt_table_find(n, "users"));
    rt_match m;
    assert_int_equal(rt_table_match(n, GW_SLICE_LIT("GET"), GW_SLICE_LIT("/api/users/1"), &m),
                     0);
    assert_string_equal(m.route->id, "rest"); /* the catch-all takes over */
    rt_table *n2 = rt_table_delete_route(n, "rest", err, sizeof(err));
    assert_int_equal(rt_table_match(n2, GW_SLICE_LIT("GET"), GW_SLICE_LIT("/api/users/1"), &m),
                     -1);
    rt_table_unref(n);
    rt_table_unref(n2);
    expect_err(rt_table_delete_route(t, "users2", err, sizeof(err)), err,
               "routes: no route \"users2\"");
    assert_base_unchanged(t);
}

/* Changes chain: each result is the next one's input, and the document of the last one parses
 * back to the same table. */
static void test_chain_and_round_trip(void **state)
{
    rt_table *t = *state;
    char err[512];
    rt_table *a = rt_table_flip(t, "users", "legacy", err, sizeof(err));
    rt_table *b = rt_table_shadow(a, "users", "user-service", err, sizeof(err));
    json_t *w = js("{'legacy':3,'user-service':1}");
    rt_table *c = rt_table_split(b, "users", w, err, sizeof(err));
    json_decref(w);
    assert_non_null(c);
    assert_int_equal(rt_table_version(c), 10);
    json_t *doc = rt_table_to_json(c);
    char *text = json_dumps(doc, 0);
    rt_table *d = rt_table_parse(text, strlen(text), "f", UPSTREAMS, 3, err, sizeof(err));
    assert_non_null(d);
    json_t *doc2 = rt_table_to_json(d);
    assert_true(json_equal(doc, doc2));
    free(text);
    json_decref(doc);
    json_decref(doc2);
    rt_table_unref(a);
    rt_table_unref(b);
    rt_table_unref(c);
    rt_table_unref(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_flip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shadow_unshadow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_route, setup, teardown),
        cmocka_unit_test_setup_teardown(test_patch_route, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_route, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chain_and_round_trip, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
