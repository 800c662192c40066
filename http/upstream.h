/* upstream.h — the client side of HTTP/1.1 towards upstreams: per-worker endpoint sets with
 * round robin and down-marking, keep-alive pools, and one connection state machine
 * (connect -> write request -> read response head -> body -> back to the pool or close).
 *
 * The owner of an exchange (the proxy) gets exactly one of on_head/on_error first, then
 * on_body* and on_done, or on_error. After gw_uconn_release/abort it gets nothing more.
 */
#ifndef GW_UPSTREAM_H
#define GW_UPSTREAM_H

#include <stdint.h>
#include <uv.h>

#include "http/upstream_conf.h"
#include "http/queue.h"
#include "http/server.h"

#define GW_UPSTREAM_MAX_HEADERS 128

typedef struct gw_uconn gw_uconn;
typedef struct gw_upstream gw_upstream;
typedef struct gw_oneshot_set gw_oneshot_set;

typedef struct gw_endpoint_set gw_endpoint_set;

typedef struct gw_endpoint {
    gw_upstream *up;
    gw_endpoint_set *set;    /* the definition generation it belongs to (upstream_pool.c) */
    int index;
    const gw_endpoint_conf *conf;
    /* its set's copy of the upstream's definition: timeouts, pool and down_ms of a
     * connection come from the definition it was opened under, even after a change */
    const gw_upstream_conf *def;
    uint64_t down_until_ms;  /* uv_now() time before which the endpoint is skipped */
    gw_queue idle;           /* pooled keep-alive connections */
    uint32_t n_idle;
    uint32_t n_background;   /* connections held by background one-shot exchanges (oneshot.h) */
    uint32_t n_conns;        /* connections open to it, pooled ones included */
    struct ssl_session_st *tls_session; /* upstreams.NAME.tls: the newest session, to resume */
} gw_endpoint;

struct gw_upstream {
    uv_loop_t *loop;
    const gw_upstream_conf *conf; /* the current set's copy of the definition */
    /* The name, in storage that lives as long as the worker: a request that names its
     * upstream (gw_request.upstream_name, read when the request is reported) may outlive
     * the endpoint set whose conf it was proxied with. */
    char name[GW_NAME_MAX];
    gw_endpoint *endpoints;       /* the current set's endpoints */
    int n_endpoints;
    gw_endpoint_set *set;         /* the current definition (gw_upstream_reconfigure) */
    gw_queue retired;             /* replaced sets whose connections are still finishing */
    unsigned rr;
    gw_oneshot_set *oneshots; /* this worker's one-shot exchanges (oneshot.h); set by the worker */
    int closing;             /* shutting down: released connections close instead of pooling */
    /* counters for /metrics */
    uint64_t n_connects, n_reuses, n_connect_errors;
};

typedef struct gw_uconn_cb {
    /* The connection can take the request (connected, or taken from the pool). */
    void (*on_ready)(gw_uconn *u, void *data);
    /* The response head. headers are slices into the connection's buffer, valid during the
     * call. body_len: Content-Length, or -1 (chunked or until close). */
    void (*on_head)(gw_uconn *u, void *data, int status, const gw_header *headers, int n,
                    int64_t body_len);
    void (*on_body)(gw_uconn *u, void *data, const char *p, size_t n);
    void (*on_done)(gw_uconn *u, void *data);
    /* The request write queue drained after gw_uconn_write returned 1. */
    void (*on_drain)(gw_uconn *u, void *data);
    /* Failure. err: GW_ECONNECT, GW_ETIMEOUT, GW_ERESET, GW_EUPSTREAM_PROTO, ...
     * phase: where it happened (GW_UPHASE_*). The connection is closed already. */
    void (*on_error)(gw_uconn *u, void *data, int err, int phase);
} gw_uconn_cb;

enum {
    GW_UPHASE_CONNECT = 0,  /* nothing was sent: always safe to retry elsewhere */
    GW_UPHASE_REQUEST = 1,  /* request (maybe) sent, not one response byte came back */
    GW_UPHASE_RESPONSE = 2, /* response bytes arrived */
};

/* With conf->tls, builds the client SSL_CTX (reads the CA file: start-up only); a failure
 * is printed and the upstream's connections then fail (GW_ECONNECT). */
void gw_upstream_init(gw_upstream *up, uv_loop_t *loop, const gw_upstream_conf *conf);
/* Frees what gw_upstream_init built (after the loop ran its last callbacks). */
void gw_upstream_free(gw_upstream *up);
/* A live definition change: the endpoints and settings become a copy of CONF (NULL: the
 * upstream was removed; its settings stay, with no endpoint). The old endpoints' pooled
 * connections close now; the ones carrying a request finish it and then close instead of
 * going back to a pool; the old set is freed when its last connection is gone. */
int gw_upstream_reconfigure(gw_upstream *up, const gw_upstream_conf *conf);
/* Replaced definitions still alive (connections finishing), for tests and metrics. */
int gw_upstream_retired_count(const gw_upstream *up);
/* upstream_conn.c / oneshot.c: an endpoint of a replaced set lost a connection or a
 * background exchange; frees the set once nothing uses it. */
void gw__endpoint_released(gw_endpoint *ep);
/* The definition and client SSL_CTX (NULL without tls) of EP's own generation: a connection
 * of a retired set keeps the settings it was started with. */
const gw_upstream_conf *gw__endpoint_upstream_conf(const gw_endpoint *ep);
struct ssl_ctx_st *gw__endpoint_tls_ctx(const gw_endpoint *ep);
/* Whether EP's connections may go back to its pool (its set is current, not shutting down).
 * Inline: asked on every release of a connection. */
static inline int gw__endpoint_pools(const gw_endpoint *ep)
{
    return !ep->up->closing && ep->set == ep->up->set;
}
/* Shutdown: closes pooled connections, and from now on a released connection closes
 * instead of going back to the pool (an idle timer would keep the loop alive). */
void gw_upstream_close_idle(gw_upstream *up);

/* Picks an endpoint by round robin, skipping ones marked down and EXCLUDE (or -1).
 * Returns NULL when none is usable. */
gw_endpoint *gw_upstream_pick(gw_upstream *up, int exclude);
void gw_endpoint_mark_down(gw_endpoint *ep);

/* Starts an exchange on EP: a pooled connection when there is one (*reused = 1; *out is
 * set, then on_ready is called before this returns, and may already have ended the owner's
 * request), else a new connection (on_ready or on_error later). */
int gw_uconn_open(gw_endpoint *ep, const gw_uconn_cb *cb, void *data, gw_uconn **out, int *reused);
/* The same on a new connection, never a pooled one (on_ready or on_error later). */
int gw_uconn_open_new(gw_endpoint *ep, const gw_uconn_cb *cb, void *data, gw_uconn **out);
/* Request bytes, in order. Returns 0, 1 when the upstream is slow (wait for on_drain), <0. */
int gw_uconn_write(gw_uconn *u, uv_buf_t *bufs, unsigned n);
/* The request asks for an upgrade: a 101 is then an answer (on_head with status 101, from
 * which the owner calls gw_uconn_upgrade or aborts), not a protocol error. */
void gw_uconn_allow_upgrade(gw_uconn *u);
/* From on_head(101): the connection becomes a byte stream (http/end.h) that the caller
 * binds; it is never pooled, and the owner's callbacks end here. 0 or GW_EINVAL. */
struct gw_end;
int gw_uconn_upgrade(gw_uconn *u, struct gw_end *out);
/* Closes this thread's upgraded connections still open (a worker's end). */
void gw_uconn_close_upgraded(void);
/* Starts reading the response. is_head: the request was HEAD (no body follows). */
void gw_uconn_read_response(gw_uconn *u, int is_head);
void gw_uconn_pause(gw_uconn *u);   /* client slow: stop reading the upstream */
void gw_uconn_resume(gw_uconn *u);
/* The owner is done: back to the pool if the response ended cleanly, both sides allow
 * keep-alive and the upstream is not closing, else closed. No callback follows. */
void gw_uconn_release(gw_uconn *u);
/* Close now, whatever the state. No callback follows. */
void gw_uconn_abort(gw_uconn *u);
gw_endpoint *gw_uconn_endpoint(const gw_uconn *u);
int gw_uconn_reused(const gw_uconn *u); /* it carried an earlier request */
gw_uconn *gw__uconn_from_pool_node(gw_queue *q); /* for upstream_pool.c */
/* Frees this thread's spare read buffers: call when a worker's loop has ended. */
void gw_uconn_thread_cleanup(void);

#endif
