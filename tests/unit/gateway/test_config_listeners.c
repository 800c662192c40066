/* test_config_listeners.c — gateway.json "listen" / "listeners" with TLS settings: values,
 * defaults, paths resolved, GATEWAY_LISTEN, and every error with its exact text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/config.h"
#include "http/gw_errors.h"

#define UP "\"upstreams\": {\"legacy\": {\"endpoints\": [\"127.0.0.1:9101\"]}}"
#define RT "\"routes\": {\"source\": \"file\", \"file\": \"routes.json\"}"
#define CERT "{\"cert\": \"c.pem\", \"key\": \"c.key\"}"

static char *write_temp(const char *text)
{
    char tmpl[] = "/tmp/gwlst-XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return strdup(tmpl);
}

static int setup(void **state)
{
    unsetenv("GATEWAY_LISTEN");
    *state = calloc(1, sizeof(gw_config));
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    free(*state);
    unsetenv("GATEWAY_LISTEN");
    return 0;
}

static int load(gw_config *cfg, const char *text, char *err, size_t errlen, char **path_out)
{
    char *path = write_temp(text);
    int rc = gw_config_load(cfg, path, err, errlen);
    unlink(path);
    if (path_out)
        *path_out = path;
    else
        free(path);
    return rc;
}

static void expect_error(gw_config *cfg, const char *listeners, const char *want)
{
    char text[4096], err[1024], expected[1200];
    char *path;
    snprintf(text, sizeof text, "{%s, " UP ", " RT "}", listeners);
    int rc = load(cfg, text, err, sizeof err, &path);
    snprintf(expected, sizeof expected, "%s: %s", path, want);
    free(path);
    if (strcmp(err, expected) != 0)
        print_message("for: %s\n", listeners);
    assert_string_equal(err, expected);
    assert_int_equal(rc, GW_EINVAL);
}

static void test_listeners_values_and_defaults(void **state)
{
    gw_config *cfg = *state;
    char err[1024];
    char *path;
    int rc = load(cfg, "{\"listeners\": [{\"listen\": \"127.0.0.1:8080\"}, {\"listen\": "
                  "\"127.0.0.1:8443\", \"tls\": {\"certificates\": [" CERT ", {\"cert\": "
                  "\"/abs/r.pem\", \"key\": \"r.key\"}], \"ticket_key_file\": \"t.key\"}}, "
                  "{\"listen\": \"127.0.0.1:9443\", \"tls\": {\"certificates\": [" CERT "], "
                  "\"protocols\": [\"TLSv1.3\"], \"ciphers\": \"ECDHE+AESGCM\", \"ciphersuites\": "
                  "\"TLS_AES_128_GCM_SHA256\", \"alpn\": [\"http/1.1\"], \"handshake_timeout_ms\": "
                  "500, \"ticket_rotate_s\": 600, \"session_cache\": 0}}], " UP ", " RT "}",
                  err, sizeof err, &path);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg->n_listeners, 3);
    assert_int_equal(cfg->listeners[0].tls, 0);
    assert_string_equal(cfg->listen, "127.0.0.1:8080"); /* the cleartext one */
    const gw_tls_conf *t = &cfg->listeners[1].tls_conf;
    assert_int_equal(cfg->listeners[1].tls, 1);
    assert_int_equal(t->n_certs, 2);
    char want[1100];
    const char *slash = strrchr(path, '/');
    snprintf(want, sizeof want, "%.*sc.pem", (int)(slash - path + 1), path);
    assert_string_equal(t->certs[0].cert, want); /* relative to the config file */
    assert_string_equal(t->certs[1].cert, "/abs/r.pem");
    assert_int_equal(t->protocols, GW_TLS_V12 | GW_TLS_V13);
    assert_int_equal(t->alpn_len, 9);
    assert_memory_equal(t->alpn, "\x08http/1.1", 9);
    assert_int_equal(t->handshake_timeout_ms, 10000);
    assert_int_equal(t->ticket_rotate_s, 3600);
    assert_int_equal(t->session_cache_size, 20480);
    assert_non_null(strstr(t->ticket_key_file, "/t.key"));
    t = &cfg->listeners[2].tls_conf;
    assert_int_equal(t->protocols, GW_TLS_V13);
    assert_string_equal(t->ciphers, "ECDHE+AESGCM");
    assert_string_equal(t->ciphersuites, "TLS_AES_128_GCM_SHA256");
    assert_int_equal(t->handshake_timeout_ms, 500);
    assert_int_equal(t->ticket_rotate_s, 600);
    assert_int_equal(t->session_cache_size, 0);
    assert_string_equal(t->ticket_key_file, "");
    free(path);
}

static void test_single_listen_still_works(void **state)
{
    gw_config *cfg = *state;
    char err[1024];
    assert_int_equal(load(cfg, "{\"listen\": \"127.0.0.1:8081\", " UP ", " RT "}", err, sizeof err, NULL), 0);
    assert_int_equal(cfg->n_listeners, 1);
    assert_int_equal(cfg->listeners[0].tls, 0);
    assert_string_equal(cfg->listen, "127.0.0.1:8081");
}

static void test_gateway_listen_env(void **state)
{
    gw_config *cfg = *state;
    char err[1024];
    setenv("GATEWAY_LISTEN", "127.0.0.1:7070", 1);
    /* replaces the cleartext listener, whatever its place */
    assert_int_equal(load(cfg, "{\"listeners\": [{\"listen\": \"127.0.0.1:8443\", \"tls\": "
                          "{\"certificates\": [" CERT "]}}, {\"listen\": \"127.0.0.1:8080\"}], "
                          UP ", " RT "}", err, sizeof err, NULL), 0);
    assert_int_equal(cfg->n_listeners, 2);
    assert_string_equal(cfg->listeners[1].listen, "127.0.0.1:7070");
    assert_string_equal(cfg->listeners[0].listen, "127.0.0.1:8443");
    assert_string_equal(cfg->listen, "127.0.0.1:7070");
    /* adds one when there is only TLS */
    assert_int_equal(load(cfg, "{\"listeners\": [{\"listen\": \"127.0.0.1:8443\", \"tls\": "
                          "{\"certificates\": [" CERT "]}}], " UP ", " RT "}", err, sizeof err, NULL), 0);
    assert_int_equal(cfg->n_listeners, 2);
    assert_int_equal(cfg->listeners[1].tls, 0);
    assert_string_equal(cfg->listeners[1].listen, "127.0.0.1:7070");
}

static void test_listener_errors(void **state)
{
    gw_config *cfg = *state;
    expect_error(cfg, "\"listen\": \"127.0.0.1:1\", \"listeners\": []",
                 "listeners: use either \"listen\" or \"listeners\", not both (put the cleartext "
                 "listener into listeners)");
    expect_error(cfg, "\"listeners\": []", "listeners: must be a non-empty array of {\"listen\", \"tls\"}");
    expect_error(cfg, "\"listeners\": {}", "listeners: must be a non-empty array of {\"listen\", \"tls\"}");
    expect_error(cfg, "\"listeners\": [1]",
                 "listeners[0]: must be an object {\"listen\": \"host:port\", \"tls\": {...}}");
    expect_error(cfg, "\"listeners\": [{}]", "listeners[0].listen: required");
    expect_error(cfg, "\"listeners\": [{\"listen\": 1}]", "listeners[0].listen: must be a \"host:port\" string");
    expect_error(cfg, "\"listeners\": [{\"listen\": \"127.0.0.1:1\", \"x\": 1}]", "listeners[0].x: unknown key");
    expect_error(cfg, "\"listeners\": [{\"listen\": \"127.0.0.1:1\"}, {\"listen\": \"127.0.0.1:1\"}]",
                 "listeners[1].listen: same address as listeners[0] (127.0.0.1:1)");
    expect_error(cfg, "\"listeners\": [{\"listen\": \"127.0.0.1:9090\"}]",
                 "admin.listen: same address as listen (127.0.0.1:9090)");
    expect_error(cfg, "\"listeners\": [{\"listen\": \"127.0.0.1:1\", \"tls\": 1}]",
                 "listeners[0].tls: must be an object");
    expect_error(cfg, "\"listeners\": [{\"listen\": \"127.0.0.1:1\", \"tls\": {}}]",
                 "listeners[0].tls.certificates: required");
    expect_error(cfg, "\"listeners\": [{\"listen\": \"127.0.0.1:1\", \"tls\": {\"certificates\": [{\"cert\": \"a\"}]}}]",
                 "listeners[0].tls.certificates[0].key: required");
    expect_error(cfg, "\"listeners\": [{\"listen\": \"127.0.0.1:1\", \"tls\": {\"certificates\": [{\"cert\": \"\", \"key\": \"k\"}]}}]",
                 "listeners[0].tls.certificates[0].cert: must not be empty");
    expect_error(cfg, "\"listeners\": [{\"listen\": \"127.0.0.1:1\", \"tls\": {\"certificates\": [" CERT "], \"protocols\": []}}]",
                 "listeners[0].tls.protocols: must be a non-empty array of \"TLSv1.2\", \"TLSv1.3\"");
    expect_error(cfg, "\"listeners\": [{\"listen\": \"127.0.0.1:1\", \"tls\": {\"certificates\": [" CERT "], \"protocols\": [\"TLSv1\"]}}]",
                 "listeners[0].tls.protocols[0]: \"TLSv1\" is not supported (only TLSv1.2 and TLSv1.3)");
    expect_error(cfg, "\"listeners\": [{\"listen\": \"127.0.0.1:1\", \"tls\": {\"certificates\": [" CERT "], \"protocols\": [\"tls13\"]}}]",
                 "listeners[0].tls.protocols[0]: must be \"TLSv1.2\" or \"TLSv1.3\"");
    expect_error(cfg, "\"listeners\": [{\"listen\": \"127.0.0.1:1\", \"tls\": {\"certificates\": [" CERT "], \"alpn\": [\"h2\", \"spdy/3\"]}}]",
                 "listeners[0].tls.alpn[1]: unsupported protocol \"spdy/3\" (supported: \"h2\", \"http/1.1\")");
    expect_error(cfg, "\"listeners\": [{\"listen\": \"127.0.0.1:1\", \"tls\": {\"certificates\": [" CERT "], \"handshake_timeout_ms\": 0}}]",
                 "listeners[0].tls.handshake_timeout_ms: must be an integer from 1 to 3600000");
    expect_error(cfg, "\"listeners\": [{\"listen\": \"127.0.0.1:1\", \"tls\": {\"certificates\": [" CERT "], \"ticket_rotate_s\": 5}}]",
                 "listeners[0].tls.ticket_rotate_s: must be an integer from 60 to 86400");
}

/* HTTP/2: ALPN "h2" on TLS listeners, "h2c" on cleartext ones, the "http2" limits. */
static void test_http2_config(void **state)
{
    gw_config *cfg = *state;
    char err[1024];
    int rc = load(cfg, "{\"listeners\": [{\"listen\": \"127.0.0.1:8080\", \"h2c\": true}, "
                  "{\"listen\": \"127.0.0.1:8081\"}, {\"listen\": \"127.0.0.1:8443\", \"tls\": "
                  "{\"certificates\": [" CERT "], \"alpn\": [\"h2\", \"http/1.1\"]}}], "
                  "\"http2\": {\"max_concurrent_streams\": 64, \"reset_rate\": 5}, " UP ", " RT "}",
                  err, sizeof err, NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg->listeners[0].h2c, 1);
    assert_int_equal(cfg->listeners[1].h2c, 0);
    assert_int_equal(cfg->listeners[2].tls_conf.alpn_len, 12);
    assert_memory_equal(cfg->listeners[2].tls_conf.alpn, "\x02h2\x08http/1.1", 12);
    assert_int_equal(cfg->http2.max_concurrent_streams, 64);
    assert_int_equal(cfg->http2.reset_rate, 5);
    assert_int_equal(cfg->http2.reset_burst, 1000); /* defaults for the rest */
    assert_int_equal(cfg->http2.stream_window_bytes, 65535);
    assert_int_equal(cfg->http2.connection_window_bytes, 1048576);
    expect_error(cfg, "\"listeners\": [{\"listen\": \"127.0.0.1:1\", \"h2c\": 1}]",
                 "listeners[0].h2c: must be true or false");
    expect_error(cfg, "\"listeners\": [{\"listen\": \"127.0.0.1:1\", \"h2c\": true, \"tls\": {\"certificates\": [" CERT "]}}]",
                 "listeners[0].h2c: only for cleartext listeners (TLS ones offer HTTP/2 with \"alpn\": [\"h2\", \"http/1.1\"])");
    expect_error(cfg, "\"listen\": \"127.0.0.1:1\", \"http2\": {\"max_concurrent_streams\": 0}",
                 "http2.max_concurrent_streams: must be an integer from 1 to 10000");
    expect_error(cfg, "\"listen\": \"127.0.0.1:1\", \"http2\": {\"window\": 1}",
                 "http2.window: unknown key");
}

static void test_upstream_tls(void **state)
{
    gw_config *cfg = *state;
    char err[1024];
    assert_int_equal(load(cfg, "{\"listen\": \"127.0.0.1:8080\", \"upstreams\": {\"a\": {\"endpoints\": "
                          "[\"127.0.0.1:1\"], \"tls\": true}, \"b\": {\"endpoints\": [\"127.0.0.1:2\"], "
                          "\"tls\": {\"server_name\": \"b.internal\", \"verify\": false}}, \"c\": "
                          "{\"endpoints\": [\"127.0.0.1:3\"]}}, " RT "}", err, sizeof err, NULL), 0);
    assert_int_equal(cfg->upstreams[0].tls, 1);
    assert_int_equal(cfg->upstreams[0].tls_verify, 1);
    assert_string_equal(cfg->upstreams[0].tls_ca_file, "");
    assert_int_equal(cfg->upstreams[1].tls, 1);
    assert_int_equal(cfg->upstreams[1].tls_verify, 0);
    assert_string_equal(cfg->upstreams[1].tls_server_name, "b.internal");
    assert_int_equal(cfg->upstreams[2].tls, 0);
    char text[1024], expected[1200];
    static const struct { const char *tls, *want; } cases[] = {
        { "1", "upstreams.a.tls: must be true, false or {\"ca_file\", \"server_name\", \"verify\"}" },
        { "{\"verify\": 1}", "upstreams.a.tls.verify: must be true or false" },
        { "{\"sni\": \"x\"}", "upstreams.a.tls.sni: unknown key" },
        { "{\"ca_file\": \"/nonexistent/ca.pem\"}", "upstreams.a.tls.ca_file: cannot read /nonexistent/ca.pem" },
        { "{\"ca_file\": \"/dev/null\"}",
          "upstreams.a.tls.ca_file: /dev/null: no CA certificate could be loaded (want PEM)" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(text, sizeof text, "{\"listen\": \"127.0.0.1:8080\", \"upstreams\": {\"a\": "
                 "{\"endpoints\": [\"127.0.0.1:1\"], \"tls\": %s}}, " RT "}", cases[i].tls);
        char *path;
        assert_int_equal(load(cfg, text, err, sizeof err, &path), GW_EINVAL);
        snprintf(expected, sizeof expected, "%s: %s", path, cases[i].want);
        free(path);
        assert_string_equal(err, expected);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_listeners_values_and_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_single_listen_still_works, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gateway_listen_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listener_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_tls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http2_config, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
