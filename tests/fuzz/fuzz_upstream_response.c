/* fuzz_upstream_response.c — the upstream response parser (http/upstream_conn.c, through
 * the one-shot helper http/oneshot.h that shadow copies and internal fetches use): a plain
 * loopback listener plays the upstream; per input a one-shot GET (or HEAD) is started on the
 * loop, the listener accepts it, reads the request head, answers with the input's bytes (in
 * up to four pieces, the loop turning between them), then closes.
 *
 * Input: byte 0 = flags (bits 0-1: number of extra split points; bit 2: the request is a
 * HEAD; bit 3: a 16-byte body cap instead of 64 KiB), one byte per split point, the answer.
 *
 * Invariants: the callback comes exactly once, never from inside gw_oneshot_start, within a
 * bound after the upstream closed; an answer has a status in 100..999, a body within the cap
 * (too_big: no body), none at all for a HEAD; the endpoint's background connection count
 * goes back to 0 and nothing stays pooled (pool_max_idle 0). */
#include <errno.h>
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

#include "http/gw_errors.h"
#include "http/oneshot.h"
#include "tests/fuzz/fuzz_loop.h"

static struct {
    uv_loop_t loop;
    int lfd;
    gw_upstream_conf conf;
    gw_upstream up;
    gw_oneshot_set set;
    int calls, in_start;
    gw_oneshot_result r;
    size_t body_max;
    int is_head;
} G;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_upstream_response: %s\n", what);
    __builtin_trap();
}


static void turn(int fd, int wait_ms)
{
    fuzz_turn(&G.loop, fd, wait_ms);
}

static void on_result(gw_oneshot *o, const gw_oneshot_result *r, void *arg)
{
    (void)o, (void)arg;
    if (G.in_start)
        die("callback from inside gw_oneshot_start");
    G.calls++;
    G.r = *r;
    if (r->err == 0) {
        if (r->status < 100 || r->status > 999)
            die("status out of range");
        if (r->too_big && r->body)
            die("too_big with a body");
        if (r->len > G.body_max)
            die("body over the cap");
        if (G.is_head && r->len)
            die("a body for a HEAD");
        if (r->len && !r->body)
            die("a length without a body");
        if (r->len) /* readable whole */
            (void)*(volatile const char *)(r->body + r->len - 1);
    }
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (uv_loop_init(&G.loop) != 0)
        abort();
    struct sockaddr_in a;
    G.lfd = fuzz_listen_loopback(&a);
    memcpy(&G.conf.endpoints[0].addr, &a, sizeof a);
    G.conf.endpoints[0].addrlen = sizeof a;
    snprintf(G.conf.name, sizeof G.conf.name, "fuzz");
    G.conf.n_endpoints = 1;
    G.conf.connect_timeout_ms = 1000;
    G.conf.response_timeout_ms = 3000;
    G.conf.read_timeout_ms = 3000;
    G.conf.pool_max_idle = 0; /* every connection closes: runs stay independent */
    G.conf.pool_idle_timeout_ms = 1000;
    G.conf.down_ms = 1;
    gw_upstream_init(&G.up, &G.loop, &G.conf);
    gw_oneshot_set_init(&G.set, &G.loop, 8, 8);
    G.up.oneshots = &G.set;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (G.lfd == 0)
        setup();
    if (size < 1)
        return 0;
    int nsplit = data[0] & 3;
    if (size < 1 + (size_t)nsplit)
        return 0;
    G.is_head = (data[0] >> 2) & 1;
    G.body_max = (data[0] & 8) ? 16 : 65536;
    const uint8_t *payload = data + 1 + nsplit;
    size_t plen = size - 1 - (size_t)nsplit;
    size_t cuts[5] = { 0 };
    int nc = 1;
    for (int i = 0; i < nsplit; i++) {
        size_t at = plen * data[1 + i] / 256;
        if (at > cuts[nc - 1])
            cuts[nc++] = at;
    }
    cuts[nc] = plen;

    static const char get[] = "GET /x HTTP/1.1\r\nHost: up\r\n\r\n";
    static const char head[] = "HEAD /x HTTP/1.1\r\nHost: up\r\n\r\n";
    const char *req = G.is_head ? head : get;
    G.calls = 0;
    G.up.endpoints[0].down_until_ms = 0;
    gw_oneshot *o;
    int skip = 0;
    uint64_t started = fuzz_now_ms();
    G.in_start = 1;
    int rc = gw_oneshot_start(&G.set, &G.up.endpoints[0], GW_ONESHOT_BACKGROUND, req, strlen(req),
                              G.is_head, G.body_max, 5000, on_result, NULL, &o, &skip);
    G.in_start = 0;
    if (rc != 0)
        die("gw_oneshot_start refused");

    /* the upstream: accept, read the head */
    int fd = -1;
    uint64_t end = fuzz_now_ms() + 3000;
    while ((fd = accept4(G.lfd, NULL, NULL, SOCK_NONBLOCK)) < 0) {
        if (fuzz_now_ms() > end)
            die("no connection to the upstream");
        turn(G.lfd, 5);
    }
    char buf[1024];
    size_t got = 0;
    int starved = 0;
    while (!memmem(buf, got, "\r\n\r\n", 4)) {
        ssize_t r = recv(fd, buf + got, sizeof buf - got, 0);
        if (r > 0)
            got += (size_t)r;
        else if ((r == 0 || errno == ECONNRESET) &&
                 fuzz_now_ms() - started > G.conf.connect_timeout_ms) {
            /* this process starved past the connect timeout (a loaded box): the exchange
             * rightly gave up; only its callback is checked below */
            starved = 1;
            break;
        } else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) || got == sizeof buf)
            die("the request head did not arrive");
        else if (fuzz_now_ms() > end)
            die("the request head did not arrive in time");
        else
            turn(fd, 5);
    }
    for (int i = 0; i < nc && G.calls == 0 && !starved; i++) {
        const uint8_t *p = payload + cuts[i];
        size_t n = cuts[i + 1] - cuts[i];
        while (n > 0) {
            ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
            if (w > 0) {
                p += w, n -= (size_t)w;
            } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                if (fuzz_now_ms() > end)
                    die("the upstream connection stopped reading");
                turn(fd, 5);
            } else {
                break; /* the client side closed */
            }
        }
        for (int k = 0; k < 3; k++)
            turn(fd, 0);
    }
    close(fd);
    end = fuzz_now_ms() + 3000;
    while (G.calls == 0) {
        if (fuzz_now_ms() > end)
            die("no callback 3 s after the upstream closed");
        turn(G.lfd, 10);
    }
    for (int k = 0; k < 3; k++)
        turn(G.lfd, 0);
    if (G.calls != 1)
        die("more than one callback");
    if (G.up.endpoints[0].n_background != 0 || G.up.endpoints[0].n_idle != 0)
        die("a connection is still counted or pooled");
    return 0;
}
