/* compose.c — the composition engine (see compose.h).
 *
 * One cmp_run per composed request, freed in one place (run_free) after its timer handle
 * closed. Legs are internal GETs on pooled upstream connections; a leg ends exactly once
 * (leg_end), from its connection's callbacks, its timeout, or the run's end. When the run
 * ends every leg still out is aborted, so no callback can reach it afterwards.
 */
#include "compose.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../gateway/gw_errors.h"
#include "../gateway/http1.h"
#include "../gateway/request_id.h"
#include "../routes/policy.h"
#include "template.h"

#define LEG_BODY_MAX (1 << 20)
#define LEG_PATH_MAX 2048
#define RUN_KIND 0x636d7072 /* "cmpr": tags req->data as a composition run */

typedef enum leg_state {
    LEG_WAITING,  /* dependencies not done yet */
    LEG_RUNNING,  /* request out (u may be NULL briefly while connecting) */
    LEG_OK,       /* 2xx with valid JSON: json set */
    LEG_FAILED,   /* why set; status set when the upstream answered */
    LEG_SKIPPED,  /* a dependency failed or was skipped */
} leg_state;

struct cmp_worker {
    uv_loop_t *loop;
    const cmp_spec *spec;
    const gw_config *cfg;
    gw_upstream *upstreams;
    gw_metrics *metrics;
    cmp_breaker breakers[GW_MAX_UPSTREAMS];
};

typedef struct cmp_run cmp_run;

typedef struct cmp_leg {
    cmp_run *run;
    int index;
    leg_state state;
    gw_uconn *u;
    int upstream;           /* index, -1 before routing */
    uint64_t started_ms, deadline_ms;
    int status;
    char *body;
    size_t len;
    json_t *json;
    const char *why;        /* "timeout", "connect failed", "upstream 503", ... */
    int timed_out;
    char *head;
    size_t head_len;
} cmp_leg;

struct cmp_run {
    int kind;               /* RUN_KIND */
    cmp_worker *w;
    gw_request *req;        /* NULL once the client went away */
    rt_table *table;
    const cmp_composition *c;
    cmp_params params;      /* values point into param_buf */
    char param_buf[1024];
    char client_ip[64];
    char request_id[72];
    cmp_leg legs[CMP_MAX_LEGS];
    uv_timer_t timer;
    uint64_t deadline_at;
    int running;            /* legs out */
    int starting;           /* start_ready_legs on the stack: don't end the run under it */
    int ended;
};

static void run_end(cmp_run *r);
static void start_ready_legs(cmp_run *r);
static void arm_timer(cmp_run *r);

/* ---- legs ---------------------------------------------------------------------------- */

static void leg_end(cmp_leg *l, leg_state st, const char *why)
{
    cmp_run *r = l->run;
    if (l->state != LEG_RUNNING)
        return;
    l->state = st;
    l->why = why;
    if (l->u) {
        gw_uconn_abort(l->u);
        l->u = NULL;
    }
    r->running--;
    double ms = (double)(uv_now(r->w->loop) - l->started_ms);
    gw_metrics_leg(r->w->metrics, r->c->id, r->c->legs[l->index].name,
                   st != LEG_OK && !(l->status == 404), ms);
    if (r->ended)
        return;
    if (st != LEG_OK && r->c->legs[l->index].required) {
        run_end(r); /* nothing to compose without it */
        return;
    }
    start_ready_legs(r);
    if (!r->starting && r->running == 0)
        run_end(r);
    else if (!r->ended)
        arm_timer(r);
}

static void breaker_result(cmp_leg *l, int ok)
{
    if (l->upstream < 0)
        return;
    cmp_breaker *b = &l->run->w->breakers[l->upstream];
    if (ok)
        cmp_breaker_success(b);
    else
        cmp_breaker_failure(b, uv_now(l->run->w->loop));
}

static void leg_on_ready(gw_uconn *u, void *data)
{
    cmp_leg *l = data;
    uv_buf_t b = uv_buf_init(l->head, (unsigned)l->head_len);
    if (gw_uconn_write(u, &b, 1) < 0) {
        breaker_result(l, 0);
        leg_end(l, LEG_FAILED, "upstream connection failed");
        return;
    }
    gw_uconn_read_response(u, 0);
}

static void leg_on_head(gw_uconn *u, void *data, int status, const gw_header *h, int n, int64_t len)
{
    cmp_leg *l = data;
    (void)u, (void)h, (void)n, (void)len;
    l->status = status;
}

static void leg_on_body(gw_uconn *u, void *data, const char *p, size_t n)
{
    cmp_leg *l = data;
    (void)u;
    if (l->len + n > LEG_BODY_MAX) {
        breaker_result(l, 1);
        leg_end(l, LEG_FAILED, "answer too large");
        return;
    }
    char *nb = realloc(l->body, l->len + n);
    if (!nb) {
        leg_end(l, LEG_FAILED, "out of memory");
        return;
    }
    memcpy(nb + l->len, p, n);
    l->body = nb;
    l->len += n;
}

static void leg_on_done(gw_uconn *u, void *data)
{
    cmp_leg *l = data;
    l->u = NULL;
    gw_uconn_release(u);
    if (l->status >= 500) {
        breaker_result(l, 0);
        leg_end(l, LEG_FAILED, "upstream 5xx");
        return;
    }
    breaker_result(l, 1); /* the upstream is alive, whatever it said */
    if (l->status < 200 || l->status >= 300) {
        leg_end(l, LEG_FAILED, l->status == 404 ? "not found" : "upstream 4xx");
        return;
    }
    l->json = json_loadb(l->body ? l->body : "", l->len, 0, NULL);
    leg_end(l, l->json ? LEG_OK : LEG_FAILED, l->json ? NULL : "invalid JSON");
}

static void leg_on_drain(gw_uconn *u, void *data)
{
    (void)u, (void)data;
}

static void leg_on_error(gw_uconn *u, void *data, int err, int phase)
{
    cmp_leg *l = data;
    (void)u, (void)phase;
    l->u = NULL;
    breaker_result(l, 0);
    if (err == GW_ETIMEOUT)
        l->timed_out = 1;
    leg_end(l, LEG_FAILED, err == GW_ETIMEOUT ? "timeout" : err == GW_ECONNECT ? "connect failed"
                                                        : "upstream connection failed");
}

static const gw_uconn_cb leg_cb = {
    .on_ready = leg_on_ready,
    .on_head = leg_on_head,
    .on_body = leg_on_body,
    .on_done = leg_on_done,
    .on_drain = leg_on_drain,
    .on_error = leg_on_error,
};

/* Resolves the leg's URL through the route table and sends it; on any failure the leg ends
 * at once (a circuit that is open costs no time). */
static void leg_start(cmp_run *r, cmp_leg *l)
{
    cmp_worker *w = r->w;
    const cmp_leg_spec *spec = &r->c->legs[l->index];
    json_t *answers[CMP_MAX_LEGS] = { 0 };
    for (int i = 0; i < r->c->n_legs; i++)
        answers[i] = r->legs[i].json;
    l->state = LEG_RUNNING;
    l->upstream = -1;
    r->running++;
    l->started_ms = uv_now(w->loop);
    uint64_t d = l->started_ms + spec->timeout_ms;
    l->deadline_ms = d < r->deadline_at ? d : r->deadline_at;

    char url[LEG_PATH_MAX], target[LEG_PATH_MAX];
    int n = cmp_expand(spec->url, &r->params, r->c->legs, answers, r->c->n_legs, url, sizeof url);
    if (n < 0) {
        leg_end(l, LEG_FAILED, "its URL refers to a value that is missing");
        return;
    }
    const char *qm = strchr(url, '?');
    gw_slice path = { url, qm ? (size_t)(qm - url) : (size_t)n };
    gw_slice query = qm ? (gw_slice){ qm + 1, (size_t)n - path.n - 1 } : (gw_slice){ NULL, 0 };
    rt_match m;
    if (rt_table_match(r->table, GW_SLICE_LIT("GET"), path, &m) != 0) {
        leg_end(l, LEG_FAILED, "no route");
        return;
    }
    /* the route decides the side, as for a client request: split by weight (no stickiness:
     * a leg has no client key), no override */
    int ui = rt_route_pick(m.route, (gw_slice){ NULL, 0 }, gw_random64());
    gw_upstream *up = &w->upstreams[ui];
    if (!cmp_breaker_allow(&w->breakers[ui], uv_now(w->loop))) {
        leg_end(l, LEG_FAILED, "circuit open");
        return;
    }
    l->upstream = ui;
    if (rt_rewrite_for(&m, ui, path, query, target, sizeof target) < 0) {
        breaker_result(l, 1);
        leg_end(l, LEG_FAILED, "URL too long");
        return;
    }
    gw_endpoint *ep = gw_upstream_pick(up, -1);
    if (!ep) {
        breaker_result(l, 0);
        leg_end(l, LEG_FAILED, "no healthy endpoint");
        return;
    }
    const char *host = up->conf->host[0] ? up->conf->host : up->conf->endpoints[0].address;
    size_t cap = strlen(target) + strlen(host) + 512;
    l->head = malloc(cap);
    if (!l->head) {
        leg_end(l, LEG_FAILED, "out of memory");
        return;
    }
    int hl = snprintf(l->head, cap,
                      "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n"
                      "X-Request-Id: %s\r\nX-Forwarded-For: %s\r\nVia: 1.1 gateway\r\n\r\n",
                      target, host, r->request_id, r->client_ip);
    l->head_len = (size_t)hl;
    int reused;
    /* on_ready may run (and end the leg) inside the open */
    if (gw_uconn_open(ep, &leg_cb, l, &l->u, &reused) < 0) {
        l->u = NULL;
        breaker_result(l, 0);
        leg_end(l, LEG_FAILED, "connect failed");
    }
}

/* Starts every waiting leg whose dependencies answered; skips those whose dependencies
 * failed. */
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

/* ---- timer: leg timeouts and the deadline -------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    cmp_run *r = t->data;
    uint64_t now = uv_now(r->w->loop);
    for (int i = 0; i < r->c->n_legs && !r->ended; i++) {
        cmp_leg *l = &r->legs[i];
        if (l->state == LEG_RUNNING && now >= l->deadline_ms) {
            l->timed_out = 1;
            breaker_result(l, 0);
            leg_end(l, LEG_FAILED, now >= r->deadline_at ? "deadline" : "timeout");
        }
    }
    if (!r->ended && now >= r->deadline_at)
        run_end(r);
    else if (!r->ended)
        arm_timer(r);
}

static void arm_timer(cmp_run *r)
{
    uint64_t next = r->deadline_at;
    for (int i = 0; i < r->c->n_legs; i++)
        if (r->legs[i].state == LEG_RUNNING && r->legs[i].deadline_ms < next)
            next = r->legs[i].deadline_ms;
    uint64_t now = uv_now(r->w->loop);
    uv_timer_start(&r->timer, on_timer, next > now ? next - now : 0, 0);
}

/* ---- the answer ---------------------------------------------------------------------- */

static void run_free(uv_handle_t *h)
{
    cmp_run *r = h->data;
    for (int i = 0; i < r->c->n_legs; i++) {
        free(r->legs[i].body);
        free(r->legs[i].head);
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

static void run_end(cmp_run *r)
{
    if (r->ended)
        return;
    r->ended = 1;
    /* legs still out are cut: their connections close, no callback follows */
    for (int i = 0; i < r->c->n_legs; i++) {
        cmp_leg *l = &r->legs[i];
        if (l->state == LEG_RUNNING) {
            if (l->u) {
                gw_uconn_abort(l->u);
                l->u = NULL;
            }
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
            gw_metrics_composition(r->w->metrics, GW_COMP_FAILED);
            answer_error(req, &r->c->legs[bad_i], bad);
        } else {
            json_t *doc = json_object(), *degraded = json_array();
            char hdr[512] = "";
            size_t hl = 0;
            for (int i = 0; i < r->c->n_legs; i++) {
                const cmp_leg *l = &r->legs[i];
                const char *name = r->c->legs[i].name;
                json_object_set(doc, name, l->state == LEG_OK ? l->json : json_null());
                /* an optional part that does not exist (404) is null, not degraded */
                if (l->state != LEG_OK && !(l->state == LEG_FAILED && l->status == 404)) {
                    json_array_append_new(degraded, json_string(name));
                    hl += (size_t)snprintf(hdr + hl, sizeof hdr - hl, "%s%s", hl ? "," : "", name);
                    if (hl >= sizeof hdr)
                        hl = sizeof hdr - 1;
                }
            }
            json_object_set_new(doc, "degraded", degraded);
            char extra[600] = "";
            if (hl)
                snprintf(extra, sizeof extra, "X-Composition-Degraded: %s\r\n", hdr);
            gw_metrics_composition(r->w->metrics, hl ? GW_COMP_DEGRADED : GW_COMP_OK);
            char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
            json_decref(doc);
            if (text)
                gw_response_simple(req, 200, "application/json", text, strlen(text), extra);
            else
                gw_response_error(req, 500, "out of memory");
            free(text);
        }
    }
    uv_close((uv_handle_t *)&r->timer, run_free);
}

/* ---- entry points -------------------------------------------------------------------- */

int cmp_handle(cmp_worker *w, rt_table *table, gw_request *req)
{
    cmp_params params;
    const cmp_composition *c = w ? cmp_spec_match(w->spec, req->method, req->path, &params) : NULL;
    if (!c || !table)
        return 0;
    req->route_id = c->id;
    req->route_version = rt_table_version(table);
    req->upstream_name = NULL; /* the gateway answers */
    cmp_run *r = calloc(1, sizeof *r);
    if (!r) {
        gw_response_error(req, 500, "out of memory");
        return 1;
    }
    r->kind = RUN_KIND;
    r->w = w;
    r->req = req;
    r->c = c;
    rt_table_ref(table);
    r->table = table;
    /* the head's slices die with the request buffer: copy what the legs need */
    size_t at = 0;
    r->params.n = params.n;
    for (int i = 0; i < params.n; i++) {
        size_t vn = params.values[i].n;
        if (at + vn > sizeof r->param_buf)
            vn = 0;
        memcpy(r->param_buf + at, params.values[i].p, vn);
        r->params.names[i] = params.names[i]; /* these point into the spec */
        r->params.values[i] = (gw_slice){ r->param_buf + at, vn };
        at += vn;
    }
    snprintf(r->client_ip, sizeof r->client_ip, "%s", req->client_addr);
    snprintf(r->request_id, sizeof r->request_id, "%s", req->request_id);
    for (int i = 0; i < c->n_legs; i++) {
        r->legs[i].run = r;
        r->legs[i].index = i;
        r->legs[i].upstream = -1;
    }
    uv_timer_init(w->loop, &r->timer);
    r->timer.data = r;
    r->deadline_at = uv_now(w->loop) + c->deadline_ms;
    req->data = r;
    start_ready_legs(r);
    if (!r->ended)
        arm_timer(r);
    return 1;
}

int cmp_owns(const gw_request *req)
{
    return req->data && *(const int *)req->data == RUN_KIND;
}

void cmp_on_abort(gw_request *req)
{
    cmp_run *r = req->data;
    req->data = NULL;
    r->req = NULL; /* no answer; the legs are cut and the run freed */
    run_end(r);
}

cmp_worker *cmp_worker_new(uv_loop_t *loop, const cmp_spec *spec, const gw_config *cfg,
                           gw_upstream *upstreams, gw_metrics *metrics)
{
    cmp_worker *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->loop = loop;
    w->spec = spec;
    w->cfg = cfg;
    w->upstreams = upstreams;
    w->metrics = metrics;
    for (int i = 0; i < cfg->n_upstreams; i++)
        cmp_breaker_init(&w->breakers[i], cfg->upstreams[i].breaker_failures,
                         cfg->upstreams[i].breaker_cooldown_ms,
                         i < GW_METRICS_UPSTREAMS ? &metrics->breaker_state[i] : NULL);
    return w;
}

void cmp_worker_free(cmp_worker *w)
{
    free(w);
}
