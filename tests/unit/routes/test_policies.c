/* test_policies.c — routes/ cutover policies: split ratios, sticky keys, override, shadow,
 * fallback, per-upstream rewrites, their validation errors (exact text), legacy_upstream,
 * and the canonical JSON round trip. Randomness comes from a seeded generator, so every
 * count asserted here is the same on every run. */
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

/* splitmix64: a tiny seeded generator with good 64-bit output. */
static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* JSON written with single quotes, parsed as "x.json" against UPS[0..n). */
static rt_table *parse_with(const char *squoted, const char *const *ups, int n, char *err,
                            size_t errlen)
{
    char *json = strdup(squoted);
    for (char *p = json; *p; p++) {
        if (*p == '\'')
            *p = '"';
    }
    rt_table *t = rt_table_parse(json, strlen(json), "x.json", ups, n, err, errlen);
    free(json);
    return t;
}

static rt_table *must_parse(const char *squoted)
{
    char err[512];
    rt_table *t = parse_with(squoted, UPSTREAMS, 3, err, sizeof(err));
    if (!t)
        fail_msg("parse failed: %s", err);
    return t;
}

/* A table holding one route "r" at /r/{id} with the given extra fields. */
static rt_table *one_route(const char *fields)
{
    char doc[2048];
    snprintf(doc, sizeof(doc), "{'routes':[{'id':'r','path':'/r/{id}','upstream':'legacy',%s}]}",
             fields);
    return must_parse(doc);
}

static const gw_slice NONE = { NULL, 0 };

/* ---- split --------------------------------------------------------------------------- */

static void test_split_ratio(void **state)
{
    (void)state;
    rng_state = 1;
    rt_table *t = one_route("'split':{'legacy':90,'order-service':10}");
    const rt_route *r = rt_table_route(t, 0);
    int n[3] = { 0 };
    for (int i = 0; i < 10000; i++)
        n[rt_route_pick(r, NONE, rnd())]++;
    assert_in_range(n[ORDERS], 800, 1200); /* 10% +- 2% */
    assert_int_equal(n[LEGACY] + n[ORDERS], 10000);
    assert_int_equal(n[USERS], 0);
    /* Exactly: the weights tile the random space in document order. */
    for (uint64_t x = 0; x < 300; x++)
        assert_int_equal(rt_route_pick(r, NONE, x), x % 100 < 90 ? LEGACY : ORDERS);
    rt_table_unref(t);

    /* Three sides, one of them at weight 0, weights not summing to 100. */
    t = one_route("'split':{'legacy':5000,'user-service':0,'order-service':15000}");
    r = rt_table_route(t, 0);
    n[0] = n[1] = n[2] = 0;
    for (int i = 0; i < 10000; i++)
        n[rt_route_pick(r, NONE, rnd())]++;
    assert_in_range(n[LEGACY], 2300, 2700);
    assert_int_equal(n[USERS], 0);
    assert_int_equal(r->split_total, 20000);
    for (uint64_t x = 0; x < 20000; x++) /* a weight of 0 is never picked */
        assert_int_equal(rt_route_pick(r, NONE, x), x < 5000 ? LEGACY : ORDERS);
    rt_table_unref(t);

    /* No split: always the primary, whatever the key or the dice. */
    t = one_route("'max_body_bytes':1");
    r = rt_table_route(t, 0);
    assert_int_equal(r->n_split, 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(rt_route_pick(r, GW_SLICE_LIT("k"), rnd()), LEGACY);
    rt_table_unref(t);

    /* A split of a single side sends everything there, not to the primary. */
    t = one_route("'split':{'order-service':1}");
    assert_int_equal(rt_route_pick(rt_table_route(t, 0), NONE, rnd()), ORDERS);
    rt_table_unref(t);
}

static void test_sticky(void **state)
{
    (void)state;
    rng_state = 2;
    rt_table *t = one_route("'split':{'legacy':70,'order-service':30},'sticky':{'header':'X-User-Id'}");
    rt_table *t2 = one_route("'split':{'legacy':70,'order-service':30},'sticky':{'cookie':'uid'}");
    const rt_route *r = rt_table_route(t, 0), *r2 = rt_table_route(t2, 0);
    assert_string_equal(rt_route_sticky_header(r), "X-User-Id");
    assert_null(rt_route_sticky_cookie(r));
    assert_null(rt_route_sticky_header(r2));
    assert_string_equal(rt_route_sticky_cookie(r2), "uid");

    int on_orders = 0;
    char key[32];
    for (int k = 0; k < 1000; k++) {
        snprintf(key, sizeof(key), "user-%d", k);
        gw_slice v = gw_slice_of(key);
        int first = rt_route_pick(r, v, rnd());
        for (int i = 0; i < 20; i++)
            assert_int_equal(rt_route_pick(r, v, rnd()), first);
        /* Another table (another reload) with the same weights agrees. */
        assert_int_equal(rt_route_pick(r2, v, rnd()), first);
        on_orders += first == ORDERS;
    }
    assert_in_range(on_orders, 240, 360); /* 30% of 1,000 keys, +- 6% */

    /* No key: random again, both sides show up. */
    int seen[3] = { 0 };
    for (int i = 0; i < 200; i++)
        seen[rt_route_pick(r, NONE, rnd())]++;
    assert_true(seen[LEGACY] > 0 && seen[ORDERS] > 0);
    rt_table_unref(t);
    rt_table_unref(t2);
}

static void test_cookie_value(void **state)
{
    (void)state;
    gw_slice h = GW_SLICE_LIT("a=1; uid=42;  xuid=7 ;q=\"quoted\"; empty=; uid=second");
    gw_slice v = rt_cookie_value(h, "uid");
    assert_int_equal(v.n, 2);
    assert_memory_equal(v.p, "42", 2);
    v = rt_cookie_value(h, "xuid");
    assert_true(gw_slice_eq(v, "7"));
    v = rt_cookie_value(h, "q");
    assert_true(gw_slice_eq(v, "quoted"));
    v = rt_cookie_value(h, "a");
    assert_true(gw_slice_eq(v, "1"));
    assert_int_equal(rt_cookie_value(h, "empty").n, 0);
    assert_null(rt_cookie_value(h, "id").p); /* not a suffix match of "uid" */
    assert_null(rt_cookie_value(h, "UID").p); /* names are case-sensitive */
    assert_null(rt_cookie_value(NONE, "uid").p);
    assert_true(gw_slice_eq(rt_cookie_value(GW_SLICE_LIT("uid=9"), "uid"), "9"));
    assert_null(rt_cookie_value(GW_SLICE_LIT("uid"), "uid").p);
    /* The slice length counts, not a NUL. */
    assert_true(gw_slice_eq(rt_cookie_value((gw_slice){ "uid=123", 6 }, "uid"), "12"));
}

/* ---- override ------------------------------------------------------------------------ */

static void test_override(void **state)
{
    (void)state;
    rt_table *t = must_parse(
        "{'routes':["
        "{'id':'o','path':'/o','upstream':'legacy','override':{},"
        " 'split':{'legacy':1,'order-service':0}},"
        "{'id':'s','path':'/s','upstream':'order-service','override':{'header':'X-To'},"
        " 'shadow':{'upstream':'user-service'}},"
        "{'id':'f','path':'/f','upstream':'order-service','override':{},'fallback':{}},"
        "{'id':'none','path':'/n','upstream':'legacy','split':{'order-service':1}}]}");
    const rt_route *o = rt_table_route(t, 0), *s = rt_table_route(t, 1);
    const rt_route *f = rt_table_route(t, 2), *none = rt_table_route(t, 3);
    assert_string_equal(rt_route_override_header(o), "X-Gateway-Upstream-Override");
    assert_string_equal(rt_route_override_header(s), "X-To");
    assert_null(rt_route_override_header(none));

    assert_int_equal(rt_route_override(o, GW_SLICE_LIT("legacy")), LEGACY);
    assert_int_equal(rt_route_override(o, GW_SLICE_LIT("order-service")), ORDERS); /* weight 0 */
    assert_int_equal(rt_route_override(o, GW_SLICE_LIT("user-service")), -1); /* not the route's */
    assert_int_equal(rt_route_override(o, GW_SLICE_LIT("nope")), -1);
    assert_int_equal(rt_route_override(o, GW_SLICE_LIT("Legacy")), -1);
    assert_int_equal(rt_route_override(o, GW_SLICE_LIT("legacy ")), -1);
    assert_int_equal(rt_route_override(o, NONE), -1);
    assert_int_equal(rt_route_override(s, GW_SLICE_LIT("user-service")), USERS); /* shadow */
    assert_int_equal(rt_route_override(s, GW_SLICE_LIT("order-service")), ORDERS);
    assert_int_equal(rt_route_override(s, GW_SLICE_LIT("legacy")), -1);
    assert_int_equal(rt_route_override(f, GW_SLICE_LIT("legacy")), LEGACY); /* fallback */
    /* No "override": refused even for the route's own upstreams. */
    assert_int_equal(rt_route_override(none, GW_SLICE_LIT("legacy")), -1);
    assert_int_equal(rt_route_override(none, GW_SLICE_LIT("order-service")), -1);
    rt_table_unref(t);
}

/* ---- shadow -------------------------------------------------------------------------- */

static int shadowed(const rt_route *r, const char *method, int tries)
{
    int n = 0;
    for (int i = 0; i < tries; i++)
        n += rt_route_shadow(r, gw_slice_of(method), rnd()) >= 0;
    return n;
}

static void test_shadow(void **state)
{
    (void)state;
    rng_state = 3;
    rt_table *t = must_parse(
        "{'routes':["
        "{'id':'all','path':'/a','upstream':'legacy','shadow':{'upstream':'order-service',"
        " 'ignore_fields':['meta.generated_at','id']}},"
        "{'id':'none','path':'/b','upstream':'legacy','shadow':{'upstream':'order-service',"
        " 'percent':0}},"
        "{'id':'some','path':'/c','upstream':'legacy','shadow':{'upstream':'order-service',"
        " 'percent':30}},"
        "{'id':'post','path':'/d','upstream':'legacy','shadow':{'upstream':'user-service',"
        " 'methods':['POST','GET']}},"
        "{'id':'off','path':'/e','upstream':'legacy'}]}");
    const rt_route *all = rt_table_route(t, 0), *none = rt_table_route(t, 1);
    const rt_route *some = rt_table_route(t, 2), *post = rt_table_route(t, 3);
    const rt_route *off = rt_table_route(t, 4);

    assert_int_equal(all->shadow.percent, 100);
    assert_int_equal(all->shadow.methods, RT_M_GET | RT_M_HEAD | RT_M_OPTIONS);
    assert_int_equal(all->shadow.n_ignore_fields, 2);
    assert_string_equal(all->shadow.ignore_fields[0], "meta.generated_at");
    assert_string_equal(all->shadow.ignore_fields[1], "id");
    assert_int_equal(rt_route_shadow(all, GW_SLICE_LIT("GET"), 99), ORDERS);
    assert_int_equal(shadowed(all, "GET", 1000), 1000);
    assert_int_equal(shadowed(all, "HEAD", 100), 100);
    assert_int_equal(shadowed(all, "OPTIONS", 100), 100);
    /* Unsafe methods are not shadowed unless listed. */
    assert_int_equal(shadowed(all, "POST", 100), 0);
    assert_int_equal(shadowed(all, "PUT", 100), 0);
    assert_int_equal(shadowed(all, "DELETE", 100), 0);
    assert_int_equal(shadowed(all, "PATCH", 100), 0);
    assert_int_equal(shadowed(all, "PURGE", 100), 0);

    assert_int_equal(shadowed(none, "GET", 1000), 0);
    assert_in_range(shadowed(some, "GET", 10000), 2800, 3200);

    assert_int_equal(post->shadow.methods, RT_M_GET | RT_M_POST);
    assert_int_equal(rt_route_shadow(post, GW_SLICE_LIT("POST"), 0), USERS);
    assert_int_equal(shadowed(post, "GET", 100), 100);
    assert_int_equal(shadowed(post, "HEAD", 100), 0);

    assert_int_equal(off->shadow.upstream_index, -1);
    assert_int_equal(shadowed(off, "GET", 100), 0);
    rt_table_unref(t);
}

/* ---- fallback ------------------------------------------------------------------------ */

static void test_fallback(void **state)
{
    (void)state;
    rt_table *t = must_parse(
        "{'routes':["
        "{'id':'all','path':'/a','upstream':'order-service','fallback':{}},"
        "{'id':'conn','path':'/b','upstream':'order-service',"
        " 'fallback':{'upstream':'user-service','on':['connect']}},"
        "{'id':'nf','path':'/c','upstream':'order-service','fallback':{'on':['404','5xx']}},"
        "{'id':'off','path':'/d','upstream':'order-service'}]}");
    const rt_route *all = rt_table_route(t, 0), *conn = rt_table_route(t, 1);
    const rt_route *nf = rt_table_route(t, 2), *off = rt_table_route(t, 3);
    gw_slice get = GW_SLICE_LIT("GET");

    assert_int_equal(all->fallback.on, RT_FB_404 | RT_FB_5XX | RT_FB_CONNECT);
    assert_string_equal(all->fallback.upstream, "legacy"); /* legacy_upstream by default */
    assert_int_equal(rt_route_fallback(all, get, 404), LEGACY);
    assert_int_equal(rt_route_fallback(all, get, 500), LEGACY);
    assert_int_equal(rt_route_fallback(all, get, 503), LEGACY);
    assert_int_equal(rt_route_fallback(all, get, 599), LEGACY);
    assert_int_equal(rt_route_fallback(all, get, -1), LEGACY);
    assert_int_equal(rt_route_fallback(all, get, -1000), LEGACY);
    assert_int_equal(rt_route_fallback(all, get, 200), -1);
    assert_int_equal(rt_route_fallback(all, get, 400), -1);
    assert_int_equal(rt_route_fallback(all, get, 403), -1);
    assert_int_equal(rt_route_fallback(all, get, 499), -1);
    assert_int_equal(rt_route_fallback(all, get, 600), -1);
    assert_int_equal(rt_route_fallback(all, GW_SLICE_LIT("HEAD"), 502), LEGACY);
    assert_int_equal(rt_route_fallback(all, GW_SLICE_LIT("OPTIONS"), -1), LEGACY);
    /* Unsafe methods never fall back: the first upstream may have acted on them. */
    static const char *const unsafe[] = { "POST", "PUT", "PATCH", "DELETE", "PURGE", "get" };
    for (size_t i = 0; i < sizeof(unsafe) / sizeof(unsafe[0]); i++) {
        assert_int_equal(rt_route_fallback(all, gw_slice_of(unsafe[i]), 503), -1);
        assert_int_equal(rt_route_fallback(all, gw_slice_of(unsafe[i]), -1), -1);
    }

    assert_int_equal(rt_route_fallback(conn, get, -1), USERS);
    assert_int_equal(rt_route_fallback(conn, get, 404), -1);
    assert_int_equal(rt_route_fallback(conn, get, 500), -1);
    assert_int_equal(rt_route_fallback(nf, get, 404), LEGACY);
    assert_int_equal(rt_route_fallback(nf, get, 502), LEGACY);
    assert_int_equal(rt_route_fallback(nf, get, -1), -1);
    assert_int_equal(rt_route_fallback(off, get, 503), -1);
    assert_int_equal(rt_route_fallback(off, get, -1), -1);
    rt_table_unref(t);
}

/* ---- rewrites per upstream ------------------------------------------------------------ */

static const char *rewrite_for(const rt_table *t, int upstream, const char *path,
                               const char *query)
{
    static char out[256];
    rt_match m;
    assert_int_equal(rt_table_match(t, GW_SLICE_LIT("GET"), gw_slice_of(path), &m), 0);
    gw_slice q = query ? gw_slice_of(query) : NONE;
    int n = upstream < 0 ? rt_rewrite(&m, gw_slice_of(path), q, out, sizeof(out))
                         : rt_rewrite_for(&m, upstream, gw_slice_of(path), q, out, sizeof(out));
    if (n < 0)
        return "(failed)";
    assert_int_equal((size_t)n, strlen(out));
    return out;
}

static void test_rewrites_per_upstream(void **state)
{
    (void)state;
    rt_table *t = must_parse(
        "{'routes':["
        "{'id':'orders','path':'/api/orders/{id}','upstream':'legacy',"
        " 'rewrite':{'strip_prefix':'/api'},"
        " 'rewrites':{'order-service':{'template':'/orders/{id}'},'legacy':{}}},"
        "{'id':'ship','path':'/api/orders/{id}/shipment','upstream':'order-service',"
        " 'rewrites':{'order-service':{'template':'/shipments?order_id={id}'},"
        "             'user-service':{'strip_prefix':'/api','template':'/v2'}}}]}");
    /* orders: legacy has {} (no rewrite), order-service its template, others "rewrite". */
    assert_string_equal(rewrite_for(t, LEGACY, "/api/orders/7", "x=1"), "/api/orders/7?x=1");
    assert_string_equal(rewrite_for(t, ORDERS, "/api/orders/7", "x=1"), "/orders/7?x=1");
    assert_string_equal(rewrite_for(t, USERS, "/api/orders/7", NULL), "/orders/7");
    assert_string_equal(rewrite_for(t, 99, "/api/orders/7", NULL), "/orders/7");
    /* rt_rewrite is the primary's: legacy's {} here. */
    assert_string_equal(rewrite_for(t, -1, "/api/orders/7", NULL), "/api/orders/7");

    /* ship: primary order-service uses its own entry; no "rewrite" for the rest. */
    assert_string_equal(rewrite_for(t, -1, "/api/orders/9/shipment", "v=2"),
                        "/shipments?order_id=9&v=2");
    assert_string_equal(rewrite_for(t, ORDERS, "/api/orders/9/shipment", NULL),
                        "/shipments?order_id=9");
    assert_string_equal(rewrite_for(t, USERS, "/api/orders/9/shipment", NULL),
                        "/v2/orders/9/shipment");
    assert_string_equal(rewrite_for(t, LEGACY, "/api/orders/9/shipment", NULL),
                        "/api/orders/9/shipment");

    const rt_route *r = rt_table_route(t, 0);
    assert_int_equal(r->n_rewrites, 2);
    assert_string_equal(r->rewrites[0].upstream, "order-service");
    assert_int_equal(r->rewrites[0].upstream_index, ORDERS);
    assert_null(r->rewrites[1].strip_prefix);
    assert_null(r->rewrites[1].rewrite_template);
    rt_table_unref(t);
}

/* ---- validation ------------------------------------------------------------------------ */

#define R "'id':'a','path':'/a/{id}','upstream':'legacy'"
#define SPLIT "'split':{'legacy':1}"

static const struct {
    const char *json;
    const char *err;
} bad_docs[] = {
    { "{'routes':[],'version':-1}", "x.json: version: must be a non-negative integer" },
    { "{'routes':[],'version':'1'}", "x.json: version: must be a non-negative integer" },
    { "{'routes':[],'legacy_upstream':1}", "x.json: legacy_upstream: must be a string" },
    { "{'routes':[],'legacy_upstream':'nope'}",
      "x.json: legacy_upstream: unknown upstream \"nope\"" },
    /* rewrites */
    { "{'routes':[{" R ",'rewrites':1}]}", "x.json: routes[0].rewrites: must be an object" },
    { "{'routes':[{" R ",'rewrites':{'nope':{}}}]}",
      "x.json: routes[0].rewrites.nope: unknown upstream \"nope\"" },
    { "{'routes':[{" R ",'rewrites':{'legacy':1}}]}",
      "x.json: routes[0].rewrites.legacy: must be an object" },
    { "{'routes':[{" R ",'rewrites':{'legacy':{'bogus':1}}}]}",
      "x.json: routes[0].rewrites.legacy.bogus: unknown field" },
    { "{'routes':[{" R ",'rewrites':{'legacy':{},'order-service':{'template':'/o/{x}'}}}]}",
      "x.json: routes[0].rewrites.order-service.template: {x} is not captured by the path" },
    { "{'routes':[{" R ",'rewrites':{'legacy':{'strip_prefix':'/b'}}}]}",
      "x.json: routes[0].rewrites.legacy.strip_prefix: the path \"/a/{id}\" cannot start "
      "with \"/b\"" },
    /* split */
    { "{'routes':[{" R ",'split':[]}]}", "x.json: routes[0].split: must be an object" },
    { "{'routes':[{" R ",'split':{}}]}",
      "x.json: routes[0].split: at least one weight must be greater than 0" },
    { "{'routes':[{" R ",'split':{'legacy':0,'order-service':0}}]}",
      "x.json: routes[0].split: at least one weight must be greater than 0" },
    { "{'routes':[{" R ",'split':{'legacy':1,'nope':1}}]}",
      "x.json: routes[0].split.nope: unknown upstream \"nope\"" },
    { "{'routes':[{" R ",'split':{'legacy':100001}}]}",
      "x.json: routes[0].split.legacy: must be an integer from 0 to 100000" },
    { "{'routes':[{" R ",'split':{'legacy':-1}}]}",
      "x.json: routes[0].split.legacy: must be an integer from 0 to 100000" },
    { "{'routes':[{" R ",'split':{'legacy':0.5}}]}",
      "x.json: routes[0].split.legacy: must be an integer from 0 to 100000" },
    { "{'routes':[{" R ",'split':{'legacy':'50'}}]}",
      "x.json: routes[0].split.legacy: must be an integer from 0 to 100000" },
    /* sticky */
    { "{'routes':[{" R ",'sticky':'uid'}]}", "x.json: routes[0].sticky: must be an object" },
    { "{'routes':[{" R ",'sticky':{'header':'X-User-Id'}}]}",
      "x.json: routes[0].sticky: only allowed with \"split\"" },
    { "{'routes':[{" R "," SPLIT ",'sticky':{}}]}",
      "x.json: routes[0].sticky: needs exactly one of \"header\" or \"cookie\"" },
    { "{'routes':[{" R "," SPLIT ",'sticky':{'header':'X-U','cookie':'u'}}]}",
      "x.json: routes[0].sticky: needs exactly one of \"header\" or \"cookie\"" },
    { "{'routes':[{" R "," SPLIT ",'sticky':{'header':'X U'}}]}",
      "x.json: routes[0].sticky.header: \"X U\" is not a valid header name" },
    { "{'routes':[{" R "," SPLIT ",'sticky':{'cookie':'a;b'}}]}",
      "x.json: routes[0].sticky.cookie: \"a;b\" is not a valid cookie name" },
    { "{'routes':[{" R "," SPLIT ",'sticky':{'cookie':''}}]}",
      "x.json: routes[0].sticky.cookie: \"\" is not a valid cookie name" },
    { "{'routes':[{" R "," SPLIT ",'sticky':{'header':1}}]}",
      "x.json: routes[0].sticky.header: must be a string" },
    { "{'routes':[{" R "," SPLIT ",'sticky':{'query':'u'}}]}",
      "x.json: routes[0].sticky.query: unknown field" },
    /* override */
    { "{'routes':[{" R ",'override':true}]}", "x.json: routes[0].override: must be an object" },
    { "{'routes':[{" R ",'override':{'header':''}}]}",
      "x.json: routes[0].override.header: \"\" is not a valid header name" },
    { "{'routes':[{" R ",'override':{'header':'X:Y'}}]}",
      "x.json: routes[0].override.header: \"X:Y\" is not a valid header name" },
    { "{'routes':[{" R ",'override':{'name':'X'}}]}",
      "x.json: routes[0].override.name: unknown field" },
    /* shadow */
    { "{'routes':[{" R ",'shadow':'order-service'}]}",
      "x.json: routes[0].shadow: must be an object" },
    { "{'routes':[{" R ",'shadow':{}}]}", "x.json: routes[0].shadow.upstream: missing" },
    { "{'routes':[{" R ",'shadow':{'upstream':'nope'}}]}",
      "x.json: routes[0].shadow.upstream: unknown upstream \"nope\"" },
    { "{'routes':[{" R ",'shadow':{'upstream':'legacy','percent':101}}]}",
      "x.json: routes[0].shadow.percent: must be an integer from 0 to 100" },
    { "{'routes':[{" R ",'shadow':{'upstream':'legacy','percent':-1}}]}",
      "x.json: routes[0].shadow.percent: must be an integer from 0 to 100" },
    { "{'routes':[{" R ",'shadow':{'upstream':'legacy','percent':12.5}}]}",
      "x.json: routes[0].shadow.percent: must be an integer from 0 to 100" },
    { "{'routes':[{" R ",'shadow':{'upstream':'legacy','methods':[]}}]}",
      "x.json: routes[0].shadow.methods: must not be empty" },
    { "{'routes':[{" R ",'shadow':{'upstream':'legacy','methods':'GET'}}]}",
      "x.json: routes[0].shadow.methods: must be an array of method names" },
    { "{'routes':[{" R ",'shadow':{'upstream':'legacy','methods':['GET','FETCH']}}]}",
      "x.json: routes[0].shadow.methods[1]: unknown method \"FETCH\"" },
    { "{'routes':[{" R ",'shadow':{'upstream':'legacy','ignore_fields':'a'}}]}",
      "x.json: routes[0].shadow.ignore_fields: must be an array of strings" },
    { "{'routes':[{" R ",'shadow':{'upstream':'legacy','ignore_fields':[1]}}]}",
      "x.json: routes[0].shadow.ignore_fields[0]: must be a string" },
    { "{'routes':[{" R ",'shadow':{'upstream':'legacy','ignore_fields':['a','a..b']}}]}",
      "x.json: routes[0].shadow.ignore_fields[1]: \"a..b\" is not a dotted path like "
      "\"meta.generated_at\"" },
    { "{'routes':[{" R ",'shadow':{'upstream':'legacy','ignore_fields':['.a']}}]}",
      "x.json: routes[0].shadow.ignore_fields[0]: \".a\" is not a dotted path like "
      "\"meta.generated_at\"" },
    { "{'routes':[{" R ",'shadow':{'upstream':'legacy','ignore_fields':['a.']}}]}",
      "x.json: routes[0].shadow.ignore_fields[0]: \"a.\" is not a dotted path like "
      "\"meta.generated_at\"" },
    { "{'routes':[{" R ",'shadow':{'upstream':'legacy','ignore_fields':['']}}]}",
      "x.json: routes[0].shadow.ignore_fields[0]: \"\" is not a dotted path like "
      "\"meta.generated_at\"" },
    { "{'routes':[{" R ",'shadow':{'upstream':'legacy','sample':1}}]}",
      "x.json: routes[0].shadow.sample: unknown field" },
    /* fallback */
    { "{'routes':[{" R ",'fallback':[]}]}", "x.json: routes[0].fallback: must be an object" },
    { "{'routes':[{" R ",'fallback':{'upstream':'nope'}}]}",
      "x.json: routes[0].fallback.upstream: unknown upstream \"nope\"" },
    { "{'routes':[{" R ",'fallback':{'on':[]}}]}",
      "x.json: routes[0].fallback.on: must not be empty" },
    { "{'routes':[{" R ",'fallback':{'on':'404'}}]}",
      "x.json: routes[0].fallback.on: must be an array of \"404\", \"5xx\", \"connect\"" },
    { "{'routes':[{" R ",'fallback':{'on':['404','500']}}]}",
      "x.json: routes[0].fallback.on[1]: unknown condition \"500\" (expected \"404\", \"5xx\" "
      "or \"connect\")" },
    { "{'routes':[{" R ",'fallback':{'on':['5xx','5xx']}}]}",
      "x.json: routes[0].fallback.on[1]: duplicate \"5xx\"" },
    { "{'routes':[{" R ",'fallback':{'on':[404]}}]}",
      "x.json: routes[0].fallback.on[0]: must be a string" },
    { "{'routes':[{" R ",'fallback':{'when':['404']}}]}",
      "x.json: routes[0].fallback.when: unknown field" },
    /* The first error in field order wins; a later route's error names that route. */
    { "{'routes':[{" R ",'shadow':{},'split':{}}]}",
      "x.json: routes[0].split: at least one weight must be greater than 0" },
    { "{'routes':[{" R "},{'id':'b','path':'/b','upstream':'legacy','fallback':{'on':[]}}]}",
      "x.json: routes[1].fallback.on: must not be empty" },
};

static void test_validation_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_docs) / sizeof(bad_docs[0]); i++) {
        char err[512] = "untouched";
        rt_table *t = parse_with(bad_docs[i].json, UPSTREAMS, 3, err, sizeof(err));
        if (t || strcmp(err, bad_docs[i].err) != 0)
            fail_msg("bad_docs[%zu] %s\n  want: %s\n  got:  %s", i, bad_docs[i].json,
                     bad_docs[i].err, t ? "(accepted)" : err);
    }
}

static void test_legacy_upstream(void **state)
{
    (void)state;
    char err[512];
    /* Default: "legacy" when it is an upstream. */
    rt_table *t = must_parse("{'routes':[]}");
    assert_string_equal(rt_table_legacy_upstream(t), "legacy");
    assert_int_equal(rt_table_legacy_index(t), LEGACY);
    assert_int_equal(rt_table_upstream_count(t), 3);
    assert_string_equal(rt_table_upstream(t, 2), "order-service");
    assert_null(rt_table_upstream(t, 3));
    rt_table_unref(t);

    /* Named: any known upstream, and fallback follows it. */
    t = must_parse("{'legacy_upstream':'user-service','version':12,'routes':["
                   "{'id':'a','path':'/a','upstream':'order-service','fallback':{}}]}");
    assert_int_equal(rt_table_legacy_index(t), USERS);
    assert_int_equal(rt_table_version(t), 12);
    assert_int_equal(rt_table_route(t, 0)->fallback.upstream_index, USERS);
    rt_table_unref(t);

    /* No "legacy" upstream and none named: fine until something needs it. */
    static const char *const NEW_ONLY[] = { "user-service", "order-service" };
    t = parse_with("{'routes':[{'id':'a','path':'/a','upstream':'order-service',"
                   "'fallback':{'upstream':'user-service'}}]}",
                   NEW_ONLY, 2, err, sizeof(err));
    assert_non_null(t);
    assert_int_equal(rt_table_legacy_index(t), -1);
    assert_string_equal(rt_table_legacy_upstream(t), "legacy");
    assert_int_equal(rt_table_route(t, 0)->fallback.upstream_index, 0);
    rt_table_unref(t);
    assert_null(parse_with("{'routes':[{'id':'a','path':'/a','upstream':'order-service',"
                           "'fallback':{}}]}",
                           NEW_ONLY, 2, err, sizeof(err)));
    assert_string_equal(err, "x.json: routes[0].fallback.upstream: missing, and the legacy "
                             "upstream \"legacy\" is unknown");
    assert_null(parse_with("{'legacy_upstream':'legacy','routes':[]}", NEW_ONLY, 2, err,
                           sizeof(err)));
    assert_string_equal(err, "x.json: legacy_upstream: unknown upstream \"legacy\"");
}

/* ---- canonical JSON ------------------------------------------------------------------- */

static char *dump(const json_t *j)
{
    return json_dumps(j, JSON_COMPACT);
}

static void test_to_json_round_trip(void **state)
{
    (void)state;
    int base = rt__tables_alive();
    rt_table *t = must_parse(
        "{'legacy_upstream':'legacy','routes':["
        "{'id':'orders','path':'/api/orders/{id}','methods':['HEAD','GET'],'upstream':'legacy',"
        " 'rewrite':{'strip_prefix':'/api'},"
        " 'rewrites':{'order-service':{'template':'/orders/{id}'},'legacy':{}},"
        " 'split':{'legacy':90,'order-service':10},'sticky':{'cookie':'uid'},'override':{},"
        " 'shadow':{'upstream':'order-service','ignore_fields':['meta.generated_at']},"
        " 'fallback':{'on':['connect','404']},'max_body_bytes':1048576},"
        "{'id':'plain','path':'/**','upstream':'user-service',"
        " 'shadow':{'upstream':'legacy','percent':0,'methods':['POST']},"
        " 'fallback':{'upstream':'order-service'}}]}");
    rt_table_set_version(t, 41);
    json_t *j = rt_table_to_json(t);
    char *text = dump(j);
    assert_string_equal(
        text,
        "{\"version\":41,\"legacy_upstream\":\"legacy\",\"routes\":["
        "{\"id\":\"orders\",\"methods\":[\"GET\",\"HEAD\"],\"path\":\"/api/orders/{id}\","
        "\"upstream\":\"legacy\",\"rewrite\":{\"strip_prefix\":\"/api\"},"
        "\"rewrites\":{\"order-service\":{\"template\":\"/orders/{id}\"},\"legacy\":{}},"
        "\"split\":{\"legacy\":90,\"order-service\":10},\"sticky\":{\"cookie\":\"uid\"},"
        "\"override\":{\"header\":\"X-Gateway-Upstream-Override\"},"
        "\"shadow\":{\"upstream\":\"order-service\",\"percent\":100,"
        "\"methods\":[\"GET\",\"HEAD\",\"OPTIONS\"],\"ignore_fields\":[\"meta.generated_at\"]},"
        "\"fallback\":{\"upstream\":\"legacy\",\"on\":[\"404\",\"connect\"]},"
        "\"max_body_bytes\":1048576},"
        "{\"id\":\"plain\",\"path\":\"/**\",\"upstream\":\"user-service\","
        "\"shadow\":{\"upstream\":\"legacy\",\"percent\":0,\"methods\":[\"POST\"]},"
        "\"fallback\":{\"upstream\":\"order-service\",\"on\":[\"404\",\"5xx\",\"connect\"]}}]}");

    /* parse(to_json(t)) is t again: same document, same decisions. */
    char err[512];
    rt_table *t2 = rt_table_parse(text, strlen(text), "again", UPSTREAMS, 3, err, sizeof(err));
    if (!t2)
        fail_msg("%s", err);
    assert_int_equal(rt_table_version(t2), 41);
    json_t *j2 = rt_table_to_json(t2);
    assert_true(json_equal(j, j2));
    char *text2 = dump(j2);
    assert_string_equal(text, text2);
    const rt_route *a = rt_table_route(t, 0), *b = rt_table_route(t2, 0);
    rng_state = 4;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = rnd();
        assert_int_equal(rt_route_pick(a, NONE, x), rt_route_pick(b, NONE, x));
        assert_int_equal(rt_route_shadow(a, GW_SLICE_LIT("GET"), x),
                         rt_route_shadow(b, GW_SLICE_LIT("GET"), x));
    }

    /* One route alone. */
    json_t *jr = rt_route_to_json(rt_table_route(t, 1));
    assert_true(json_equal(jr, json_array_get(json_object_get(j, "routes"), 1)));
    assert_null(rt_route_to_json(NULL));
    assert_null(rt_table_to_json(NULL));

    json_decref(jr);
    free(text);
    free(text2);
    json_decref(j);
    json_decref(j2);
    rt_table_unref(t);
    rt_table_unref(t2);

    /* Without a known legacy upstream, none is written (and the document still parses). */
    static const char *const NEW_ONLY[] = { "order-service" };
    t = parse_with("{'routes':[]}", NEW_ONLY, 1, err, sizeof(err));
    j = rt_table_to_json(t);
    text = dump(j);
    assert_string_equal(text, "{\"version\":0,\"routes\":[]}");
    free(text);
    json_decref(j);
    rt_table_unref(t);
    assert_int_equal(rt__tables_alive(), base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_ratio),
        cmocka_unit_test(test_sticky),
        cmocka_unit_test(test_cookie_value),
        cmocka_unit_test(test_override),
        cmocka_unit_test(test_shadow),
        cmocka_unit_test(test_fallback),
        cmocka_unit_test(test_rewrites_per_upstream),
        cmocka_unit_test(test_validation_errors),
        cmocka_unit_test(test_legacy_upstream),
        cmocka_unit_test(test_to_json_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
