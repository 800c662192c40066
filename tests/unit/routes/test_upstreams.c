/* test_upstreams.c — upstream definitions in the route table (routes/upstreams.h): read from
 * a document's "upstreams" next to gateway.json's seeds, written back, changed, refused while
 * in use, and kept at a stable index (the workers' pools are indexed by it). Every test
 * checks that no table is left alive. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/config.h"
#include "routes/matcher.h"
#include "routes/route_edit.h"
#include "routes/upstreams.h"

static const char *const SEEDS[] = { "legacy", "user-service" };
static gw_config g_cfg;
static int g_alive;

static const char *dq(const char *squoted)
{
    static char buf[8192];
    snprintf(buf, sizeof buf, "%s", squoted);
    for (char *p = buf; *p; p++)
        if (*p == '\'')
            *p = '"';
    return buf;
}

static rt_table *parse(const char *squoted, char *err, size_t errlen)
{
    const char *doc = dq(squoted);
    return rt_table_parse(doc, strlen(doc), "routes.json", SEEDS, 2, err, errlen);
}

static int g_limited; /* setup gives user-service max_in_flight + queue (gateway.json only) */

static int setup(void **state)
{
    (void)state;
    memset(&g_cfg, 0, sizeof g_cfg);
    snprintf(g_cfg.path, sizeof g_cfg.path, "/etc/gw/gateway.json");
    for (int i = 0; i < 2; i++) {
        gw_upstream_conf *u = &g_cfg.upstreams[i];
        gw_config_upstream_defaults(u);
        snprintf(u->name, sizeof u->name, "%s", SEEDS[i]);
        snprintf(u->endpoints[0].address, sizeof u->endpoints[0].address, "127.0.0.1:%d", 9101 + i);
        u->n_endpoints = 1;
    }
    if (g_limited) {
        g_cfg.upstreams[1].max_in_flight = 4;
        g_cfg.upstreams[1].queue_max = 8;
        g_cfg.upstreams[1].queue_timeout_ms = 100;
    }
    g_cfg.n_upstreams = 2;
    assert_int_equal(gw_config_upstreams_install(&g_cfg), 0);
    g_alive = rt__tables_alive();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(rt__tables_alive(), g_alive);
    rt_upstreams_reset();
    return 0;
}

static const char DOC[] =
    "{'upstreams':{'svc':{'endpoints':['127.0.0.1:9200','127.0.0.1:9201'],'host':'svc.internal'}},"
    " 'routes':[{'id':'a','path':'/a/**','upstream':'svc'},"
    "           {'id':'b','path':'/**','upstream':'legacy','shadow':{'upstream':'svc'},"
    "            'split':{'legacy':1,'svc':1}}]}";

static void test_parse_index_and_write_back(void **state)
{
    (void)state;
    char err[512];
    rt_table *t = parse(DOC, err, sizeof err);
    assert_non_null(t);
    int i = rt_table_upstream_index(t, "svc");
    assert_true(i >= 2); /* after gateway.json's, which keep their positions */
    assert_int_equal(rt_table_upstream_index(t, "legacy"), 0);
    assert_int_equal(rt_table_route(t, 0)->upstream_index, i);
    const rt_upstream_def *d = rt_table_upstream_def(t, i);
    assert_non_null(d);
    assert_true(d->from_routes);
    assert_int_equal(d->conf.n_endpoints, 2);
    assert_string_equal(d->conf.host, "svc.internal");
    assert_int_equal(d->conf.connect_timeout_ms, 1000); /* gateway.json's defaults */
    const rt_upstream_def *seed = rt_table_upstream_def(t, 0);
    assert_non_null(seed);
    assert_false(seed->from_routes);
    assert_string_equal(seed->conf.endpoints[0].address, "127.0.0.1:9101");

    /* written back: the routes source's own definitions only, as written */
    json_t *doc = rt_table_to_json(t);
    json_t *ups = json_object_get(doc, "upstreams");
    assert_int_equal(json_object_size(ups), 1);
    assert_string_equal(json_string_value(json_object_get(json_object_get(ups, "svc"), "host")),
                        "svc.internal");
    char *text = json_dumps(doc, JSON_COMPACT);
    rt_table *back = rt_table_parse(text, strlen(text), "again", SEEDS, 2, err, sizeof err);
    assert_non_null(back);
    /* same definition: same generation (the workers keep its pools), same index */
    assert_int_equal(rt_table_upstream_index(back, "svc"), i);
    assert_int_equal(rt_table_upstream_def(back, i)->gen, d->gen);
    free(text);
    json_decref(doc);

    /* referrers: everything that names it */
    json_t *refs = rt_upstream_referrers(t, "svc");
    char *r = json_dumps(refs, JSON_COMPACT);
    assert_string_equal(r, "[\"routes[\\\"a\\\"].upstream\",\"routes[\\\"b\\\"].split\","
                           "\"routes[\\\"b\\\"].shadow\"]");
    free(r);
    json_decref(refs);
    rt_table_unref(back);
    rt_table_unref(t);
}

static void test_changes(void **state)
{
    (void)state;
    char err[512];
    int status = 0;
    json_t *refs = NULL;
    rt_table *t = parse(DOC, err, sizeof err);
    assert_non_null(t);
    int i = rt_table_upstream_index(t, "svc");
    uint64_t gen = rt_table_upstream_def(t, i)->gen;

    /* PATCH: a new definition at the same index; the old table is untouched */
    json_t *patch = json_loads(dq("{'endpoints':['127.0.0.1:9300']}"), 0, NULL);
    rt_table *n = rt_table_patch_upstream(t, "svc", patch, &status, err, sizeof err);
    json_decref(patch);
    assert_non_null(n);
    assert_int_equal(rt_table_upstream_index(n, "svc"), i);
    const rt_upstream_def *nd = rt_table_upstream_def(n, i);
    assert_true(nd->gen != gen);
    assert_int_equal(nd->conf.n_endpoints, 1);
    assert_string_equal(nd->conf.host, "svc.internal"); /* merged, not replaced */
    assert_int_equal(rt_table_upstream_def(t, i)->conf.n_endpoints, 2);
    assert_int_equal(rt_table_version(n), rt_table_version(t) + 1);

    /* DELETE while routes use it: 409 with the referrers */
    assert_null(rt_table_delete_upstream(n, "svc", &refs, &status, err, sizeof err));
    assert_int_equal(status, 409);
    assert_int_equal(json_array_size(refs), 3);
    assert_non_null(strstr(err, "upstreams.svc: still in use"));
    json_decref(refs);
    /* unknown: 404; gateway.json's own: 409 */
    assert_null(rt_table_delete_upstream(n, "nope", &refs, &status, err, sizeof err));
    assert_int_equal(status, 404);
    assert_null(rt_table_delete_upstream(n, "user-service", &refs, &status, err, sizeof err));
    assert_int_equal(status, 409);
    assert_non_null(strstr(err, "defined in gateway.json"));
    assert_null(refs);

    /* an invalid definition names the field */
    json_t *bad = json_loads(dq("{'endpoints':['127.0.0.1:0']}"), 0, NULL);
    assert_null(rt_table_with_upstream(n, "svc", bad, &status, err, sizeof err));
    json_decref(bad);
    assert_int_equal(status, 422);
    assert_string_equal(err, "routes: upstreams.svc.endpoints[0]: invalid port \"0\"");

    /* PUT of an unused one, then DELETE */
    json_t *def = json_loads(dq("{'endpoints':['127.0.0.1:9400']}"), 0, NULL);
    rt_table *n2 = rt_table_with_upstream(n, "spare", def, &status, err, sizeof err);
    json_decref(def);
    assert_non_null(n2);
    assert_true(rt_table_upstream_index(n2, "spare") >= 2);
    rt_table *n3 = rt_table_delete_upstream(n2, "spare", &refs, &status, err, sizeof err);
    assert_non_null(n3);
    assert_int_equal(rt_table_upstream_index(n3, "spare"), -1);
    rt_table_unref(n3);
    rt_table_unref(n2);
    rt_table_unref(n);
    rt_table_unref(t);
}

static void test_override_of_gateway_json(void **state)
{
    (void)state;
    char err[512];
    int status;
    rt_table *t = parse("{'upstreams':{'legacy':{'endpoints':['127.0.0.1:9500']}},"
                        " 'routes':[{'id':'r','path':'/**','upstream':'legacy'}]}", err, sizeof err);
    assert_non_null(t);
    const rt_upstream_def *d = rt_table_upstream_def(t, 0);
    assert_true(d->from_routes); /* the routes source's definition wins */
    assert_string_equal(d->conf.endpoints[0].address, "127.0.0.1:9500");
    /* removing the override goes back to gateway.json's: no 409 although a route uses it */
    rt_table *n = rt_table_delete_upstream(t, "legacy", NULL, &status, err, sizeof err);
    assert_non_null(n);
    d = rt_table_upstream_def(n, 0);
    assert_false(d->from_routes);
    assert_string_equal(d->conf.endpoints[0].address, "127.0.0.1:9101");
    rt_table_unref(n);
    rt_table_unref(t);
}

static int setup_limited(void **state)
{
    g_limited = 1;
    int rc = setup(state);
    g_limited = 0;
    return rc;
}

/* A patch of a gateway.json upstream with max_in_flight/queue is merged into its definition
 * without those keys (they are start-only, and stay in force from gateway.json); the patch
 * itself still may not name them. */
static void test_patch_of_limited_gateway_json_upstream(void **state)
{
    (void)state;
    char err[512] = "";
    int status = 0;
    rt_table *t = parse("{'routes':[{'id':'r','path':'/**','upstream':'user-service'}]}", err,
                        sizeof err);
    assert_non_null(t);
    int i = rt_table_upstream_index(t, "user-service");
    json_t *patch = json_loads(dq("{'endpoints':['127.0.0.1:9400']}"), 0, NULL);
    rt_table *n = rt_table_patch_upstream(t, "user-service", patch, &status, err, sizeof err);
    json_decref(patch);
    if (!n)
        fail_msg("patch refused (%d): %s", status, err);
    const rt_upstream_def *d = rt_table_upstream_def(n, i);
    assert_true(d->from_routes);
    assert_string_equal(d->conf.endpoints[0].address, "127.0.0.1:9400");
    assert_null(json_object_get(d->json, "max_in_flight"));
    assert_null(json_object_get(d->json, "queue"));
    patch = json_loads(dq("{'queue':{'max':3}}"), 0, NULL);
    assert_null(rt_table_patch_upstream(t, "user-service", patch, &status, err, sizeof err));
    json_decref(patch);
    assert_int_equal(status, 422);
    assert_non_null(strstr(err, "upstreams.user-service.queue: only in gateway.json"));
    rt_table_unref(n);
    rt_table_unref(t);
}

static void test_errors(void **state)
{
    (void)state;
    char err[512];
    static const struct { const char *doc, *want; } cases[] = {
        { "{'upstreams':[],'routes':[]}", "routes.json: upstreams: must be an object" },
        { "{'upstreams':{'a b':{'endpoints':['127.0.0.1:1']}},'routes':[]}",
          "routes.json: upstreams: invalid upstream name \"a b\" (must match [A-Za-z0-9_.-]{1,63})" },
        { "{'upstreams':{'s':{'endpoints':['127.0.0.1:1'],'pool':{'max_idle':-1}}},'routes':[]}",
          "routes.json: upstreams.s.pool.max_idle: must be an integer from 0 to 65535" },
        { "{'upstreams':{'s':{'endpoints':['127.0.0.1:1'],'max_in_flight':3}},'routes':[]}",
          "routes.json: upstreams.s.max_in_flight: only in gateway.json (read at start)" },
        { "{'upstreams':{'s':{'endpoints':['127.0.0.1:1']}},"
          "'routes':[{'id':'r','path':'/**','upstream':'t'}]}",
          "routes.json: routes[0].upstream: unknown upstream \"t\"" },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        rt_table *t = parse(cases[k].doc, err, sizeof err);
        assert_null(t);
        assert_string_equal(err, cases[k].want);
    }
}

/* The slots after gateway.json's: 62 here; a slot no table names any more is reused. */
static void test_slots_bounded_and_reused(void **state)
{
    (void)state;
    char err[512];
    char *doc = malloc(65536);
    size_t n = 0;
    n += (size_t)snprintf(doc + n, 65536 - n, "{\"upstreams\":{");
    for (int i = 0; i < GW_MAX_UPSTREAMS - 2; i++)
        n += (size_t)snprintf(doc + n, 65536 - n, "%s\"u%d\":{\"endpoints\":[\"127.0.0.1:1\"]}",
                              i ? "," : "", i);
    snprintf(doc + n, 65536 - n, "},\"routes\":[]}");
    rt_table *full = rt_table_parse(doc, strlen(doc), "r", SEEDS, 2, err, sizeof err);
    assert_non_null(full);
    assert_int_equal(rt_table_upstream_count(full), GW_MAX_UPSTREAMS);
    const char *one_more = "{\"upstreams\":{\"extra\":{\"endpoints\":[\"127.0.0.1:1\"]}},\"routes\":[]}";
    assert_null(rt_table_parse(one_more, strlen(one_more), "r", SEEDS, 2, err, sizeof err));
    assert_string_equal(err, "r: upstreams: more than 64 upstreams in all (with gateway.json's)");
    rt_table_unref(full);
    rt_table *t = rt_table_parse(one_more, strlen(one_more), "r", SEEDS, 2, err, sizeof err);
    assert_non_null(t);
    assert_true(rt_table_upstream_index(t, "extra") >= 2);
    rt_table_unref(t);
    free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_parse_index_and_write_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_override_of_gateway_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_patch_of_limited_gateway_json_upstream,
                                        setup_limited, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slots_bounded_and_reused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
