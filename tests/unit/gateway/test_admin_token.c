/* test_admin_token.c — gateway/admin: the token compare (gw_admin_token_equal) and the
 * minimum token length off loopback (gw_admin_check_tokens). The compare's time cannot be
 * asserted without timing luck; what it must accept and refuse can. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "gateway/admin.h"

static int eq(const char *tok, const char *given, size_t n)
{
    char buf[GW_ADMIN_TOKEN_BYTES];
    memset(buf, 'G', sizeof buf); /* bytes after the NUL are not the token's */
    memcpy(buf, tok, strlen(tok) + 1);
    return gw_admin_token_equal(buf, given, n);
}

static void test_equal(void **state)
{
    (void)state;
    assert_true(eq("demo-token", "demo-token", 10));
    assert_false(eq("demo-token", "demo-toke", 9));      /* a prefix */
    assert_false(eq("demo-token", "demo-tokenG", 11));   /* the padding is not the token */
    assert_false(eq("demo-token", "demo-token\0", 11));  /* a NUL after it */
    assert_false(eq("demo-token", "demo-tokeN", 10));
    assert_false(eq("demo-token", "", 0));
    assert_false(eq("", "", 0));                         /* empty: the API is off */
    assert_false(eq("", "x", 1));
    char big[400];
    memset(big, 'a', sizeof big);
    char tok[GW_ADMIN_TOKEN_BYTES];
    memset(tok, 'a', sizeof tok - 1);
    tok[sizeof tok - 1] = '\0';                          /* the longest token: 255 bytes */
    assert_true(gw_admin_token_equal(tok, big, 255));
    assert_false(gw_admin_token_equal(tok, big, 256));
    assert_false(gw_admin_token_equal(tok, big, sizeof big));
    assert_false(gw_admin_token_equal(tok, big, 254));
}

static void set_admin(gw_config *c, const char *ip, int family)
{
    memset(&c->admin_addr, 0, sizeof c->admin_addr);
    snprintf(c->admin_listen, sizeof c->admin_listen, "%s:9090", ip);
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&c->admin_addr;
        in->sin_family = AF_INET;
        inet_pton(AF_INET, ip, &in->sin_addr);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&c->admin_addr;
        in6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, ip, &in6->sin6_addr);
    }
}

static gw_config cfg;

static void test_min_length(void **state)
{
    (void)state;
    char err[1200];
    memset(&cfg, 0, sizeof cfg);
    strcpy(cfg.path, "gw.json");
    strcpy(cfg.admin_token, "demo-token");
    set_admin(&cfg, "127.0.0.1", AF_INET);
    assert_true(gw_admin_on_loopback(&cfg));
    assert_int_equal(gw_admin_check_tokens(&cfg, 0, err, sizeof err), 0);
    set_admin(&cfg, "127.3.4.5", AF_INET);
    assert_int_equal(gw_admin_check_tokens(&cfg, 0, err, sizeof err), 0);
    set_admin(&cfg, "::1", AF_INET6);
    assert_true(gw_admin_on_loopback(&cfg));
    set_admin(&cfg, "::ffff:127.0.0.1", AF_INET6);
    assert_true(gw_admin_on_loopback(&cfg));

    set_admin(&cfg, "0.0.0.0", AF_INET);
    assert_false(gw_admin_on_loopback(&cfg));
    assert_int_equal(gw_admin_check_tokens(&cfg, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "gw.json: admin.token: 10 bytes, shorter than 16"));
    assert_int_equal(gw_admin_check_tokens(&cfg, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "env GATEWAY_ADMIN_TOKEN: "));
    set_admin(&cfg, "::", AF_INET6);
    assert_int_equal(gw_admin_check_tokens(&cfg, 0, err, sizeof err), -1);

    strcpy(cfg.admin_token, "0123456789abcdef"); /* 16: enough */
    assert_int_equal(gw_admin_check_tokens(&cfg, 0, err, sizeof err), 0);
    cfg.admin_token[0] = '\0';                   /* off: nothing to guess */
    assert_int_equal(gw_admin_check_tokens(&cfg, 0, err, sizeof err), 0);
    cfg.n_admin_tokens = 1;
    strcpy(cfg.admin_tokens[0].name, "ci");
    strcpy(cfg.admin_tokens[0].token, "0123456789abcde");
    assert_int_equal(gw_admin_check_tokens(&cfg, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "gw.json: admin.tokens.ci: 15 bytes"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal),
        cmocka_unit_test(test_min_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
