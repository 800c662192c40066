/* test_routes.c — routes/: matching precedence, captures, rewriting, validation errors, the
 * 10,000-route table and snapshot lifetimes. Each test states the table, the request and the
 * exact answer it must get. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "routes/matcher.h"
#include "routes/route_edit.h"
#include "routes/route_table.h"

static const char *const UPSTREAMS[] = { "legacy", "user-service", "order-service" };

/* JSON written with single quotes (readable in C) parsed as source "x.json". Returns the
 * table or NULL with the error in err. */
static rt_table *parse_q(const char *squoted, char *err, size_t errlen)
{
    char *json = strdup(squoted);
    for (char *p = json; *p; p++) {
        if (*p == '\'')
            *p = '"';
    }
    rt_table *t = rt_table_parse(json, strlen(json), "x.json", UPSTREAMS, 3, err, errlen);
    free(json);
    return t;
}

static rt_table *must_parse(const char *squoted)
{
    char err[512];
    rt_table *t = parse_q(squoted, err, sizeof(err));
    if (!t)
        fail_msg("parse failed: %s", err);
    return t;
}

/* A table from "ID METHODS PATH" lines; METHODS is "*" (any) or "GET,POST". */
static rt_table *table_of(const char *const *specs)
{
    json_t *routes = json_array();
    for (; *specs; specs++) {
        char id[64], methods[64], path[256];
        assert_int_equal(sscanf(*specs, "%63s %63s %255s", id, methods, path), 3);
        json_t *r = json_pack("{s:s, s:s, s:s}", "id", id, "path", path, "upstream", "legacy");
        if (strcmp(methods, "*") != 0) {
            json_t *ms = json_array();
            for (char *m = strtok(methods, ","); m; m = strtok(NULL, ","))
                json_array_append_new(ms, json_string(m));
            json_object_set_new(r, "methods", ms);
        }
        json_array_append_new(routes, r);
    }
    json_t *doc = json_pack("{s:o}", "routes", routes);
    char *text = json_dumps(doc, 0);
    char err[512];
    rt_table *t = rt_table_parse(text, strlen(text), "x.json", UPSTREAMS, 3, err, sizeof(err));
    if (!t)
        fail_msg("parse failed: %s", err);
    free(text);
    json_decref(doc);
    return t;
}

/* The id of the route METHOD PATH matches, or "404". */
static const char *route_for(const rt_table *t, const char *method, const char *path,
                             rt_match *m)
{
    rt_match local;
    if (!m)
        m = &local;
    if (rt_table_match(t, gw_slice_of(method), gw_slice_of(path), m) != 0) {
        assert_null(m->route);
        return "404";
    }
    return m->route->id;
}

static void assert_slice(gw_slice s, const char *want)
{
    char got[512];
    snprintf(got, sizeof(got), "%.*s", (int)s.n, s.p);
    assert_string_equal(got, want);
}

/* ---- precedence ------------------------------------------------------------------------ */

static void test_literal_beats_param_beats_rest(void **state)
{
    (void)state;
    static const char *const specs[] = { "exact * /a/b", "param * /a/{x}", "arest * /a/**",
                                         "all * /**", "deep * /a/{x}/c", NULL };
    rt_table *t = table_of(specs);
    assert_string_equal(route_for(t, "GET", "/a/b", NULL), "exact");
    assert_string_equal(route_for(t, "GET", "/a/z", NULL), "param");
    assert_string_equal(route_for(t, "GET", "/a/b/c", NULL), "deep");
    assert_string_equal(route_for(t, "GET", "/a/b/d", NULL), "arest");
    assert_string_equal(route_for(t, "GET", "/a", NULL), "arest");
    assert_string_equal(route_for(t, "GET", "/b", NULL), "all");
    assert_string_equal(route_for(t, "GET", "/", NULL), "all");
    /* Left to right: a literal second segment beats a param there, whatever comes after. */
    static const char *const specs2[] = { "lit-rest * /x/y/**", "param-exact * /x/{p}/z", NULL };
    rt_table *t2 = table_of(specs2);
    assert_string_equal(route_for(t2, "GET", "/x/y/z", NULL), "lit-rest");
    assert_string_equal(route_for(t2, "GET", "/x/q/z", NULL), "param-exact");
    rt_table_unref(t);
    rt_table_unref(t2);
}

static void test_backtracking(void **state)
{
    (void)state;
    static const char *const specs[] = { "abc * /a/b/c", "axd * /a/{x}/d", "deep * /a/b/{y}/e",
                                         "deep2 * /a/{x}/c/d", "rest * /q/**",
                                         "qparam * /q/{x}/r", NULL };
    rt_table *t = table_of(specs);
    rt_match m;
    assert_string_equal(route_for(t, "GET", "/a/b/d", &m), "axd");
    assert_int_equal(m.n_params, 1);
    assert_slice(m.param_names[0], "x");
    assert_slice(m.param_values[0], "b");
    assert_string_equal(route_for(t, "GET", "/a/b/c", NULL), "abc");
    /* Deep failure under the literal branch backtracks to the param branch two levels up. */
    assert_string_equal(route_for(t, "GET", "/a/b/c/d", &m), "deep2");
    assert_int_equal(m.n_params, 1);
    assert_slice(m.param_values[0], "b");
    assert_string_equal(route_for(t, "GET", "/a/b/c/e", &m), "deep");
    assert_slice(m.param_names[0], "y");
    assert_slice(m.param_values[0], "c");
    /* A failed param branch falls back to the rest route and leaves no param behind. */
    assert_string_equal(route_for(t, "GET", "/q/1/s", &m), "rest");
    assert_int_equal(m.n_params, 0);
    assert_int_equal(m.has_rest, 1);
    assert_slice(m.rest, "1/s");
    assert_string_equal(route_for(t, "GET", "/a/z/z", NULL), "404");
    rt_table_unref(t);
}

static void test_root_and_trailing_slash(void **state)
{
    (void)state;
    static const char *const specs[] = { "root * /", "a * /a", "ax * /a/{x}", NULL };
    rt_table *t = table_of(specs);
    assert_string_equal(route_for(t, "GET", "/", NULL), "root");
    assert_string_equal(route_for(t, "GET", "/a", NULL), "a");
    assert_string_equal(route_for(t, "GET", "/a/", NULL), "404"); /* "" is not a {param} */
    assert_string_equal(route_for(t, "GET", "/a//", NULL), "404");
    assert_string_equal(route_for(t, "GET", "//", NULL), "404");
    assert_string_equal(route_for(t, "GET", "/b", NULL), "404");
    static const char *const specs2[] = { "root * /", "rest * /a/**", NULL };
    rt_table *t2 = table_of(specs2);
    rt_match m;
    assert_string_equal(route_for(t2, "GET", "/a/", &m), "rest");
    assert_slice(m.rest, "");
    assert_string_equal(route_for(t2, "GET", "/a", &m), "rest");
    assert_int_equal(m.has_rest, 1);
    assert_slice(m.rest, "");
    assert_string_equal(route_for(t2, "GET", "/ab", NULL), "404");
    rt_table_unref(t);
    rt_table_unref(t2);
}

static void test_method_fallthrough(void **state)
{
    (void)state;
    static const char *const specs[] = { "get GET,HEAD /u/{id}", "post POST /u/{id}",
                                         "rest * /u/**", "put-only PUT /p", NULL };
    rt_table *t = table_of(specs);
    assert_string_equal(route_for(t, "GET", "/u/1", NULL), "get");
    assert_string_equal(route_for(t, "HEAD", "/u/1", NULL), "get");
    assert_string_equal(route_for(t, "POST", "/u/1", NULL), "post");
    assert_string_equal(route_for(t, "DELETE", "/u/1", NULL), "rest");
    assert_string_equal(route_for(t, "PURGE", "/u/1", NULL), "rest"); /* unlisted: any only */
    assert_string_equal(route_for(t, "get", "/u/1", NULL), "rest");   /* methods are exact */
    assert_string_equal(route_for(t, "PUT", "/p", NULL), "put-only");
    assert_string_equal(route_for(t, "GET", "/p", NULL), "404");
    rt_table_unref(t);
}

static void test_no_match(void **state)
{
    (void)state;
    static const char *const specs[] = { "a * /a/{x}", NULL };
    rt_table *t = table_of(specs);
    rt_match m;
    assert_int_equal(rt_table_match(t, GW_SLICE_LIT("GET"), GW_SLICE_LIT("/b/1"), &m), -1);
    assert_null(m.route);
    assert_int_equal(rt_table_match(t, GW_SLICE_LIT("GET"), GW_SLICE_LIT("a/1"), &m), -1);
    assert_int_equal(rt_table_match(t, GW_SLICE_LIT("GET"), GW_SLICE_LIT(""), &m), -1);
    assert_int_equal(rt_table_match(NULL, GW_SLICE_LIT("GET"), GW_SLICE_LIT("/a/1"), &m), -1);
    /* Paths are matched raw: no percent-decoding. */
    assert_string_equal(route_for(t, "GET", "/%61/1", NULL), "404");
    /* The slice length counts, not a NUL: "/a/1x" cut to 4 bytes is "/a/1". */
    assert_int_equal(rt_table_match(t, GW_SLICE_LIT("GET"), (gw_slice){ "/a/1x", 4 }, &m), 0);
    assert_slice(m.param_values[0], "1");
    rt_table_unref(t);
}

/* ---- captures ---------------------------------------------------------------------------- */

static void test_params_capture(void **state)
{
    (void)state;
    static const char *const specs[] = { "items * /orders/{oid}/items/{iid}",
                                         "other * /orders/{id}/x", NULL };
    rt_table *t = table_of(specs);
    rt_match m;
    assert_string_equal(route_for(t, "GET", "/orders/o-1/items/%20i", &m), "items");
    assert_int_equal(m.n_params, 2);
    assert_slice(m.param_names[0], "oid");
    assert_slice(m.param_values[0], "o-1");
    assert_slice(m.param_names[1], "iid");
    assert_slice(m.param_values[1], "%20i");
    assert_int_equal(m.has_rest, 0);
    /* Same trie node, another route: names come from the route that won. */
    assert_string_equal(route_for(t, "GET", "/orders/7/x", &m), "other");
    assert_int_equal(m.n_params, 1);
    assert_slice(m.param_names[0], "id");
    assert_slice(m.param_values[0], "7");
    rt_table_unref(t);
}

static void test_rest_capture(void **state)
{
    (void)state;
    static const char *const specs[] = { "rest * /files/{bucket}/**", NULL };
    rt_table *t = table_of(specs);
    rt_match m;
    assert_string_equal(route_for(t, "GET", "/files/b/x/y/z.txt", &m), "rest");
    assert_int_equal(m.has_rest, 1);
    assert_slice(m.rest, "x/y/z.txt");
    assert_slice(m.param_values[0], "b");
    assert_string_equal(route_for(t, "GET", "/files/b", &m), "rest");
    assert_slice(m.rest, "");
    assert_string_equal(route_for(t, "GET", "/files/b/", &m), "rest");
    assert_slice(m.rest, "");
    assert_string_equal(route_for(t, "GET", "/files/b/x/", &m), "rest");
    assert_slice(m.rest, "x/");
    assert_string_equal(route_for(t, "GET", "/files", NULL), "404");
    rt_table_unref(t);
}

/* ---- rewrite ----------------------------------------------------------------------------- */

/* Matches PATH (with ?QUERY split off) in T and rewrites it into a buffer of OUTLEN bytes. */
static const char *rewrite(const rt_table *t, const char *target, size_t outlen)
{
    static char out[512];
    const char *q = strchr(target, '?');
    gw_slice path = { target, q ? (size_t)(q - target) : strlen(target) };
    gw_slice query = q ? gw_slice_of(q + 1) : (gw_slice){ NULL, 0 };
    rt_match m;
    assert_int_equal(rt_table_match(t, GW_SLICE_LIT("GET"), path, &m), 0);
    memset(out, 'X', sizeof(out));
    int n = rt_rewrite(&m, path, query, out, outlen);
    if (n < 0)
        return "(too small)";
    assert_int_equal((size_t)n, strlen(out));
    return out;
}

static void test_rewrite_strip_prefix(void **state)
{
    (void)state;
    rt_table *t = must_parse(
        "{'routes':["
        "{'id':'api','path':'/api/users/**','upstream':'legacy',"
        " 'rewrite':{'strip_prefix':'/api'}},"
        "{'id':'whole','path':'/api','upstream':'legacy','rewrite':{'strip_prefix':'/api'}},"
        "{'id':'ver','path':'/{v}/orders/**','upstream':'legacy',"
        " 'rewrite':{'strip_prefix':'/v1'}},"
        "{'id':'plain','path':'/plain/**','upstream':'legacy'}]}");
    assert_string_equal(rewrite(t, "/api/users/5", 512), "/users/5");
    assert_string_equal(rewrite(t, "/api/users", 512), "/users");
    assert_string_equal(rewrite(t, "/api/users/5?a=1&b", 512), "/users/5?a=1&b");
    assert_string_equal(rewrite(t, "/api", 512), "/");
    assert_string_equal(rewrite(t, "/v1/orders/9", 512), "/orders/9");
    /* Only at a segment boundary, and only when the path has the prefix at all. */
    assert_string_equal(rewrite(t, "/v1x/orders/9", 512), "/v1x/orders/9");
    assert_string_equal(rewrite(t, "/v2/orders/9", 512), "/v2/orders/9");
    assert_string_equal(rewrite(t, "/plain/x?q", 512), "/plain/x?q");
    assert_string_equal(rewrite(t, "/plain/x?", 512), "/plain/x"); /* empty query: no "?" */
    rt_table_unref(t);
}

static void test_rewrite_template(void **state)
{
    (void)state;
    rt_table *t = must_parse(
        "{'routes':["
        "{'id':'user','path':'/api/users/{id}','upstream':'user-service',"
        " 'rewrite':{'template':'/users/{id}'}},"
        "{'id':'ship','path':'/api/orders/{id}/shipment','upstream':'legacy',"
        " 'rewrite':{'template':'/shipments?order_id={id}'}},"
        "{'id':'two','path':'/a/{x}/b/{y}','upstream':'legacy',"
        " 'rewrite':{'template':'/{y}-{x}/{x}'}},"
        "{'id':'rest','path':'/legacy/**','upstream':'legacy',"
        " 'rewrite':{'template':'/new/{**}'}}]}");
    assert_string_equal(rewrite(t, "/api/users/42", 512), "/users/42");
    assert_string_equal(rewrite(t, "/api/users/42?x=1", 512), "/users/42?x=1");
    assert_string_equal(rewrite(t, "/api/orders/7/shipment", 512), "/shipments?order_id=7");
    /* The template has its own query: the client's joins it with "&". */
    assert_string_equal(rewrite(t, "/api/orders/7/shipment?v=2", 512),
                        "/shipments?order_id=7&v=2");
    assert_string_equal(rewrite(t, "/a/1/b/2", 512), "/2-1/1");
    assert_string_equal(rewrite(t, "/legacy/a/b", 512), "/new/a/b");
    assert_string_equal(rewrite(t, "/legacy", 512), "/new/");
    rt_table_unref(t);
}

static void test_rewrite_strip_and_template(void **state)
{
    (void)state;
    rt_table *t = must_parse(
        "{'routes':["
        "{'id':'v2','path':'/api/**','upstream':'legacy',"
        " 'rewrite':{'strip_prefix':'/api','template':'/v2'}},"
        "{'id':'slash','path':'/old/**','upstream':'legacy',"
        " 'rewrite':{'strip_prefix':'/old','template':'/new/'}},"
        "{'id':'param','path':'/t/{tenant}/**','upstream':'legacy',"
        " 'rewrite':{'strip_prefix':'/t','template':'/tenants'}}]}");
    assert_string_equal(rewrite(t, "/api/users/5?q=1", 512), "/v2/users/5?q=1");
    assert_string_equal(rewrite(t, "/api", 512), "/v2");
    assert_string_equal(rewrite(t, "/old/x", 512), "/new/x");
    assert_string_equal(rewrite(t, "/t/acme/x", 512), "/tenants/acme/x");
    rt_table_unref(t);
}

static void test_rewrite_too_small(void **state)
{
    (void)state;
    rt_table *t = must_parse("{'routes':[{'id':'api','path':'/api/**','upstream':'legacy',"
                             " 'rewrite':{'strip_prefix':'/api'}},"
                             "{'id':'tpl','path':'/t/{x}','upstream':'legacy',"
                             " 'rewrite':{'template':'/long/{x}'}}]}");
    /* "/users/5" is 8 bytes: 9 with the NUL. */
    assert_string_equal(rewrite(t, "/api/users/5", 9), "/users/5");
    assert_string_equal(rewrite(t, "/api/users/5", 8), "(too small)");
    assert_string_equal(rewrite(t, "/api/users/5?ab", 12), "/users/5?ab");
    assert_string_equal(rewrite(t, "/api/users/5?ab", 11), "(too small)");
    assert_string_equal(rewrite(t, "/api/users/5", 0), "(too small)");
    assert_string_equal(rewrite(t, "/t/abc", 10), "/long/abc");
    assert_string_equal(rewrite(t, "/t/abc", 9), "(too small)");
    assert_string_equal(rewrite(t, "/t/abc", 4), "(too small)");
    rt_table_unref(t);
}

/* ---- validation -------------------------------------------------------------------------- */

#define R0 "'id':'a','upstream':'legacy'"

static const struct {
    const char *json;
    const char *err;
} bad_docs[] = {
    { "[]", "x.json: (root): must be an object" },
    { "{}", "x.json: routes: missing" },
    { "{'routes':{}}", "x.json: routes: must be an array" },
    { "{'routes':[],'bogus':1}", "x.json: bogus: unknown field" },
    { "{'routes':[1]}", "x.json: routes[0]: must be an object" },
    { "{'routes':[{'path':'/a','upstream':'legacy'}]}", "x.json: routes[0].id: missing" },
    { "{'routes':[{'id':5,'path':'/a','upstream':'legacy'}]}",
      "x.json: routes[0].id: must be a string" },
    { "{'routes':[{'id':'','path':'/a','upstream':'legacy'}]}",
      "x.json: routes[0].id: must not be empty" },
    { "{'routes':[{'id':'a/b','path':'/a','upstream':'legacy'}]}",
      "x.json: routes[0].id: \"a/b\": only letters, digits and \"-._~\" are allowed" },
    { "{'routes':[{" R0 ",'path':'/a'},{" R0 ",'path':'/b'}]}",
      "x.json: routes[1].id: duplicate id \"a\" (also routes[0])" },
    { "{'routes':[{" R0 ",'path':'/a','methods':'GET'}]}",
      "x.json: routes[0].methods: must be an array of method names" },
    { "{'routes':[{" R0 ",'path':'/a','methods':[1]}]}",
      "x.json: routes[0].methods[0]: must be a string" },
    { "{'routes':[{" R0 ",'path':'/a','methods':['GET','FETCH']}]}",
      "x.json: routes[0].methods[1]: unknown method \"FETCH\"" },
    { "{'routes':[{" R0 ",'path':'/a','methods':['get']}]}",
      "x.json: routes[0].methods[0]: unknown method \"get\"" },
    { "{'routes':[{" R0 ",'path':'/a','methods':['GET','POST','GET']}]}",
      "x.json: routes[0].methods[2]: duplicate method \"GET\"" },
    { "{'routes':[{" R0 "}]}", "x.json: routes[0].path: missing" },
    { "{'routes':[{" R0 ",'path':7}]}", "x.json: routes[0].path: must be a string" },
    { "{'routes':[{" R0 ",'path':'a/b'}]}", "x.json: routes[0].path: must start with \"/\"" },
    { "{'routes':[{" R0 ",'path':''}]}", "x.json: routes[0].path: must start with \"/\"" },
    { "{'routes':[{" R0 ",'path':'/a/**/b'}]}",
      "x.json: routes[0].path: \"**\" must be the last segment" },
    { "{'routes':[{" R0 ",'path':'/**/'}]}",
      "x.json: routes[0].path: \"**\" must be the last segment" },
    { "{'routes':[{" R0 ",'path':'/a//b'}]}", "x.json: routes[0].path: empty segment" },
    { "{'routes':[{" R0 ",'path':'/a/'}]}", "x.json: routes[0].path: empty segment" },
    { "{'routes':[{" R0 ",'path':'/a/{}'}]}", "x.json: routes[0].path: empty {param} name" },
    { "{'routes':[{" R0 ",'path':'/{id}/x/{id}'}]}",
      "x.json: routes[0].path: duplicate {param} \"id\"" },
    { "{'routes':[{" R0 ",'path':'/{a b}'}]}",
      "x.json: routes[0].path: bad {param} name \"a b\"" },
    { "{'routes':[{" R0 ",'path':'/{**}'}]}", "x.json: routes[0].path: bad {param} name \"**\"" },
    { "{'routes':[{" R0 ",'path':'/x{id}'}]}",
      "x.json: routes[0].path: a {param} must be a whole segment" },
    { "{'routes':[{" R0 ",'path':'/a/*'}]}",
      "x.json: routes[0].path: \"*\" is only allowed as a whole \"**\" segment" },
    { "{'routes':[{" R0 ",'path':'/a?b'}]}", "x.json: routes[0].path: byte 0x3f is not allowed" },
    { "{'routes':[{" R0 ",'path':'/a b'}]}", "x.json: routes[0].path: byte 0x20 is not allowed" },
    { "{'routes':[{" R0 ",'path':'/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}/{j}/{k}/{l}/{m}/{n}/{o}/"
      "{p}/{q}'}]}",
      "x.json: routes[0].path: more than 16 {param} segments" },
    { "{'routes':[{'id':'a','path':'/a'}]}", "x.json: routes[0].upstream: missing" },
    { "{'routes':[{'id':'a','path':'/a','upstream':'foo'}]}",
      "x.json: routes[0].upstream: unknown upstream \"foo\"" },
    { "{'routes':[{" R0 ",'path':'/a','rewrite':'x'}]}",
      "x.json: routes[0].rewrite: must be an object" },
    { "{'routes':[{" R0 ",'path':'/a','rewrite':{'bogus':1}}]}",
      "x.json: routes[0].rewrite.bogus: unknown field" },
    { "{'routes':[{" R0 ",'path':'/a','rewrite':{'template':1}}]}",
      "x.json: routes[0].rewrite.template: must be a string" },
    { "{'routes':[{" R0 ",'path':'/a/{x}','rewrite':{'template':'/u/{id}'}}]}",
      "x.json: routes[0].rewrite.template: {id} is not captured by the path" },
    { "{'routes':[{" R0 ",'path':'/a/{x}','rewrite':{'template':'/u/{**}'}}]}",
      "x.json: routes[0].rewrite.template: {**} is not captured by the path" },
    { "{'routes':[{" R0 ",'path':'/a/{x}','rewrite':{'template':'/u/{}'}}]}",
      "x.json: routes[0].rewrite.template: {} is not captured by the path" },
    { "{'routes':[{" R0 ",'path':'/a','rewrite':{'template':'u'}}]}",
      "x.json: routes[0].rewrite.template: must start with \"/\"" },
    { "{'routes':[{" R0 ",'path':'/a/{x}','rewrite':{'template':'/u/{x'}}]}",
      "x.json: routes[0].rewrite.template: unclosed \"{\"" },
    { "{'routes':[{" R0 ",'path':'/a/{x}','rewrite':{'template':'/u/x}'}}]}",
      "x.json: routes[0].rewrite.template: unmatched \"}\"" },
    { "{'routes':[{" R0 ",'path':'/a/{x}','rewrite':{'template':'/u#{x}'}}]}",
      "x.json: routes[0].rewrite.template: byte 0x23 is not allowed" },
    { "{'routes':[{" R0 ",'path':'/a/{x}','rewrite':{'strip_prefix':'/a','template':'/u?q={x}'}}"
      "]}",
      "x.json: routes[0].rewrite.template: a template with \"?\" cannot be used with "
      "strip_prefix" },
    { "{'routes':[{" R0 ",'path':'/a/**','rewrite':{'strip_prefix':'/b'}}]}",
      "x.json: routes[0].rewrite.strip_prefix: the path \"/a/**\" cannot start with \"/b\"" },
    { "{'routes':[{" R0 ",'path':'/a/b','rewrite':{'strip_prefix':'/a/b/c'}}]}",
      "x.json: routes[0].rewrite.strip_prefix: the path \"/a/b\" cannot start with \"/a/b/c\"" },
    { "{'routes':[{" R0 ",'path':'/ab/c','rewrite':{'strip_prefix':'/a'}}]}",
      "x.json: routes[0].rewrite.strip_prefix: the path \"/ab/c\" cannot start with \"/a\"" },
    { "{'routes':[{" R0 ",'path':'/a/**','rewrite':{'strip_prefix':'/a/'}}]}",
      "x.json: routes[0].rewrite.strip_prefix: empty segment" },
    { "{'routes':[{" R0 ",'path':'/a/**','rewrite':{'strip_prefix':'/'}}]}",
      "x.json: routes[0].rewrite.strip_prefix: must not be \"/\"" },
    { "{'routes':[{" R0 ",'path':'/a/**','rewrite':{'strip_prefix':'a'}}]}",
      "x.json: routes[0].rewrite.strip_prefix: must start with \"/\"" },
    { "{'routes':[{" R0 ",'path':'/a/**','rewrite':{'strip_prefix':'/a/*'}}]}",
      "x.json: routes[0].rewrite.strip_prefix: \"*\" is only allowed as a whole \"**\" "
      "segment" },
    { "{'routes':[{" R0 ",'path':'/a','max_body_bytes':-1}]}",
      "x.json: routes[0].max_body_bytes: must not be negative" },
    { "{'routes':[{" R0 ",'path':'/a','max_body_bytes':'1'}]}",
      "x.json: routes[0].max_body_bytes: must be an integer" },
    { "{'routes':[{" R0 ",'path':'/a','max_body_bytes':1.5}]}",
      "x.json: routes[0].max_body_bytes: must be an integer" },
    { "{'routes':[{" R0 ",'path':'/a'},{'id':'b','path':'/b','upstream':'legacy','bogus':1}]}",
      "x.json: routes[1].bogus: unknown field" },
    /* Same pattern (param names do not count) with a method in common. */
    { "{'routes':[{" R0 ",'path':'/a/{x}','methods':['GET','POST']},"
      "{'id':'b','path':'/a/{y}','methods':['POST'],'upstream':'legacy'}]}",
      "x.json: routes[1].path: same pattern as routes[0] (\"a\") with overlapping methods" },
    { "{'routes':[{" R0 ",'path':'/a/**','methods':['GET']},"
      "{'id':'b','path':'/a/**','upstream':'legacy'}]}",
      "x.json: routes[1].path: same pattern as routes[0] (\"a\") with overlapping methods" },
    { "{'routes':[{" R0 ",'path':'/a','upgrade':'websocket'}]}",
      "x.json: routes[0].upgrade: must be an array of protocol names (e.g. [\"websocket\"])" },
    { "{'routes':[{" R0 ",'path':'/a','upgrade':['ok','a b']}]}",
      "x.json: routes[0].upgrade: [1] must be a protocol name (a token of the Upgrade header, at most 64 characters)" },
    { "{'routes':[{" R0 ",'path':'/a','upgrade':['websocket','WEBSOCKET']}]}",
      "x.json: routes[0].upgrade: \"WEBSOCKET\" is listed twice" },
    { "{'routes':[{" R0 ",'path':'/a','tunnel_idle_timeout_ms':0}]}",
      "x.json: routes[0].tunnel_idle_timeout_ms: must be an integer from 1 to 86400000" },
    /* The first error in document order wins. */
    { "{'routes':[{'id':'a','path':'/a','upstream':'nope'},{'id':'a','path':'x'}]}",
      "x.json: routes[0].upstream: unknown upstream \"nope\"" },
};

static void test_validation_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_docs) / sizeof(bad_docs[0]); i++) {
        char err[512] = "untouched";
        rt_table *t = parse_q(bad_docs[i].json, err, sizeof(err));
        if (t || strcmp(err, bad_docs[i].err) != 0)
            fail_msg("bad_docs[%zu] %s\n  want: %s\n  got:  %s", i, bad_docs[i].json,
                     bad_docs[i].err, t ? "(accepted)" : err);
    }
}

/* "upgrade" is kept lower-cased, matched case-insensitively, and written back with
 * tunnel_idle_timeout_ms; [] means none. */
static void test_upgrade(void **state)
{
    (void)state;
    rt_table *t = must_parse("{'routes':[{'id':'a','path':'/a','upstream':'legacy',"
                             "'upgrade':['WebSocket','h2c'],'tunnel_idle_timeout_ms':500},"
                             "{'id':'b','path':'/b','upstream':'legacy','upgrade':[]}]}");
    const rt_route *a = rt_table_find(t, "a"), *b = rt_table_find(t, "b");
    assert_string_equal(rt_route_upgrade_allows(a, GW_SLICE_LIT("WEBSOCKET")), "websocket");
    assert_string_equal(rt_route_upgrade_allows(a, GW_SLICE_LIT("h2c")), "h2c");
    assert_null(rt_route_upgrade_allows(a, GW_SLICE_LIT("websockets")));
    assert_null(rt_route_upgrade_allows(a, GW_SLICE_LIT("")));
    assert_null(rt_route_upgrade_allows(b, GW_SLICE_LIT("websocket")));
    assert_int_equal(a->tunnel_idle_timeout_ms, 500);
    assert_int_equal(b->tunnel_idle_timeout_ms, 0);
    json_t *j = rt_route_to_json(a);
    char *s = json_dumps(json_object_get(j, "upgrade"), JSON_COMPACT);
    assert_string_equal(s, "[\"websocket\",\"h2c\"]");
    assert_int_equal(json_integer_value(json_object_get(j, "tunnel_idle_timeout_ms")), 500);
    free(s);
    json_decref(j);
    j = rt_route_to_json(b);
    assert_null(json_object_get(j, "upgrade"));
    json_decref(j);
    rt_table_unref(t);
}

static void test_json_syntax_error(void **state)
{
    (void)state;
    char err[512];
    assert_null(parse_q("{'routes':[\n  {'id':'a',}]}", err, sizeof(err)));
    assert_true(strncmp(err, "x.json: line 2 column ", 22) == 0);
    assert_null(parse_q("{'routes':[],'routes':[]}", err, sizeof(err)));
    assert_non_null(strstr(err, "duplicate object key"));
    assert_true(strncmp(err, "x.json: line 1 column ", 22) == 0);
    assert_null(rt_table_parse("", 0, "x.json", UPSTREAMS, 3, err, sizeof(err)));
    assert_true(strncmp(err, "x.json: line ", 13) == 0);
    /* A short error buffer is cut, still NUL-terminated. */
    char small[8];
    assert_null(parse_q("{}", small, sizeof(small)));
    assert_string_equal(small, "x.json:");
}

static void test_valid_tables(void **state)
{
    (void)state;
    /* Accepted: disjoint methods on one pattern, exact next to rest, strip_prefix through
     * params and past "**", empty routes. */
    rt_table *t = must_parse(
        "{'routes':["
        "{'id':'g','path':'/a/{x}','methods':['GET'],'upstream':'legacy'},"
        "{'id':'p','path':'/a/{y}','methods':['POST','PUT'],'upstream':'order-service'},"
        "{'id':'e','path':'/a','upstream':'legacy'},"
        "{'id':'r','path':'/a/**','upstream':'legacy','max_body_bytes':0},"
        "{'id':'s','path':'/a/{p}/b/**','upstream':'user-service','methods':[],"
        " 'rewrite':{'strip_prefix':'/a/x/b/c/d'}}]}");
    assert_int_equal(rt_table_count(t), 5);
    assert_string_equal(route_for(t, "GET", "/a/1", NULL), "g");
    assert_string_equal(route_for(t, "PUT", "/a/1", NULL), "p");
    assert_string_equal(route_for(t, "DELETE", "/a/1", NULL), "r");

    const rt_route *g = rt_table_route(t, 0), *p = rt_table_route(t, 1);
    const rt_route *r = rt_table_route(t, 3), *s = rt_table_route(t, 4);
    assert_int_equal(g->methods, RT_M_GET);
    assert_int_equal(p->methods, RT_M_POST | RT_M_PUT);
    assert_int_equal(r->methods, RT_M_ANY);
    assert_int_equal(s->methods, RT_M_ANY);
    assert_string_equal(p->upstream, "order-service");
    assert_int_equal(p->upstream_index, 2);
    assert_int_equal(s->upstream_index, 1);
    assert_int_equal(g->max_body_bytes, -1);
    assert_int_equal(r->max_body_bytes, 0);
    assert_null(g->strip_prefix);
    assert_null(g->rewrite_template);
    assert_string_equal(s->strip_prefix, "/a/x/b/c/d");
    assert_string_equal(s->path, "/a/{p}/b/**");
    assert_null(rt_table_route(t, 5));
    assert_null(rt_table_route(t, -1));
    rt_table_unref(t);

    t = must_parse("{'routes':[]}");
    assert_int_equal(rt_table_count(t), 0);
    assert_string_equal(route_for(t, "GET", "/", NULL), "404");
    rt_table_unref(t);
}

static void test_limits(void **state)
{
    (void)state;
    char err[512];
    /* 100,001 routes: refused before any is read. */
    size_t n = 100001, len = 0;
    char *doc = malloc(16 + n * 3);
    len += (size_t)sprintf(doc, "{'routes':[");
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(doc + len, i ? ",{}" : "{}");
    strcpy(doc + len, "]}");
    assert_null(parse_q(doc, err, sizeof(err)));
    assert_string_equal(err, "x.json: routes: more than 100000 routes");
    free(doc);

    /* Strings: 4096 bytes pass, 4097 do not. */
    char path[4200], json[4400];
    memset(path, 'a', sizeof(path));
    path[0] = '/';
    path[4096] = '\0';
    snprintf(json, sizeof(json), "{'routes':[{" R0 ",'path':'%s'}]}", path);
    rt_table *t = parse_q(json, err, sizeof(err));
    assert_non_null(t);
    rt_table_unref(t);
    path[4096] = 'a';
    path[4097] = '\0';
    snprintf(json, sizeof(json), "{'routes':[{" R0 ",'path':'%s'}]}", path);
    assert_null(parse_q(json, err, sizeof(err)));
    assert_string_equal(err, "x.json: routes[0].path: longer than 4096 bytes");
}

static void test_load_file(void **state)
{
    (void)state;
    char err[512];
    assert_null(rt_table_load_file("/nonexistent/routes.json", UPSTREAMS, 3, err, sizeof(err)));
    assert_string_equal(err, "/nonexistent/routes.json: cannot read: No such file or directory");
    assert_null(rt_table_load_file("/tmp", UPSTREAMS, 3, err, sizeof(err)));
    assert_string_equal(err, "/tmp: cannot read: Is a directory");

    char file[] = "/tmp/test_routes_XXXXXX";
    int fd = mkstemp(file);
    assert_true(fd >= 0);
    const char *doc = "{\"routes\":[{\"id\":\"a\",\"path\":\"/a\",\"upstream\":\"nope\"}]}";
    assert_int_equal(write(fd, doc, strlen(doc)), (ssize_t)strlen(doc));
    close(fd);
    assert_null(rt_table_load_file(file, UPSTREAMS, 3, err, sizeof(err)));
    char want[600];
    snprintf(want, sizeof(want), "%s: routes[0].upstream: unknown upstream \"nope\"", file);
    assert_string_equal(err, want);
    rt_table *t = rt_table_load_file(file, UPSTREAMS + 1, 1, err, sizeof(err));
    assert_null(t);
    const char *const with_nope[] = { "nope" };
    t = rt_table_load_file(file, with_nope, 1, err, sizeof(err));
    assert_non_null(t);
    assert_int_equal(rt_table_route(t, 0)->upstream_index, 0);
    rt_table_unref(t);
    unlink(file);
}

/* ---- scale ------------------------------------------------------------------------------- */

static void test_10000_routes(void **state)
{
    (void)state;
    enum { N = 10000 };
    json_t *routes = json_array();
    char id[32], path[64];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "r%d", i);
        snprintf(path, sizeof(path), i % 2 ? "/s%d/**" : "/s%d/items/{id}", i);
        json_array_append_new(routes, json_pack("{s:s, s:s, s:s}", "id", id, "path", path,
                                                "upstream", "legacy"));
    }
    json_array_append_new(routes, json_pack("{s:s, s:s, s:s}", "id", "fallback", "path",
                                            "/{svc}/items/{id}", "upstream", "legacy"));
    json_t *doc = json_pack("{s:o}", "routes", routes);
    char *text = json_dumps(doc, 0);
    char err[256];
    rt_table *t = rt_table_parse(text, strlen(text), "big.json", UPSTREAMS, 3, err, sizeof(err));
    free(text);
    json_decref(doc);
    if (!t)
        fail_msg("%s", err);
    assert_int_equal(rt_table_count(t), N + 1);

    rt_match m;
    char want[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "r%d", i);
        snprintf(path, sizeof(path), "/s%d/items/%d", i, i * 7);
        assert_string_equal(route_for(t, "GET", path, &m), id);
        if (i % 2) {
            assert_int_equal(m.n_params, 0);
            snprintf(want, sizeof(want), "items/%d", i * 7);
            assert_slice(m.rest, want);
        } else {
            assert_int_equal(m.n_params, 1);
            snprintf(want, sizeof(want), "%d", i * 7);
            assert_slice(m.param_values[0], want);
        }
    }
    assert_string_equal(route_for(t, "GET", "/s10000/items/1", &m), "fallback");
    assert_slice(m.param_names[0], "svc");
    assert_slice(m.param_values[0], "s10000");
    assert_string_equal(route_for(t, "GET", "/s0/other", NULL), "404");
    rt_table_unref(t);
}

/* ---- snapshots --------------------------------------------------------------------------- */

static const char *const SNAP_SPECS[] = { "a * /a", NULL };

static void test_snapshot_refcount(void **state)
{
    (void)state;
    int base = rt__tables_alive();
    assert_null(rt_current_acquire());
    uint64_t gen = rt_current_generation();

    rt_table *t1 = table_of(SNAP_SPECS);
    rt_table *t2 = table_of(SNAP_SPECS);
    assert_int_equal(rt__tables_alive(), base + 2);
    rt_current_publish(t1);
    assert_int_equal(rt_table_version(t1), 1); /* the first publish of the process */
    assert_true(rt_current_generation() != gen);

    rt_table *pinned = rt_current_acquire(); /* an in-flight request */
    assert_ptr_equal(pinned, t1);
    gen = rt_current_generation();
    rt_current_publish(t2);
    assert_true(rt_current_generation() != gen);
    assert_int_equal(rt_table_version(t2), 2);

    /* The old table outlives the publish while pinned and still answers. */
    assert_int_equal(rt__tables_alive(), base + 2);
    assert_string_equal(route_for(pinned, "GET", "/a", NULL), "a");
    rt_table *now = rt_current_acquire();
    assert_ptr_equal(now, t2);
    rt_table_unref(now);

    rt_table_unref(pinned); /* the last reference: freed */
    assert_int_equal(rt__tables_alive(), base + 1);
    rt_current_clear();
    assert_int_equal(rt__tables_alive(), base);
    assert_null(rt_current_acquire());
    rt_current_clear(); /* twice is fine */
}

static void test_snapshot_versions(void **state)
{
    (void)state;
    int base = rt__tables_alive();
    rt_table *t = table_of(SNAP_SPECS);
    rt_current_publish(t);
    uint64_t v = rt_table_version(t);
    assert_true(v >= 1);

    /* A version set by the source is kept when higher, else replaced: never backwards. */
    t = table_of(SNAP_SPECS);
    rt_table_set_version(t, v + 100);
    rt_current_publish(t);
    assert_int_equal(rt_table_version(t), v + 100);
    t = table_of(SNAP_SPECS);
    rt_table_set_version(t, 3);
    rt_current_publish(t);
    assert_int_equal(rt_table_version(t), v + 101);
    t = table_of(SNAP_SPECS);
    rt_current_publish(t);
    assert_int_equal(rt_table_version(t), v + 102);

    /* Extra references keep a table alive after it is no longer current. */
    rt_table_ref(t);
    rt_current_clear();
    assert_int_equal(rt__tables_alive(), base + 1);
    rt_table_unref(t);
    assert_int_equal(rt__tables_alive(), base);
    rt_table_unref(NULL);
}

typedef struct reader_arg {
    int iterations;
    int matched;
} reader_arg;

/* A worker: keeps a pinned table, re-acquires when the generation moved, matches. */
static void *reader(void *p)
{
    reader_arg *a = p;
    rt_table *pinned = NULL;
    uint64_t seen = 0;
    for (int i = 0; i < a->iterations; i++) {
        uint64_t gen = rt_current_generation();
        if (!pinned || gen != seen) {
            rt_table_unref(pinned);
            pinned = rt_current_acquire();
            seen = gen;
        }
        rt_match m;
        if (pinned && rt_table_match(pinned, GW_SLICE_LIT("GET"), GW_SLICE_LIT("/a"), &m) == 0)
            a->matched++;
    }
    rt_table_unref(pinned);
    return NULL;
}

static void test_snapshot_threads(void **state)
{
    (void)state;
    int base = rt__tables_alive();
    enum { READERS = 4 };
    pthread_t th[READERS];
    reader_arg args[READERS];
    rt_current_publish(table_of(SNAP_SPECS));
    for (int i = 0; i < READERS; i++) {
        args[i] = (reader_arg){ 20000, 0 };
        assert_int_equal(pthread_create(&th[i], NULL, reader, &args[i]), 0);
    }
    for (int i = 0; i < 300; i++)
        rt_current_publish(table_of(SNAP_SPECS));
    for (int i = 0; i < READERS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].matched, args[i].iterations);
    }
    rt_current_clear();
    assert_int_equal(rt__tables_alive(), base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literal_beats_param_beats_rest),
        cmocka_unit_test(test_backtracking),
        cmocka_unit_test(test_root_and_trailing_slash),
        cmocka_unit_test(test_method_fallthrough),
        cmocka_unit_test(test_no_match),
        cmocka_unit_test(test_params_capture),
        cmocka_unit_test(test_rest_capture),
        cmocka_unit_test(test_rewrite_strip_prefix),
        cmocka_unit_test(test_rewrite_template),
        cmocka_unit_test(test_rewrite_strip_and_template),
        cmocka_unit_test(test_rewrite_too_small),
        cmocka_unit_test(test_validation_errors),
        cmocka_unit_test(test_upgrade),
        cmocka_unit_test(test_json_syntax_error),
        cmocka_unit_test(test_valid_tables),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_10000_routes),
        /* Snapshot tests last and in this order: the first expects version 1. */
        cmocka_unit_test(test_snapshot_refcount),
        cmocka_unit_test(test_snapshot_versions),
        cmocka_unit_test(test_snapshot_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
