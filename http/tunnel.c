/* tunnel.c — see tunnel.h. */
#include "http/tunnel.h"

#include <stdlib.h>

#include <openssl/err.h>
#include <openssl/rand.h>

#include "http/gw_errors.h"
#include "http/ws_frame.h"

#define DRAIN_GRACE_MS 1000 /* a WebSocket's closing handshake at drain, at most */
#define WS_GOING_AWAY 1001

enum { SIDE_CLIENT = 0, SIDE_UPSTREAM = 1 };

typedef struct tunnel_side {
    gw_tunnel *t;
    gw_end end;
    int side;
    int reading;   /* read(1) in effect */
    int blocked;   /* the other end's queue is above its mark: this one is not read */
    int ended;     /* on_end came: nothing more is read from it */
    gw_ws_track trk; /* WebSocket: frames read from this end */
    int close_sent;  /* draining: this end's direction ended with our Close frame to the
                        other end; what it still sends is dropped */
} tunnel_side;

/* T_DRAINING (WebSocket only): each direction gets a Close 1001 at its next frame
 * boundary, then the tunnel closes when an end closes or after DRAIN_GRACE_MS. */
enum { T_OPEN, T_DRAINING, T_CLOSING };

struct gw_tunnel {
    tunnel_side sides[2];
    uv_timer_t timer;         /* the idle timeout */
    uint32_t idle_ms;
    uint64_t last_ms;         /* uv_now of the last byte either way */
    uint64_t start_ms;
    int state;
    int websocket;            /* frames are followed, for a clean close at drain */
    gw_tunnel_stats st;
    void (*on_closed)(const gw_tunnel_stats *st, void *data);
    void *data;
};

static void side_update(tunnel_side *s)
{
    int want = s->t->state != T_CLOSING && !s->blocked && !s->ended;
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
    if (t->state == T_CLOSING)
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

static void close_frame_to(tunnel_side *s);

static void on_data(void *arg, const char *p, size_t n)
{
    tunnel_side *s = arg;
    gw_tunnel *t = s->t;
    if (t->state == T_CLOSING || s->close_sent)
        return; /* (draining: after our Close, what this end says is dropped) */
    tunnel_side *o = &t->sides[!s->side];
    int close_after = 0;
    if (t->websocket) {
        size_t k = gw_ws_track_bytes(&s->trk, p, n, t->state == T_DRAINING);
        if (t->state == T_DRAINING && gw_ws_at_boundary(&s->trk)) {
            n = k; /* up to the frame's end; the Close follows it */
            close_after = 1;
        }
    }
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
    if (close_after)
        close_frame_to(s);
    if (r == 1 && t->state != T_CLOSING) { /* the other side is slow: stop reading this one
                                             until it drained */
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

/* ERR GW_ETIMEOUT: the end's connection gave up on a peer that took nothing of what was
 * queued to it (its send timeout). */
static void on_end(void *arg, int err)
{
    tunnel_side *s = arg;
    int client = s->side == SIDE_CLIENT;
    s->ended = 1;
    s->reading = 0;
    tunnel_close(s->t, err == GW_ETIMEOUT ? (client ? GW_TUNNEL_CLIENT_SEND_TIMEOUT
                                                    : GW_TUNNEL_UPSTREAM_SEND_TIMEOUT)
                       : s->t->state == T_DRAINING ? GW_TUNNEL_DRAIN
                       : client                     ? GW_TUNNEL_CLIENT_CLOSED
                                                    : GW_TUNNEL_UPSTREAM_CLOSED);
}

/* S's direction ends: a Close 1001 goes to the other end (masked towards the upstream, as a
 * client's frames are, with an unpredictable key: RFC 6455 §5.3), and what S still sends is
 * dropped. When S's own Close already passed, that one ended the direction: no second. */
static void close_frame_to(tunnel_side *s)
{
    gw_tunnel *t = s->t;
    tunnel_side *o = &t->sides[!s->side];
    s->close_sent = 1;
    if (s->trk.closed)
        return;
    uint8_t m[4] = { 0 };
    int masked = o->side == SIDE_UPSTREAM;
    if (masked && RAND_bytes(m, sizeof m) != 1) {
        ERR_clear_error();
        tunnel_close(t, GW_TUNNEL_DRAIN); /* no key to mask with: closed without the Close */
        return;
    }
    char f[8];
    size_t n = gw_ws_close_frame(f, WS_GOING_AWAY, masked,
                                 (uint32_t)m[0] << 24 | (uint32_t)m[1] << 16 | (uint32_t)m[2] << 8 | m[3]);
    uv_buf_t b = uv_buf_init(f, (unsigned)n);
    if (o->end.ops->write(o->end.conn, &b, 1) < 0)
        tunnel_close(t, GW_TUNNEL_DRAIN);
}

static void on_drain_grace(uv_timer_t *timer)
{
    tunnel_close(timer->data, GW_TUNNEL_DRAIN);
}

/* The server drains. A WebSocket is ended with its closing handshake: a Close 1001 ("going
 * away") to each end at its direction's next frame boundary (at once when between frames),
 * then the ends close, or DRAIN_GRACE_MS passes; any other tunnel is closed at once. */
static void on_shutdown(void *arg)
{
    tunnel_side *s = arg;
    gw_tunnel *t = s->t;
    if (!t->websocket) {
        tunnel_close(t, GW_TUNNEL_DRAIN);
        return;
    }
    if (t->state != T_OPEN)
        return;
    t->state = T_DRAINING;
    uv_timer_start(&t->timer, on_drain_grace, DRAIN_GRACE_MS, 0);
    for (int i = 0; i < 2 && t->state == T_DRAINING; i++)
        if (gw_ws_at_boundary(&t->sides[i].trk))
            close_frame_to(&t->sides[i]);
}

static const gw_end_cb tunnel_end_cb = {
    .on_data = on_data, .on_drain = on_drain, .on_end = on_end, .on_shutdown = on_shutdown,
};

/* The idle timeout: re-armed for what is left when bytes moved since it was set. */
static void on_idle_timer(uv_timer_t *timer)
{
    gw_tunnel *t = timer->data;
    uint64_t now = uv_now(timer->loop), idle = now - t->last_ms;
    if (t->state != T_OPEN)
        return;
    if (idle < t->idle_ms) {
        uv_timer_start(timer, on_idle_timer, t->idle_ms - idle, 0);
        return;
    }
    tunnel_close(t, GW_TUNNEL_IDLE);
}

gw_tunnel *gw_tunnel_start(uv_loop_t *loop, gw_end client, gw_end upstream, uint32_t idle_ms,
                           int websocket,
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
    t->websocket = websocket;
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
