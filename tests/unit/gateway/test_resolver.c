/* test_resolver.c — the address-set side of background resolution (gateway/resolver.h):
 * what is a name, how a name endpoint expands to one endpoint per address, and when two
 * endpoint lists are the same (a worker keeps its pools then). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gateway/config.h"
#include "gateway/config_int.h"
#include "gateway/resolver.h"
#include "routes/route_table.h"
#include "routes/upstreams.h"

static struct sockaddr_storage v4(const char *ip, int port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *s = (struct sockaddr_in *)&ss;
    s->sin_family = AF_INET;
    s->sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &s->sin_addr);
    return ss;
}

static struct sockaddr_storage v6(const char *ip, int port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
    s->sin6_family = AF_INET6;
    s->sin6_port = htons((uint16_t)port);
    inet_pton(AF_INET6, ip, &s->sin6_addr);
    return ss;
}

static void conf_with(gw_upstream_conf *c, const char *const *addresses, int n)
{
    gw_config_upstream_defaults(c);
    for (int i = 0; i < n; i++) {
        snprintf(c->endpoints[i].address, sizeof c->endpoints[i].address, "%s", addresses[i]);
        c->endpoints[i].addr = v4("127.0.0.1", 9000 + i); /* the load-time pick */
        c->endpoints[i].addrlen = sizeof(struct sockaddr_in);
    }
    c->n_endpoints = n;
}

static void test_is_name(void **state)
{
    (void)state;
    char h[256], p[8];
    assert_true(gw_endpoint_is_name("svc.internal:8080", h, sizeof h, p, sizeof p));
    assert_string_equal(h, "svc.internal");
    assert_string_equal(p, "8080");
    assert_false(gw_endpoint_is_name("10.0.0.1:80", h, sizeof h, p, sizeof p));
    assert_false(gw_endpoint_is_name("[::1]:80", h, sizeof h, p, sizeof p));
}

static void test_expand_every_address_in_order(void **state)
{
    (void)state;
    gw__resolved_reset();
    static const char *const eps[] = { "10.0.0.1:80", "svc.test:8080", "other.test:81" };
    gw_upstream_conf in, out, again;
    conf_with(&in, eps, 3);
    /* before any answer: unchanged (the load-time addresses) */
    gw_resolved_expand(&in, &out);
    assert_true(gw_endpoints_same(&in, &out));

    struct sockaddr_storage a[3] = { v6("::1", 8080), v4("127.0.0.2", 8080), v4("127.0.0.1", 8080) };
    socklen_t lens[3] = { 0 };
    gw__resolved_set("svc.test", "8080", a, lens, 3);
    gw_resolved_expand(&in, &out);
    assert_int_equal(out.n_endpoints, 5); /* 1 + 3 addresses + other.test's load-time one */
    assert_string_equal(out.endpoints[0].address, "10.0.0.1:80");
    for (int i = 1; i <= 3; i++)
        assert_string_equal(out.endpoints[i].address, "svc.test:8080");
    /* sorted: IPv4 first, then IPv6 */
    assert_int_equal(out.endpoints[1].addr.ss_family, AF_INET);
    assert_int_equal(out.endpoints[2].addr.ss_family, AF_INET);
    assert_int_equal(out.endpoints[3].addr.ss_family, AF_INET6);
    assert_int_equal(out.endpoints[3].addrlen, sizeof(struct sockaddr_in6));
    assert_string_equal(out.endpoints[4].address, "other.test:81");
    assert_false(gw_endpoints_same(&in, &out));

    /* the same set in another order is the same: no rebuild, the pools stay */
    struct sockaddr_storage b[3] = { a[2], a[0], a[1] };
    gw__resolved_set("svc.test", "8080", b, lens, 3);
    gw_resolved_expand(&in, &again);
    assert_true(gw_endpoints_same(&out, &again));
    /* one address less: different */
    gw__resolved_set("svc.test", "8080", b, lens, 2);
    gw_resolved_expand(&in, &again);
    assert_int_equal(again.n_endpoints, 4);
    assert_false(gw_endpoints_same(&out, &again));
    gw__resolved_reset();
}

static void test_expand_capped(void **state)
{
    (void)state;
    gw__resolved_reset();
    const char *eps[GW_MAX_ENDPOINTS];
    char buf[GW_MAX_ENDPOINTS][32];
    for (int i = 0; i < GW_MAX_ENDPOINTS; i++) {
        snprintf(buf[i], sizeof buf[i], "n%d.test:80", i);
        eps[i] = buf[i];
    }
    gw_upstream_conf in, out;
    conf_with(&in, eps, GW_MAX_ENDPOINTS);
    struct sockaddr_storage a[2] = { v4("127.0.0.1", 80), v4("127.0.0.2", 80) };
    socklen_t lens[2] = { 0 };
    gw__resolved_set("n0.test", "80", a, lens, 2);
    gw_resolved_expand(&in, &out);
    assert_int_equal(out.n_endpoints, GW_MAX_ENDPOINTS); /* never past the array */
    assert_string_equal(out.endpoints[1].address, "n0.test:80");
    assert_string_equal(out.endpoints[GW_MAX_ENDPOINTS - 1].address, "n30.test:80");
    gw__resolved_reset();
}

/* resolve_ms 0 is never re-resolved, even when another upstream has the same name resolved
 * in the background: its endpoints keep the addresses read with the definition. */
static void test_expand_resolve_ms_0_keeps_load_time_address(void **state)
{
    (void)state;
    gw__resolved_reset();
    const char *eps[] = { "svc.test:8080" };
    gw_upstream_conf in, out;
    conf_with(&in, eps, 1);
    struct sockaddr_storage a[2] = { v4("10.0.0.1", 8080), v4("10.0.0.2", 8080) };
    socklen_t lens[2] = { 0 };
    gw__resolved_set("svc.test", "8080", a, lens, 2);
    gw_resolved_expand(&in, &out);
    assert_int_equal(out.n_endpoints, 2); /* resolve_ms > 0: the background answers */
    in.resolve_ms = 0;
    gw_resolved_expand(&in, &out);
    assert_int_equal(out.n_endpoints, 1);
    assert_int_equal(((struct sockaddr_in *)&out.endpoints[0].addr)->sin_port, htons(9000));
    gw__resolved_reset();
}

/* The metrics hold one whole line per name known, however many and however long the names
 * (a line cut short makes the whole scrape invalid). */
static void test_metrics_every_name_whole(void **state)
{
    (void)state;
    gw__resolved_reset();
    struct sockaddr_storage a[1] = { v4("10.0.0.1", 65535) };
    socklen_t lens[1] = { 0 };
    char host[300];
    for (int i = 0; i < GW_RESOLVE_MAX_NAMES; i++) {
        memset(host, 'a', 253);
        snprintf(host + 240, sizeof host - 240, "-%04d.test", i); /* 253 characters */
        gw__resolved_set(host, "65535", a, lens, 1);
    }
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(gw_resolver_metrics(&text, &len), 0);
    assert_int_equal(strlen(text), len);
    int lines = 0;
    for (const char *p = text; (p = strstr(p, "gateway_upstream_resolved_addresses{endpoint=\"a"));
         p++) {
        const char *eol = strchr(p, '\n');
        assert_non_null(eol);
        assert_memory_equal(eol - 15, ".test:65535\"} 1", 15);
        lines++;
    }
    assert_int_equal(lines, GW_RESOLVE_MAX_NAMES);
    assert_int_equal(text[len - 1], '\n');
    free(text);
    gw__resolved_reset();
}

/* However many names are due, at most GW_RESOLVE_MAX_LOOKUPS lookups run at once: the
 * threadpool is shared with the access log, admin changes and route loads. */
static void test_lookups_in_flight_bounded(void **state)
{
    (void)state;
    gw__resolved_reset();
    static gw_config cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.path, sizeof cfg.path, "/etc/gw/gateway.json");
    assert_int_equal(gw_config_upstreams_install(&cfg), 0);
    char doc[4096], name[64];
    size_t n = (size_t)snprintf(doc, sizeof doc, "{\"upstreams\": {");
    struct sockaddr_storage a[1] = { v4("127.0.0.1", 80) };
    socklen_t lens[1] = { 0 };
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof name, "n%d.gw-test.invalid", i);
        gw__resolved_set(name, "80", a, lens, 1); /* the definition reads without a lookup */
        n += (size_t)snprintf(doc + n, sizeof doc - n, "%s\"u%d\": {\"endpoints\": [\"%s:80\"]}",
                              i ? ", " : "", i, name);
    }
    snprintf(doc + n, sizeof doc - n, "}, \"routes\": []}");
    char err[512];
    rt_table *t = rt_table_parse(doc, strlen(doc), "routes.json", NULL, 0, err, sizeof err);
    if (!t)
        fail_msg("%s", err);
    rt_current_publish(t);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    gw_resolver *r = gw_resolver_start(&loop);
    assert_non_null(r);
    uv_run(&loop, UV_RUN_NOWAIT); /* the first tick: all six names are due */
    assert_int_equal(gw__resolver_in_flight(r), GW_RESOLVE_MAX_LOOKUPS);
    gw_resolver_stop(r);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    rt_current_clear();
    rt_upstreams_reset();
    gw__resolved_reset();
}

/* Reading a definition (a route change, a reload) takes a name the resolver knows from its
 * answer: no blocking lookup on the thread that reads, the same address each time (pools
 * kept), and a name that DNS has stopped answering for still reads. The .invalid name below
 * never resolves (RFC 6761): without the resolver's answer the definition is refused. */
static void test_definition_reads_known_names_from_the_resolver(void **state)
{
    (void)state;
    gw__resolved_reset();
    char err[512] = "";
    gw__cfgctx c = { .prefix = "routes.json", .file = "routes.json", .err = err,
                     .errlen = sizeof err };
    json_t *def = json_pack("{s:[s]}", "endpoints", "svc.gw-test.invalid:8080");
    gw_upstream_conf up;
    gw_config_upstream_defaults(&up);
    assert_int_not_equal(gw__parse_upstream(&c, "svc", def, &up), 0);
    assert_non_null(strstr(err, "upstreams.svc.endpoints[0]"));

    struct sockaddr_storage a[2] = { v4("127.0.0.9", 8080), v4("127.0.0.10", 8080) };
    socklen_t lens[2] = { sizeof(struct sockaddr_in), sizeof(struct sockaddr_in) };
    gw__resolved_set("svc.gw-test.invalid", "8080", a, lens, 2);
    gw_config_upstream_defaults(&up);
    err[0] = '\0';
    assert_int_equal(gw__parse_upstream(&c, "svc", def, &up), 0);
    assert_int_equal(up.n_endpoints, 1);
    assert_string_equal(up.endpoints[0].address, "svc.gw-test.invalid:8080");
    const struct sockaddr_in *got = (const struct sockaddr_in *)&up.endpoints[0].addr;
    char ip[32];
    inet_ntop(AF_INET, &got->sin_addr, ip, sizeof ip);
    assert_string_equal(ip, "127.0.0.9");
    assert_int_equal(ntohs(got->sin_port), 8080);
    json_decref(def);
    gw__resolved_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_is_name),
        cmocka_unit_test(test_expand_every_address_in_order),
        cmocka_unit_test(test_expand_capped),
        cmocka_unit_test(test_expand_resolve_ms_0_keeps_load_time_address),
        cmocka_unit_test(test_metrics_every_name_whole),
        cmocka_unit_test(test_lookups_in_flight_bounded),
        cmocka_unit_test(test_definition_reads_known_names_from_the_resolver),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
