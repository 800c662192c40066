/* test_uconn_upgrade.c — the send timeout of an upgraded upstream connection
 * (upstreams.NAME.send_timeout_ms, http/upstream_conn.c) against an in-process upstream (a
 * raw libuv listener on port 0) that answers 101 at once and never reads: the request bytes
 * still queued at the 101 are covered by the send timeout (the end hears GW_ETIMEOUT within
 * it), also when more bytes are written behind them; and the loop closes with no handle
 * left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "http/end.h"
#include "http/gw_errors.h"
#include "http/upstream.h"

#define SEND_TIMEOUT_MS 200
#define GUARD_MS 3000 /* far beyond the send timeout: the end was never told */
#define REQ_BYTES (8u << 20) /* far more than the socket buffers: most of it stays queued */

typedef struct fixture {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_tcp_t peer; /* the upstream's side: answers 101, reads nothing */
    int have_peer;
    uv_timer_t guard;
    gw_upstream_conf conf;
    gw_upstream up;
    gw_uconn *u;
    gw_end end;
    char *req;
    int write_after; /* write more through the end right after the upgrade */
    int closing;     /* teardown: the loop runs to its end */
    int upgraded, ended, end_err, failed;
    size_t queued_at_upgrade;
    uint64_t upgraded_at, ended_at;
} fixture;

static fixture *F;

static void on_peer_write(uv_write_t *w, int status)
{
    (void)status;
    free(w);
}

static void on_connection(uv_stream_t *srv, int status)
{
    assert_int_equal(status, 0);
    uv_tcp_init(srv->loop, &F->peer);
    assert_int_equal(uv_accept(srv, (uv_stream_t *)&F->peer), 0);
    F->have_peer = 1;
    static const char head[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\n\r\n";
    uv_write_t *w = malloc(sizeof *w);
    uv_buf_t b = uv_buf_init((char *)head, sizeof head - 1);
    uv_write(w, (uv_stream_t *)&F->peer, &b, 1, on_peer_write);
}

static void end_on_data(void *arg, const char *p, size_t n)
{
    (void)arg, (void)p, (void)n;
}

static void end_on_drain(void *arg)
{
    (void)arg;
}

static void end_on_end(void *arg, int err)
{
    fixture *f = arg;
    f->ended++;
    f->end_err = err;
    f->ended_at = uv_now(&f->loop);
    f->end.ops->close(f->end.conn); /* as the tunnel does: a no-op after a timeout */
    if (!f->closing)
        uv_stop(&f->loop);
}

static const gw_end_cb end_cb = {
    .on_data = end_on_data, .on_drain = end_on_drain, .on_end = end_on_end,
};

static void on_ready(gw_uconn *u, void *data)
{
    fixture *f = data;
    gw_uconn_allow_upgrade(u);
    /* a request head and a body the upstream never reads: at the 101 most of it is queued */
    uv_buf_t b = uv_buf_init(f->req, REQ_BYTES);
    assert_true(gw_uconn_write(u, &b, 1) >= 0);
    gw_uconn_read_response(u, 0);
}

static void on_head(gw_uconn *u, void *data, int status, const gw_header *h, int n, int64_t len)
{
    fixture *f = data;
    (void)h, (void)n, (void)len;
    assert_int_equal(status, 101);
    assert_int_equal(gw_uconn_upgrade(u, &f->end), 0);
    f->upgraded = 1;
    f->upgraded_at = uv_now(&f->loop);
    f->queued_at_upgrade = f->end.ops->queued(f->end.conn);
    f->end.ops->bind(f->end.conn, &end_cb, f);
    f->end.ops->read(f->end.conn, 1);
    if (f->write_after) {
        static char more[4096];
        uv_buf_t b = uv_buf_init(more, sizeof more);
        assert_true(f->end.ops->write(f->end.conn, &b, 1) >= 0);
    }
}

static void on_body(gw_uconn *u, void *data, const char *p, size_t n)
{
    (void)u, (void)data, (void)p, (void)n;
}

static void on_done(gw_uconn *u, void *data)
{
    (void)u, (void)data;
}

static void on_drain(gw_uconn *u, void *data)
{
    (void)u, (void)data;
}

static void on_error(gw_uconn *u, void *data, int err, int phase)
{
    fixture *f = data;
    (void)u, (void)phase;
    f->failed = err ? err : -1;
    uv_stop(&f->loop);
}

static const gw_uconn_cb ucb = {
    .on_ready = on_ready, .on_head = on_head, .on_body = on_body, .on_done = on_done,
    .on_drain = on_drain, .on_error = on_error,
};

static void on_guard(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    F = f;
    f->req = malloc(REQ_BYTES);
    static const char head[] = "POST /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\nContent-Length: 8388500\r\n\r\n";
    memset(f->req, 'b', REQ_BYTES);
    memcpy(f->req, head, sizeof head - 1);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_tcp_init(&f->loop, &f->listener);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&f->listener, (const struct sockaddr *)&a, 0), 0);
    int rcv = 65536; /* inherited by the accepted socket: the upstream's buffer stays small */
    uv_recv_buffer_size((uv_handle_t *)&f->listener, &rcv);
    assert_int_equal(uv_listen((uv_stream_t *)&f->listener, 8, on_connection), 0);
    int alen = sizeof f->conf.endpoints[0].addr;
    uv_tcp_getsockname(&f->listener, (struct sockaddr *)&f->conf.endpoints[0].addr, &alen);
    f->conf.endpoints[0].addrlen = (socklen_t)alen;
    snprintf(f->conf.name, sizeof f->conf.name, "test");
    f->conf.n_endpoints = 1;
    f->conf.connect_timeout_ms = 1000;
    f->conf.response_timeout_ms = 30000;
    f->conf.read_timeout_ms = 30000;
    f->conf.send_timeout_ms = SEND_TIMEOUT_MS;
    f->conf.pool_max_idle = 4;
    f->conf.pool_idle_timeout_ms = 30000;
    f->conf.down_ms = 5000;
    gw_upstream_init(&f->up, &f->loop, &f->conf);
    uv_timer_init(&f->loop, &f->guard);
    *state = f;
    return 0;
}

/* Shutdown as a worker does it (a connection still flushing is closed), then the loop must
 * close with no handle left. */
static int teardown(void **state)
{
    fixture *f = *state;
    f->closing = 1;
    gw_uconn_close_upgraded();
    gw_upstream_close_idle(&f->up);
    if (f->have_peer)
        uv_close((uv_handle_t *)&f->peer, NULL);
    uv_close((uv_handle_t *)&f->listener, NULL);
    uv_close((uv_handle_t *)&f->guard, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    gw_upstream_free(&f->up);
    gw_uconn_thread_cleanup();
    free(f->req);
    free(f);
    return 0;
}

static void run_upgrade(fixture *f)
{
    assert_int_equal(gw_uconn_open_new(&f->up.endpoints[0], &ucb, f, &f->u), 0);
    uv_timer_start(&f->guard, on_guard, GUARD_MS, 0);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* until the end hears, a failure, or the guard */
    uv_timer_stop(&f->guard);
    assert_int_equal(f->failed, 0);
    assert_true(f->upgraded);
    assert_true(f->queued_at_upgrade > 0); /* the case under test: bytes queued at the 101 */
    assert_int_equal(f->ended, 1);         /* (never, before: no deadline was armed) */
    assert_int_equal(f->end_err, GW_ETIMEOUT);
    uint64_t took = f->ended_at - f->upgraded_at;
    assert_true(took >= SEND_TIMEOUT_MS - 5);
    assert_true(took < GUARD_MS);
}

/* The request still queued at the 101, nothing written after: the send timeout runs from
 * the upgrade. */
static void test_bytes_queued_at_the_101_time_out(void **state)
{
    fixture *f = *state;
    run_upgrade(f);
}

/* The same with bytes written behind them (the queue was not empty: each write found it so,
 * and none armed the deadline). */
static void test_writes_behind_queued_bytes_time_out(void **state)
{
    fixture *f = *state;
    f->write_after = 1;
    run_upgrade(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bytes_queued_at_the_101_time_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writes_behind_queued_bytes_time_out, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
