/* h2_int.h — what h2.c (framing, streams, timers) and h2_response.c (the response calls)
 * share: a connection's session and its streams. Internal to those two files. */
#ifndef GW_H2_INT_H
#define GW_H2_INT_H

#include <nghttp2/nghttp2.h>

#include "http/client_int.h"
#include "http/h2.h"

enum {
    S_HEAD_DONE = 1 << 0,     /* the request head is complete */
    S_HOLD = 1 << 1,          /* head without length or END_STREAM: wait to know if a body comes */
    S_DISPATCHED = 1 << 2,    /* given to the handler (or answered by the gateway) */
    S_HANDLER = 1 << 3,       /* the handler holds req: on_abort is owed if it is cut */
    S_BODY_PULL = 1 << 4,
    S_BODY_DONE = 1 << 5,     /* the client's END_STREAM */
    S_BODY_END_SENT = 1 << 6,
    S_RESP_BEGUN = 1 << 7,
    S_RESP_ENDED = 1 << 8,    /* no more response bytes come: EOF after those buffered */
    S_RESP_NOBODY = 1 << 9,
    S_DEFERRED = 1 << 10,     /* the data source waits for bytes (nghttp2_session_resume_data) */
    S_WANT_DRAIN = 1 << 11,
    S_CLOSED = 1 << 12,       /* the stream is gone: every call fails */
    S_READY = 1 << 13,        /* in h->ready */
    S_CUT = 1 << 14,          /* reset by us: the response was not completed */
    S_DISCARD = 1 << 15,      /* answered before its body ended: the rest is thrown away */
};

typedef struct h2_stream {
    struct gw_h2 *h;
    int32_t id;
    unsigned flags;
    gw_queue node;            /* h->streams */
    gw_queue ready;           /* h->ready: dispatch, body delivery or on_drain waits */
    int fail_status;          /* the head is refused: answered with this */
    const char *fail_reason;
    size_t head_bytes;        /* header list size (RFC 9113 §6.5.2 counting) */
    int n_cookie;
    char *arena;              /* the head's names and values (slices point here) */
    size_t arena_len, arena_cap;
    char *in;                 /* request body bytes the handler has not taken yet */
    size_t in_len, in_off, in_cap;
    uint64_t body_read;
    char *out;                /* response body bytes not yet framed */
    size_t out_len, out_off, out_cap;
    int64_t resp_left;        /* Content-Length bytes still to come; -1: not counted */
    uint64_t last_in;         /* uv_now ms: the head began, or the body last moved either way */
    uint64_t out_since;       /* uv_now ms: unsent response bytes last made progress */
    int err;                  /* what its end reports when we cut it (0: from the close) */
    gw_request req;           /* last (only its part before headers[] is cleared) */
} h2_stream;

typedef struct gw_h2 {
    gw_client *c;
    nghttp2_session *session;
    gw_queue streams;
    gw_queue ready;
    int n_streams;
    uint64_t resets;          /* RST_STREAM received (nghttp2 limits their rate) */
    uint64_t idle_since;      /* uv_now ms: the connection began, or its last stream ended */
    unsigned in_run : 1, rerun : 1, draining : 1, closed : 1, fatal : 1;
    char *out;                /* frames gathered for one write */
    size_t out_len;
} gw_h2;

/* Runs the connection's loop soon (or again, when inside it). */
void gw__h2_post(gw_h2 *h);
/* Room for N more bytes in a growable buffer (*p, len, *cap): 0, or -1 (no memory). */
int gw__h2_buf_room(char **p, size_t len, size_t *cap, size_t n, size_t min);
/* The stream is reset (CODE) and takes no more response bytes; a handler that holds req
 * keeps it until on_abort (from on_stream_close) and is not called otherwise meanwhile. */
void gw__h2_stream_cut(h2_stream *s, uint32_t code);

static inline int stream_gone(const h2_stream *s)
{
    return (s->flags & S_CLOSED) || s->h->c->state == CS_CLOSING;
}

#endif
