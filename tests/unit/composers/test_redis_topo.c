/* test_redis_topo.c — composers/redis_topo: key slots (CRC16, hash tags) against the slots
 * redis-server 7's CLUSTER KEYSLOT gives for the same keys, MOVED/ASK errors, CLUSTER SLOTS,
 * SENTINEL get-master-addr-by-name and ROLE replies (built by hiredis's own reader from RESP
 * text), and the address syntax. Pure: no server, no loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include <hiredis/hiredis.h>

#include "composers/redis_topo.h"

static redisReply *parse(const char *resp)
{
    redisReader *r = redisReaderCreate();
    void *reply = NULL;
    assert_non_null(r);
    assert_int_equal(redisReaderFeed(r, resp, strlen(resp)), REDIS_OK);
    assert_int_equal(redisReaderGetReply(r, &reply), REDIS_OK);
    assert_non_null(reply);
    redisReaderFree(r);
    return reply;
}

static uint16_t slot(const char *k)
{
    return cmp_redis_key_slot(k, strlen(k));
}

static void test_crc16_and_slots(void **state)
{
    (void)state;
    assert_int_equal(cmp_redis_crc16("123456789", 9), 0x31c3); /* CRC16/XMODEM check value */
    assert_int_equal(cmp_redis_crc16("", 0), 0);
    /* CLUSTER KEYSLOT on redis-server 7.0.15 */
    assert_int_equal(slot("foo"), 12182);
    assert_int_equal(slot("bar"), 5061);
    assert_int_equal(slot("123456789"), 12739);
    assert_int_equal(slot(""), 0);
    assert_int_equal(slot("gw:rl:limited:route:"), 714);
    assert_int_equal(slot("gw:rl:instances"), 5558);
    /* hash tags: the first {...} that is not empty */
    assert_int_equal(slot("{user1000}.following"), 3443);
    assert_int_equal(slot("{user1000}.followers"), 3443);
    assert_int_equal(slot("foo{bar}{zap}"), 5061);  /* = slot("bar") */
    assert_int_equal(slot("foo{}{bar}"), 8363);     /* "{}": no tag, the whole key */
    assert_int_equal(slot("foo{{bar}}zap"), 4015);  /* the tag is "{bar" */
    assert_int_equal(slot("{bar"), cmp_redis_crc16("{bar", 4) & 16383); /* unclosed: no tag */
}

static void test_redirects(void **state)
{
    char host[64];
    uint16_t s = 0;
    int port = 0;
    (void)state;
#define RD(txt) cmp_redis_parse_redirect(txt, strlen(txt), &s, host, sizeof host, &port)
    assert_int_equal(RD("MOVED 3999 127.0.0.1:6381"), CMP_REDIS_MOVED);
    assert_int_equal(s, 3999);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6381);
    assert_int_equal(RD("ASK 16383 [::1]:7002"), CMP_REDIS_ASK);
    assert_int_equal(s, 16383);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 7002);
    /* Redis names an IPv6 node without brackets: the port is after the last ':' */
    assert_int_equal(RD("MOVED 3999 ::1:7000"), CMP_REDIS_MOVED);
    assert_int_equal(s, 3999);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 7000);
    assert_int_equal(RD("ASK 5 fe80::1:2:7001"), CMP_REDIS_ASK);
    assert_string_equal(host, "fe80::1:2");
    assert_int_equal(port, 7001);
    assert_int_equal(RD("MOVED 0 redis-2.internal:7000"), CMP_REDIS_MOVED);
    assert_string_equal(host, "redis-2.internal");
    assert_int_equal(RD("MOVED 12 :7005"), CMP_REDIS_MOVED); /* no host: the node asked */
    assert_string_equal(host, "");
    assert_int_equal(port, 7005);
    /* other errors are not redirections */
    assert_int_equal(RD("ERR unknown command"), CMP_REDIS_NOT_REDIRECT);
    assert_int_equal(RD("CLUSTERDOWN The cluster is down"), CMP_REDIS_NOT_REDIRECT);
    assert_int_equal(RD("MOVEDX 1 a:1"), CMP_REDIS_NOT_REDIRECT);
    /* malformed ones are refused */
    assert_int_equal(RD("MOVED 16384 127.0.0.1:7000"), -1);
    assert_int_equal(RD("MOVED x 127.0.0.1:7000"), -1);
    assert_int_equal(RD("MOVED 1 127.0.0.1"), -1);
    assert_int_equal(RD("MOVED 1 127.0.0.1:0"), -1);
    assert_int_equal(RD("MOVED 1 127.0.0.1:70000"), -1);
    assert_int_equal(RD("MOVED 1"), -1);
    assert_int_equal(RD("ASK 1 :"), -1);
    assert_int_equal(RD("MOVED 1 ::1:"), -1);
    assert_int_equal(RD("MOVED 1 [::1:7000"), -1);
#undef RD
}

static void test_cluster_slots(void **state)
{
    cmp_redis_range r[4];
    (void)state;
    /* redis 7: [start, end, [ip, port, id, {hostname}], replica...] */
    redisReply *rep = parse(
        "*3\r\n"
        "*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n*0\r\n"
        "*3\r\n$9\r\n127.0.0.1\r\n:7003\r\n$3\r\nid2\r\n"
        "*3\r\n:5461\r\n:10922\r\n*2\r\n$0\r\n\r\n:7001\r\n"
        "*3\r\n:10923\r\n:16383\r\n*3\r\n$3\r\n::1\r\n:7002\r\n$1\r\nx\r\n");
    assert_int_equal(cmp_redis_parse_slots(rep, "10.0.0.9", r, 4), 3);
    assert_int_equal(r[0].start, 0);
    assert_int_equal(r[0].end, 5460);
    assert_string_equal(r[0].host, "127.0.0.1");
    assert_int_equal(r[0].port, 7000);
    assert_string_equal(r[1].host, "10.0.0.9"); /* empty: the node that answered */
    assert_int_equal(r[1].port, 7001);
    assert_string_equal(r[2].host, "::1");
    assert_int_equal(r[2].end, 16383);
    assert_int_equal(cmp_redis_parse_slots(rep, "h", r, 2), -1); /* more ranges than room */
    freeReplyObject(rep);

    static const char *const bad[] = {
        "$2\r\nno\r\n",                                             /* not an array */
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\na\r\n:1\r\n",     /* slot out of range */
        "*1\r\n*3\r\n:9\r\n:8\r\n*2\r\n$1\r\na\r\n:1\r\n",         /* start > end */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\na\r\n:0\r\n",         /* port 0 */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\na\r\n$4\r\n7000\r\n", /* port as a string */
        "*1\r\n*2\r\n:0\r\n:1\r\n",                                 /* no master */
        "*1\r\n$1\r\nx\r\n",                                        /* a range not an array */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rep = parse(bad[i]);
        assert_int_equal(cmp_redis_parse_slots(rep, "h", r, 4), -1);
        freeReplyObject(rep);
    }
    rep = parse("*0\r\n"); /* a cluster with no slots assigned yet */
    assert_int_equal(cmp_redis_parse_slots(rep, "h", r, 4), 0);
    freeReplyObject(rep);
}

static void test_sentinel_and_role(void **state)
{
    char host[64];
    int port = 0;
    (void)state;
    redisReply *rep = parse("*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n");
    assert_int_equal(cmp_redis_parse_master_addr(rep, host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6380);
    freeReplyObject(rep);
    rep = parse("*-1\r\n"); /* the name is not monitored */
    assert_int_equal(cmp_redis_parse_master_addr(rep, host, sizeof host, &port), 1);
    freeReplyObject(rep);
    static const char *const bad[] = { "*1\r\n$1\r\na\r\n", "*2\r\n$1\r\na\r\n$1\r\nx\r\n",
                                       "*2\r\n$1\r\na\r\n$5\r\n99999\r\n",
                                       "*2\r\n$0\r\n\r\n$2\r\n10\r\n", "+OK\r\n" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rep = parse(bad[i]);
        assert_int_equal(cmp_redis_parse_master_addr(rep, host, sizeof host, &port), -1);
        freeReplyObject(rep);
    }
    rep = parse("*3\r\n$6\r\nmaster\r\n:3129\r\n*0\r\n");
    assert_int_equal(cmp_redis_parse_role(rep), 1);
    freeReplyObject(rep);
    rep = parse("*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6380\r\n$9\r\nconnected\r\n:3167\r\n");
    assert_int_equal(cmp_redis_parse_role(rep), 0);
    freeReplyObject(rep);
    rep = parse(":1\r\n");
    assert_int_equal(cmp_redis_parse_role(rep), -1);
    freeReplyObject(rep);
}

static void test_addresses(void **state)
{
    char host[16];
    int port = 0;
    (void)state;
#define PA(txt) cmp_redis_parse_addr(txt, strlen(txt), host, sizeof host, &port)
    assert_int_equal(PA("127.0.0.1:6379"), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6379);
    assert_int_equal(PA("[::1]:7000"), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(PA("redis:1"), 0);
    assert_int_equal(PA("::1:7000"), -1);       /* IPv6 needs brackets */
    assert_int_equal(PA("redis"), -1);
    assert_int_equal(PA(":6379"), -1);
    assert_int_equal(PA("redis:"), -1);
    assert_int_equal(PA("redis:65536"), -1);
    assert_int_equal(PA("redis:12a"), -1);
    assert_int_equal(PA("[::1]7000"), -1);
    assert_int_equal(PA("a-very-long-host-name:1"), -1); /* longer than the buffer */
#undef PA
}

/* A server's error text with the password in it: masked before it is cut to fit, so not
 * even a prefix of it reaches a log line (it was cut first, then masked: a password near the
 * end of a long text left its start in the log). */
static void test_masked(void **state)
{
    const char *pw = "S3cretPassw0rd";
    char text[400], out[200];
    size_t n;
    (void)state;
    memset(text, 'x', 180);
    memcpy(text + 180, pw, strlen(pw));
    n = 180 + strlen(pw);
    cmp_redis_masked(text, n, pw, out, 194); /* the cut falls inside the password */
    assert_int_equal(strlen(out), 193);
    assert_null(strstr(out, "S3cret"));
    assert_null(strstr(out, "S3"));
    assert_int_equal(out[192], '*');
    cmp_redis_masked(text, n, pw, out, sizeof out);
    assert_null(strstr(out, "S3"));
    assert_int_equal(strspn(out + 180, "*"), strlen(pw));
    /* the text itself ends inside the password (a server that cut it) */
    cmp_redis_masked("ERR no S3cretPa", 15, pw, out, sizeof out);
    assert_string_equal(out, "ERR no ********");
    /* twice, and control bytes */
    cmp_redis_masked("a S3cretPassw0rd\r\nb S3cretPassw0rd.", 35, pw, out, sizeof out);
    assert_string_equal(out, "a **************??b **************.");
    /* no password: the text as is; a tiny buffer */
    assert_int_equal(cmp_redis_masked("WRONGPASS", 9, "", out, sizeof out), 9);
    assert_string_equal(out, "WRONGPASS");
    assert_int_equal(cmp_redis_masked("WRONGPASS", 9, NULL, out, 4), 3);
    assert_string_equal(out, "WRO");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16_and_slots),
        cmocka_unit_test(test_redirects),
        cmocka_unit_test(test_cluster_slots),
        cmocka_unit_test(test_sentinel_and_role),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_masked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
