/* listener.c — the listening socket of a gw_server (one per worker loop, SO_REUSEPORT so
 * the kernel spreads connections across workers), the posted-work queue, drain and close. */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/gw_errors.h"
#include "http/server_int.h"

#define ACCEPTS_PER_WAKEUP 64
#define FREE_BUFS_MAX 256

static void on_rejected_closed(uv_handle_t *h)
{
    free(h);
}

/* Accepts the waiting connection only to close it (libuv stops accepting until the pending
 * one is taken), so the client sees a close at once instead of waiting in the backlog. */
static void reject_connection(gw_server *s, enum gw_conn_event why)
{
    uv_tcp_t *t = malloc(sizeof *t);
    if (!t)
        return;
    uv_tcp_init(s->loop, t);
    if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)t) == 0 && s->opts.on_connection)
        s->opts.on_connection(why, s->opts.hook_data);
    uv_close((uv_handle_t *)t, on_rejected_closed);
}

static void on_connection(uv_stream_t *l, int status)
{
    gw_server *s = l->data;
    if (status < 0 || s->draining || s->closing)
        return;
    uint32_t max = s->opts.limits.max_connections;
    if (max && (uint32_t)s->n_clients >= max) {
        reject_connection(s, GW_CONN_REJECTED_MAX);
        return;
    }
    if (gw__client_accept(s) < 0)
        reject_connection(s, GW_CONN_REJECTED_MAX);
}

static void on_idle(uv_idle_t *h)
{
    gw_server *s = h->data;
    /* cap the work per wake-up: what is posted meanwhile waits for the next turn */
    gw_queue batch;
    gw_queue_init(&batch);
    if (!gw_queue_empty(&s->posted)) {
        batch.next = s->posted.next;
        batch.prev = s->posted.prev;
        batch.next->prev = &batch;
        batch.prev->next = &batch;
        gw_queue_init(&s->posted);
    }
    while (!gw_queue_empty(&batch)) {
        gw_queue *q = batch.next;
        gw_queue_remove(q);
        gw__client_run_posted(q);
    }
    if (gw_queue_empty(&s->posted))
        uv_idle_stop(&s->idle);
}

void gw__server_post(gw_server *s, gw_queue *node)
{
    if (node->next != node)
        return; /* already posted */
    gw_queue_insert_tail(&s->posted, node);
    uv_idle_start(&s->idle, on_idle);
}

/* A listening socket, with SO_REUSEPORT set before bind when asked (libuv 1.44 has no flag
 * for it): the kernel then spreads connections across the workers' sockets. */
static int open_listen_socket(const struct sockaddr *addr, int reuseport)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0))
        goto fail;
    socklen_t len = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, addr, len) != 0)
        goto fail;
    return fd;
fail:;
    int err = -errno;
    close(fd);
    return err;
}

int gw_server_init(gw_server **out, uv_loop_t *loop, const struct sockaddr *addr,
                   const gw_server_opts *opts, const gw_handler *handler)
{
    gw_server *s = calloc(1, sizeof *s);
    if (!s)
        return GW_ENOMEM;
    s->loop = loop;
    s->opts = *opts;
    s->handler = *handler;
    gw_queue_init(&s->clients);
    gw_queue_init(&s->posted);
    /* a head must fit in one buffer; bodies stream through it */
    s->buf_size = opts->limits.read_buffer_bytes ? opts->limits.read_buffer_bytes : 16384;
    if (s->buf_size < opts->limits.max_header_bytes)
        s->buf_size = opts->limits.max_header_bytes;
    s->cap_free_bufs = FREE_BUFS_MAX;
    s->free_bufs = calloc(FREE_BUFS_MAX, sizeof *s->free_bufs);
    s->free_reqs = calloc(GW_FREE_REQS_MAX, sizeof *s->free_reqs);
    int fd = open_listen_socket(addr, opts->reuseport);
    if (fd < 0) {
        free(s->free_bufs);
        free(s->free_reqs);
        free(s);
        return fd;
    }
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    uv_idle_init(loop, &s->idle);
    s->idle.data = s;
    gw_timeouts_init(&s->timeouts, loop, gw__client_on_timeout);
    int r = uv_tcp_open(&s->listener, fd);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection);
    s->listener_open = 1;
    if (r != 0) {
        gw_server_close(s, NULL);
        return r;
    }
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &sl) == 0)
        s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    *out = s;
    return 0;
}

static void server_maybe_done(gw_server *s);

static void on_idle_closed(uv_handle_t *h)
{
    gw_server *s = h->data;
    s->idle_closed = 1;
    server_maybe_done(s);
}

static void on_timer_closed(uv_handle_t *h)
{
    gw_server *s = GW_QUEUE_DATA(h->data, gw_server, timeouts); /* data: the gw_timeouts */
    s->timer_closed = 1;
    server_maybe_done(s);
}

/* Done when the listener, every client, the idle handle and the timer have closed. done(s) runs then,
 * and s may be freed in it with gw_server_free; with no done, s is freed here. */
static void server_maybe_done(gw_server *s)
{
    if (!(s->draining || s->closing) || s->n_clients > 0 || s->listener_open)
        return;
    if (!s->idle_closed || !s->timer_closed) {
        if (!uv_is_closing((uv_handle_t *)&s->idle))
            uv_close((uv_handle_t *)&s->idle, on_idle_closed);
        gw_timeouts_close(&s->timeouts, on_timer_closed);
        return;
    }
    void (*done)(gw_server *) = s->done;
    s->done = NULL;
    if (done)
        done(s);
    else
        gw_server_free(s);
}

void gw__server_client_gone(gw_server *s)
{
    s->n_clients--;
    server_maybe_done(s);
}

static void on_listener_closed(uv_handle_t *h)
{
    gw_server *s = h->data;
    s->listener_open = 0;
    server_maybe_done(s);
}

static void close_listener(gw_server *s)
{
    if (s->listener_open && !uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, on_listener_closed);
}

void gw_server_drain(gw_server *s, void (*done)(gw_server *s))
{
    s->draining = 1;
    s->done = done;
    close_listener(s);
    gw__close_all_clients(s, 0);
    server_maybe_done(s);
}

void gw_server_close(gw_server *s, void (*done)(gw_server *s))
{
    s->closing = 1;
    s->done = done;
    close_listener(s);
    gw__close_all_clients(s, 1);
    server_maybe_done(s);
}

void gw_server_free(gw_server *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n_free_bufs; i++)
        free(s->free_bufs[i]);
    free(s->free_bufs);
    for (int i = 0; i < s->n_free_reqs; i++)
        free(s->free_reqs[i]);
    free(s->free_reqs);
    gw_tls_ctx_unref(s->tls_ctx);
    gw_tls_buf_free(&s->tls_wire);
    free(s->tls_plain);
    free(s);
}

int gw_server_active(const gw_server *s) { return s->n_clients; }
const gw_server_opts *gw_server_options(const gw_server *s) { return &s->opts; }
uv_loop_t *gw_server_loop(const gw_server *s) { return s->loop; }
int gw_server_port(const gw_server *s) { return s->port; }
