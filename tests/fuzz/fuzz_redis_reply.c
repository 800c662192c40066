/* fuzz_redis_reply.c — the Redis reply path of the user cache (composers/cache_redis.c):
 * hiredis's reply reader as the cache uses it (async context, shipped libuv adapter) and
 * what the cache does with a reply (cmp__on_ping, cmp__on_reply: the 8-byte stored-at
 * header, HIT/MISS/ERROR, timeouts, disconnects). A plain loopback listener plays Redis; per
 * input a fresh cmp_cache connects to it (reply handling is static in cache_redis.c, so it is
 * driven through the public cmp_cache_get).
 *
 * Input: byte 0 = which reply the bytes are (0: the answer to a GET, after a normal PING;
 * 1: the answer to the connection's PING, then a GET); the rest = what "Redis" sends, then
 * it closes the connection.
 *
 * Invariants: the get's callback comes exactly once, never from inside cmp_cache_get, within
 * a bound; a HIT's value is readable over its length; the cache closes with every handle
 * (the loop ends, nothing left). Also runs the bytes through a bare redisReader (the same
 * parser, without the connection) with a small and a large feed size. */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "composers/cache.h"
#include "tests/fuzz/fuzz_loop.h"

static struct {
    uv_loop_t loop;
    int lfd;
    char addr[64];
    int calls, in_get;
    cmp_cache_status st;
} G;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_redis_reply: %s\n", what);
    __builtin_trap();
}


static void turn(int fd, int wait_ms)
{
    fuzz_turn(&G.loop, fd, wait_ms);
}

static void on_get(cmp_cache_status st, const char *value, size_t len, uint64_t age, void *arg)
{
    (void)age, (void)arg;
    if (G.in_get)
        die("callback from inside cmp_cache_get");
    G.calls++;
    G.st = st;
    if (st == CMP_CACHE_HIT && len)
        (void)*(volatile const char *)(value + len - 1);
    if (st != CMP_CACHE_HIT && (value || len))
        die("a value without a hit");
}

/* Reads one RESP command from FD (its first line is enough to tell which). */
static int read_command(int fd, uint64_t end)
{
    char buf[512];
    size_t got = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + got, sizeof buf - got, 0);
        if (r > 0) {
            got += (size_t)r;
            /* "*N\r\n" then N bulk strings: count the CRLFs */
            int want = 1 + 2 * (buf[1] - '0'), n = 0;
            for (size_t i = 0; i + 1 < got; i++)
                n += buf[i] == '\r' && buf[i + 1] == '\n';
            if (got >= 2 && n >= want)
                return 0;
            if (got == sizeof buf)
                return -1;
        } else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            return -1;
        } else if (fuzz_now_ms() > end) {
            return -1;
        } else {
            turn(fd, 5);
        }
    }
}

static void send_all(int fd, const uint8_t *p, size_t n, uint64_t end)
{
    while (n > 0 && fuzz_now_ms() < end) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0)
            p += w, n -= (size_t)w;
        else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            turn(fd, 5);
        else
            return;
    }
}

/* hiredis allocates an array's element table when its length is read ("*888888881": 7 GB);
 * the cache refuses arrays over 1024 elements before that (cache_redis.c), and so does the
 * bare reader here, so that hiredis's own eager allocation is not reported as ours. */
static redisReplyObjectFunctions bare_fns, *default_fns;

static void *bare_array(const redisReadTask *t, int n)
{
    return n > 1024 ? NULL : default_fns->createArray(t, n);
}

static void bare_reader(const uint8_t *p, size_t n, size_t step)
{
    redisReader *r = redisReaderCreate();
    if (!r)
        abort();
    if (!default_fns) {
        default_fns = r->fn;
        bare_fns = *r->fn;
        bare_fns.createArray = bare_array;
    }
    r->fn = &bare_fns;
    for (size_t off = 0; off < n; off += step) {
        size_t k = n - off < step ? n - off : step;
        if (redisReaderFeed(r, (const char *)p + off, k) != REDIS_OK)
            break;
        void *reply;
        int rc;
        while ((rc = redisReaderGetReply(r, &reply)) == REDIS_OK && reply)
            freeReplyObject(reply);
        if (rc != REDIS_OK)
            break;
    }
    redisReaderFree(r);
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (uv_loop_init(&G.loop) != 0)
        abort();
    struct sockaddr_in a;
    G.lfd = fuzz_listen_loopback(&a);
    snprintf(G.addr, sizeof G.addr, "127.0.0.1:%d", ntohs(a.sin_port));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (G.lfd == 0)
        setup();
    if (size < 1)
        return 0;
    int on_ping = data[0] & 1;
    const uint8_t *payload = data + 1;
    size_t plen = size - 1;
    bare_reader(payload, plen, 3);
    bare_reader(payload, plen, 4096);

    cmp_cache_conf conf = { .redis = G.addr, .timeout_ms = 2000, .prefix = "gw:" };
    cmp_cache *c = cmp_cache_new(&G.loop, &conf);
    if (!c)
        abort();
    uint64_t started = fuzz_now_ms(), end = started + 3000;
    int fd;
    while ((fd = accept4(G.lfd, NULL, NULL, SOCK_NONBLOCK)) < 0) {
        if (fuzz_now_ms() > end)
            die("the cache did not connect");
        turn(G.lfd, 5);
    }
    if (read_command(fd, end) != 0)
        die("no PING");
    G.calls = 0;
    if (on_ping) {
        send_all(fd, payload, plen, end);
        for (int k = 0; k < 3; k++)
            turn(fd, 0);
        G.in_get = 1;
        cmp_cache_get(c, "k", on_get, NULL);
        G.in_get = 0;
        for (int k = 0; k < 3; k++)
            turn(fd, 0);
    } else {
        send_all(fd, (const uint8_t *)"+PONG\r\n", 7, end);
        cmp_cache_stats st;
        do {
            if (fuzz_now_ms() > started + CMP_CACHE_CONNECT_TIMEOUT_MS) {
                /* the cache gave up on its connection before we got to answer its PING:
                 * this process was starved (a loaded box), not a finding; skip the input */
                close(fd);
                cmp_cache_close(c);
                while (uv_loop_alive(&G.loop))
                    turn(G.lfd, 10);
                return 0;
            }
            turn(fd, 5);
            cmp_cache_stats_get(c, &st);
        } while (!st.connected);
        G.in_get = 1;
        cmp_cache_get(c, "k", on_get, NULL);
        G.in_get = 0;
        if (read_command(fd, end) != 0)
            die("no GET");
        send_all(fd, payload, plen, end);
        for (int k = 0; k < 3; k++)
            turn(fd, 0);
    }
    close(fd);
    end = fuzz_now_ms() + 3000;
    while (G.calls == 0) {
        if (fuzz_now_ms() > end)
            die("no callback 3 s after Redis closed");
        turn(G.lfd, 10);
    }
    if (G.calls != 1)
        die("more than one callback");
    cmp_cache_close(c);
    end = fuzz_now_ms() + 3000;
    while (uv_loop_alive(&G.loop)) {
        if (fuzz_now_ms() > end)
            die("the cache's handles did not close");
        turn(G.lfd, 10);
    }
    if (G.calls != 1)
        die("a callback after close");
    return 0;
}
