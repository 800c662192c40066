/* tunnel.h — a tunnel after an HTTP/1.1 upgrade: two ends (end.h; the client's and the
 * upstream's connection, each over a socket or TLS) and the bytes piped between them, both
 * ways, with backpressure: an end is read only while the other end's write queue is under
 * its high-water mark (read stopped until on_drain), so a tunnel holds at most a read buffer
 * and a write queue's worth per direction, however fast one side sends.
 *
 * States: OPEN (both ends read, each as its peer's queue allows) -> CLOSING (each end asked
 * to close: what was queued to it is flushed, then TLS close_notify and FIN; the timer
 * handle closing) -> freed, in one place (tunnel_on_timer_close). Into CLOSING: one end's
 * peer closed or failed (the other end gets what was queued to it, then its close), the
 * idle timeout (no byte either way for idle_ms), an end's send timeout (its connection
 * closed with GW_ETIMEOUT: it took none of what was queued to it for that long; bytes the
 * other way do not keep such a tunnel open), the server's drain (a WebSocket first
 * goes DRAINING: a Close 1001 to each end at its next frame boundary, then CLOSING when an
 * end closes or after a second; any other protocol is closed at once). */
#ifndef GW_TUNNEL_H
#define GW_TUNNEL_H

#include <stdint.h>
#include <uv.h>

#include "http/end.h"

typedef struct gw_tunnel gw_tunnel;

enum gw_tunnel_close_reason {
    GW_TUNNEL_CLIENT_CLOSED,   /* the client closed (or its connection failed) */
    GW_TUNNEL_UPSTREAM_CLOSED, /* the upstream closed (or failed) */
    GW_TUNNEL_IDLE,            /* tunnel idle timeout */
    GW_TUNNEL_DRAIN,           /* the server drained */
    GW_TUNNEL_CLIENT_SEND_TIMEOUT,   /* the client took none of what was queued to it for
                                        limits.send_timeout_ms */
    GW_TUNNEL_UPSTREAM_SEND_TIMEOUT, /* the upstream took none of what was queued to it for
                                        its send_timeout_ms */
    GW_TUNNEL_REASONS
};

typedef struct gw_tunnel_stats {
    uint64_t bytes_up, bytes_down; /* client -> upstream, upstream -> client */
    uint64_t duration_ms;
    enum gw_tunnel_close_reason reason;
} gw_tunnel_stats;

/* Binds CLIENT and UPSTREAM and starts piping. WEBSOCKET: the bytes are WebSocket frames
 * (followed, so that a drain ends them with Close frames). ON_CLOSED (may be NULL) is called
 * once, when the tunnel begins closing, with what it carried. NULL when out of memory (then
 * both ends are closed). */
gw_tunnel *gw_tunnel_start(uv_loop_t *loop, gw_end client, gw_end upstream, uint32_t idle_ms,
                           int websocket,
                           void (*on_closed)(const gw_tunnel_stats *st, void *data), void *data);

#endif
