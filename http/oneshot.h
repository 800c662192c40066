/* oneshot.h — one-shot upstream exchanges: send a prepared request (head and body bytes) on
 * one endpoint, collect the answer (status, body up to a cap), one deadline for the whole
 * exchange, exactly one completion callback. Used for shadow copies (gateway/shadow.c) and
 * internal GETs (composers/fetch.c: composition legs, cached lookups, breaker probes).
 *
 * Every exchange belongs to its worker's gw_oneshot_set, which counts them, caps them and
 * aborts them all at shutdown. Two classes:
 *   GW_ONESHOT_BACKGROUND  no client waits for it (shadow copies). Refused when the set has
 *                          max_in_flight background exchanges, when the endpoint has
 *                          max_conns_per_endpoint background connections, or while the set
 *                          drains: a hung candidate then costs at most the caps in
 *                          descriptors, and shedding it never touches client traffic.
 *   GW_ONESHOT_REQUEST     a client is waiting for it (a composition leg, a lookup). Not
 *                          capped: as in nginx or Envoy, a client-facing leg is not shed
 *                          because shadows filled the background budget; it is bounded by
 *                          the client connections and its own deadline. Counted, and aborted
 *                          at shutdown like the others. Refused only once the set is closed.
 *
 * This file knows nothing of routes: callers pick the endpoint and build the request. */
#ifndef GW_ONESHOT_H
#define GW_ONESHOT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http/queue.h"
#include "http/upstream.h"

typedef struct gw_oneshot gw_oneshot;

enum { GW_ONESHOT_BACKGROUND = 0, GW_ONESHOT_REQUEST = 1 };

/* Why gw_oneshot_start refused (GW_ONESHOT_SKIP_*), for the callers' skip counters. */
enum {
    GW_ONESHOT_SKIP_IN_FLIGHT = 1, /* the set's background cap */
    GW_ONESHOT_SKIP_ENDPOINT = 2,  /* the endpoint's background connection cap */
    GW_ONESHOT_SKIP_DRAINING = 3,  /* the worker is shutting down */
};

typedef struct gw_oneshot_set {
    uv_loop_t *loop;
    gw_queue all;                 /* every gw_oneshot not yet delivered or cancelled */
    uint32_t n_all;
    uint32_t n_background;        /* background ones among them */
    uint32_t max_in_flight;       /* background exchanges; 0: none allowed */
    uint32_t max_conns_per_endpoint; /* background connections on one endpoint */
    int draining;                 /* no new background exchange */
    int closed;                   /* no new exchange at all (after gw_oneshot_abort_all) */
    void (*on_empty)(struct gw_oneshot_set *set, void *data); /* see gw_oneshot_set_on_empty */
    void *on_empty_data;
} gw_oneshot_set;

typedef struct gw_oneshot_result {
    int err;          /* 0: an answer came (status set); else GW_ETIMEOUT (the deadline),
                         GW_ECONNECT, GW_ERESET, GW_EUPSTREAM_PROTO, GW_ENOMEM, or GW_ECLOSED
                         (aborted at shutdown) */
    int status;       /* the upstream's status, 0 before the head came */
    int too_big;      /* err 0, status set, the body was over body_max: BODY is NULL */
    const char *body; /* valid during the callback; NULL when empty or too big */
    size_t len;
    /* The answer's headers named in the KEEP list given to gw_oneshot_start_keep, as
     * "Name: value\r\n" lines in the order received (NULL/0 when none or no list).
     * HEADERS_TRUNCATED: some kept header did not fit in GW_ONESHOT_HEADERS_MAX bytes or
     * GW_ONESHOT_HEADERS_LINES lines and was dropped (the caller must not rely on the set
     * being complete, e.g. must not cache the answer). Valid during the callback. */
    const char *headers;
    size_t headers_len;
    int headers_truncated;
} gw_oneshot_result;

#define GW_ONESHOT_HEADERS_MAX 4096 /* bytes of kept header lines, per exchange */
#define GW_ONESHOT_HEADERS_LINES 32

/* Called exactly once per started exchange (never from inside gw_oneshot_start), unless
 * gw_oneshot_cancel came first. The exchange is freed after it returns. */
typedef void (*gw_oneshot_cb)(gw_oneshot *o, const gw_oneshot_result *r, void *arg);

void gw_oneshot_set_init(gw_oneshot_set *set, uv_loop_t *loop, uint32_t max_in_flight,
                         uint32_t max_conns_per_endpoint);

/* Starts an exchange of class KLASS on EP: REQ (LEN bytes, copied) is the whole request;
 * IS_HEAD: it is a HEAD (no body follows). BODY_MAX caps the collected body; DEADLINE_MS
 * bounds the whole exchange. Returns 0 (*out set), GW_ENOMEM, or a refusal: -1 with
 * *skip set to GW_ONESHOT_SKIP_* (no callback follows a refusal). */
int gw_oneshot_start(gw_oneshot_set *set, gw_endpoint *ep, int klass, const char *req, size_t len,
                     int is_head, size_t body_max, uint32_t deadline_ms, gw_oneshot_cb cb,
                     void *arg, gw_oneshot **out, int *skip);
/* As gw_oneshot_start, and the answer's headers whose names (case-insensitive) are in KEEP
 * (NULL-terminated, static storage; NULL: none) are copied into the result. */
int gw_oneshot_start_keep(gw_oneshot_set *set, gw_endpoint *ep, int klass, const char *req,
                          size_t len, int is_head, size_t body_max, uint32_t deadline_ms,
                          const char *const *keep, gw_oneshot_cb cb, void *arg, gw_oneshot **out,
                          int *skip);
/* The owner gives up: the connection is closed, no callback follows. Safe on NULL. */
void gw_oneshot_cancel(gw_oneshot *o);

/* Shutdown, first step: no new background exchange (refused as GW_ONESHOT_SKIP_DRAINING). */
void gw_oneshot_set_drain(gw_oneshot_set *set);
/* Shutdown, last step: every exchange still there ends now, its callback called (err
 * GW_ECLOSED unless its answer had already come) before this returns; nothing new starts. */
void gw_oneshot_abort_all(gw_oneshot_set *set);
/* CB runs once, when the set has no exchange left (at once if it is empty now). */
void gw_oneshot_set_on_empty(gw_oneshot_set *set, void (*cb)(gw_oneshot_set *, void *),
                             void *data);

const char *gw_oneshot_skip_name(int skip); /* "in_flight", "endpoint", "draining" */

#endif
