/* end.h — one end of a byte stream after an HTTP/1.1 upgrade (101): the client connection
 * (gw_request_upgrade, client_upgrade.c) or the upstream connection (gw_uconn_upgrade,
 * upstream_conn.c), each over its socket or its TLS transport. Whoever binds an end (the
 * gateway's tunnel, http/tunnel.h; mockd's WebSocket echo) gets its bytes and writes to it;
 * the end's connection stays the owner of its socket and frees itself.
 *
 * An end reads nothing until it is bound and read(1) is called. Bytes that came behind the
 * head (the client's first frames, an upstream's frames right after its 101) are delivered
 * first, from the loop, never from inside read(). After close() (or on_end) no callback
 * comes any more. */
#ifndef GW_END_H
#define GW_END_H

#include <stddef.h>
#include <uv.h>

#define GW_END_HIGH_WATER (64 * 1024) /* write returns 1 with more than this queued */

typedef struct gw_end_cb {
    /* Bytes read; P is valid during the call only (write it on: the unsent rest is copied). */
    void (*on_data)(void *arg, const char *p, size_t n);
    /* After write returned 1: the queue fell to half the high-water mark. */
    void (*on_drain)(void *arg);
    /* The peer closed (0) or failed (<0): nothing more is read. Call close() (bytes already
     * queued to this end are still sent if it can take them). */
    void (*on_end)(void *arg, int err);
    /* The server drains: finish soon, gracefully (NULL: the end is closed at once). */
    void (*on_shutdown)(void *arg);
} gw_end_cb;

typedef struct gw_end_ops {
    void (*bind)(void *conn, const gw_end_cb *cb, void *arg);
    /* 0, 1 (more than GW_END_HIGH_WATER queued: on_drain follows), or <0 (closed). */
    int (*write)(void *conn, uv_buf_t *bufs, unsigned n);
    void (*read)(void *conn, int on);
    /* What is queued is still sent (bounded by the connection's send timeout), then a clean
     * close: TLS close_notify, FIN. No callback after this. */
    void (*close)(void *conn);
    size_t (*queued)(const void *conn);
} gw_end_ops;

typedef struct gw_end {
    const gw_end_ops *ops;
    void *conn;
} gw_end;

#endif
