/* test_router.c — gateway/router: the one decision per request (gw_router_decide), driven
 * without sockets: a request head filled by hand, a route table and compositions parsed
 * from JSON. Each test states the request and the handler it must go to. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "composers/lookup.h"
#include "composers/spec.h"
#include "gateway/router.h"
#include "routes/route_table.h"

static const char *const UPSTREAMS[] = { "legacy", "user-service", "order-service" };
enum { LEGACY, USERS, ORDERS };

static const char ROUTES[] =
    "{\"routes\":["
    "{\"id\":\"users\",\"path\":\"/api/users/**\",\"upstream\":\"user-service\",\"cache\":true,"
    " \"override\":{},\"fallback\":{}},"
    "{\"id\":\"orders\",\"path\":\"/api/orders/{id}\",\"upstream\":\"order-service\"},"
    "{\"id\":\"legacy\",\"path\":\"/**\",\"upstream\":\"legacy\",\"methods\":[\"GET\",\"POST\"]}]}";

static const char COMPOSERS[] =
    "{\"compositions\":[{\"id\":\"order-details\",\"path\":\"/api/orders/{id}/details\","
    " \"legs\":[{\"name\":\"order\",\"url\":\"/api/orders/{id}\",\"required\":true}]}]}";

typedef struct fixture {
    rt_table *table;
    cmp_spec *spec;
    gw_request req;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char err[512];
    f->table = rt_table_parse(ROUTES, strlen(ROUTES), "routes.json", UPSTREAMS, 3, err, sizeof err);
    if (!f->table)
        fail_msg("routes: %s", err);
    f->spec = cmp_spec_parse(COMPOSERS, strlen(COMPOSERS), "composers.json", err, sizeof err);
    if (!f->spec)
        fail_msg("composers: %s", err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rt_table_unref(f->table);
    cmp_spec_free(f->spec);
    free(f);
    return 0;
}

/* A bodiless request head for METHOD URL (URL's query, if any, split off the path). */
static gw_request *head(fixture *f, const char *method, const char *url)
{
    gw_request *q = &f->req;
    memset(q, 0, offsetof(gw_request, headers));
    q->method = gw_slice_of(method);
    q->url = gw_slice_of(url);
    const char *qm = strchr(url, '?');
    q->path = (gw_slice){ url, qm ? (size_t)(qm - url) : strlen(url) };
    q->query = qm ? gw_slice_of(qm + 1) : (gw_slice){ NULL, 0 };
    q->content_length = -1;
    q->is_head = strcmp(method, "HEAD") == 0;
    return q;
}

static void add_header(gw_request *q, const char *name, const char *value)
{
    q->headers[q->n_headers++] = (gw_header){ gw_slice_of(name), gw_slice_of(value) };
}

static gw_route_decision decide(fixture *f, const gw_request *q, int cache)
{
    gw_route_decision d;
    gw_router_decide(q, f->table, f->spec, cache, &d);
    return d;
}

static void test_errors(void **state)
{
    fixture *f = *state;
    /* dot segments first: before compositions and routes, also percent-encoded */
    gw_route_decision d = decide(f, head(f, "GET", "/api/orders/1/../details"), 1);
    assert_int_equal(d.to, GW_TO_ERROR);
    assert_int_equal(d.status, 400);
    d = decide(f, head(f, "GET", "/api/%2e%2e/orders/1"), 1);
    assert_int_equal(d.to, GW_TO_ERROR);
    assert_int_equal(d.status, 400);
    /* no table yet: 503, compositions included (their legs go through the table) */
    gw_router_decide(head(f, "GET", "/api/orders/1"), NULL, f->spec, 1, &d);
    assert_int_equal(d.to, GW_TO_ERROR);
    assert_int_equal(d.status, 503);
    gw_router_decide(head(f, "GET", "/api/orders/1/details"), NULL, f->spec, 1, &d);
    assert_int_equal(d.to, GW_TO_ERROR);
    assert_int_equal(d.status, 503);
    /* no route for the method */
    d = decide(f, head(f, "DELETE", "/somewhere"), 1);
    assert_int_equal(d.to, GW_TO_ERROR);
    assert_int_equal(d.status, 404);
    assert_string_equal(d.msg, "no route");
}

static void test_composition(void **state)
{
    fixture *f = *state;
    gw_route_decision d = decide(f, head(f, "GET", "/api/orders/42/details"), 1);
    assert_int_equal(d.to, GW_TO_COMPOSITION);
    assert_string_equal(d.composition->id, "order-details");
    assert_int_equal(d.params.n, 1);
    assert_true(gw_slice_eq(d.params.values[0], "42"));
    /* compositions answer GETs only: a POST there goes by the routes */
    d = decide(f, head(f, "POST", "/api/orders/42/details"), 1);
    assert_int_equal(d.to, GW_TO_PROXY);
    assert_string_equal(d.match.route->id, "legacy");
    /* without compositions (none configured, or no composer) the routes answer */
    gw_router_decide(head(f, "GET", "/api/orders/42/details"), f->table, NULL, 1, &d);
    assert_int_equal(d.to, GW_TO_PROXY);
    assert_string_equal(d.match.route->id, "legacy");
    assert_int_equal(d.ui, LEGACY);
}

static void test_cached_or_proxied(void **state)
{
    fixture *f = *state;
    gw_route_decision d = decide(f, head(f, "GET", "/api/users/7"), 1);
    assert_int_equal(d.to, GW_TO_CACHED);
    assert_string_equal(d.match.route->id, "users");
    assert_int_equal(d.ui, USERS);
    assert_int_equal(decide(f, head(f, "HEAD", "/api/users/7"), 1).to, GW_TO_CACHED);
    assert_int_equal(decide(f, head(f, "GET", "/api/users/7?x=1"), 1).to, GW_TO_CACHED);
    /* the user cache could not be opened: proxied */
    assert_int_equal(decide(f, head(f, "GET", "/api/users/7"), 0).to, GW_TO_PROXY);
    /* changes and bodies are proxied */
    assert_int_equal(decide(f, head(f, "PUT", "/api/users/7"), 1).to, GW_TO_PROXY);
    gw_request *q = head(f, "GET", "/api/users/7");
    q->has_body = 1;
    q->content_length = 3;
    assert_int_equal(decide(f, q, 1).to, GW_TO_PROXY);
    /* a URL too long for a cache key is proxied */
    static char url[CMP_CACHED_URL_MAX + 16];
    memset(url, 'a', sizeof url - 1);
    memcpy(url, "/api/users/", 11);
    url[CMP_CACHED_URL_MAX] = '\0';
    d = decide(f, head(f, "GET", url), 1);
    assert_int_equal(d.to, GW_TO_PROXY);
    url[CMP_CACHED_URL_MAX - 1] = '\0';
    assert_int_equal(decide(f, head(f, "GET", url), 1).to, GW_TO_CACHED);
    /* an uncached route */
    d = decide(f, head(f, "GET", "/api/orders/9"), 1);
    assert_int_equal(d.to, GW_TO_PROXY);
    assert_string_equal(d.match.route->id, "orders");
    assert_int_equal(d.ui, ORDERS);
    assert_true(gw_slice_eq(d.match.param_values[0], "9"));
}

static void test_override_picks_the_upstream(void **state)
{
    fixture *f = *state;
    gw_request *q = head(f, "GET", "/api/users/7");
    add_header(q, "x-gateway-upstream-override", "legacy"); /* its fallback */
    gw_route_decision d = decide(f, q, 1);
    assert_int_equal(d.to, GW_TO_CACHED);
    assert_int_equal(d.ui, LEGACY);
    q = head(f, "GET", "/api/users/7");
    add_header(q, "X-Gateway-Upstream-Override", "order-service"); /* not the route's */
    assert_int_equal(decide(f, q, 1).ui, USERS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_composition, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cached_or_proxied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_override_picks_the_upstream, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
