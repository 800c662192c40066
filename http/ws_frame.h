/* ws_frame.h — WebSocket frame boundaries (RFC 6455 §5.2), for a tunnel that must close a
 * WebSocket cleanly: it follows each direction's frame headers (skipping payloads, no copy),
 * so that a Close frame can be put between two frames, never inside one. */
#ifndef GW_WS_FRAME_H
#define GW_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>

typedef struct gw_ws_track {
    uint8_t hdr[14];  /* the current frame's header bytes seen so far */
    uint8_t hdr_len;
    uint64_t left;    /* payload bytes of the current frame still to come */
    uint8_t closed;   /* a Close frame's header passed: the direction has ended (RFC 6455
                         §5.5.1), no second Close may follow it */
} gw_ws_track;

/* Follows N bytes of P. With STOP, returns as soon as a frame ends (fewer than N bytes
 * taken: the rest begins the next frame); else takes them all. Returns the bytes taken. */
size_t gw_ws_track_bytes(gw_ws_track *t, const char *p, size_t n, int stop);
/* Between two frames (or before the first). */
static inline int gw_ws_at_boundary(const gw_ws_track *t)
{
    return t->hdr_len == 0 && t->left == 0;
}
/* A Close frame with status CODE (1001 "going away": the gateway shuts down) into
 * out[8]: masked with MASK when it goes to a server (client frames are masked), else not.
 * Returns its length. */
size_t gw_ws_close_frame(char *out, uint16_t code, int masked, uint32_t mask);

#endif
