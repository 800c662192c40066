/* test_server.c — the server connection's state machine, driven in-process: a gw_server on
 * a real loop (port 0), a non-blocking loopback client socket, a tiny handler, and
 * uv_run(NOWAIT) pumped until what the test waits for happens. Pipelining with a full
 * write queue, abort (the client leaves) in every state, timer expiry in every state. Each
 * test ends by closing the server and checking that no handle is left (uv_loop_close). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http/client_int.h"
#include "http/gw_errors.h"
#include "http/server.h"

#define BIG (4u << 20) /* a response larger than loopback socket buffers hold */

enum { M_SMALL, M_BIG, M_HOLD, M_413, M_PULL };

static struct {
    uv_loop_t loop;
    gw_server *s;
    int closed;
    int mode;
    int n_request, n_abort, n_done, abort_err, last_status, last_err;
    gw_request *held;
    char *big;
    char last_addr[64];
} T;

/* ---- the handler --------------------------------------------------------------------- */

static void h_request(gw_request *req)
{
    T.n_request++;
    char hdr[64];
    switch (T.mode) {
    case M_SMALL:
        gw_response_simple(req, 200, "text/plain", "ok", 2, NULL);
        return;
    case M_BIG:
        snprintf(hdr, sizeof hdr, "X-Seq: %d\r\n", T.n_request);
        gw_response_simple(req, 200, "text/plain", T.big, BIG, hdr);
        return;
    case M_HOLD:
        T.held = req;
        return;
    case M_413: /* answers without reading the body: the input stays unread */
        gw_response_error(req, 413, "too big");
        return;
    case M_PULL:
        T.held = req;
        assert_int_equal(gw_request_read_body(req), 0);
        return;
    }
}

static void h_body(gw_request *req, const char *p, size_t n)
{
    (void)req, (void)p, (void)n;
}

static void h_body_end(gw_request *req)
{
    T.held = NULL;
    gw_response_simple(req, 200, "text/plain", "got", 3, NULL);
}

static void h_drain(gw_request *req)
{
    (void)req;
}

static void h_abort(gw_request *req, int err)
{
    (void)req;
    T.n_abort++;
    T.abort_err = err;
    T.held = NULL;
}

static const gw_handler handler = { h_request, h_body, h_body_end, h_drain, h_abort };

static void on_done(const gw_request *req, const gw_request_report *r, void *data)
{
    (void)data;
    T.n_done++;
    T.last_status = req->status;
    T.last_err = r->err;
    snprintf(T.last_addr, sizeof T.last_addr, "%s", req->client_addr);
}

/* ---- the loop and the client side ---------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs the loop until COND holds or MS pass; returns COND. */
#define PUMP_UNTIL(cond, ms)                                                           \
    ({                                                                                 \
        uint64_t end_ = now_ms() + (ms);                                               \
        while (!(cond) && now_ms() < end_) {                                           \
            uv_run(&T.loop, UV_RUN_NOWAIT);                                            \
            usleep(500);                                                               \
        }                                                                              \
        (cond);                                                                        \
    })

static void pump_for(unsigned ms)
{
    PUMP_UNTIL(0, ms);
}

static gw_client *the_client(void)
{
    if (gw_queue_empty(&T.s->clients))
        return NULL;
    return GW_QUEUE_DATA(T.s->clients.next, gw_client, node);
}

static client_state state(void)
{
    gw_client *c = the_client();
    return c ? c->state : CS_CLOSING;
}

static void server_start(int mode)
{
    memset(&T, 0, sizeof T);
    T.mode = mode;
    T.big = malloc(BIG);
    assert_non_null(T.big);
    memset(T.big, 'b', BIG);
    assert_int_equal(uv_loop_init(&T.loop), 0);
    gw_server_opts o = {
        .limits = { .max_uri_bytes = 1024, .max_header_bytes = 4096, .max_headers = 32,
                    .max_body_bytes = 1000, .header_timeout_ms = 200, .body_timeout_ms = 200,
                    .idle_timeout_ms = 300, .send_timeout_ms = 300, .read_buffer_bytes = 8192 },
        .on_request_done = on_done,
    };
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(gw_server_init(&T.s, &T.loop, (struct sockaddr *)&a, &o, &handler), 0);
}

static void on_server_closed(gw_server *s)
{
    gw_server_free(s);
    T.closed = 1;
}

static void server_stop(void)
{
    gw_server_close(T.s, on_server_closed);
    assert_true(PUMP_UNTIL(T.closed, 2000));
    uv_run(&T.loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&T.loop), 0); /* no handle left behind */
    free(T.big);
}

/* A client socket, connected and accepted. RCVBUF > 0: a small receive buffer, set before
 * connect so the window stays small (a client that reads slowly or not at all). */
static int cli_connect(int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)gw_server_port(T.s)) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int r = connect(fd, (struct sockaddr *)&a, sizeof a);
    assert_true(r == 0 || errno == EINPROGRESS);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 1, 2000));
    return fd;
}

static void cli_send(int fd, const char *p, size_t n)
{
    uint64_t end = now_ms() + 3000;
    while (n > 0 && now_ms() < end) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else {
            assert_true(errno == EAGAIN);
            uv_run(&T.loop, UV_RUN_NOWAIT);
            usleep(500);
        }
    }
    assert_int_equal(n, 0);
}

static void cli_sends(int fd, const char *s)
{
    cli_send(fd, s, strlen(s));
}

/* Reads what is there (pumping the server meanwhile) into out, up to cap; returns the
 * byte count, and sets *eof when the server closed (EOF or reset). */
static size_t cli_read(int fd, char *out, size_t cap, unsigned ms, int *eof)
{
    size_t got = 0;
    uint64_t end = now_ms() + ms;
    *eof = 0;
    while (now_ms() < end && got < cap) {
        ssize_t r = recv(fd, out + got, cap - got, 0);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            *eof = 1;
            break;
        }
        uv_run(&T.loop, UV_RUN_NOWAIT);
        usleep(500);
    }
    return got;
}

/* Closes the client side with a reset (SO_LINGER 0): the server sees it on its next read
 * or write, whatever it is doing. */
static void cli_reset(int fd)
{
    struct linger l = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(fd);
}

static const char GET[] = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";

/* ---- pipelining with a full write queue ---------------------------------------------- */

/* Reads responses as a stream and checks each one's X-Seq is the next number. */
typedef struct {
    char head[1024];
    size_t hlen;
    uint64_t body_left;
    int seen;
} resp_reader;

static void feed(resp_reader *rr, const char *p, size_t n)
{
    while (n > 0) {
        if (rr->body_left) {
            size_t k = n < rr->body_left ? n : (size_t)rr->body_left;
            rr->body_left -= k;
            p += k;
            n -= k;
            continue;
        }
        assert_true(rr->hlen < sizeof rr->head - 1);
        rr->head[rr->hlen++] = *p++;
        n--;
        rr->head[rr->hlen] = '\0';
        if (rr->hlen >= 4 && memcmp(rr->head + rr->hlen - 4, "\r\n\r\n", 4) == 0) {
            const char *seq = strstr(rr->head, "X-Seq: ");
            const char *cl = strstr(rr->head, "Content-Length: ");
            assert_non_null(seq);
            assert_non_null(cl);
            assert_int_equal(atoi(seq + 7), rr->seen + 1); /* in order */
            rr->seen++;
            rr->body_left = strtoull(cl + 16, NULL, 10);
            rr->hlen = 0;
        }
    }
}

static void test_pipelining_waits_for_the_write_queue_then_answers_in_order(void **st)
{
    (void)st;
    server_start(M_BIG);
    T.s->opts.limits.send_timeout_ms = 5000;
    int fd = cli_connect(4096);
    char reqs[sizeof GET * 20];
    size_t n = 0;
    for (int i = 0; i < 20; i++) {
        memcpy(reqs + n, GET, sizeof GET - 1);
        n += sizeof GET - 1;
    }
    cli_send(fd, reqs, n);
    /* the client reads nothing: the first answer fills the queue and parsing stops */
    assert_true(PUMP_UNTIL(state() == CS_SENDING, 2000));
    pump_for(200);
    assert_int_equal(T.n_request, 1);
    assert_int_equal(state(), CS_SENDING);
    gw_client *c = the_client();
    assert_non_null(c->req);
    assert_true(c->pending_write > 0);
    /* now it reads: every answer arrives, in order */
    resp_reader rr = { .seen = 0 };
    static char buf[1 << 16];
    uint64_t end = now_ms() + 10000;
    while (rr.seen < 20 || rr.body_left) {
        assert_true(now_ms() < end);
        int eof;
        size_t got = cli_read(fd, buf, sizeof buf, 5, &eof);
        assert_false(eof);
        feed(&rr, buf, got);
    }
    assert_int_equal(T.n_request, 20);
    assert_true(PUMP_UNTIL(T.n_done == 20, 1000));
    assert_true(PUMP_UNTIL(state() == CS_IDLE, 1000));
    close(fd);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 1000));
    server_stop();
}

/* ---- the client leaves, in every state ----------------------------------------------- */

static void test_abort_idle(void **st)
{
    (void)st;
    server_start(M_SMALL);
    int fd = cli_connect(0);
    assert_int_equal(state(), CS_IDLE);
    close(fd);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 1000));
    assert_int_equal(T.n_done, 0);
    server_stop();
}

static void test_abort_head(void **st)
{
    (void)st;
    server_start(M_SMALL);
    int fd = cli_connect(0);
    cli_sends(fd, "GET /x HTTP/1.1\r\nHo");
    assert_true(PUMP_UNTIL(state() == CS_HEAD, 1000));
    close(fd);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 1000));
    assert_int_equal(T.n_request, 0);
    assert_int_equal(T.n_done, 0); /* no handler saw it, no answer: not reported */
    server_stop();
}

static void test_abort_active_before_response(void **st)
{
    (void)st;
    server_start(M_HOLD);
    int fd = cli_connect(0);
    cli_sends(fd, GET);
    assert_true(PUMP_UNTIL(T.held != NULL, 1000));
    assert_int_equal(state(), CS_ACTIVE);
    close(fd);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 1000));
    assert_int_equal(T.n_abort, 1);
    assert_int_equal(T.n_done, 1);
    assert_int_equal(T.last_status, 499);
    assert_int_not_equal(T.last_err, 0);
    server_stop();
}

static void test_abort_active_mid_response(void **st)
{
    (void)st;
    server_start(M_HOLD);
    int fd = cli_connect(4096);
    cli_sends(fd, GET);
    assert_true(PUMP_UNTIL(T.held != NULL, 1000));
    gw_request *q = T.held;
    assert_int_equal(gw_response_begin(q, 200, NULL, 0, BIG * 2), 0);
    assert_int_equal(gw_response_body(q, T.big, BIG), 1); /* queued: the client is slow */
    assert_int_equal(state(), CS_ACTIVE);
    cli_reset(fd);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 1000));
    assert_int_equal(T.n_abort, 1); /* once */
    assert_int_equal(T.n_done, 1);  /* and reported, though its response had begun */
    assert_int_equal(T.last_status, 200);
    assert_int_not_equal(T.last_err, 0);
    server_stop();
}

static void test_abort_sending(void **st)
{
    (void)st;
    server_start(M_BIG);
    T.s->opts.limits.send_timeout_ms = 5000;
    int fd = cli_connect(4096);
    cli_sends(fd, GET);
    assert_true(PUMP_UNTIL(state() == CS_SENDING, 1000));
    cli_reset(fd);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 1000));
    assert_int_equal(T.n_abort, 0); /* the handler was done with it */
    assert_int_equal(T.n_done, 1);
    assert_int_not_equal(T.last_err, 0);
    server_stop();
}

static void start_linger(int *fd)
{
    *fd = cli_connect(0);
    cli_sends(*fd, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nsome");
    assert_true(PUMP_UNTIL(state() == CS_LINGER, 1000));
    assert_int_equal(T.n_done, 1);
    assert_int_equal(T.last_status, 413);
    char buf[4096];
    int eof;
    size_t got = cli_read(*fd, buf, sizeof buf - 1, 200, &eof);
    buf[got] = '\0';
    assert_non_null(strstr(buf, "HTTP/1.1 413 "));
    assert_non_null(strstr(buf, "\"status\":413"));
    assert_true(eof); /* the write side was shut after the answer */
    /* it keeps reading and throwing away */
    cli_send(*fd, T.big, 50000);
    pump_for(50);
    assert_int_equal(state(), CS_LINGER);
}

static void test_abort_linger(void **st)
{
    (void)st;
    server_start(M_413);
    int fd;
    start_linger(&fd);
    close(fd);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 1000));
    assert_int_equal(T.n_done, 1);
    server_stop();
}

/* ---- timers, in every state ---------------------------------------------------------- */

static void test_timer_first_request_header_timeout(void **st)
{
    (void)st;
    server_start(M_SMALL);
    T.s->opts.limits.idle_timeout_ms = 60000; /* not this one: the first request's */
    int fd = cli_connect(0);
    uint64_t t0 = now_ms();
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 2000));
    assert_true(now_ms() - t0 < 1500);
    close(fd);
    server_stop();
}

static void test_timer_head_answers_408(void **st)
{
    (void)st;
    server_start(M_SMALL);
    int fd = cli_connect(0);
    cli_sends(fd, "GET /x HTTP/1.1\r\nHo");
    char buf[4096];
    int eof;
    size_t got = cli_read(fd, buf, sizeof buf - 1, 1500, &eof);
    buf[got] = '\0';
    assert_non_null(strstr(buf, "HTTP/1.1 408 "));
    assert_true(eof);
    assert_int_equal(T.n_done, 1);
    assert_int_equal(T.last_status, 408);
    close(fd);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 1000));
    server_stop();
}

static void test_timer_body_answers_408_and_aborts_the_handler(void **st)
{
    (void)st;
    server_start(M_PULL);
    int fd = cli_connect(0);
    cli_sends(fd, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
    char buf[4096];
    int eof;
    size_t got = cli_read(fd, buf, sizeof buf - 1, 1500, &eof);
    buf[got] = '\0';
    assert_non_null(strstr(buf, "HTTP/1.1 408 "));
    assert_int_equal(T.n_abort, 1);
    assert_int_equal(T.abort_err, GW_ETIMEOUT);
    assert_int_equal(T.last_status, 408);
    close(fd);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 1000));
    server_stop();
}

static void test_timer_idle_between_requests(void **st)
{
    (void)st;
    server_start(M_SMALL);
    T.s->opts.limits.header_timeout_ms = 60000; /* the wait between requests is idle's */
    int fd = cli_connect(0);
    cli_sends(fd, GET);
    char buf[4096];
    int eof;
    cli_read(fd, buf, sizeof buf, 100, &eof);
    assert_false(eof);
    assert_int_equal(T.n_done, 1);
    assert_int_equal(state(), CS_IDLE);
    uint64_t t0 = now_ms();
    cli_read(fd, buf, sizeof buf, 2000, &eof);
    assert_true(eof);
    assert_true(now_ms() - t0 < 1500);
    close(fd);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 1000));
    server_stop();
}

static int server_nodelay(void)
{
    uv_os_fd_t fd;
    int on = 0;
    socklen_t len = sizeof on;
    assert_int_equal(uv_fileno((uv_handle_t *)&the_client()->tcp, &fd), 0);
    assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len), 0);
    return on;
}

/* One response, one write: no TCP_NODELAY (no setsockopt for a connection per request);
 * from the connection's second write on it is set, so small writes in a row are not held
 * back by Nagle. The peer address reaches each request as text. */
static void test_nodelay_from_the_second_write(void **st)
{
    (void)st;
    server_start(M_SMALL);
    int fd = cli_connect(0);
    char buf[4096];
    int eof;
    cli_sends(fd, GET);
    assert_true(PUMP_UNTIL(T.n_done == 1, 1000));
    cli_read(fd, buf, sizeof buf, 50, &eof);
    assert_false(eof);
    assert_string_equal(T.last_addr, "127.0.0.1");
    assert_false(server_nodelay());
    cli_sends(fd, GET);
    assert_true(PUMP_UNTIL(T.n_done == 2, 1000));
    assert_true(server_nodelay());
    assert_string_equal(T.last_addr, "127.0.0.1");
    close(fd);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 1000));
    server_stop();
}

static void test_timer_send_cuts_a_client_that_does_not_read(void **st)
{
    (void)st;
    server_start(M_BIG);
    int fd = cli_connect(4096);
    cli_sends(fd, GET);
    cli_sends(fd, GET); /* pipelined: must not re-arm the send timeout */
    assert_true(PUMP_UNTIL(state() == CS_SENDING, 1000));
    uint64_t t0 = now_ms();
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 2000));
    assert_true(now_ms() - t0 < 1500);
    assert_int_equal(T.n_request, 1);
    assert_int_equal(T.n_done, 1);
    assert_int_equal(T.last_err, GW_ETIMEOUT);
    close(fd);
    server_stop();
}

static void test_timer_linger_is_bounded(void **st)
{
    (void)st;
    server_start(M_413);
    int fd;
    start_linger(&fd);
    uint64_t t0 = now_ms();
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, GW_LINGER_MS + 1000));
    assert_true(now_ms() - t0 >= GW_LINGER_MS - 300);
    close(fd);
    server_stop();
}

/* ---- the handler answers from on_body with bytes still queued ------------------------- */

static int body_calls;

static void h_body_answer(gw_request *req, const char *p, size_t n)
{
    (void)p, (void)n;
    if (body_calls++ == 0)
        gw_response_simple(req, 200, "text/plain", T.big, BIG, NULL); /* stays queued */
}

static void test_answer_inside_on_body_then_more_body(void **st)
{
    (void)st;
    server_start(M_PULL);
    static gw_handler h2;
    h2 = handler;
    h2.on_body = h_body_answer;
    T.s->handler = h2;
    body_calls = 0;
    int fd = cli_connect(4096);
    /* several body pieces in one read: llhttp calls on_body once per piece of chunked data */
    cli_sends(fd, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "3\r\nabc\r\n3\r\ndef\r\n3\r\nghi\r\n");
    assert_true(PUMP_UNTIL(state() == CS_SENDING || gw_server_active(T.s) == 0, 1000));
    assert_int_equal(body_calls, 1);
    cli_reset(fd);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 1000));
    assert_int_equal(T.n_done, 1);
    server_stop();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* writes to a client that reset: EPIPE, not a signal */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipelining_waits_for_the_write_queue_then_answers_in_order),
        cmocka_unit_test(test_abort_idle),
        cmocka_unit_test(test_abort_head),
        cmocka_unit_test(test_abort_active_before_response),
        cmocka_unit_test(test_abort_active_mid_response),
        cmocka_unit_test(test_abort_sending),
        cmocka_unit_test(test_abort_linger),
        cmocka_unit_test(test_timer_first_request_header_timeout),
        cmocka_unit_test(test_timer_head_answers_408),
        cmocka_unit_test(test_timer_body_answers_408_and_aborts_the_handler),
        cmocka_unit_test(test_timer_idle_between_requests),
        cmocka_unit_test(test_nodelay_from_the_second_write),
        cmocka_unit_test(test_timer_send_cuts_a_client_that_does_not_read),
        cmocka_unit_test(test_timer_linger_is_bounded),
        cmocka_unit_test(test_answer_inside_on_body_then_more_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
