/* fuzz_server.h — what the drivers that fuzz a server connection through the real server
 * (fuzz_server_request: HTTP/1.1, fuzz_h2: HTTP/2) share: the state, a tiny handler whose
 * modes read, ignore or stream (checking the callback contract as it goes), the report of
 * each finished request, the loopback client's sending and reading, and the play of one input
 * as one connection (fuzz_play_connection). Header-only: each
 * driver is one translation unit and defines FUZZ_DRIVER (its name, for messages) first. */
#ifndef FUZZ_SERVER_H
#define FUZZ_SERVER_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "http/gw_errors.h"
#include "http/server.h"
#include "tests/fuzz/fuzz_loop.h"

#define MAX_DONE 256
#define RESP_CAP (1u << 20)

typedef struct rstate {
    int mode;
    int pulled;          /* gw_request_read_body called */
    int64_t cl;          /* Content-Length or -1 */
    uint64_t got;        /* on_body bytes */
} rstate;

static struct {
    uv_loop_t loop;
    gw_server *s;
    int mode;
    int n_request, n_answered, n_abort;
    int n_done;
    struct { int status, is_head, err; } done[MAX_DONE];
    char *resp;
    size_t resp_len;
} G;

static void die(const char *what)
{
    fprintf(stderr, "%s: %s\n", FUZZ_DRIVER, what);
    __builtin_trap();
}

/* ---- the handler --------------------------------------------------------------------- */

static rstate *st_of(gw_request *req, const char *cb)
{
    rstate *st = req->data;
    if (st == NULL) {
        fprintf(stderr, "%s after the response ended\n", cb);
        die("callback on an ended request");
    }
    return st;
}

static void answer(gw_request *req, int streamed)
{
    free(req->data);
    req->data = NULL;
    G.n_answered++;
    if (!streamed) {
        gw_response_simple(req, 200, "text/plain", "ok", 2, NULL);
        return;
    }
    if (gw_response_begin(req, 200, "Content-Type: text/plain\r\n", 26, -1) < 0)
        return; /* on_abort follows: it finds the state gone, which is the contract too */
    if (gw_response_body(req, "streamed", 8) < 0)
        return;
    gw_response_end(req);
}

static void h_request(gw_request *req)
{
    G.n_request++;
    rstate *st = calloc(1, sizeof *st);
    if (!st)
        abort();
    st->mode = G.mode;
    st->cl = req->content_length;
    req->data = st;
    if (st->mode == 1) {
        answer(req, 0);
        return;
    }
    st->pulled = 1;
    int rc = gw_request_read_body(req);
    if (rc == GW_ETOOBIG) {
        free(req->data);
        req->data = NULL;
        G.n_answered++;
        gw_response_error(req, 413, "too big");
    } else if (rc < 0) {
        st->pulled = 0; /* on_abort follows */
    }
}

static void h_body(gw_request *req, const char *p, size_t n)
{
    rstate *st = st_of(req, "on_body");
    (void)p;
    if (!st->pulled)
        die("on_body before gw_request_read_body");
    st->got += n;
    if (st->cl >= 0 && st->got > (uint64_t)st->cl)
        die("more body bytes than Content-Length");
    if (st->mode == 3)
        answer(req, 0);
}

static void h_body_end(gw_request *req)
{
    rstate *st = st_of(req, "on_body_end");
    if (!st->pulled)
        die("on_body_end before gw_request_read_body");
    if (st->cl >= 0 && st->got != (uint64_t)st->cl)
        die("body ended short of its Content-Length");
    answer(req, st->mode == 2);
}

static void h_drain(gw_request *req)
{
    (void)req;
}

static void h_abort(gw_request *req, int err)
{
    (void)err;
    st_of(req, "on_abort");
    free(req->data);
    req->data = NULL;
    G.n_abort++;
}

static const gw_handler handler = { h_request, h_body, h_body_end, h_drain, h_abort };

static void on_done(const gw_request *req, const gw_request_report *r, void *data)
{
    (void)data;
    if (G.n_done < MAX_DONE) {
        G.done[G.n_done].status = req->status;
        G.done[G.n_done].is_head = req->is_head;
        G.done[G.n_done].err = r->err;
    }
    G.n_done++;
}

/* ---- the loop and the client --------------------------------------------------------- */


static void turn(int fd, int wait_ms)
{
    fuzz_turn(&G.loop, fd, wait_ms);
}

/* Reads what the server sent; returns 1 at EOF or reset. */
static int cli_read(int fd)
{
    for (;;) {
        char tmp[16384];
        ssize_t r = recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (r > 0) {
            size_t k = (size_t)r;
            if (G.resp_len + k > RESP_CAP)
                k = RESP_CAP - G.resp_len;
            memcpy(G.resp + G.resp_len, tmp, k);
            G.resp_len += k;
            continue;
        }
        if (r == 0)
            return 1;
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : 1;
    }
}

static void cli_send(int fd, const uint8_t *p, size_t n)
{
    uint64_t end = fuzz_now_ms() + 5000;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            p += w, n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return; /* the server closed: the rest is not wanted */
        if (fuzz_now_ms() > end)
            die("the server stopped reading for 5 s");
        cli_read(fd);
        turn(fd, 5);
    }
}

/* The client's EOF on FD, then bounded waits: the server answers or closes, lets the
 * connection go, and every request it started ended (answered or aborted). */
static inline void fuzz_end_connection(int fd)
{
    shutdown(fd, SHUT_WR);
    uint64_t end = fuzz_now_ms() + 10000;
    while (!cli_read(fd)) {
        if (fuzz_now_ms() > end)
            die("the connection was neither answered nor closed 10 s after the client's EOF");
        turn(fd, 50);
    }
    close(fd);
    end = fuzz_now_ms() + 5000;
    while (gw_server_active(G.s) > 0) {
        if (fuzz_now_ms() > end)
            die("the server still holds the connection 5 s after the client left");
        turn(-1, 10);
    }
    if (G.n_answered + G.n_abort != G.n_request)
        die("a request neither answered nor aborted");
}

/* ---- one fuzz input as one connection -------------------------------------------------- */

/* Plays DATA as one client connection: byte 0 holds the handler mode (bits 2-3) and how many
 * cut points follow (bits 0-1); the rest is sent in that many + 1 pieces, PREFACE first,
 * each read by the server before the next is sent; then the client's EOF, and the server
 * must answer or close and let the connection go. 0: DATA is too short to play. */
static inline int fuzz_play_connection(const uint8_t *data, size_t size, const uint8_t *preface,
                                size_t preface_len)
{
    if (size < 1)
        return 0;
    int nsplit = data[0] & 3;
    if (size < 1 + (size_t)nsplit)
        return 0;
    G.mode = (data[0] >> 2) & 3;
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

    G.n_request = G.n_answered = G.n_abort = G.n_done = 0;
    G.resp_len = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)gw_server_port(G.s)) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        abort();
    if (preface_len > 0)
        cli_send(fd, preface, preface_len);
    for (int i = 0; i < nc; i++) {
        cli_send(fd, payload + cuts[i], cuts[i + 1] - cuts[i]);
        for (int k = 0; k < 3; k++) /* the server reads this piece before the next comes */
            turn(fd, 0);
        cli_read(fd);
    }
    fuzz_end_connection(fd);
    return 1;
}

#endif
