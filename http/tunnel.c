/* tunnel.c — see tunnel.h. */
#include "http/tunnel.h"

#include <stdlib.h>

enum { SIDE_CLIENT = 0, SIDE_UPSTREAM = 1 };

typedef struct tunnel_side {
    gw_tunnel *t;
    gw_end end;
    int side;
    int reading;   /* read(1) in effect */
    int blocked;   /* the other end's queue is above its mark: this one is not read */
    int ended;     /* on_end came: nothing more is read from it */
} tunnel_side;

enum { T_OPEN, T_CLOSING };

struct gw_tunnel {
    tunnel_side sides[2];
    uv_timer_t timer;         /* the idle timeout */
    uint32_t idle_ms;
    uint64_t last_ms;         /* uv_now of the last byte either way */
    uint64_t start_ms;
    int state;
    gw_tunnel_stats st;
    void (*on_closed)(const gw_tunnel_stats *st, void *data);
    void *data;
};

static void side_update(tunnel_side *s)
{
    int want = s->t->state == T_OPEN && !s->blocked && !s->ended;
    if (want != s->reading) {
        s->reading = want;
        s->end.ops->read(s->end.conn, want);
    }
}

static void tunnel_on_timer_close(uv_handle_t *h)
{
    free(h->data);
}

/* Into CLOSING, once: each end flushes what was queued to it and closes cleanly. */
static void tunnel_close(gw_tunnel *t, enum gw_tunnel_close_reason why)
{
    if (t->state != T_OPEN)
        return;
    t->state = T_CLOSING;
    t->st.reason = why;
    t->st.duration_ms = uv_now(t->timer.loop) - t->start_ms;
    for (int i = 0; i < 2; i++)
        t->sides[i].end.ops->close(t->sides[i].end.conn);
    if (t->on_closed)
        t->on_closed(&t->st, t->data);
    uv_close((uv_handle_t *)&t->timer, tunnel_on_timer_close);
}

static void on_data(void *arg, const char *p, size_t n)
{
    tunnel_side *s = arg;
    gw_tunnel *t = s->t;
    if (t->state != T_OPEN)
        return;
    tunnel_side *o = &t->sides[!s->side];
    t->last_ms = uv_now(t->timer.loop);
    if (s->side == SIDE_CLIENT)
        t->st.bytes_up += n;
    else
        t->st.bytes_down += n;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int r = o->end.ops->write(o->end.conn, &b, 1);
    if (r < 0) {
        tunnel_close(t, s->side == SIDE_CLIENT ? GW_TUNNEL_UPSTREAM_CLOSED : GW_TUNNEL_CLIENT_CLOSED);
        return;
    }
    if (r == 1) { /* the other side is slow: stop reading this one until it drained */
        s->blocked = 1;
        side_update(s);
    }
}

static void on_drain(void *arg)
{
    tunnel_side *o = arg; /* this end's queue drained: its peer may be read again */
    gw_tunnel *t = o->t;
    tunnel_side *s = &t->sides[!o->side];
    t->last_ms = uv_now(t->timer.loop);
    s->blocked = 0;
    side_update(s);
}

static void on_end(void *arg, int err)
{
    tunnel_side *s = arg;
    (void)err;
    s->ended = 1;
    s->reading = 0;
    tunnel_close(s->t, s->side == SIDE_CLIENT ? GW_TUNNEL_CLIENT_CLOSED : GW_TUNNEL_UPSTREAM_CLOSED);
}

static void on_shutdown(void *arg)
{
    tunnel_side *s = arg;
    tunnel_close(s->t, GW_TUNNEL_DRAIN);
}

static const gw_end_cb tunnel_end_cb = {
    .on_data = on_data, .on_drain = on_drain, .on_end = on_end, .on_shutdown = on_shutdown,
};

/* The idle timeout: re-armed for what is left when bytes moved since it was set. */
static void on_idle_timer(uv_timer_t *timer)
{
    gw_tunnel *t = timer->data;
    uint64_t now = uv_now(timer->loop), idle = now - t->last_ms;
    if (idle < t->idle_ms) {
        uv_timer_start(timer, on_idle_timer, t->idle_ms - idle, 0);
        return;
    }
    tunnel_close(t, GW_TUNNEL_IDLE);
}

gw_tunnel *gw_tunnel_start(uv_loop_t *loop, gw_end client, gw_end upstream, uint32_t idle_ms,
                           void (*on_closed)(const gw_tunnel_stats *st, void *data), void *data)
{
    gw_tunnel *t = calloc(1, sizeof *t);
    if (!t) {
        client.ops->close(client.conn);
        upstream.ops->close(upstream.conn);
        return NULL;
    }
    t->sides[SIDE_CLIENT] = (tunnel_side){ .t = t, .end = client, .side = SIDE_CLIENT };
    t->sides[SIDE_UPSTREAM] = (tunnel_side){ .t = t, .end = upstream, .side = SIDE_UPSTREAM };
    t->idle_ms = idle_ms ? idle_ms : 1;
    t->on_closed = on_closed;
    t->data = data;
    uv_timer_init(loop, &t->timer);
    t->timer.data = t;
    t->start_ms = t->last_ms = uv_now(loop);
    uv_timer_start(&t->timer, on_idle_timer, t->idle_ms, 0);
    for (int i = 0; i < 2; i++) {
        tunnel_side *s = &t->sides[i];
        s->end.ops->bind(s->end.conn, &tunnel_end_cb, s);
    }
    for (int i = 0; i < 2; i++)
        side_update(&t->sides[i]);
    return t;
}
