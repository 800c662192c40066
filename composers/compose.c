/* compose.c — the composition engine (see compose.h).
 *
 * One cmp_run per composed request, freed in one place (run_free) after its timer handle
 * closed. Legs are internal GETs on pooled upstream connections; a leg ends exactly once
 * (leg_end), from its connection's callbacks, its timeout, or the run's end. When the run
 * ends every leg still out is aborted, so no callback can reach it afterwards.
 */
#include "composers/compose.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/gw_errors.h"
#include "http/request_id.h"
#include "composers/fetch.h"
#include "composers/json_check.h"
#include "composers/lookup.h"
#include "composers/template.h"
#include "composers/worker_int.h"

#define LEG_PATH_MAX 2048

typedef enum leg_state {
    LEG_WAITING,  /* dependencies not done yet */
    LEG_RUNNING,  /* fetch or wait under way */
    LEG_OK,       /* 2xx with valid JSON: json set */
    LEG_FAILED,   /* why set; status set when the upstream answered */
    LEG_SKIPPED,  /* a dependency failed or was skipped */
} leg_state;

typedef struct cmp_run cmp_run;

typedef struct cmp_leg {
    cmp_run *run;
    int index;
    leg_state state;
    cmp_fetch *fetch;       /* a plain leg */
    cmp_wait *wait;         /* a leg on a cached route */
    uint64_t started_ms;
    int status;
    char *body;             /* the answer as it came: spliced into the document */
    size_t len;
    json_t *json;
    const char *why;        /* "timeout", "connect failed", "upstream 5xx", ... */
    int timed_out;
    cmp_source source;
    const char *upstream;   /* which upstream (or "cache") answered */
} cmp_leg;

struct cmp_run {
    cmp_worker *w;
    gw_request *req;        /* NULL once the client went away */
    rt_table *table;
    const cmp_composition *c;
    cmp_params params;      /* values point into param_buf */
    char param_buf[1024];
    char client_ip[64];
    char request_id[72];
    gw_trace_ctx trace;     /* each leg is sent as a child span of the client's request */
    cmp_leg legs[CMP_MAX_LEGS];
    uv_timer_t timer;       /* the deadline */
    uint64_t deadline_at;
    int running;            /* legs out */
    int starting;           /* start_ready_legs on the stack: don't end the run under it */
    int ended;
};

static void run_end(cmp_run *r);
static void start_ready_legs(cmp_run *r);

static void report_outcome(const cmp_worker *w, cmp_outcome outcome)
{
    if (w->report.composition)
        w->report.composition(w->report.data, outcome);
}

/* ---- legs ---------------------------------------------------------------------------- */

static void leg_end(cmp_leg *l, leg_state st, const char *why)
{
    cmp_run *r = l->run;
    if (l->state != LEG_RUNNING)
        return;
    l->state = st;
    l->why = why;
    cmp_fetch_cancel(l->fetch);
    l->fetch = NULL;
    cmp_lookup_cancel(l->wait);
    l->wait = NULL;
    r->running--;
    double ms = (double)(uv_now(r->w->loop) - l->started_ms);
    cmp_report_leg(r->w, r->c->id, r->c->legs[l->index].name, ms);
    if (r->ended)
        return;
    if (st != LEG_OK && r->c->legs[l->index].required) {
        run_end(r); /* nothing to compose without it */
        return;
    }
    start_ready_legs(r);
}

/* Does another leg of the run read this one's answer? */
static int leg_is_read(const cmp_run *r, int index)
{
    for (int i = 0; i < r->c->n_legs; i++)
        if (r->c->legs[i].deps & (1u << index))
            return 1;
    return 0;
}

/* The answer of a leg, from the upstream, the cache, or a stale copy. */
static void leg_answer(cmp_leg *l, int status, const char *body, size_t len, cmp_source src,
                       const char *why, int timed_out, const char *upstream)
{
    l->status = status;
    l->source = src;
    l->upstream = upstream;
    l->timed_out = timed_out;
    if (status == 0) {
        leg_end(l, LEG_FAILED, why ? why : "failed");
        return;
    }
    /* the answer is kept as it came: spliced into the composed document, or kept for the
     * record of an error */
    l->body = malloc(len ? len : 1);
    if (!l->body) {
        leg_end(l, LEG_FAILED, "out of memory");
        return;
    }
    memcpy(l->body, body, len);
    l->len = len;
    if (status < 200 || status >= 300) {
        leg_end(l, LEG_FAILED, status >= 500 ? "upstream 5xx" : status == 404 ? "not found"
                                                                             : "upstream 4xx");
        return;
    }
    /* only an answer other legs read from ({leg.field}) is parsed; the others are checked
     * without being built */
    if (leg_is_read(l->run, l->index)) {
        l->json = json_loadb(l->body, len, 0, NULL);
        leg_end(l, l->json ? LEG_OK : LEG_FAILED, l->json ? NULL : "invalid JSON");
        return;
    }
    int valid = cmp_json_valid(l->body, len);
    leg_end(l, valid ? LEG_OK : LEG_FAILED, valid ? NULL : "invalid JSON");
}

static void on_leg_fetched(int status, const char *body, size_t len, const cmp_headers *hdrs,
                           const char *why, int timed_out, const char *upstream, void *arg)
{
    cmp_leg *l = arg;
    (void)hdrs; /* a leg's answer is spliced into a document: its headers are not kept */
    l->fetch = NULL;
    leg_answer(l, status, body, len, CMP_FROM_UPSTREAM, why, timed_out, upstream);
}

static void on_leg_looked_up(const cmp_answer *a, void *arg)
{
    cmp_leg *l = arg;
    l->wait = NULL;
    leg_answer(l, a->status, a->body, a->len, a->source, a->why, a->timed_out, a->upstream);
}

/* Expands the leg's URL and sends it: through the cache when its route says so. */
static void leg_start(cmp_run *r, cmp_leg *l)
{
    cmp_worker *w = r->w;
    const cmp_leg_spec *spec = &r->c->legs[l->index];
    json_t *answers[CMP_MAX_LEGS] = { 0 };
    for (int i = 0; i < r->c->n_legs; i++)
        answers[i] = r->legs[i].json;
    l->state = LEG_RUNNING;
    r->running++;
    l->started_ms = uv_now(w->loop);
    uint64_t left = r->deadline_at > l->started_ms ? r->deadline_at - l->started_ms : 1;
    uint32_t timeout = spec->timeout_ms < left ? spec->timeout_ms : (uint32_t)left;

    char url[LEG_PATH_MAX];
    if (cmp_expand(spec->url, &r->params, r->c->legs, answers, r->c->n_legs, url,
                          sizeof url) < 0) {
        leg_end(l, LEG_FAILED, "its URL refers to a value that is missing");
        return;
    }
    const char *qm = strchr(url, '?');
    gw_slice path = { url, qm ? (size_t)(qm - url) : strlen(url) };
    rt_match m;
    int cached = !qm && rt_table_match(r->table, GW_SLICE_LIT("GET"), path, &m) == 0 && m.route->cache;
    if (cached)
        l->wait = cmp_lookup_start(w, r->table, url, r->request_id, &r->trace, r->client_ip,
                                   timeout, on_leg_looked_up, l);
    if (!l->wait)
        l->fetch = cmp_fetch_start(w, r->table, url, r->request_id, &r->trace, r->client_ip,
                                   timeout, on_leg_fetched, l);
    if (!l->wait && !l->fetch)
        leg_end(l, LEG_FAILED, "out of memory");
}

/* Starts every waiting leg whose dependencies answered; skips those whose dependencies
 * failed; ends the run when nothing is left to wait for. */
static void start_ready_legs(cmp_run *r)
{
    if (r->starting)
        return; /* the outer call's loop picks it up */
    r->starting = 1;
    int progress = 1;
    while (progress && !r->ended) {
        progress = 0;
        for (int i = 0; i < r->c->n_legs && !r->ended; i++) {
            cmp_leg *l = &r->legs[i];
            if (l->state != LEG_WAITING)
                continue;
            unsigned deps = r->c->legs[i].deps;
            int blocked = 0, failed = 0;
            for (int j = 0; j < r->c->n_legs; j++) {
                if (!(deps & (1u << j)))
                    continue;
                leg_state ds = r->legs[j].state;
                if (ds == LEG_WAITING || ds == LEG_RUNNING)
                    blocked = 1;
                else if (ds != LEG_OK)
                    failed = 1;
            }
            if (failed) {
                l->state = LEG_SKIPPED;
                l->why = "a leg it depends on failed";
                progress = 1;
                if (r->c->legs[i].required) {
                    r->starting = 0;
                    run_end(r);
                    return;
                }
            } else if (!blocked) {
                leg_start(r, l);
                progress = 1;
            }
        }
    }
    r->starting = 0;
    if (!r->ended && r->running == 0)
        run_end(r);
}

/* ---- the deadline ---------------------------------------------------------------------- */

static void on_deadline(uv_timer_t *t)
{
    run_end(t->data);
}

/* ---- the answer ---------------------------------------------------------------------- */

static void run_free(uv_handle_t *h)
{
    cmp_run *r = h->data;
    for (int i = 0; i < r->c->n_legs; i++) {
        free(r->legs[i].body);
        json_decref(r->legs[i].json);
    }
    rt_table_unref(r->table);
    free(r);
}

static void answer_error(gw_request *req, const cmp_leg_spec *spec, const cmp_leg *l)
{
    char msg[256];
    int status;
    if (l->state == LEG_FAILED && l->status == 404) {
        status = 404;
        snprintf(msg, sizeof msg, "%s not found", spec->name);
    } else if (l->state == LEG_FAILED && l->status >= 400 && l->status < 500) {
        status = l->status;
        snprintf(msg, sizeof msg, "%s: upstream answered %d", spec->name, l->status);
    } else if (l->timed_out || l->state == LEG_WAITING || l->state == LEG_RUNNING) {
        status = 504;
        snprintf(msg, sizeof msg, "%s: %s", spec->name, l->why ? l->why : "deadline");
    } else {
        status = 502;
        snprintf(msg, sizeof msg, "%s: %s", spec->name, l->why ? l->why : "failed");
    }
    gw_response_error(req, status, msg);
}

/* The composed document, spliced from the legs' answers as they came (each checked to be
 * one JSON value) — no parse-and-print of the whole:
 *   {"order":{...},"user":null,"shipment":{...},"degraded":["user"],"stale":[...]}
 * Leg names are [A-Za-z0-9_-]: they need no escaping. */
static void compose_answer(cmp_run *r, gw_request *req)
{
    size_t cap = 64;
    for (int i = 0; i < r->c->n_legs; i++)
        cap += 2 * strlen(r->c->legs[i].name) + 16 + (r->legs[i].state == LEG_OK ? r->legs[i].len : 4);
    char *out = malloc(cap);
    if (!out) {
        report_outcome(r->w, CMP_COMPOSED_FAILED);
        gw_response_error(req, 500, "out of memory");
        return;
    }
    char hdr[512] = "";
    size_t n = 0, hl = 0;
    int n_degraded = 0, n_stale = 0;
#define PUT(p, len) (memcpy(out + n, (p), (len)), n += (len))
#define PUTS(s) PUT((s), strlen(s))
    PUTS("{");
    for (int i = 0; i < r->c->n_legs; i++) {
        const cmp_leg *l = &r->legs[i];
        PUTS(i ? ",\"" : "\"");
        PUTS(r->c->legs[i].name);
        PUTS("\":");
        if (l->state == LEG_OK)
            PUT(l->body, l->len);
        else
            PUTS("null");
    }
    PUTS(",\"degraded\":[");
    for (int i = 0; i < r->c->n_legs; i++) {
        const cmp_leg *l = &r->legs[i];
        const char *name = r->c->legs[i].name;
        /* an optional part that does not exist (404) is null, not degraded */
        if (l->state == LEG_OK || (l->state == LEG_FAILED && l->status == 404))
            continue;
        PUTS(n_degraded ? ",\"" : "\"");
        n_degraded++;
        PUTS(name);
        PUTS("\"");
        if (r->w->report.leg_degraded)
            r->w->report.leg_degraded(r->w->report.data, r->c->id, name);
        hl += (size_t)snprintf(hdr + hl, sizeof hdr - hl, "%s%s", hl ? "," : "", name);
        if (hl >= sizeof hdr)
            hl = sizeof hdr - 1;
    }
    PUTS("]");
    for (int i = 0; i < r->c->n_legs; i++) {
        if (r->legs[i].state != LEG_OK || r->legs[i].source != CMP_FROM_STALE)
            continue;
        PUTS(n_stale ? ",\"" : ",\"stale\":[\"");
        n_stale++;
        PUTS(r->c->legs[i].name);
        PUTS("\"");
    }
    if (n_stale)
        PUTS("]");
    PUTS("}");
#undef PUTS
#undef PUT
    char extra[600] = "";
    if (hl)
        snprintf(extra, sizeof extra, "X-Composition-Degraded: %s\r\n", hdr);
    report_outcome(r->w, n_degraded ? CMP_COMPOSED_DEGRADED : CMP_COMPOSED_OK);
    gw_response_simple(req, 200, "application/json", out, n, extra);
    free(out);
}

static void run_end(cmp_run *r)
{
    if (r->ended)
        return;
    r->ended = 1;
    /* legs still out are cut: no callback follows */
    for (int i = 0; i < r->c->n_legs; i++) {
        cmp_leg *l = &r->legs[i];
        if (l->state == LEG_RUNNING) {
            cmp_fetch_cancel(l->fetch);
            l->fetch = NULL;
            cmp_lookup_cancel(l->wait);
            l->wait = NULL;
            l->state = LEG_FAILED;
            l->timed_out = 1;
            l->why = "deadline";
        }
    }
    uv_timer_stop(&r->timer);
    gw_request *req = r->req;
    if (req) {
        req->data = NULL;
        r->req = NULL;
        /* a required leg missing, or a 4xx other than 404 anywhere, is the answer */
        const cmp_leg *bad = NULL;
        int bad_i = -1;
        for (int i = 0; i < r->c->n_legs && !bad; i++) {
            const cmp_leg *l = &r->legs[i];
            int passthrough = l->state == LEG_FAILED && l->status >= 400 && l->status < 500 &&
                              l->status != 404;
            if ((r->c->legs[i].required && l->state != LEG_OK) || passthrough) {
                bad = l;
                bad_i = i;
            }
        }
        if (bad) {
            report_outcome(r->w, CMP_COMPOSED_FAILED);
            answer_error(req, &r->c->legs[bad_i], bad);
        } else {
            compose_answer(r, req);
        }
    }
    uv_close((uv_handle_t *)&r->timer, run_free);
}

/* ---- entry points -------------------------------------------------------------------- */

static void run_start(cmp_run *r, uint32_t deadline_ms)
{
    for (int i = 0; i < r->c->n_legs; i++) {
        r->legs[i].run = r;
        r->legs[i].index = i;
    }
    uv_timer_init(r->w->loop, &r->timer);
    r->timer.data = r;
    r->deadline_at = uv_now(r->w->loop) + deadline_ms;
    uv_timer_start(&r->timer, on_deadline, deadline_ms, 0);
    r->req->data = r;
    start_ready_legs(r);
}

void cmp_compose_start(cmp_worker *w, rt_table *table, gw_request *req, const cmp_composition *c,
                       const cmp_params *params)
{
    cmp_run *r = calloc(1, sizeof *r);
    if (!r) {
        gw_response_error(req, 500, "out of memory");
        return;
    }
    r->w = w;
    r->req = req;
    r->c = c;
    rt_table_ref(table);
    r->table = table;
    /* the head's slices die with the request buffer: copy what the legs need */
    size_t at = 0;
    r->params.n = params->n;
    for (int i = 0; i < params->n; i++) {
        size_t vn = params->values[i].n;
        if (at + vn > sizeof r->param_buf)
            vn = 0;
        memcpy(r->param_buf + at, params->values[i].p, vn);
        r->params.names[i] = params->names[i]; /* these point into the spec */
        r->params.values[i] = (gw_slice){ r->param_buf + at, vn };
        at += vn;
    }
    snprintf(r->client_ip, sizeof r->client_ip, "%s", req->client_addr);
    snprintf(r->request_id, sizeof r->request_id, "%s", req->request_id);
    gw_trace_ctx_from(&r->trace, &req->trace, req->headers, req->n_headers);
    run_start(r, c->deadline_ms);
}

/* ---- the handler --------------------------------------------------------------------- */

/* Compositions are GETs: a body is never pulled, so no bytes arrive here, and the end of
 * one changes nothing. */
static void compose_on_body(gw_request *req, const char *p, size_t n)
{
    (void)req, (void)p, (void)n;
}

static void compose_on_body_end(gw_request *req)
{
    (void)req;
}

/* The answer leaves in one piece (gw_response_simple): nothing waits for a drain. */
static void compose_on_drain(gw_request *req)
{
    (void)req;
}

static void compose_on_abort(gw_request *req, int err)
{
    (void)err;
    cmp_run *r = req->data;
    if (!r)
        return; /* answered already */
    req->data = NULL;
    r->req = NULL; /* no answer; the legs are cut and the run freed */
    run_end(r);
}

const gw_handler cmp_compose_handler = {
    .on_request = NULL,
    .on_body = compose_on_body,
    .on_body_end = compose_on_body_end,
    .on_drain = compose_on_drain,
    .on_abort = compose_on_abort,
};

/* ---- the worker ---------------------------------------------------------------------- */

void cmp_worker_upstream_changed(cmp_worker *w, int ui)
{
    if (!w || ui < 0 || ui >= w->n_upstreams)
        return;
    const gw_upstream_conf *uc = w->upstreams[ui].conf;
    w->breakers[ui].threshold = uc->breaker_failures ? uc->breaker_failures : 5;
    w->breakers[ui].cooldown_ms = uc->breaker_cooldown_ms;
}

cmp_worker *cmp_worker_new(uv_loop_t *loop, const cmp_spec *spec, const cmp_conf *conf,
                           gw_upstream *upstreams, int n_upstreams, const cmp_report *report)
{
    cmp_worker *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->loop = loop;
    w->spec = spec;
    w->conf = *conf;
    w->conf.redis = NULL;
    w->conf.redis_topo = NULL;
    if (report)
        w->report = *report;
    w->upstreams = upstreams;
    w->n_upstreams = n_upstreams < GW_MAX_UPSTREAMS ? n_upstreams : GW_MAX_UPSTREAMS;
    for (int i = 0; i < w->n_upstreams; i++) {
        const gw_upstream_conf *uc = upstreams[i].conf;
        atomic_int *mirror = w->report.breaker_mirror ? w->report.breaker_mirror(w->report.data, i)
                                                      : NULL;
        cmp_breaker_init(&w->breakers[i], uc->breaker_failures, uc->breaker_cooldown_ms, mirror);
    }
    gw_queue_init(&w->inflight);
    gw_queue_init(&w->detached);
    cmp_cache_conf cc = {
        .redis = conf->redis && conf->redis[0] ? conf->redis : NULL,
        .topology = conf->redis_topo,
        .timeout_ms = conf->cache.timeout_ms,
        .lru_entries = conf->cache.lru_entries,
        .prefix = "gw:",
    };
    w->cache = cmp_cache_new(loop, &cc);
    if (!w->cache) {
        free(w);
        return NULL;
    }
    return w;
}

void cmp_worker_close(cmp_worker *w)
{
    if (!w)
        return;
    cmp_lookup_shutdown(w);
    if (w->cache) {
        cmp_cache_close(w->cache);
        w->cache = NULL;
    }
}

void cmp_worker_free(cmp_worker *w)
{
    free(w);
}
