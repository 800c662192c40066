/* test_config.c — gateway.json loading: values, defaults, every validation error with its
 * exact text, environment overrides, path resolution, the shipped demo config. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "gateway/config.h"
#include "http/gw_errors.h"

static const char *const env_vars[] = { "GATEWAY_LISTEN", "GATEWAY_ADMIN_LISTEN",
                                        "GATEWAY_ADMIN_TOKEN", "GATEWAY_PG", "GATEWAY_REDIS" };

static void clear_env(void)
{
    size_t i;
    for (i = 0; i < sizeof env_vars / sizeof env_vars[0]; i++)
        assert_int_equal(unsetenv(env_vars[i]), 0);
}

/* Each test gets a heap config (it is large) and a clean environment. */
static int setup(void **state)
{
    gw_config *cfg;
    clear_env();
    cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL)
        return -1;
    *state = cfg;
    return 0;
}

static int teardown(void **state)
{
    free(*state);
    *state = NULL;
    clear_env();
    return 0;
}

static void write_all(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

/* Writes TEXT to a fresh /tmp file; returns its name (free it, unlink it). */
static char *write_temp(const char *text)
{
    char tmpl[] = "/tmp/gwcfg-XXXXXX";
    size_t n = strlen(text);
    int fd = mkstemp(tmpl);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    assert_int_equal(close(fd), 0);
    return strdup(tmpl);
}

static int load_text(gw_config *cfg, const char *text, char *err, size_t errlen)
{
    char *path = write_temp(text);
    int rc = gw_config_load(cfg, path, err, errlen);
    unlink(path);
    free(path);
    return rc;
}

/* Loads TEXT and asserts the code and the whole message "TMPFILE: want". */
static void expect_error(gw_config *cfg, const char *text, int want_rc, const char *want)
{
    char err[1024], expected[1024];
    char *path = write_temp(text);
    int rc = gw_config_load(cfg, path, err, sizeof err);

    snprintf(expected, sizeof expected, "%s: %s", path, want);
    unlink(path);
    free(path);
    if (strcmp(err, expected) != 0 || rc != want_rc)
        print_message("for config: %s\n", text);
    assert_string_equal(err, expected);
    assert_int_equal(rc, want_rc);
}

/* Same, for errors that name an environment variable instead of the file. */
static void expect_env_error(gw_config *cfg, const char *text, const char *want)
{
    char err[1024];
    int rc = load_text(cfg, text, err, sizeof err);
    assert_string_equal(err, want);
    assert_int_equal(rc, GW_EINVAL);
}

static unsigned port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

static void assert_ipv4(const struct sockaddr_storage *ss, socklen_t len, const char *ip,
                        unsigned port)
{
    char buf[INET_ADDRSTRLEN];
    assert_int_equal(ss->ss_family, AF_INET);
    assert_int_equal(len, sizeof(struct sockaddr_in));
    assert_non_null(inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf,
                              sizeof buf));
    assert_string_equal(buf, ip);
    assert_int_equal(port_of(ss), port);
}

static int expected_workers(void)
{
    unsigned n = uv_available_parallelism();
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

#define UP "\"upstreams\": {\"legacy\": {\"endpoints\": [\"127.0.0.1:9101\"]}}"
#define RT "\"routes\": {\"source\": \"file\", \"file\": \"routes.json\"}"
#define LS "\"listen\": \"127.0.0.1:8080\""
#define MINCFG LS ", " UP ", " RT
/* A minimal valid config plus one more member (X starts with ", "). */
#define WITH(x) "{" MINCFG x "}"

static const char full_json[] =
    "{\n"
    "  \"listen\": \"0.0.0.0:8088\",\n"
    "  \"workers\": 3,\n"
    "  \"admin\": { \"listen\": \"[::1]:9099\", \"token\": \"s3cr3t-Token\" },\n"
    "  \"upstreams\": {\n"
    "    \"legacy\": { \"endpoints\": [\"127.0.0.1:9101\", \"10.0.0.2:80\"],\n"
    "                \"host\": \"legacy.internal\",\n"
    "                \"connect_timeout_ms\": 1500, \"response_timeout_ms\": 25000,\n"
    "                \"read_timeout_ms\": 20000, \"send_timeout_ms\": 9000,\n"
    "                \"pool\": { \"max_idle\": 8, \"idle_timeout_ms\": 4000 },\n"
    "                \"down_ms\": 0 },\n"
    "    \"user-service_v2.1\": { \"endpoints\": [\"[::1]:9102\", \"localhost:9103\"] }\n"
    "  },\n"
    "  \"limits\": { \"max_uri_bytes\": 4096, \"max_header_bytes\": 32768, \"max_headers\": 50,\n"
    "              \"max_body_bytes\": 0, \"header_timeout_ms\": 5000,\n"
    "              \"body_timeout_ms\": 6000, \"idle_timeout_ms\": 7000,\n"
    "              \"send_timeout_ms\": 8000, \"read_buffer_bytes\": 131072 },\n"
    "  \"log\": { \"access\": \"/var/log/gateway/access.log\" },\n"
    "  \"shutdown\": { \"drain_timeout_ms\": 2500 },\n"
    "  \"routes\": { \"source\": \"postgres\", \"conninfo\": \"host=/tmp dbname=gw\",\n"
    "              \"file\": \"/etc/gateway/routes.json\" },\n"
    "  \"redis\": \"redis.internal:6380\"\n"
    "}\n";

static void test_full_config(void **state)
{
    gw_config *cfg = *state;
    const gw_upstream_conf *up;
    char err[512] = "x";
    char *path = write_temp(full_json);
    struct sockaddr_in6 *s6;

    assert_int_equal(gw_config_load(cfg, path, err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_string_equal(cfg->path, path);
    unlink(path);
    free(path);

    assert_string_equal(cfg->listen, "0.0.0.0:8088");
    assert_ipv4(&cfg->listen_addr, cfg->listen_addrlen, "0.0.0.0", 8088);
    assert_int_equal(cfg->workers, 3);
    assert_string_equal(cfg->admin_listen, "[::1]:9099");
    assert_int_equal(cfg->admin_addr.ss_family, AF_INET6);
    assert_int_equal(cfg->admin_addrlen, sizeof(struct sockaddr_in6));
    s6 = (struct sockaddr_in6 *)&cfg->admin_addr;
    assert_memory_equal(&s6->sin6_addr, &in6addr_loopback, sizeof in6addr_loopback);
    assert_int_equal(port_of(&cfg->admin_addr), 9099);
    assert_string_equal(cfg->admin_token, "s3cr3t-Token");

    assert_int_equal(cfg->n_upstreams, 2);
    up = &cfg->upstreams[0]; /* file order is kept */
    assert_string_equal(up->name, "legacy");
    assert_int_equal(up->n_endpoints, 2);
    assert_string_equal(up->endpoints[0].address, "127.0.0.1:9101");
    assert_ipv4(&up->endpoints[0].addr, up->endpoints[0].addrlen, "127.0.0.1", 9101);
    assert_string_equal(up->endpoints[1].address, "10.0.0.2:80");
    assert_ipv4(&up->endpoints[1].addr, up->endpoints[1].addrlen, "10.0.0.2", 80);
    assert_string_equal(up->host, "legacy.internal");
    assert_int_equal(up->connect_timeout_ms, 1500);
    assert_int_equal(up->response_timeout_ms, 25000);
    assert_int_equal(up->read_timeout_ms, 20000);
    assert_int_equal(up->send_timeout_ms, 9000);
    assert_int_equal(up->pool_max_idle, 8);
    assert_int_equal(up->pool_idle_timeout_ms, 4000);
    assert_int_equal(up->down_ms, 0);

    up = &cfg->upstreams[1];
    assert_string_equal(up->name, "user-service_v2.1");
    assert_int_equal(up->n_endpoints, 2);
    assert_int_equal(up->endpoints[0].addr.ss_family, AF_INET6);
    assert_int_equal(port_of(&up->endpoints[0].addr), 9102);
    assert_string_equal(up->endpoints[1].address, "localhost:9103");
    /* a name resolves at load time, IPv4 preferred */
    assert_ipv4(&up->endpoints[1].addr, up->endpoints[1].addrlen, "127.0.0.1", 9103);
    assert_string_equal(up->host, "");
    assert_int_equal(up->connect_timeout_ms, 1000);
    assert_int_equal(up->down_ms, 5000);

    assert_int_equal(cfg->limits.max_uri_bytes, 4096);
    assert_int_equal(cfg->limits.max_header_bytes, 32768);
    assert_int_equal(cfg->limits.max_headers, 50);
    assert_int_equal(cfg->limits.max_body_bytes, 0);
    assert_int_equal(cfg->limits.header_timeout_ms, 5000);
    assert_int_equal(cfg->limits.body_timeout_ms, 6000);
    assert_int_equal(cfg->limits.idle_timeout_ms, 7000);
    assert_int_equal(cfg->limits.send_timeout_ms, 8000);
    assert_int_equal(cfg->limits.read_buffer_bytes, 131072);
    assert_string_equal(cfg->access_log, "/var/log/gateway/access.log");
    assert_int_equal(cfg->drain_timeout_ms, 2500);
    assert_int_equal(cfg->routes_source, GW_ROUTES_POSTGRES);
    assert_string_equal(cfg->pg_conninfo, "host=/tmp dbname=gw");
    assert_string_equal(cfg->routes_file, "/etc/gateway/routes.json");
    assert_string_equal(cfg->redis, "redis.internal:6380");

    assert_ptr_equal(gw_config_upstream(cfg, "legacy", 6), &cfg->upstreams[0]);
    assert_ptr_equal(gw_config_upstream(cfg, "user-service_v2.1xyz", 17), &cfg->upstreams[1]);
    assert_null(gw_config_upstream(cfg, "legac", 5));
    assert_null(gw_config_upstream(cfg, "legacy2", 7));
    assert_null(gw_config_upstream(cfg, "", 0));
}

static void test_defaults(void **state)
{
    gw_config *cfg = *state;
    char err[512];
    char *path = write_temp("{" MINCFG "}");

    assert_int_equal(gw_config_load(cfg, path, err, sizeof err), 0);
    assert_string_equal(cfg->listen, "127.0.0.1:8080");
    assert_ipv4(&cfg->listen_addr, cfg->listen_addrlen, "127.0.0.1", 8080);
    assert_int_equal(cfg->workers, expected_workers());
    assert_string_equal(cfg->admin_listen, "127.0.0.1:9090");
    assert_ipv4(&cfg->admin_addr, cfg->admin_addrlen, "127.0.0.1", 9090);
    assert_string_equal(cfg->admin_token, "");
    assert_int_equal(cfg->n_upstreams, 1);
    assert_string_equal(cfg->upstreams[0].name, "legacy");
    assert_int_equal(cfg->upstreams[0].n_endpoints, 1);
    assert_string_equal(cfg->upstreams[0].host, "");
    assert_int_equal(cfg->upstreams[0].connect_timeout_ms, 1000);
    assert_int_equal(cfg->upstreams[0].response_timeout_ms, 30000);
    assert_int_equal(cfg->upstreams[0].read_timeout_ms, 30000);
    assert_int_equal(cfg->upstreams[0].send_timeout_ms, 30000);
    assert_int_equal(cfg->upstreams[0].pool_max_idle, 64);
    assert_int_equal(cfg->upstreams[0].pool_idle_timeout_ms, 30000);
    assert_int_equal(cfg->upstreams[0].down_ms, 5000);
    assert_int_equal(cfg->limits.max_uri_bytes, 8192);
    assert_int_equal(cfg->limits.max_header_bytes, 16384);
    assert_int_equal(cfg->limits.max_headers, 100);
    assert_int_equal(cfg->limits.max_body_bytes, 10485760);
    assert_int_equal(cfg->limits.header_timeout_ms, 10000);
    assert_int_equal(cfg->limits.body_timeout_ms, 30000);
    assert_int_equal(cfg->limits.idle_timeout_ms, 60000);
    assert_int_equal(cfg->limits.send_timeout_ms, 30000);
    assert_int_equal(cfg->limits.read_buffer_bytes, 65536);
    assert_string_equal(cfg->access_log, "stderr");
    assert_int_equal(cfg->drain_timeout_ms, 10000);
    assert_int_equal(cfg->routes_source, GW_ROUTES_FILE);
    assert_string_equal(cfg->routes_file, "/tmp/routes.json");
    assert_string_equal(cfg->pg_conninfo, "");
    assert_string_equal(cfg->redis, "");
    unlink(path);
    free(path);

    /* workers 0 means the core count too; a small head limit pulls the default URI limit */
    assert_int_equal(load_text(cfg, WITH(", \"workers\": 0, \"limits\": {\"max_header_bytes\": 2048}"),
                               err, sizeof err), 0);
    assert_int_equal(cfg->workers, expected_workers());
    assert_int_equal(cfg->limits.max_header_bytes, 2048);
    assert_int_equal(cfg->limits.max_uri_bytes, 2048);
    assert_int_equal(cfg->limits.max_headers, 100);
    assert_int_equal(cfg->workers, expected_workers());

    /* edges that are valid: listen port 0, bounds of each range */
    assert_int_equal(load_text(cfg,
                               "{\"listen\": \"127.0.0.1:0\", \"workers\": 256, " UP ", " RT ", "
                               "\"limits\": {\"max_uri_bytes\": 64, \"max_header_bytes\": 1048576, "
                               "\"max_headers\": 256, \"header_timeout_ms\": 3600000, "
                               "\"body_timeout_ms\": 1}, \"log\": {\"access\": \"off\"}}",
                               err, sizeof err),
                     0);
    assert_int_equal(port_of(&cfg->listen_addr), 0);
    assert_int_equal(cfg->workers, 256);
    assert_int_equal(cfg->limits.max_uri_bytes, 64);
    assert_int_equal(cfg->limits.max_header_bytes, 1048576);
    assert_int_equal(cfg->limits.max_headers, 256);
    assert_int_equal(cfg->limits.header_timeout_ms, 3600000);
    assert_int_equal(cfg->limits.body_timeout_ms, 1);
    assert_string_equal(cfg->access_log, "off");
}

struct err_case {
    const char *json;
    int rc;
    const char *msg; /* after "FILE: " */
};

static void run_cases(gw_config *cfg, const struct err_case *cases, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        expect_error(cfg, cases[i].json, cases[i].rc, cases[i].msg);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void test_errors_addresses(void **state)
{
    static const struct err_case cases[] = {
        { "{" LS ", \"upstreams\": {\"legacy\": {\"endpoints\": [\"127.0.0.1:99999\"]}}, " RT "}",
          GW_EINVAL, "upstreams.legacy.endpoints[0]: invalid port \"99999\"" },
        { "{" LS ", \"upstreams\": {\"legacy\": {\"endpoints\": [\"127.0.0.1:9101\", "
          "\"127.0.0.1:0\"]}}, " RT "}",
          GW_EINVAL, "upstreams.legacy.endpoints[1]: invalid port \"0\"" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [\"127.0.0.1:\"]}}, " RT "}",
          GW_EINVAL, "upstreams.a.endpoints[0]: invalid port \"\"" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [\"127.0.0.1:80x\"]}}, " RT "}",
          GW_EINVAL, "upstreams.a.endpoints[0]: invalid port \"80x\"" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [\"127.0.0.1\"]}}, " RT "}",
          GW_EINVAL, "upstreams.a.endpoints[0]: invalid address \"127.0.0.1\"" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [\"::1:80\"]}}, " RT "}",
          GW_EINVAL, "upstreams.a.endpoints[0]: invalid address \"::1:80\"" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [\"[::1]80\"]}}, " RT "}",
          GW_EINVAL, "upstreams.a.endpoints[0]: invalid address \"[::1]80\"" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [\"[nothex]:80\"]}}, " RT "}",
          GW_EINVAL, "upstreams.a.endpoints[0]: invalid address \"[nothex]:80\"" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [\"300.1.1.1:80\"]}}, " RT "}",
          GW_EINVAL, "upstreams.a.endpoints[0]: invalid address \"300.1.1.1:80\"" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [\"bad host:80\"]}}, " RT "}",
          GW_EINVAL, "upstreams.a.endpoints[0]: invalid address \"bad host:80\"" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [\":80\"]}}, " RT "}",
          GW_EINVAL, "upstreams.a.endpoints[0]: invalid address \":80\"" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [8080]}}, " RT "}",
          GW_EINVAL, "upstreams.a.endpoints[0]: must be a \"host:port\" string" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [\"127.0.0.1:1\", \"127.0.0.1:1\"]}}, "
          RT "}",
          GW_EINVAL, "upstreams.a.endpoints[1]: duplicate endpoint \"127.0.0.1:1\"" },
        { "{\"listen\": \"127.0.0.1:65536\", " UP ", " RT "}",
          GW_EINVAL, "listen: invalid port \"65536\"" },
        { "{\"listen\": \"nowhere\", " UP ", " RT "}",
          GW_EINVAL, "listen: invalid address \"nowhere\"" },
        { "{\"listen\": 8080, " UP ", " RT "}", GW_EINVAL, "listen: must be a \"host:port\" string" },
        { WITH(", \"admin\": {\"listen\": \"127.0.0.1:x\"}"), GW_EINVAL,
          "admin.listen: invalid port \"x\"" },
        { WITH(", \"admin\": {\"listen\": \"127.0.0.1:8080\"}"), GW_EINVAL,
          "admin.listen: same address as listen (127.0.0.1:8080)" },
        { WITH(", \"redis\": \"127.0.0.1:0\""), GW_EINVAL, "redis: invalid port \"0\"" },
        { WITH(", \"redis\": \"127.0.0.1\""), GW_EINVAL, "redis: invalid address \"127.0.0.1\"" },
        { WITH(", \"redis\": null"), GW_EINVAL,
          "redis: must be a \"host:port\" string, or an object with \"address\", with "
          "\"sentinels\" and \"master_name\", or with \"cluster\"" },
        { WITH(", \"redis\": {}"), GW_EINVAL,
          "redis: needs exactly one of \"address\", \"sentinels\" or \"cluster\"" },
        { WITH(", \"redis\": {\"cluster\": [\"a:1\"], \"sentinels\": [\"b:2\"]}"), GW_EINVAL,
          "redis: needs exactly one of \"address\", \"sentinels\" or \"cluster\"" },
        { WITH(", \"redis\": {\"cluster\": []}"), GW_EINVAL,
          "redis.cluster: must be a non-empty array of \"host:port\" strings" },
        { WITH(", \"redis\": {\"cluster\": [\"127.0.0.1:7000\", \"127.0.0.1\"]}"), GW_EINVAL,
          "redis.cluster[1]: invalid address \"127.0.0.1\"" },
        { WITH(", \"redis\": {\"cluster\": [\"a:1\", \"a:1\"]}"), GW_EINVAL,
          "redis.cluster[1]: listed twice" },
        { WITH(", \"redis\": {\"cluster\": [\"a:1\"], \"master_name\": \"m\"}"), GW_EINVAL,
          "redis.master_name: only with \"sentinels\"" },
        { WITH(", \"redis\": {\"sentinels\": [\"a:26379\"]}"), GW_EINVAL,
          "redis.master_name: required with \"sentinels\" (the name the sentinels monitor)" },
        { WITH(", \"redis\": {\"sentinels\": [\"a:26379\"], \"master_name\": \"a b\"}"),
          GW_EINVAL, "redis.master_name: visible ASCII without spaces only" },
        { WITH(", \"redis\": {\"sentinels\": [7], \"master_name\": \"m\"}"), GW_EINVAL,
          "redis.sentinels[0]: must be a \"host:port\" string" },
        { WITH(", \"redis\": {\"sentinels\": [\"a:1\"], \"master_name\": \"m\", \"db\": 1}"),
          GW_EINVAL, "redis.db: unknown key" },
    };
    run_cases(*state, cases, N(cases));
}

/* "redis": one server, a Sentinel set, a cluster; GATEWAY_REDIS replaces any of them. */
static void test_redis_forms(void **state)
{
    gw_config *cfg = *state;
    char err[1024];
    assert_int_equal(load_text(cfg, WITH(""), err, sizeof err), 0);
    assert_int_equal(cfg->redis_topo.kind, CMP_REDIS_NONE);
    assert_int_equal(load_text(cfg, WITH(", \"redis\": \"127.0.0.1:6379\""), err, sizeof err), 0);
    assert_int_equal(cfg->redis_topo.kind, CMP_REDIS_SINGLE);
    assert_string_equal(cfg->redis_topo.addr[0], "127.0.0.1:6379");
    assert_int_equal(load_text(cfg, WITH(", \"redis\": {\"sentinels\": [\"10.0.0.1:26379\", "
                                         "\"s2.internal:26379\"], \"master_name\": \"gw\"}"),
                               err, sizeof err), 0);
    assert_int_equal(cfg->redis_topo.kind, CMP_REDIS_SENTINEL);
    assert_int_equal(cfg->redis_topo.n, 2);
    assert_string_equal(cfg->redis_topo.addr[1], "s2.internal:26379");
    assert_string_equal(cfg->redis_topo.master_name, "gw");
    assert_string_equal(cfg->redis, "");
    assert_int_equal(load_text(cfg, WITH(", \"redis\": {\"cluster\": [\"[::1]:7000\"]}"), err,
                               sizeof err), 0);
    assert_int_equal(cfg->redis_topo.kind, CMP_REDIS_CLUSTER);
    assert_int_equal(cfg->redis_topo.n, 1);
    assert_string_equal(cfg->redis_topo.addr[0], "[::1]:7000");
    assert_int_equal(setenv("GATEWAY_REDIS", "cache.internal:6390", 1), 0);
    assert_int_equal(load_text(cfg, WITH(", \"redis\": {\"cluster\": [\"[::1]:7000\"]}"), err,
                               sizeof err), 0);
    clear_env();
    assert_int_equal(cfg->redis_topo.kind, CMP_REDIS_SINGLE);
    assert_string_equal(cfg->redis_topo.addr[0], "cache.internal:6390");
}

/* "redis" credentials: the password literal, from the environment or from a file (one
 * trailing newline stripped), the sentinels' own; GATEWAY_REDIS keeps the file's unless its
 * redis:// URL names some; every error names the key, never the password. */
static void test_redis_auth(void **state)
{
    gw_config *cfg = *state;
    char err[1024], dir[] = "/tmp/gwcfgredis-XXXXXX", pw[256], cfgtext[1024];
    const cmp_redis_auth *a = &cfg->redis_topo.auth;

    assert_non_null(mkdtemp(dir));
    snprintf(pw, sizeof pw, "%s/pw", dir);
    write_all(pw, "s3cret-from-file\r\n");
    snprintf(cfgtext, sizeof cfgtext, WITH(", \"redis\": {\"address\": \"127.0.0.1:6379\", "
                                           "\"username\": \"gw\", \"password_file\": \"%s\"}"),
             pw);
    assert_int_equal(load_text(cfg, cfgtext, err, sizeof err), 0);
    assert_int_equal(cfg->redis_topo.kind, CMP_REDIS_SINGLE);
    assert_string_equal(cfg->redis_topo.addr[0], "127.0.0.1:6379");
    assert_string_equal(a->username, "gw");
    assert_string_equal(a->password, "s3cret-from-file");

    assert_int_equal(setenv("GW_TEST_REDIS_PW", "s3cret-from-env", 1), 0);
    assert_int_equal(load_text(cfg, WITH(", \"redis\": {\"sentinels\": [\"a:26379\"], "
                                         "\"master_name\": \"m\", \"password_env\": "
                                         "\"GW_TEST_REDIS_PW\", \"sentinel_password\": \"sp\"}"),
                               err, sizeof err), 0);
    assert_string_equal(a->username, "");
    assert_string_equal(a->password, "s3cret-from-env");
    assert_string_equal(cfg->redis_topo.sentinel_auth.password, "sp");
    assert_int_equal(unsetenv("GW_TEST_REDIS_PW"), 0);
    assert_int_equal(load_text(cfg, WITH(", \"redis\": {\"cluster\": [\"a:7000\"], "
                                         "\"password\": \"lit\"}"), err, sizeof err), 0);
    assert_string_equal(a->password, "lit");
    assert_int_equal(load_text(cfg, WITH(", \"redis\": \"a:1\""), err, sizeof err), 0);
    assert_string_equal(a->password, "");

    /* GATEWAY_REDIS: the address replaced, the file's credentials kept ... */
    assert_int_equal(setenv("GATEWAY_REDIS", "b:2", 1), 0);
    assert_int_equal(load_text(cfg, WITH(", \"redis\": {\"address\": \"a:1\", \"username\": "
                                         "\"u\", \"password\": \"p\"}"), err, sizeof err), 0);
    assert_string_equal(cfg->redis_topo.addr[0], "b:2");
    assert_string_equal(a->username, "u");
    assert_string_equal(a->password, "p");
    /* ... unless the URL names its own (%-escapes decoded; the last '@' ends them) */
    assert_int_equal(setenv("GATEWAY_REDIS", "redis://:p%40ss@w@[::1]:6380", 1), 0);
    assert_int_equal(load_text(cfg, WITH(", \"redis\": {\"address\": \"a:1\", \"username\": "
                                         "\"u\", \"password\": \"p\"}"), err, sizeof err), 0);
    assert_string_equal(cfg->redis_topo.addr[0], "[::1]:6380");
    assert_string_equal(a->username, "");
    assert_string_equal(a->password, "p@ss@w");
    assert_int_equal(setenv("GATEWAY_REDIS", "redis://acl-user:pw@c:3", 1), 0);
    assert_int_equal(load_text(cfg, WITH(""), err, sizeof err), 0);
    assert_int_equal(cfg->redis_topo.kind, CMP_REDIS_SINGLE);
    assert_string_equal(a->username, "acl-user");
    assert_string_equal(a->password, "pw");
    clear_env();

    static const struct err_case cases[] = {
        { WITH(", \"redis\": {\"address\": \"a:1\", \"password\": \"x-secret\", "
               "\"password_env\": \"X\"}"), GW_EINVAL,
          "redis.password: at most one of \"password\", \"password_env\" or \"password_file\"" },
        { WITH(", \"redis\": {\"address\": \"a:1\", \"username\": \"u\"}"), GW_EINVAL,
          "redis.username: needs \"password\", \"password_env\" or \"password_file\"" },
        { WITH(", \"redis\": {\"address\": \"a:1\", \"username\": \"u v\", \"password\": \"p\"}"),
          GW_EINVAL, "redis.username: visible ASCII without spaces only" },
        { WITH(", \"redis\": {\"address\": \"a:1\", \"password\": \"\"}"), GW_EINVAL,
          "redis.password: must not be empty" },
        { WITH(", \"redis\": {\"address\": \"a:1\", \"password\": 7}"), GW_EINVAL,
          "redis.password: must be a string" },
        { WITH(", \"redis\": {\"address\": \"a:1\", \"password_env\": \"1X\"}"), GW_EINVAL,
          "redis.password_env: an environment variable name ([A-Za-z_][A-Za-z0-9_]*)" },
        { WITH(", \"redis\": {\"address\": \"a:1\", \"password_env\": \"GW_TEST_UNSET_PW\"}"),
          GW_EINVAL, "redis.password_env: $GW_TEST_UNSET_PW is not set (or empty)" },
        { WITH(", \"redis\": {\"address\": \"a:1\", \"password_file\": "
               "\"/nonexistent/gw-redis-pw\"}"), GW_EINVAL,
          "redis.password_file: /nonexistent/gw-redis-pw: cannot read: No such file or "
          "directory" },
        { WITH(", \"redis\": {\"address\": \"a:1\", \"password_file\": \"/dev/null\"}"),
          GW_EINVAL, "redis.password_file: /dev/null: not a regular file" },
        { WITH(", \"redis\": {\"address\": 1}"), GW_EINVAL,
          "redis.address: must be a \"host:port\" string" },
        { WITH(", \"redis\": {\"address\": \"a\"}"), GW_EINVAL,
          "redis.address: invalid address \"a\"" },
        { WITH(", \"redis\": {\"address\": \"a:1\", \"cluster\": [\"b:2\"]}"), GW_EINVAL,
          "redis: needs exactly one of \"address\", \"sentinels\" or \"cluster\"" },
        { WITH(", \"redis\": {\"cluster\": [\"b:2\"], \"sentinel_password\": \"p\"}"), GW_EINVAL,
          "redis.sentinel_password: only with \"sentinels\"" },
        { WITH(", \"redis\": {\"address\": \"a:1\", \"master_name\": \"m\"}"), GW_EINVAL,
          "redis.master_name: only with \"sentinels\"" },
        { WITH(", \"redis\": {\"sentinels\": [\"a:1\"], \"master_name\": \"m\", "
               "\"sentinel_username\": \"u\"}"), GW_EINVAL,
          "redis.sentinel_username: needs \"sentinel_password\", \"sentinel_password_env\" or "
          "\"sentinel_password_file\"" },
        { WITH(", \"redis\": {\"address\": \"a:1\", \"password_fiel\": \"x\"}"), GW_EINVAL,
          "redis.password_fiel: unknown key" },
    };
    run_cases(*state, cases, N(cases));

    /* empty; too long: named by its limit, not shown */
    write_all(pw, "\n");
    snprintf(cfgtext, sizeof cfgtext, WITH(", \"redis\": {\"address\": \"a:1\", "
                                           "\"password_file\": \"%s\"}"), pw);
    assert_int_not_equal(load_text(cfg, cfgtext, err, sizeof err), 0);
    assert_non_null(strstr(err, ": is empty"));
    char big[1100 + 64];
    memset(big, 'k', 1100);
    big[1100] = '\0';
    write_all(pw, big);
    snprintf(cfgtext, sizeof cfgtext, WITH(", \"redis\": {\"address\": \"a:1\", "
                                           "\"password_file\": \"%s\"}"), pw);
    assert_int_not_equal(load_text(cfg, cfgtext, err, sizeof err), 0);
    assert_non_null(strstr(err, "redis.password_file: "));
    assert_non_null(strstr(err, ": longer than 1023 bytes"));
    assert_null(strstr(err, "kkkk"));
    /* 1023 bytes, "\r\n", then more: refused (it was taken as the 1023 bytes, the rest
     * ignored); the longest accepted: 1023 bytes and "\r\n" */
    memset(big, 'k', 1023);
    memcpy(big + 1023, "\r\nmore lines of a certificate", 30);
    big[1053] = '\0';
    write_all(pw, big);
    assert_int_not_equal(load_text(cfg, cfgtext, err, sizeof err), 0);
    assert_non_null(strstr(err, ": longer than 1023 bytes"));
    assert_null(strstr(err, "kkkk"));
    memcpy(big + 1023, "\r\n", 3);
    write_all(pw, big);
    assert_int_equal(load_text(cfg, cfgtext, err, sizeof err), 0);
    assert_int_equal(strlen(cfg->redis_topo.auth.password), 1023);
    memcpy(big + 1023, "k\n", 3); /* 1024 bytes */
    write_all(pw, big);
    assert_int_not_equal(load_text(cfg, cfgtext, err, sizeof err), 0);
    assert_non_null(strstr(err, ": longer than 1023 bytes"));
    /* two lines: not the file meant */
    write_all(pw, "kkkk-line\nkkkk-two\n");
    assert_int_not_equal(load_text(cfg, cfgtext, err, sizeof err), 0);
    assert_non_null(strstr(err, ": holds more than one line"));
    assert_null(strstr(err, "kkkk"));
    unlink(pw);
    rmdir(dir);

    /* a JSON syntax error inside a literal password: where, not the text (jansson quotes
     * the token it stopped at) */
    static const char *const broken[] = {
        WITH(", \"redis\": {\"address\": \"a:1\", \"password\": \"S3cretPassw\\qrd\"}"),
        WITH(", \"redis\": {\"address\": \"a:1\", \"password\": \"S3cretPassw\001rd\"}"),
        WITH(", \"redis\": {\"address\": \"a:1\", \"password\": \"S3cretPassw\\u00\"}"),
    };
    for (size_t i = 0; i < N(broken); i++) {
        assert_int_equal(load_text(cfg, broken[i], err, sizeof err), GW_EPARSE);
        assert_non_null(strstr(err, ": line 1 column "));
        if (strstr(err, "S3cret") != NULL)
            fail_msg("%s", err);
    }

    /* GATEWAY_REDIS: errors name the variable and never the password */
#define WANT_REDIS_URL "env GATEWAY_REDIS: want \"host:port\" or " \
                       "redis://[user:password@]host:port (the value is not shown: it may " \
                       "hold a password)"
#define BAD_ESCAPE "env GATEWAY_REDIS: user or password: a malformed %-escape, a NUL or too long"
    static const char *const env_cases[][2] = {
        { "rediss://h:1", "env GATEWAY_REDIS: TLS to Redis is not supported (use redis:// to a "
                          "local TLS tunnel)" },
        { "redis://u:pw-secret@h:1/0", "env GATEWAY_REDIS: want redis://[user:password@]host:port "
                                       "(no database number, path or options)" },
        { "redis://pw-secret@h:1", "env GATEWAY_REDIS: want redis://[user]:password@host:port (a "
                                   "password after the ':')" },
        { "redis://u:@h:1", "env GATEWAY_REDIS: want redis://[user]:password@host:port (a "
                            "password after the ':')" },
        { "redis://u:pw-secret%4@h:1", "env GATEWAY_REDIS: user or password: a malformed "
                                       "%-escape, a NUL or too long" },
        { "redis://u:pw-secret%00@h:1", "env GATEWAY_REDIS: user or password: a malformed "
                                        "%-escape, a NUL or too long" },
        { "redis://u:pw-secret@h", WANT_REDIS_URL },
        /* the host forgotten, the scheme forgotten, an '@' in the password and no host: the
         * password, or a piece of it, was quoted as the address or the port */
        { "redis://user:S3cretPw", WANT_REDIS_URL },
        { "user:S3cretPw@127.0.0.1:6379", WANT_REDIS_URL },
        { "redis://user:S3cret@Pw", WANT_REDIS_URL },
        { "redis://:S3cretPw@", WANT_REDIS_URL },
        { "S3cretPw@", WANT_REDIS_URL },
        { "redis://user:S3cretPw@h:99999", WANT_REDIS_URL },
        /* %-escapes: exactly two hex digits (strtol took a sign or a space) */
        { "redis://u:S3cret%+1@h:1", BAD_ESCAPE },
        { "redis://u:S3cret%-1@h:1", BAD_ESCAPE },
        { "redis://u:S3cret% f@h:1", BAD_ESCAPE },
        { "redis://u:S3cret%4g@h:1", BAD_ESCAPE },
    };
    for (size_t i = 0; i < N(env_cases); i++) {
        assert_int_equal(setenv("GATEWAY_REDIS", env_cases[i][0], 1), 0);
        expect_env_error(cfg, "{" MINCFG "}", env_cases[i][1]);
    }
    /* no error of a malformed value shows anything after the userinfo's ':' */
    static const char *const malformed[] = {
        "redis://user:S3cretPw", "user:S3cretPw@127.0.0.1:6379", "redis://user:S3cret@Pw",
        "redis://:S3cretPw@h", "redis://S3cretPw", "redis://u:S3cretPw@h:1/0",
        "redis://u:S3cretPw@h:1?x", "redis://u:S3cretPw%zz@h:1", "user:S3cretPw",
        "u:S3cretPw@", "redis://u:S3cretPw@[::1", "redis://u:S3cretPw@h:0",
        "redis://u:S3cretPw@" "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh"
        "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh:1",
    };
    for (size_t i = 0; i < N(malformed); i++) {
        char err[1024];
        assert_int_equal(setenv("GATEWAY_REDIS", malformed[i], 1), 0);
        assert_int_equal(load_text(cfg, "{" MINCFG "}", err, sizeof err), GW_EINVAL);
        assert_non_null(strstr(err, "env GATEWAY_REDIS: "));
        if (strstr(err, "S3cret") != NULL || strstr(err, "Pw") != NULL)
            fail_msg("%s -> %s", malformed[i], err);
    }
    clear_env();
}

/* "rate_limits": defaults, values, and an error per key. */
static void test_rate_limits(void **state)
{
    gw_config *cfg = *state;
    char err[1024];
    assert_int_equal(load_text(cfg, WITH(""), err, sizeof err), 0);
    assert_int_equal(cfg->rate_limits.shared, 1);
    assert_int_equal(cfg->rate_limits.instances, 0); /* learned */
    assert_int_equal(cfg->rate_limits.timeout_ms, 50);
    assert_int_equal(load_text(cfg, WITH(", \"rate_limits\": {\"shared\": false, "
                                         "\"instances\": 3, \"timeout_ms\": 20}"),
                               err, sizeof err), 0);
    assert_int_equal(cfg->rate_limits.shared, 0);
    assert_int_equal(cfg->rate_limits.instances, 3);
    assert_int_equal(cfg->rate_limits.timeout_ms, 20);
    static const struct err_case cases[] = {
        { WITH(", \"rate_limits\": {\"instances\": 0}"), GW_EINVAL,
          "rate_limits.instances: must be an integer from 1 to 1024" },
        { WITH(", \"rate_limits\": {\"timeout_ms\": 0}"), GW_EINVAL,
          "rate_limits.timeout_ms: must be an integer from 1 to 3600000" },
        { WITH(", \"rate_limits\": {\"shared\": 1}"), GW_EINVAL,
          "rate_limits.shared: must be true or false" },
        { WITH(", \"rate_limits\": {\"redis\": 1}"), GW_EINVAL,
          "rate_limits.redis: unknown key" },
        { "{" LS ", \"upstreams\": {\"legacy\": {\"endpoints\": [\"127.0.0.1:9101\"], "
          "\"queue\": {\"max\": 3}}}, " RT "}", GW_EINVAL,
          "upstreams.legacy.queue: needs max_in_flight" },
        { "{" LS ", \"upstreams\": {\"legacy\": {\"endpoints\": [\"127.0.0.1:9101\"], "
          "\"max_in_flight\": -1}}, " RT "}", GW_EINVAL,
          "upstreams.legacy.max_in_flight: must be an integer from 0 to 1000000" },
        { "{" LS ", \"upstreams\": {\"legacy\": {\"endpoints\": [\"127.0.0.1:9101\"], "
          "\"max_in_flight\": 4, \"queue\": {\"timeout_ms\": 0}}}, " RT "}", GW_EINVAL,
          "upstreams.legacy.queue.timeout_ms: must be an integer from 1 to 3600000" },
    };
    run_cases(cfg, cases, N(cases));
    assert_int_equal(load_text(cfg, "{" LS ", \"upstreams\": {\"legacy\": {\"endpoints\": "
                                    "[\"127.0.0.1:9101\"], \"max_in_flight\": 8, "
                                    "\"queue\": {\"max\": 4}}}, " RT "}", err, sizeof err), 0);
    assert_int_equal(cfg->upstreams[0].max_in_flight, 8);
    assert_int_equal(cfg->upstreams[0].queue_max, 4);
    assert_int_equal(cfg->upstreams[0].queue_timeout_ms, 1000);
    assert_int_equal(cfg->rate_limits.default_limit.rate, 0); /* no default */
    assert_int_equal(load_text(cfg, WITH(", \"rate_limits\": {\"default\": {\"rate\": 7, "
                                         "\"per\": \"1m\", \"key\": \"header:X-Key\"}}"),
                               err, sizeof err), 0);
    assert_int_equal(cfg->rate_limits.default_limit.rate, 7);
    assert_int_equal(cfg->rate_limits.default_limit.per_ms, 60000);
    assert_int_equal(cfg->rate_limits.default_limit.burst, 7);
    assert_string_equal(cfg->rate_limits.default_limit.key_header, "x-key");
    assert_ptr_equal(cfg->rate_limits.default_limit.key_header, cfg->rate_limits.default_header);
    static const struct err_case defaults[] = {
        { WITH(", \"rate_limits\": {\"default\": {\"rate\": 0}}"), GW_EINVAL,
          "rate_limits.default.rate: must be an integer from 1 to 1000000" },
        { WITH(", \"rate_limits\": {\"default\": {\"rate\": 1, \"key\": \"ip\"}}"), GW_EINVAL,
          "rate_limits.default.key: unknown key kind \"ip\" (client_ip, route or header:NAME)" },
        { WITH(", \"rate_limits\": {\"default\": []}"), GW_EINVAL,
          "rate_limits.default: must be an object" },
    };
    run_cases(cfg, defaults, N(defaults));
}

static void test_errors_limits(void **state)
{
    static const struct err_case cases[] = {
        { WITH(", \"limits\": {\"header_timeout_ms\": 0}"), GW_EINVAL,
          "limits.header_timeout_ms: must be an integer from 1 to 3600000" },
        { WITH(", \"limits\": {\"body_timeout_ms\": 3600001}"), GW_EINVAL,
          "limits.body_timeout_ms: must be an integer from 1 to 3600000" },
        { WITH(", \"limits\": {\"idle_timeout_ms\": \"60000\"}"), GW_EINVAL,
          "limits.idle_timeout_ms: must be an integer from 1 to 3600000" },
        { WITH(", \"limits\": {\"send_timeout_ms\": 1.5}"), GW_EINVAL,
          "limits.send_timeout_ms: must be an integer from 1 to 3600000" },
        { WITH(", \"limits\": {\"send_timeout_ms\": true}"), GW_EINVAL,
          "limits.send_timeout_ms: must be an integer from 1 to 3600000" },
        { WITH(", \"limits\": {\"max_header_bytes\": 1023}"), GW_EINVAL,
          "limits.max_header_bytes: must be an integer from 1024 to 1048576" },
        { WITH(", \"limits\": {\"max_header_bytes\": 1048577}"), GW_EINVAL,
          "limits.max_header_bytes: must be an integer from 1024 to 1048576" },
        { WITH(", \"limits\": {\"read_buffer_bytes\": 4095}"), GW_EINVAL,
          "limits.read_buffer_bytes: must be an integer from 4096 to 16777216" },
        { WITH(", \"limits\": {\"read_buffer_bytes\": 16777217}"), GW_EINVAL,
          "limits.read_buffer_bytes: must be an integer from 4096 to 16777216" },
        { WITH(", \"limits\": {\"max_uri_bytes\": 63}"), GW_EINVAL,
          "limits.max_uri_bytes: must be an integer from 64 to 16384" },
        { WITH(", \"limits\": {\"max_header_bytes\": 2048, \"max_uri_bytes\": 4096}"), GW_EINVAL,
          "limits.max_uri_bytes: must be an integer from 64 to 2048" },
        { WITH(", \"limits\": {\"max_headers\": 0}"), GW_EINVAL,
          "limits.max_headers: must be an integer from 1 to 256" },
        { WITH(", \"limits\": {\"max_headers\": 257}"), GW_EINVAL,
          "limits.max_headers: must be an integer from 1 to 256" },
        { WITH(", \"limits\": {\"max_body_bytes\": -1}"), GW_EINVAL,
          "limits.max_body_bytes: must be an integer >= 0" },
        { WITH(", \"limits\": {\"max_connections\": 0}"), GW_EINVAL,
          "limits.max_connections: must be an integer from 1 to 1000000" },
        { WITH(", \"limits\": {\"max_connections\": 1000001}"), GW_EINVAL,
          "limits.max_connections: must be an integer from 1 to 1000000" },
        { WITH(", \"limits\": []"), GW_EINVAL, "limits: must be an object" },
        { WITH(", \"workers\": 257"), GW_EINVAL, "workers: must be an integer from 0 to 256" },
        { WITH(", \"workers\": -1"), GW_EINVAL, "workers: must be an integer from 0 to 256" },
        { WITH(", \"shutdown\": {\"drain_timeout_ms\": 0}"), GW_EINVAL,
          "shutdown.drain_timeout_ms: must be an integer from 1 to 3600000" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [\"127.0.0.1:1\"], "
          "\"connect_timeout_ms\": 0}}, " RT "}",
          GW_EINVAL, "upstreams.a.connect_timeout_ms: must be an integer from 1 to 3600000" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [\"127.0.0.1:1\"], "
          "\"response_timeout_ms\": 3600001}}, " RT "}",
          GW_EINVAL, "upstreams.a.response_timeout_ms: must be an integer from 1 to 3600000" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [\"127.0.0.1:1\"], "
          "\"read_timeout_ms\": null}}, " RT "}",
          GW_EINVAL, "upstreams.a.read_timeout_ms: must be an integer from 1 to 3600000" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [\"127.0.0.1:1\"], "
          "\"send_timeout_ms\": 0}}, " RT "}",
          GW_EINVAL, "upstreams.a.send_timeout_ms: must be an integer from 1 to 3600000" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [\"127.0.0.1:1\"], "
          "\"pool\": {\"max_idle\": 65536}}}, " RT "}",
          GW_EINVAL, "upstreams.a.pool.max_idle: must be an integer from 0 to 65535" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [\"127.0.0.1:1\"], "
          "\"pool\": {\"idle_timeout_ms\": 0}}}, " RT "}",
          GW_EINVAL, "upstreams.a.pool.idle_timeout_ms: must be an integer from 1 to 3600000" },
        { "{" LS ", \"upstreams\": {\"a\": {\"endpoints\": [\"127.0.0.1:1\"], "
          "\"down_ms\": -5}}, " RT "}",
          GW_EINVAL, "upstreams.a.down_ms: must be an integer from 0 to 3600000" },
    };
    run_cases(*state, cases, N(cases));
}

static void test_errors_structure(void **state)
{
    static const struct err_case cases[] = {
        { WITH(", \"colour\": 1"), GW_EINVAL, "colour: unknown key" },
        { WITH(", \"limits\": {\"max_body\": 1}"), GW_EINVAL, "limits.max_body: unknown key" },
        { WITH(", \"admin\": {\"tokn\": \"x\"}"), GW_EINVAL, "admin.tokn: unknown key" },
        { WITH(", \"log\": {\"error\": \"stderr\"}"), GW_EINVAL, "log.error: unknown key" },
        { WITH(", \"shutdown\": {\"grace\": 1}"), GW_EINVAL, "shutdown.grace: unknown key" },
        { "{" LS ", " UP ", \"routes\": {\"source\": \"file\", \"file\": \"r.json\", \"x\": 1}}",
          GW_EINVAL, "routes.x: unknown key" },
        { "{" LS ", \"upstreams\": {\"legacy\": {\"endpoints\": [\"127.0.0.1:1\"], "
          "\"timeout\": 5}}, " RT "}",
          GW_EINVAL, "upstreams.legacy.timeout: unknown key" },
        { "{" LS ", \"upstreams\": {\"legacy\": {\"endpoints\": [\"127.0.0.1:1\"], "
          "\"pool\": {\"size\": 5}}}, " RT "}",
          GW_EINVAL, "upstreams.legacy.pool.size: unknown key" },
        { "{" UP ", " RT "}", GW_EINVAL, "listen: required (or \"listeners\")" },
        { "{" LS ", " RT "}", GW_EINVAL, "upstreams: required" },
        { "{" LS ", \"upstreams\": {}, " RT "}", GW_EINVAL,
          "upstreams: must be an object with at least one upstream" },
        { "{" LS ", \"upstreams\": [], " RT "}", GW_EINVAL,
          "upstreams: must be an object with at least one upstream" },
        { "{" LS ", " UP "}", GW_EINVAL, "routes: required" },
        { "{" LS ", \"upstreams\": {\"legacy\": {}}, " RT "}", GW_EINVAL,
          "upstreams.legacy.endpoints: required" },
        { "{" LS ", \"upstreams\": {\"legacy\": {\"endpoints\": []}}, " RT "}", GW_EINVAL,
          "upstreams.legacy.endpoints: must be a non-empty array of \"host:port\" strings" },
        { "{" LS ", \"upstreams\": {\"legacy\": {\"endpoints\": \"127.0.0.1:1\"}}, " RT "}",
          GW_EINVAL,
          "upstreams.legacy.endpoints: must be a non-empty array of \"host:port\" strings" },
        { "{" LS ", \"upstreams\": {\"legacy\": [\"127.0.0.1:1\"]}, " RT "}", GW_EINVAL,
          "upstreams.legacy: must be an object" },
        { "{" LS ", \"upstreams\": {\"bad name\": {\"endpoints\": [\"127.0.0.1:1\"]}}, " RT "}",
          GW_EINVAL,
          "upstreams: invalid upstream name \"bad name\" (must match [A-Za-z0-9_.-]{1,63})" },
        { "{" LS ", \"upstreams\": {\"\": {\"endpoints\": [\"127.0.0.1:1\"]}}, " RT "}",
          GW_EINVAL, "upstreams: invalid upstream name \"\" (must match [A-Za-z0-9_.-]{1,63})" },
        { "{" LS ", \"upstreams\": {\"a123456789012345678901234567890123456789012345678901234"
          "567890123\": {\"endpoints\": [\"127.0.0.1:1\"]}}, " RT "}",
          GW_EINVAL,
          "upstreams: invalid upstream name \"a12345678901234567890123456789012345678901234567890"
          "1234567890123\" (must match [A-Za-z0-9_.-]{1,63})" },
        { "{" LS ", \"upstreams\": {\"legacy\": {\"endpoints\": [\"127.0.0.1:1\"], "
          "\"host\": \"a b\"}}, " RT "}",
          GW_EINVAL,
          "upstreams.legacy.host: must be visible ASCII without spaces or control characters" },
        { "{" LS ", \"upstreams\": {\"legacy\": {\"endpoints\": [\"127.0.0.1:1\"], "
          "\"host\": 5}}, " RT "}",
          GW_EINVAL, "upstreams.legacy.host: must be a string" },
        { "{" LS ", " UP ", \"routes\": {\"source\": \"s3\"}}", GW_EINVAL,
          "routes.source: must be \"file\" or \"postgres\"" },
        { "{" LS ", " UP ", \"routes\": {\"file\": \"routes.json\"}}", GW_EINVAL,
          "routes.source: required" },
        { "{" LS ", " UP ", \"routes\": {\"source\": \"file\"}}", GW_EINVAL,
          "routes.file: required when \"source\" is \"file\"" },
        { "{" LS ", " UP ", \"routes\": {\"source\": \"file\", \"file\": \"\"}}", GW_EINVAL,
          "routes.file: must not be empty" },
        { "{" LS ", " UP ", \"routes\": {\"source\": \"postgres\"}}", GW_EINVAL,
          "routes.conninfo: required when \"source\" is \"postgres\" (or set GATEWAY_PG)" },
        { "{" LS ", " UP ", \"routes\": \"routes.json\"}", GW_EINVAL, "routes: must be an object" },
        { WITH(", \"admin\": {\"token\": \"has space\"}"), GW_EINVAL,
          "admin.token: must be visible ASCII without spaces" },
        { WITH(", \"admin\": \"127.0.0.1:9090\""), GW_EINVAL, "admin: must be an object" },
        { WITH(", \"log\": {\"access\": \"\"}"), GW_EINVAL, "log.access: must not be empty" },
        { WITH(", \"log\": {\"access\": false}"), GW_EINVAL, "log.access: must be a string" },
        { "[1, 2]", GW_EINVAL, "(root): must be a JSON object" },
        /* bad JSON: jansson's own text, with its position */
        { "{\n  \"listen\": \"127.0.0.1:8080\",\n    oops\n}\n", GW_EPARSE,
          "line 3 column 8: string or '}' expected near 'oops'" },
        { "{" MINCFG ", \"listen\": \"127.0.0.1:8081\"}", GW_EPARSE,
          "line 1 column 150: duplicate object key near '\"listen\"'" },
        { "", GW_EPARSE, "line 1 column 0: '[' or '{' expected near end of file" },
    };
    run_cases(*state, cases, N(cases));
}

static void test_errors_io(void **state)
{
    gw_config *cfg = *state;
    char dir[] = "/tmp/gwcfgdir-XXXXXX", path[256], expected[512], err[512];

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/missing.json", dir);
    assert_int_equal(gw_config_load(cfg, path, err, sizeof err), GW_EIO);
    snprintf(expected, sizeof expected, "%s: cannot read: No such file or directory", path);
    assert_string_equal(err, expected);

    /* a folder opens but does not read */
    assert_int_equal(gw_config_load(cfg, dir, err, sizeof err), GW_EIO);
    snprintf(expected, sizeof expected, "%s: cannot read: Is a directory", dir);
    assert_string_equal(err, expected);
    assert_int_equal(rmdir(dir), 0);

    /* a relative name is reported as given */
    assert_int_equal(gw_config_load(cfg, "no-such-gateway-config.json", err, sizeof err), GW_EIO);
    assert_string_equal(err, "no-such-gateway-config.json: cannot read: No such file or directory");

    /* a tiny buffer is still NUL-terminated; NULL err is accepted */
    assert_int_equal(gw_config_load(cfg, "no-such-gateway-config.json", err, 5), GW_EIO);
    assert_string_equal(err, "no-s");
    assert_int_equal(gw_config_load(cfg, "no-such-gateway-config.json", NULL, 0), GW_EIO);
}

static void test_failed_load_leaves_config(void **state)
{
    gw_config *cfg = *state, *copy;
    char err[512];

    assert_int_equal(load_text(cfg, WITH(", \"workers\": 2"), err, sizeof err), 0);
    copy = malloc(sizeof *copy);
    assert_non_null(copy);
    memcpy(copy, cfg, sizeof *cfg);
    assert_int_equal(load_text(cfg, "{\"listen\": \"127.0.0.1:1\", " UP ", " RT
                                    ", \"workers\": 5, \"limits\": {\"max_headers\": 0}}",
                               err, sizeof err),
                     GW_EINVAL);
    assert_memory_equal(cfg, copy, sizeof *cfg);
    free(copy);
}

static void test_env_overrides(void **state)
{
    gw_config *cfg = *state;
    char err[512];

    assert_int_equal(setenv("GATEWAY_LISTEN", "127.0.0.2:18080", 1), 0);
    assert_int_equal(setenv("GATEWAY_ADMIN_LISTEN", "[::1]:19090", 1), 0);
    assert_int_equal(setenv("GATEWAY_ADMIN_TOKEN", "from-env", 1), 0);
    assert_int_equal(setenv("GATEWAY_PG", "host=/run/postgresql dbname=gateway", 1), 0);
    assert_int_equal(setenv("GATEWAY_REDIS", "cache.internal:6390", 1), 0);
    assert_int_equal(load_text(cfg, WITH(", \"admin\": {\"token\": \"from-file\"}, "
                                         "\"redis\": \"127.0.0.1:6379\""),
                               err, sizeof err),
                     0);
    assert_string_equal(cfg->listen, "127.0.0.2:18080");
    assert_ipv4(&cfg->listen_addr, cfg->listen_addrlen, "127.0.0.2", 18080);
    assert_string_equal(cfg->admin_listen, "[::1]:19090");
    assert_int_equal(cfg->admin_addr.ss_family, AF_INET6);
    assert_int_equal(port_of(&cfg->admin_addr), 19090);
    assert_string_equal(cfg->admin_token, "from-env");
    assert_int_equal(cfg->routes_source, GW_ROUTES_POSTGRES);
    assert_string_equal(cfg->pg_conninfo, "host=/run/postgresql dbname=gateway");
    assert_string_equal(cfg->redis, "cache.internal:6390");

    /* GATEWAY_PG supplies the conninfo a postgres config left out */
    clear_env();
    assert_int_equal(load_text(cfg, "{" LS ", " UP ", \"routes\": {\"source\": \"postgres\"}}", err,
                               sizeof err),
                     GW_EINVAL);
    assert_int_equal(setenv("GATEWAY_PG", "dbname=gw", 1), 0);
    assert_int_equal(load_text(cfg, "{" LS ", " UP ", \"routes\": {\"source\": \"postgres\"}}", err,
                               sizeof err),
                     0);
    assert_int_equal(cfg->routes_source, GW_ROUTES_POSTGRES);
    assert_string_equal(cfg->pg_conninfo, "dbname=gw");

    /* an empty variable counts as unset */
    clear_env();
    assert_int_equal(setenv("GATEWAY_LISTEN", "", 1), 0);
    assert_int_equal(setenv("GATEWAY_ADMIN_TOKEN", "", 1), 0);
    assert_int_equal(load_text(cfg, WITH(", \"admin\": {\"token\": \"t\"}"), err, sizeof err), 0);
    assert_string_equal(cfg->listen, "127.0.0.1:8080");
    assert_string_equal(cfg->admin_token, "t");
    assert_int_equal(cfg->routes_source, GW_ROUTES_FILE);
}

static void test_env_errors(void **state)
{
    gw_config *cfg = *state;

    assert_int_equal(setenv("GATEWAY_LISTEN", "not-an-address", 1), 0);
    expect_env_error(cfg, "{" MINCFG "}", "env GATEWAY_LISTEN: invalid address \"not-an-address\"");
    assert_int_equal(setenv("GATEWAY_LISTEN", "127.0.0.1:70000", 1), 0);
    expect_env_error(cfg, "{" MINCFG "}", "env GATEWAY_LISTEN: invalid port \"70000\"");
    clear_env();

    assert_int_equal(setenv("GATEWAY_ADMIN_LISTEN", "[::1]", 1), 0);
    expect_env_error(cfg, "{" MINCFG "}", "env GATEWAY_ADMIN_LISTEN: invalid address \"[::1]\"");
    clear_env();

    assert_int_equal(setenv("GATEWAY_ADMIN_TOKEN", "two words", 1), 0);
    expect_env_error(cfg, "{" MINCFG "}",
                     "env GATEWAY_ADMIN_TOKEN: must be visible ASCII without spaces");
    clear_env();

    assert_int_equal(setenv("GATEWAY_REDIS", "redis:0", 1), 0);
    expect_env_error(cfg, "{" MINCFG "}", WANT_REDIS_URL);
    clear_env();

    /* the environment is checked after the file: a file error wins */
    assert_int_equal(setenv("GATEWAY_LISTEN", "bad", 1), 0);
    expect_error(cfg, WITH(", \"colour\": 1"), GW_EINVAL, "colour: unknown key");
}

static void test_paths_resolved(void **state)
{
    gw_config *cfg = *state;
    char dir[] = "/tmp/gwcfgdir-XXXXXX", path[256], want[512], err[512];

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/gateway.json", dir);
    write_all(path, "{" LS ", " UP ", \"routes\": {\"source\": \"file\", \"file\": \"sub/r.json\"}, "
                    "\"log\": {\"access\": \"logs/access.log\"}}");
    assert_int_equal(gw_config_load(cfg, path, err, sizeof err), 0);
    snprintf(want, sizeof want, "%s/sub/r.json", dir);
    assert_string_equal(cfg->routes_file, want);
    snprintf(want, sizeof want, "%s/logs/access.log", dir);
    assert_string_equal(cfg->access_log, want);

    write_all(path, "{" LS ", " UP ", \"routes\": {\"source\": \"file\", \"file\": \"/abs/r.json\"}, "
                    "\"log\": {\"access\": \"stdout\"}}");
    assert_int_equal(gw_config_load(cfg, path, err, sizeof err), 0);
    assert_string_equal(cfg->routes_file, "/abs/r.json");
    assert_string_equal(cfg->access_log, "stdout");
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

static void test_parse_hostport(void **state)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;

    (void)state;
    assert_int_equal(gw_parse_hostport("1.2.3.4:80", &ss, &len), 0);
    assert_ipv4(&ss, len, "1.2.3.4", 80);
    assert_int_equal(gw_parse_hostport("[::1]:443", &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(len, sizeof(struct sockaddr_in6));
    assert_int_equal(port_of(&ss), 443);
    assert_int_equal(gw_parse_hostport("localhost:8080", &ss, &len), 0);
    assert_ipv4(&ss, len, "127.0.0.1", 8080);
    assert_int_equal(gw_parse_hostport("0.0.0.0:0", &ss, &len), 0);
    assert_ipv4(&ss, len, "0.0.0.0", 0);
    assert_int_equal(gw_parse_hostport("1.2.3.4:65535", &ss, &len), 0);

    assert_int_equal(gw_parse_hostport("1.2.3.4:65536", &ss, &len), GW_EINVAL);
    assert_int_equal(gw_parse_hostport("1.2.3.4:", &ss, &len), GW_EINVAL);
    assert_int_equal(gw_parse_hostport("1.2.3.4:-1", &ss, &len), GW_EINVAL);
    assert_int_equal(gw_parse_hostport("1.2.3.4: 80", &ss, &len), GW_EINVAL);
    assert_int_equal(gw_parse_hostport("1.2.3.4", &ss, &len), GW_EINVAL);
    assert_int_equal(gw_parse_hostport(":80", &ss, &len), GW_EINVAL);
    assert_int_equal(gw_parse_hostport("::1:80", &ss, &len), GW_EINVAL);
    assert_int_equal(gw_parse_hostport("[::1]", &ss, &len), GW_EINVAL);
    assert_int_equal(gw_parse_hostport("[1.2.3.4]:80", &ss, &len), GW_EINVAL);
    assert_int_equal(gw_parse_hostport("127.1:80", &ss, &len), GW_EINVAL);
    assert_int_equal(gw_parse_hostport("", &ss, &len), GW_EINVAL);
    assert_int_equal(gw_parse_hostport(NULL, &ss, &len), GW_EINVAL);
}

static void test_shipped_config(void **state)
{
    gw_config *cfg = *state;
    char err[512] = "";
    static const char *const names[] = { "legacy", "user-service", "order-service",
                                         "logistics-service" };
    int i;

    assert_int_equal(gw_config_load(cfg, "conf/gateway.json", err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_string_equal(cfg->listen, "127.0.0.1:8080");
    assert_string_equal(cfg->admin_listen, "127.0.0.1:9090");
    assert_string_equal(cfg->admin_token, "demo-token");
    assert_int_equal(cfg->workers, expected_workers());
    assert_int_equal(cfg->n_upstreams, 4);
    for (i = 0; i < 4; i++) {
        const gw_upstream_conf *up = gw_config_upstream(cfg, names[i], strlen(names[i]));
        assert_non_null(up);
        assert_ptr_equal(up, &cfg->upstreams[i]);
        assert_int_equal(up->n_endpoints, 1);
        assert_ipv4(&up->endpoints[0].addr, up->endpoints[0].addrlen, "127.0.0.1",
                    9101 + (unsigned)i);
    }
    assert_int_equal(cfg->routes_source, GW_ROUTES_FILE);
    assert_string_equal(cfg->routes_file, "conf/routes.json");
    assert_string_equal(cfg->access_log, "stderr");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_full_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_addresses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rate_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_structure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_io, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_load_leaves_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_overrides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paths_resolved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_hostport, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shipped_config, setup, teardown),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
