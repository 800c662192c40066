/* test_oneshot.c — the one-shot exchange helper (http/oneshot.h) against a tiny in-process
 * upstream (a raw libuv TCP listener on port 0 that answers, answers big, or hangs): the
 * answer, the body cap, the deadline, abort-all at shutdown, the cap refusals, one callback
 * never from inside the start call, and a loop that closes with no handle left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "http/gw_errors.h"
#include "http/oneshot.h"

enum { UP_ANSWER, UP_BIG, UP_HANG, UP_HEADERS, UP_MANY_HEADERS };

typedef struct peer {
    uv_tcp_t tcp;
    char buf[4096];
    size_t len;
} peer;

typedef struct fixture {
    uv_loop_t loop;
    uv_tcp_t listener;
    int mode;
    int n_requests;          /* request heads the upstream read */
    peer *peers[64];
    int n_peers;
    gw_upstream_conf conf;
    gw_upstream up;
    gw_oneshot_set set;
} fixture;

typedef struct outcome {
    int calls;
    int in_start;            /* set while gw_oneshot_start runs: the callback must not see it */
    int called_in_start;
    gw_oneshot_result r;
    char body[64];
    char hdrs[2048];         /* r.headers, copied */
} outcome;

static fixture *F;

static void on_write(uv_write_t *w, int status)
{
    (void)status;
    free(w);
}

static void peer_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    peer *p = h->data;
    (void)sz;
    *b = uv_buf_init(p->buf + p->len, (unsigned)(sizeof p->buf - p->len - 1));
}

static void peer_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    peer *p = st->data;
    (void)b;
    if (n < 0) {
        uv_read_stop(st);
        return;
    }
    p->len += (size_t)n;
    p->buf[p->len] = '\0';
    if (!strstr(p->buf, "\r\n\r\n"))
        return;
    p->len = 0; /* one request per head (no bodies here); keep-alive reuse sends the next */
    F->n_requests++;
    static char big[8192];
    const char *resp = NULL;
    if (F->mode == UP_ANSWER) {
        resp = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    } else if (F->mode == UP_BIG) {
        /* chunked: the cap is found while reading, not from a Content-Length */
        int at = snprintf(big, sizeof big, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                           "1000\r\n");
        memset(big + at, 'x', 4096);
        memcpy(big + at + 4096, "\r\n0\r\n\r\n", 8); /* with the NUL */
        resp = big;
    } else if (F->mode == UP_HEADERS) {
        resp = "HTTP/1.1 200 OK\r\nETag: \"e1\"\r\nX-Other: no\r\nset-cookie: a=1\r\n"
               "Set-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok";
    } else if (F->mode == UP_MANY_HEADERS) {
        /* more kept lines than GW_ONESHOT_HEADERS_LINES */
        int at = snprintf(big, sizeof big, "HTTP/1.1 200 OK\r\n");
        for (int i = 0; i < GW_ONESHOT_HEADERS_LINES + 8; i++)
            at += snprintf(big + at, sizeof big - (size_t)at, "Set-Cookie: c%d=1\r\n", i);
        snprintf(big + at, sizeof big - (size_t)at, "Content-Length: 0\r\n\r\n");
        resp = big;
    }
    if (!resp)
        return; /* UP_HANG */
    size_t len = strlen(resp);
    uv_write_t *w = malloc(sizeof *w + len);
    memcpy((char *)(w + 1), resp, len);
    uv_buf_t ob = uv_buf_init((char *)(w + 1), (unsigned)len);
    uv_write(w, st, &ob, 1, on_write);
}

static void on_connection(uv_stream_t *srv, int status)
{
    (void)status;
    peer *p = calloc(1, sizeof *p);
    uv_tcp_init(srv->loop, &p->tcp);
    p->tcp.data = p;
    assert_int_equal(uv_accept(srv, (uv_stream_t *)&p->tcp), 0);
    F->peers[F->n_peers++] = p;
    uv_read_start((uv_stream_t *)&p->tcp, peer_alloc, peer_on_read);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    F = f;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_tcp_init(&f->loop, &f->listener);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&f->listener, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f->listener, 64, on_connection), 0);
    int alen = sizeof f->conf.endpoints[0].addr;
    uv_tcp_getsockname(&f->listener, (struct sockaddr *)&f->conf.endpoints[0].addr, &alen);
    f->conf.endpoints[0].addrlen = (socklen_t)alen;
    snprintf(f->conf.name, sizeof f->conf.name, "test");
    f->conf.n_endpoints = 1;
    f->conf.connect_timeout_ms = 1000;
    f->conf.response_timeout_ms = 30000;
    f->conf.read_timeout_ms = 30000;
    f->conf.pool_max_idle = 4;
    f->conf.pool_idle_timeout_ms = 30000;
    f->conf.down_ms = 5000;
    gw_upstream_init(&f->up, &f->loop, &f->conf);
    gw_oneshot_set_init(&f->set, &f->loop, 8, 8);
    f->up.oneshots = &f->set;
    *state = f;
    return 0;
}

static void free_peer(uv_handle_t *h)
{
    free(h->data);
}

/* Shutdown as the worker does it, then the loop must close with no handle left. */
static int teardown(void **state)
{
    fixture *f = *state;
    gw_oneshot_abort_all(&f->set);
    gw_upstream_close_idle(&f->up);
    for (int i = 0; i < f->n_peers; i++)
        uv_close((uv_handle_t *)&f->peers[i]->tcp, free_peer);
    uv_close((uv_handle_t *)&f->listener, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    gw_upstream_free(&f->up);
    gw_uconn_thread_cleanup();
    free(f);
    return 0;
}

static void on_result(gw_oneshot *o, const gw_oneshot_result *r, void *arg)
{
    outcome *out = arg;
    (void)o;
    out->calls++;
    if (out->in_start)
        out->called_in_start = 1;
    out->r = *r;
    if (r->body && r->len < sizeof out->body)
        memcpy(out->body, r->body, r->len);
    out->r.body = NULL; /* not valid after the callback */
    if (r->headers && r->headers_len < sizeof out->hdrs)
        memcpy(out->hdrs, r->headers, r->headers_len);
    out->r.headers = NULL;
}

static const char REQ[] = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";

static int start(fixture *f, int klass, size_t body_max, uint32_t deadline_ms, outcome *out,
                 int *skip)
{
    gw_oneshot *o;
    int s;
    out->in_start = 1;
    int r = gw_oneshot_start(&f->set, &f->up.endpoints[0], klass, REQ, sizeof REQ - 1, 0,
                             body_max, deadline_ms, on_result, out, &o, skip ? skip : &s);
    out->in_start = 0;
    return r;
}

static const char *const KEEP[] = { "ETag", "Set-Cookie", NULL };

/* As start (a request-class exchange), keeping KEEP's headers. */
static int start_keep(fixture *f, outcome *out)
{
    gw_oneshot *o;
    int s;
    return gw_oneshot_start_keep(&f->set, &f->up.endpoints[0], GW_ONESHOT_REQUEST, REQ,
                                 sizeof REQ - 1, 0, 1024, 5000, KEEP, on_result, out, &o, &s);
}

static void run_until(fixture *f, const int *calls, int want)
{
    while (*calls < want)
        uv_run(&f->loop, UV_RUN_ONCE);
}

static void test_answer(void **state)
{
    fixture *f = *state;
    f->mode = UP_ANSWER;
    outcome a = { 0 }, b = { 0 };
    assert_int_equal(start(f, GW_ONESHOT_BACKGROUND, 1024, 5000, &a, NULL), 0);
    assert_int_equal(f->set.n_background, 1);
    assert_int_equal(f->up.endpoints[0].n_background, 1);
    run_until(f, &a.calls, 1);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.r.err, 0);
    assert_int_equal(a.r.status, 200);
    assert_int_equal(a.r.too_big, 0);
    assert_int_equal(a.r.len, 5);
    assert_memory_equal(a.body, "hello", 5);
    assert_int_equal(f->set.n_background, 0);
    assert_int_equal(f->up.endpoints[0].n_background, 0);
    assert_int_equal(f->set.n_all, 0);
    /* the connection went back to the pool: the second exchange takes it, and its on_ready
     * runs inside the start call, yet the callback still waits for a later loop turn */
    assert_int_equal(f->up.endpoints[0].n_idle, 1);
    assert_int_equal(start(f, GW_ONESHOT_REQUEST, 1024, 5000, &b, NULL), 0);
    assert_int_equal(f->up.n_reuses, 1);
    run_until(f, &b.calls, 1);
    assert_int_equal(b.r.status, 200);
    assert_int_equal(a.called_in_start + b.called_in_start, 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(a.calls + b.calls, 2); /* exactly once each */
}

static void test_body_over_the_cap(void **state)
{
    fixture *f = *state;
    f->mode = UP_BIG;
    outcome a = { 0 };
    assert_int_equal(start(f, GW_ONESHOT_BACKGROUND, 1000, 5000, &a, NULL), 0);
    run_until(f, &a.calls, 1);
    assert_int_equal(a.r.err, 0);
    assert_int_equal(a.r.status, 200);
    assert_int_equal(a.r.too_big, 1);
    assert_int_equal(a.r.len, 0);
    /* a cut-off answer is not pooled */
    assert_int_equal(f->up.endpoints[0].n_idle, 0);
}

static void test_deadline(void **state)
{
    fixture *f = *state;
    f->mode = UP_HANG;
    outcome a = { 0 };
    uint64_t t0 = uv_now(&f->loop);
    assert_int_equal(start(f, GW_ONESHOT_BACKGROUND, 1024, 50, &a, NULL), 0);
    run_until(f, &a.calls, 1);
    assert_int_equal(a.r.err, GW_ETIMEOUT);
    assert_int_equal(a.r.status, 0);
    assert_true(uv_now(&f->loop) - t0 >= 50);
    assert_int_equal(f->n_requests, 1);
    assert_int_equal(f->set.n_background, 0);
}

static void test_abort_all(void **state)
{
    fixture *f = *state;
    f->mode = UP_HANG;
    outcome o[3] = { { 0 } };
    for (int i = 0; i < 3; i++)
        assert_int_equal(start(f, i == 2 ? GW_ONESHOT_REQUEST : GW_ONESHOT_BACKGROUND, 1024,
                               60000, &o[i], NULL), 0);
    while (f->n_requests < 3)
        uv_run(&f->loop, UV_RUN_ONCE);
    gw_oneshot_abort_all(&f->set);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(o[i].calls, 1); /* before abort_all returned */
        assert_int_equal(o[i].r.err, GW_ECLOSED);
    }
    assert_int_equal(f->set.n_all, 0);
    assert_int_equal(f->up.endpoints[0].n_background, 0);
    /* closed: nothing new starts, of either class */
    outcome late = { 0 };
    int skip = 0;
    assert_int_equal(start(f, GW_ONESHOT_REQUEST, 1024, 1000, &late, &skip), -1);
    assert_int_equal(skip, GW_ONESHOT_SKIP_DRAINING);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(late.calls, 0);
}

static int empty_calls;
static void on_empty(gw_oneshot_set *set, void *data)
{
    (void)set, (void)data;
    empty_calls++;
}

static void test_cap_refusals(void **state)
{
    fixture *f = *state;
    f->mode = UP_HANG;
    f->set.max_in_flight = 3;
    f->set.max_conns_per_endpoint = 2;
    outcome o[6] = { { 0 } };
    int skip = 0;
    assert_int_equal(start(f, GW_ONESHOT_BACKGROUND, 1024, 60000, &o[0], &skip), 0);
    assert_int_equal(start(f, GW_ONESHOT_BACKGROUND, 1024, 60000, &o[1], &skip), 0);
    assert_int_equal(start(f, GW_ONESHOT_BACKGROUND, 1024, 60000, &o[2], &skip), -1);
    assert_int_equal(skip, GW_ONESHOT_SKIP_ENDPOINT);
    assert_string_equal(gw_oneshot_skip_name(skip), "endpoint");
    f->set.max_in_flight = 2;
    assert_int_equal(start(f, GW_ONESHOT_BACKGROUND, 1024, 60000, &o[2], &skip), -1);
    assert_int_equal(skip, GW_ONESHOT_SKIP_IN_FLIGHT);
    /* a client-facing exchange is never shed for the background budget */
    assert_int_equal(start(f, GW_ONESHOT_REQUEST, 1024, 60000, &o[3], &skip), 0);
    assert_int_equal(f->set.n_background, 2);
    assert_int_equal(f->set.n_all, 3);
    /* draining: background refused, request-path ones still start */
    gw_oneshot_set_drain(&f->set);
    f->set.max_in_flight = f->set.max_conns_per_endpoint = 100;
    assert_int_equal(start(f, GW_ONESHOT_BACKGROUND, 1024, 60000, &o[4], &skip), -1);
    assert_int_equal(skip, GW_ONESHOT_SKIP_DRAINING);
    assert_int_equal(start(f, GW_ONESHOT_REQUEST, 1024, 60000, &o[5], &skip), 0);
    /* the worker waits for the set to empty; the last callback tells it */
    empty_calls = 0;
    gw_oneshot_set_on_empty(&f->set, on_empty, NULL);
    assert_int_equal(empty_calls, 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    for (int i = 0; i < 6; i++)
        assert_int_equal(o[i].calls, 0); /* refused ones never call back */
    gw_oneshot_abort_all(&f->set);
    assert_int_equal(empty_calls, 1);
    assert_int_equal(o[0].calls + o[1].calls + o[3].calls + o[5].calls, 4);
    assert_int_equal(o[2].calls + o[4].calls, 0);
}

static void test_cancel(void **state)
{
    fixture *f = *state;
    f->mode = UP_HANG;
    outcome a = { 0 };
    gw_oneshot *o;
    int skip;
    assert_int_equal(gw_oneshot_start(&f->set, &f->up.endpoints[0], GW_ONESHOT_BACKGROUND, REQ,
                                      sizeof REQ - 1, 0, 1024, 60000, on_result, &a, &o, &skip),
                     0);
    while (f->n_requests < 1)
        uv_run(&f->loop, UV_RUN_ONCE);
    gw_oneshot_cancel(o);
    gw_oneshot_cancel(NULL);
    assert_int_equal(f->set.n_all, 0);
    assert_int_equal(f->up.endpoints[0].n_background, 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(a.calls, 0); /* no callback after a cancel */
}

static void test_connect_refused(void **state)
{
    fixture *f = *state;
    /* an endpoint nothing listens on: the error comes back as one deferred callback */
    uv_close((uv_handle_t *)&f->listener, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_tcp_init(&f->loop, &f->listener); /* teardown closes it again */
    outcome a = { 0 };
    assert_int_equal(start(f, GW_ONESHOT_REQUEST, 1024, 5000, &a, NULL), 0);
    assert_int_equal(a.calls, 0);
    run_until(f, &a.calls, 1);
    assert_int_equal(a.r.err, GW_ECONNECT);
}

/* Only the named headers (any case) are kept, in order, as "Name: value" lines; none
 * without a list. */
static void test_kept_headers(void **state)
{
    fixture *f = *state;
    f->mode = UP_HEADERS;
    outcome a = { 0 }, b = { 0 };
    assert_int_equal(start_keep(f, &a), 0);
    run_until(f, &a.calls, 1);
    assert_int_equal(a.r.err, 0);
    assert_int_equal(a.r.status, 200);
    const char want[] = "ETag: \"e1\"\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\n";
    assert_int_equal(a.r.headers_len, sizeof want - 1);
    assert_memory_equal(a.hdrs, want, sizeof want - 1);
    assert_false(a.r.headers_truncated);
    assert_memory_equal(a.body, "ok", 2);
    assert_int_equal(start(f, GW_ONESHOT_REQUEST, 1024, 5000, &b, NULL), 0);
    run_until(f, &b.calls, 1);
    assert_int_equal(b.r.headers_len, 0);
}

/* Past GW_ONESHOT_HEADERS_LINES the rest is dropped and the result says so. */
static void test_kept_headers_capped(void **state)
{
    fixture *f = *state;
    f->mode = UP_MANY_HEADERS;
    outcome a = { 0 };
    assert_int_equal(start_keep(f, &a), 0);
    run_until(f, &a.calls, 1);
    assert_int_equal(a.r.err, 0);
    assert_true(a.r.headers_truncated);
    int lines = 0;
    for (size_t i = 0; i + 1 < a.r.headers_len; i++)
        lines += a.hdrs[i] == '\r' && a.hdrs[i + 1] == '\n';
    assert_int_equal(lines, GW_ONESHOT_HEADERS_LINES);
    assert_memory_equal(a.hdrs, "Set-Cookie: c0=1\r\n", 18);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kept_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kept_headers_capped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_over_the_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cap_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
