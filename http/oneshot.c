/* oneshot.c — one-shot upstream exchanges and their per-worker set (see oneshot.h).
 * A gw_oneshot is freed in one place, os_free, after its timer handle closed; its result is
 * set once (os_end) and delivered once (os_deliver). */
#include "http/oneshot.h"

#include <stdlib.h>
#include <string.h>

#include "http/gw_errors.h"

typedef enum oneshot_state {
    OS_RUNNING, /* in set->all; u set while the connection is ours; timer at the deadline */
    OS_ENDED,   /* in set->all; result set, u NULL; timer at 0: the callback is due */
    OS_GONE,    /* out of the set (delivered or cancelled); timer closing; nothing else set */
} oneshot_state;

struct gw_oneshot {
    gw_queue node;      /* in set->all while RUNNING or ENDED */
    gw_oneshot_set *set;
    gw_endpoint *ep;
    gw_uconn *u;
    uv_timer_t timer;
    oneshot_state state;
    int counted;        /* holds one of set->n_background and ep->n_background */
    int is_head;
    char *req;
    size_t req_len;
    size_t body_max;
    char *body;
    size_t len, cap;
    const char *const *keep; /* header names to copy (NULL: none) */
    char *hdrs;              /* the kept header lines, malloc'd at the head */
    gw_oneshot_result res;
    gw_oneshot_cb cb;
    void *arg;
};

const char *gw_oneshot_skip_name(int skip)
{
    switch (skip) {
    case GW_ONESHOT_SKIP_IN_FLIGHT: return "in_flight";
    case GW_ONESHOT_SKIP_ENDPOINT: return "endpoint";
    case GW_ONESHOT_SKIP_DRAINING: return "draining";
    default: return "other";
    }
}

void gw_oneshot_set_init(gw_oneshot_set *set, uv_loop_t *loop, uint32_t max_in_flight,
                         uint32_t max_conns_per_endpoint)
{
    memset(set, 0, sizeof *set);
    set->loop = loop;
    gw_queue_init(&set->all);
    set->max_in_flight = max_in_flight;
    set->max_conns_per_endpoint = max_conns_per_endpoint;
}

static void os_free(uv_handle_t *h)
{
    gw_oneshot *o = h->data;
    free(o->req);
    free(o->body);
    free(o->hdrs);
    free(o);
}

/* The background counts follow the connection: given back when the exchange ends. */
static void uncount(gw_oneshot *o)
{
    if (!o->counted)
        return;
    o->counted = 0;
    o->ep->n_background--;
    o->set->n_background--;
    gw__endpoint_released(o->ep);
}

static void check_empty(gw_oneshot_set *set)
{
    if (set->n_all || !set->on_empty)
        return;
    void (*cb)(gw_oneshot_set *, void *) = set->on_empty;
    set->on_empty = NULL;
    cb(set, set->on_empty_data);
}

/* Out of the set; the handle closes and frees. */
static void os_unlink(gw_oneshot *o)
{
    gw_queue_remove(&o->node);
    o->set->n_all--;
    o->state = OS_GONE;
    uv_timer_stop(&o->timer);
    uv_close((uv_handle_t *)&o->timer, os_free);
}

static void os_deliver(gw_oneshot *o)
{
    gw_oneshot_set *set = o->set;
    os_unlink(o);
    if (!o->res.too_big && o->len) {
        o->res.body = o->body;
        o->res.len = o->len;
    }
    o->cb(o, &o->res, o->arg);
    check_empty(set);
}

static void on_due(uv_timer_t *t)
{
    os_deliver(t->data);
}

/* Sets the result once, closes the connection if it is still ours, and schedules the
 * callback on the next loop turn: never inside a caller's call. */
static void os_end(gw_oneshot *o, int err)
{
    if (o->state != OS_RUNNING)
        return;
    o->state = OS_ENDED;
    o->res.err = err;
    if (o->u) {
        gw_uconn *u = o->u;
        o->u = NULL;
        gw_uconn_abort(u);
    }
    uncount(o);
    uv_timer_start(&o->timer, on_due, 0, 0);
}

static void on_deadline(uv_timer_t *t)
{
    os_end(t->data, GW_ETIMEOUT);
}

/* ---- the connection's callbacks ------------------------------------------------------ */

static void os_on_ready(gw_uconn *u, void *data)
{
    gw_oneshot *o = data;
    uv_buf_t b = uv_buf_init(o->req, (unsigned)o->req_len);
    if (gw_uconn_write(u, &b, 1) < 0) {
        os_end(o, GW_ERESET);
        return;
    }
    gw_uconn_read_response(u, o->is_head);
}

static int kept(const char *const *keep, gw_slice name)
{
    for (; *keep; keep++)
        if (gw_slice_ieq(name, *keep))
            return 1;
    return 0;
}

/* Copies the kept headers in one allocation sized for them, at most GW_ONESHOT_HEADERS_MAX
 * bytes and GW_ONESHOT_HEADERS_LINES lines; what does not fit is dropped and flagged. Two
 * passes with the same selection: size, then copy. */
static void keep_headers(gw_oneshot *o, const gw_header *h, int n)
{
    size_t need = 0, at = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t used = 0;
        int lines = 0;
        for (int i = 0; i < n; i++) {
            if (!kept(o->keep, h[i].name))
                continue;
            size_t one = h[i].name.n + 2 + h[i].value.n + 2;
            if (used + one > GW_ONESHOT_HEADERS_MAX || lines == GW_ONESHOT_HEADERS_LINES) {
                o->res.headers_truncated = 1;
                continue;
            }
            used += one;
            lines++;
            if (pass == 0)
                continue;
            memcpy(o->hdrs + at, h[i].name.p, h[i].name.n);
            at += h[i].name.n;
            memcpy(o->hdrs + at, ": ", 2);
            at += 2;
            memcpy(o->hdrs + at, h[i].value.p, h[i].value.n);
            at += h[i].value.n;
            memcpy(o->hdrs + at, "\r\n", 2);
            at += 2;
        }
        need = used;
        if (pass == 0 && (!need || !(o->hdrs = malloc(need)))) {
            if (need)
                o->res.headers_truncated = 1; /* out of memory: none kept */
            return;
        }
    }
    o->res.headers = o->hdrs;
    o->res.headers_len = at;
}

static void os_on_head(gw_uconn *u, void *data, int status, const gw_header *h, int n,
                       int64_t body_len)
{
    gw_oneshot *o = data;
    (void)u;
    o->res.status = status;
    if (o->keep && !o->hdrs)
        keep_headers(o, h, n);
    if (!o->is_head && body_len > 0 && (uint64_t)body_len > o->body_max) {
        o->res.too_big = 1; /* no need to read what will not be kept */
        os_end(o, 0);
    }
}

static void os_on_body(gw_uconn *u, void *data, const char *p, size_t n)
{
    gw_oneshot *o = data;
    (void)u;
    if (o->len + n > o->body_max) {
        o->res.too_big = 1;
        os_end(o, 0);
        return;
    }
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 4096;
        while (cap < o->len + n)
            cap *= 2;
        if (cap > o->body_max)
            cap = o->body_max;
        char *nb = realloc(o->body, cap);
        if (!nb) {
            os_end(o, GW_ENOMEM);
            return;
        }
        o->body = nb;
        o->cap = cap;
    }
    memcpy(o->body + o->len, p, n);
    o->len += n;
}

static void os_on_done(gw_uconn *u, void *data)
{
    gw_oneshot *o = data;
    o->u = NULL;
    gw_uconn_release(u); /* back to the pool when the upstream allows it */
    os_end(o, 0);
}

static void os_on_drain(gw_uconn *u, void *data)
{
    (void)u, (void)data;
}

static void os_on_error(gw_uconn *u, void *data, int err, int phase)
{
    gw_oneshot *o = data;
    (void)u, (void)phase;
    o->u = NULL; /* closed already */
    os_end(o, err);
}

static const gw_uconn_cb oneshot_cb = {
    .on_ready = os_on_ready,
    .on_head = os_on_head,
    .on_body = os_on_body,
    .on_done = os_on_done,
    .on_drain = os_on_drain,
    .on_error = os_on_error,
};

/* ---- the API ------------------------------------------------------------------------- */

int gw_oneshot_start(gw_oneshot_set *set, gw_endpoint *ep, int klass, const char *req, size_t len,
                     int is_head, size_t body_max, uint32_t deadline_ms, gw_oneshot_cb cb,
                     void *arg, gw_oneshot **out, int *skip)
{
    return gw_oneshot_start_keep(set, ep, klass, req, len, is_head, body_max, deadline_ms, NULL,
                                 cb, arg, out, skip);
}

int gw_oneshot_start_keep(gw_oneshot_set *set, gw_endpoint *ep, int klass, const char *req,
                          size_t len, int is_head, size_t body_max, uint32_t deadline_ms,
                          const char *const *keep, gw_oneshot_cb cb, void *arg, gw_oneshot **out,
                          int *skip)
{
    *out = NULL;
    *skip = 0;
    if (set->closed || (klass == GW_ONESHOT_BACKGROUND && set->draining))
        *skip = GW_ONESHOT_SKIP_DRAINING;
    else if (klass == GW_ONESHOT_BACKGROUND && set->n_background >= set->max_in_flight)
        *skip = GW_ONESHOT_SKIP_IN_FLIGHT;
    else if (klass == GW_ONESHOT_BACKGROUND && ep->n_background >= set->max_conns_per_endpoint)
        *skip = GW_ONESHOT_SKIP_ENDPOINT;
    if (*skip)
        return -1;
    gw_oneshot *o = calloc(1, sizeof *o);
    if (!o)
        return GW_ENOMEM;
    o->req = malloc(len ? len : 1);
    if (!o->req) {
        free(o);
        return GW_ENOMEM;
    }
    memcpy(o->req, req, len);
    o->req_len = len;
    o->set = set;
    o->ep = ep;
    o->is_head = is_head;
    o->keep = keep;
    o->body_max = body_max;
    o->cb = cb;
    o->arg = arg;
    o->state = OS_RUNNING;
    uv_timer_init(set->loop, &o->timer);
    o->timer.data = o;
    gw_queue_insert_tail(&set->all, &o->node);
    set->n_all++;
    if (klass == GW_ONESHOT_BACKGROUND) {
        o->counted = 1;
        set->n_background++;
        ep->n_background++;
    }
    uv_timer_start(&o->timer, on_deadline, deadline_ms ? deadline_ms : 1, 0);
    *out = o;
    int reused, r;
    /* a pooled connection runs on_ready (and maybe os_end) inside the open: the callback
     * is deferred anyway */
    if ((r = gw_uconn_open(ep, &oneshot_cb, o, &o->u, &reused)) < 0) {
        o->u = NULL;
        os_end(o, r == GW_ENOMEM ? GW_ENOMEM : GW_ECONNECT);
    }
    return 0;
}

void gw_oneshot_cancel(gw_oneshot *o)
{
    if (!o || o->state == OS_GONE)
        return;
    if (o->u) {
        gw_uconn *u = o->u;
        o->u = NULL;
        gw_uconn_abort(u);
    }
    uncount(o);
    gw_oneshot_set *set = o->set;
    os_unlink(o);
    check_empty(set);
}

void gw_oneshot_set_drain(gw_oneshot_set *set)
{
    set->draining = 1;
}

void gw_oneshot_abort_all(gw_oneshot_set *set)
{
    set->draining = set->closed = 1;
    while (!gw_queue_empty(&set->all)) {
        gw_oneshot *o = GW_QUEUE_DATA(set->all.next, gw_oneshot, node);
        os_end(o, GW_ECLOSED); /* nothing when its answer had come */
        os_deliver(o);
    }
}

void gw_oneshot_set_on_empty(gw_oneshot_set *set, void (*cb)(gw_oneshot_set *, void *),
                             void *data)
{
    set->on_empty = cb;
    set->on_empty_data = data;
    check_empty(set);
}
