/* handlers.c — mockd's gw_handler: routing, fault injection and the responses.
 *
 * Every request goes the same way: on_request routes it and copies what it needs from the
 * head (the head's slices die at gw_request_read_body), decides the fault to inject, starts
 * the latency timer, and pulls the body (counted and hashed, never stored). The answer
 * leaves once both the body has ended and the latency has elapsed.
 *
 * Per-request state is an mk_req, freed in one place (mk_settle -> mk_free), once the
 * request was given back to the server (DONE) or aborted (ABORTED) and no call into or out
 * of the server is on the stack (busy == 0): the server may abort a request from inside a
 * gw_response_* call. A timer, once initialised, is closed first and the mk_req is freed in
 * its close callback. */
#include <inttypes.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/gw_errors.h"
#include "tests/mockd/mockd.h"

#define MK_CHUNK (64 * 1024)
#define MK_CHUNKS_PER_TURN 16            /* cap the work per wake-up */
#define MK_BYTES_MAX (UINT64_C(1) << 40) /* /bytes/{n} */

typedef enum mk_route {
    MK_R_NOT_FOUND,
    MK_R_BAD_METHOD,
    MK_R_BAD_REQUEST, /* msg says why */
    MK_R_USER,        /* id */
    MK_R_ORDER,       /* id */
    MK_R_SHIPMENT,    /* id = the order id */
    MK_R_ECHO,        /* echo holds the document built from the head */
    MK_R_BYTES,       /* total */
    MK_R_UPLOAD,
    MK_R_STATS,
    MK_R_STATS_RESET,
    MK_R_SCRIPT_SET,   /* PUT /__script: msg NULL (stored) or why not */
    MK_R_SCRIPT_CLEAR, /* DELETE /__script */
    MK_R_SCRIPTED,     /* a GET/HEAD of a scripted path: script holds the answer */
    MK_R_FAULTS,      /* POST /__faults?error_rate=F: change the injected error rate now */
} mk_route;

typedef enum mk_fault {
    MK_F_NONE,
    MK_F_STATUS, /* answer status with {"error":"injected","status":N} */
    MK_F_HANG,   /* never answer; wait for on_abort */
    MK_F_RESET,  /* reset the connection instead of answering */
    MK_F_INVALID_JSON,
} mk_fault;

enum {
    MK_TIMER_INIT = 1 << 0,   /* timer initialised: must be closed before free */
    MK_LATENCY = 1 << 1,      /* the latency timer has not fired yet */
    MK_BODY_DONE = 1 << 2,    /* on_body_end seen */
    MK_ANSWERING = 1 << 3,    /* the answer was started (never twice) */
    MK_WAIT_DRAIN = 1 << 4,   /* /bytes: gw_response_body said 1, resume in on_drain */
    MK_CHUNKED = 1 << 5,      /* X-Mock-Chunked: stream with body_len -1 */
    MK_DONE = 1 << 6,         /* req given back to the server (end/fail): req is NULL */
    MK_ABORTED = 1 << 7,      /* on_abort ran: req is NULL */
    MK_FREEING = 1 << 8,      /* mk_free ran: waiting for the timer's close callback */
    MK_NO_STATS = 1 << 9,     /* /__stats*: not counted, no faults */
    MK_NO_HASH = 1 << 10,     /* /upload?hash=0: count the body, skip FNV (bench: FNV-1a
                                 runs a multiply per byte, more CPU than any proxy spends) */
};

typedef struct mk_req {
    gw_request *req; /* NULL once DONE or ABORTED */
    mk_ctx *ctx;
    uv_timer_t timer;
    unsigned flags;
    int busy;        /* calls on the stack that use this mk_req */
    mk_route route;
    mk_fault fault;
    int status;      /* MK_F_STATUS */
    const char *msg; /* MK_R_BAD_REQUEST */
    double error_rate; /* MK_R_FAULTS: the rate asked for, -1 invalid */
    int method;      /* MK_M_* */
    json_t *echo;
    json_t *script;  /* MK_R_SCRIPTED: {"status", "headers", "body"}, a new reference */
    uint64_t body_bytes, body_hash;
    uint64_t total, sent, limit; /* /bytes: size, bytes produced, where to stop */
    size_t id_n;
    char id[MK_ID_MAX];
} mk_req;

enum { MK_M_OTHER, MK_M_GET, MK_M_HEAD, MK_M_POST, MK_M_PUT, MK_M_PATCH, MK_M_DELETE };

/* byte i of a /bytes body is 'a' + i % 26: any window is pattern + (i % 26) */
static char pattern[MK_CHUNK + 26];

static void mk_answer(mk_req *m);
static void mk_pump(mk_req *m);
static void mk_on_pump(uv_timer_t *t);
static void mk_fail(mk_req *m);
static void mk_send_error(mk_req *m, int status, const char *msg);

/* ---- lifetime ------------------------------------------------------------------------ */

static void mk_timer_closed(uv_handle_t *h)
{
    mk_req *m = h->data;
    free(m);
}

static void mk_free(mk_req *m)
{
    m->flags |= MK_FREEING;
    json_decref(m->echo);
    m->echo = NULL;
    json_decref(m->script);
    m->script = NULL;
    if (m->flags & MK_TIMER_INIT)
        uv_close((uv_handle_t *)&m->timer, mk_timer_closed);
    else
        free(m);
}

/* Frees m when it is finished and nothing on the stack uses it; returns 1 if it did. */
static int mk_settle(mk_req *m)
{
    if (m->busy || (m->flags & MK_FREEING) || !(m->flags & (MK_DONE | MK_ABORTED))) return 0;
    mk_free(m);
    return 1;
}

/* Gives req back to the server: after this m->req is NULL. */
static void mk_end(mk_req *m)
{
    gw_request *req = m->req;
    req->data = NULL;
    m->req = NULL;
    m->flags |= MK_DONE;
    gw_response_end(req);
}

static int mk_timer_start(mk_req *m, uv_timer_cb cb, uint64_t ms)
{
    if (!(m->flags & MK_TIMER_INIT)) {
        if (uv_timer_init(m->ctx->loop, &m->timer) != 0) return -1;
        m->timer.data = m;
        m->flags |= MK_TIMER_INIT;
    }
    return uv_timer_start(&m->timer, cb, ms, 0);
}

/* ---- small parsers ------------------------------------------------------------------- */

static int method_of(gw_slice s)
{
    if (gw_slice_eq(s, "GET")) return MK_M_GET;
    if (gw_slice_eq(s, "HEAD")) return MK_M_HEAD;
    if (gw_slice_eq(s, "POST")) return MK_M_POST;
    if (gw_slice_eq(s, "PUT")) return MK_M_PUT;
    if (gw_slice_eq(s, "PATCH")) return MK_M_PATCH;
    if (gw_slice_eq(s, "DELETE")) return MK_M_DELETE;
    return MK_M_OTHER;
}

/* Unsigned decimal, the whole slice; -1 if empty, not digits or above max. */
static int parse_u64(gw_slice s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (s.n == 0) return -1;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9') return -1;
        if (v > (max - (uint64_t)(s.p[i] - '0')) / 10) return -1;
        v = v * 10 + (uint64_t)(s.p[i] - '0');
    }
    *out = v;
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s into m->id; -1 if it does not fit. */
static int set_id(mk_req *m, gw_slice s)
{
    size_t o = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (o == sizeof m->id) return -1;
        int hi, lo;
        if (s.p[i] == '%' && i + 2 < s.n && (hi = hexval(s.p[i + 1])) >= 0 &&
            (lo = hexval(s.p[i + 2])) >= 0) {
            m->id[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            m->id[o++] = s.p[i];
        }
    }
    m->id_n = o;
    return 0;
}

/* The value of KEY in a query string (with or without its leading '?'). */
static int query_param(gw_slice q, const char *key, gw_slice *out)
{
    size_t kn = strlen(key), i = 0;
    if (q.n && q.p[0] == '?') i = 1;
    while (i < q.n) {
        size_t end = i;
        while (end < q.n && q.p[end] != '&') end++;
        if (end - i > kn && memcmp(q.p + i, key, kn) == 0 && q.p[i + kn] == '=') {
            *out = (gw_slice){ q.p + i + kn + 1, end - i - kn - 1 };
            return 1;
        }
        i = end + 1;
    }
    return 0;
}

static int header_flag(const gw_request *req, const char *name)
{
    gw_slice v = gw_request_header(req, name);
    return v.n == 1 && v.p[0] == '1';
}

static double rand01(mk_ctx *c)
{
    uint64_t z = (c->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* ---- routing (on_request, while the head is valid) ------------------------------------ */

#define MK_MAX_SEGS 4

/* Splits "/a/b/c" into segments; returns their count, or MK_MAX_SEGS + 1 if too many. */
static int split_path(gw_slice path, gw_slice *seg)
{
    int n = 0;
    size_t i = 0;
    if (path.n == 0 || path.p[0] != '/') return 0;
    while (i < path.n) {
        if (n == MK_MAX_SEGS) return MK_MAX_SEGS + 1;
        size_t start = ++i;
        while (i < path.n && path.p[i] != '/') i++;
        seg[n++] = (gw_slice){ path.p + start, i - start };
    }
    return n;
}

static void route_id(mk_req *m, mk_route r, gw_slice id, unsigned methods)
{
    if (!(methods & (1u << m->method))) {
        m->route = MK_R_BAD_METHOD;
    } else if (id.n == 0) {
        m->route = MK_R_NOT_FOUND;
    } else if (set_id(m, id) != 0) {
        m->route = MK_R_BAD_REQUEST;
        m->msg = "id too long";
    } else {
        m->route = r;
    }
}

#define M(x) (1u << (x))
#define M_READ (M(MK_M_GET) | M(MK_M_HEAD))
#define M_USER (M_READ | M(MK_M_PUT) | M(MK_M_PATCH) | M(MK_M_DELETE))

static void mk_route_request(mk_req *m, gw_request *req)
{
    gw_slice s[MK_MAX_SEGS];
    int n = split_path(req->path, s);
    int api = n >= 1 && gw_slice_eq(s[0], "api");
    m->route = MK_R_NOT_FOUND;

    if (n == 3 && api && gw_slice_eq(s[1], "users"))
        route_id(m, MK_R_USER, s[2], M_USER);
    else if (n == 2 && gw_slice_eq(s[0], "users"))
        route_id(m, MK_R_USER, s[1], M_USER);
    else if (n == 3 && api && gw_slice_eq(s[1], "orders"))
        route_id(m, MK_R_ORDER, s[2], M_READ);
    else if (n == 2 && gw_slice_eq(s[0], "orders"))
        route_id(m, MK_R_ORDER, s[1], M_READ);
    else if (n == 4 && api && gw_slice_eq(s[1], "orders") && gw_slice_eq(s[3], "shipment"))
        route_id(m, MK_R_SHIPMENT, s[2], M_READ);
    else if (n == 1 && gw_slice_eq(s[0], "shipments")) {
        gw_slice id;
        if (!query_param(req->query, "order_id", &id) || id.n == 0) {
            m->route = (M_READ & M(m->method)) ? MK_R_BAD_REQUEST : MK_R_BAD_METHOD;
            m->msg = "order_id required";
        } else {
            route_id(m, MK_R_SHIPMENT, id, M_READ);
        }
    } else if (n >= 1 && gw_slice_eq(s[0], "echo")) /* also /echo/anything */
        m->route = MK_R_ECHO;
    else if (n == 2 && gw_slice_eq(s[0], "bytes")) {
        if (!(M_READ & M(m->method)))
            m->route = MK_R_BAD_METHOD;
        else if (parse_u64(s[1], MK_BYTES_MAX, &m->total) != 0) {
            m->route = MK_R_BAD_REQUEST;
            m->msg = "size must be 0..2^40";
        } else {
            m->route = MK_R_BYTES;
        }
    } else if (n == 1 && gw_slice_eq(s[0], "upload"))
        m->route = (m->method == MK_M_POST || m->method == MK_M_PUT) ? MK_R_UPLOAD
                                                                    : MK_R_BAD_METHOD;
    else if (n == 1 && gw_slice_eq(s[0], "__stats"))
        m->route = (M_READ & M(m->method)) ? MK_R_STATS : MK_R_BAD_METHOD;
    else if (n == 2 && gw_slice_eq(s[0], "__stats") && gw_slice_eq(s[1], "reset"))
        m->route = m->method == MK_M_POST ? MK_R_STATS_RESET : MK_R_BAD_METHOD;
    else if (n == 1 && gw_slice_eq(s[0], "__script"))
        m->route = m->method == MK_M_PUT      ? MK_R_SCRIPT_SET
                   : m->method == MK_M_DELETE ? MK_R_SCRIPT_CLEAR
                                              : MK_R_BAD_METHOD;
    else if (n == 1 && gw_slice_eq(s[0], "__faults"))
        m->route = m->method == MK_M_POST ? MK_R_FAULTS : MK_R_BAD_METHOD;
    /* a scripted path answers its script to GET and HEAD, whatever it would answer else */
    json_t *sc = m->ctx->scripts && (M_READ & M(m->method))
                     ? json_object_getn(m->ctx->scripts, req->path.p, req->path.n)
                     : NULL;
    if (sc) {
        m->route = MK_R_SCRIPTED;
        m->script = json_incref(sc);
    }
}

/* ---- scripted answers (PUT /__script) ------------------------------------------------- */

/* Headers the server writes itself: a script may not name them. */
static int framing_header(gw_slice name)
{
    return gw_slice_ieq(name, "Content-Length") || gw_slice_ieq(name, "Transfer-Encoding") ||
           gw_slice_ieq(name, "Connection") || gw_slice_ieq(name, "Date");
}

/* PUT /__script?path=P with X-Script-Status (default 200), any number of X-Script-Header
 * ("Name: value") and X-Script-Body: from now on GET and HEAD of P answer that (with
 * X-Mock-Name), counted in the stats as P. Returns NULL, or why the script was refused. */
static const char *mk_script_set(mk_ctx *c, gw_request *req)
{
    gw_slice path, st = gw_request_header(req, "X-Script-Status");
    uint64_t status = 200;
    if (!query_param(req->query, "path", &path) || path.n == 0 || path.p[0] != '/')
        return "path=/... required";
    if (st.n && (parse_u64(st, 599, &status) != 0 || status < 200))
        return "X-Script-Status must be 200..599";
    json_t *hdrs = json_array();
    for (int i = 0; hdrs && i < req->n_headers; i++) {
        if (!gw_slice_ieq(req->headers[i].name, "X-Script-Header"))
            continue;
        gw_slice v = req->headers[i].value;
        const char *colon = memchr(v.p, ':', v.n);
        if (!colon || colon == v.p) {
            json_decref(hdrs);
            return "X-Script-Header must be \"Name: value\"";
        }
        gw_slice name = { v.p, (size_t)(colon - v.p) };
        if (framing_header(name)) {
            json_decref(hdrs);
            return "X-Script-Header may not set framing headers";
        }
        json_array_append_new(hdrs, mk_jstring(v.p, v.n));
    }
    gw_slice body = gw_request_header(req, "X-Script-Body");
    json_t *doc = json_pack("{s:I, s:o, s:o}", "status", (json_int_t)status, "headers", hdrs,
                            "body", mk_jstring(body.p ? body.p : "", body.n));
    if (!c->scripts)
        c->scripts = json_object();
    if (!doc || !c->scripts || json_object_setn_new(c->scripts, path.p, path.n, doc) != 0)
        return "out of memory";
    return NULL;
}

/* The scripted answer: its status, its header lines, X-Mock-Name, its body. */
static void mk_send_script(mk_req *m)
{
    json_t *hs = json_object_get(m->script, "headers");
    const char *body = json_string_value(json_object_get(m->script, "body"));
    size_t bn = json_string_length(json_object_get(m->script, "body"));
    int status = (int)json_integer_value(json_object_get(m->script, "status"));
    size_t cap = 64 + strlen(m->ctx->conf.name), i;
    json_t *h;
    json_array_foreach(hs, i, h) cap += json_string_length(h) + 2;
    char *hdr = malloc(cap);
    if (!hdr) {
        mk_send_error(m, 500, "out of memory");
        return;
    }
    size_t hl = 0;
    json_array_foreach(hs, i, h) {
        memcpy(hdr + hl, json_string_value(h), json_string_length(h));
        hl += json_string_length(h);
        memcpy(hdr + hl, "\r\n", 2);
        hl += 2;
    }
    hl += (size_t)snprintf(hdr + hl, cap - hl, "X-Mock-Name: %s\r\n", m->ctx->conf.name);
    int rc = gw_response_begin(m->req, status, hdr, hl, (int64_t)bn);
    free(hdr);
    if (rc < 0) {
        if (m->req) mk_fail(m);
        return;
    }
    if (!m->req->is_head && bn > 0 && (gw_response_body(m->req, body, bn) < 0 || !m->req)) return;
    mk_end(m);
}

/* The /echo document, minus what only the body can tell. */
static json_t *echo_head(mk_req *m, gw_request *req)
{
    char ver[16];
    snprintf(ver, sizeof ver, "%d.%d", req->http_major, req->http_minor);
    json_t *h = json_array();
    for (int i = 0; h && i < req->n_headers; i++)
        json_array_append_new(h, json_pack("[o, o]", mk_jstring(req->headers[i].name.p,
                                                                req->headers[i].name.n),
                                           mk_jstring(req->headers[i].value.p,
                                                      req->headers[i].value.n)));
    return json_pack("{s:s, s:o, s:o, s:s, s:o}", "name", m->ctx->conf.name, "method",
                     mk_jstring(req->method.p, req->method.n), "url",
                     mk_jstring(req->url.p, req->url.n), "http_version", ver, "headers", h);
}

/* Faults: request headers first, then the command-line rates (drawn for every counted
 * request, so a seed gives the same sequence whatever the headers say). */
static void mk_pick_fault(mk_req *m, gw_request *req)
{
    mk_conf *c = &m->ctx->conf;
    double r_reset = rand01(m->ctx), r_hang = rand01(m->ctx), r_error = rand01(m->ctx);
    uint64_t v;

    if (header_flag(req, "X-Mock-Reset"))
        m->fault = MK_F_RESET;
    else if (header_flag(req, "X-Mock-Hang"))
        m->fault = MK_F_HANG;
    else if (parse_u64(gw_request_header(req, "X-Mock-Status"), 599, &v) == 0 && v >= 200) {
        m->fault = MK_F_STATUS;
        m->status = (int)v;
    } else if (header_flag(req, "X-Mock-Invalid-Json"))
        m->fault = MK_F_INVALID_JSON;
    else if (r_reset < c->reset_rate)
        m->fault = MK_F_RESET;
    else if (r_hang < c->hang_rate)
        m->fault = MK_F_HANG;
    else if (r_error < c->error_rate) {
        m->fault = MK_F_STATUS;
        m->status = 500;
    }

    /* /bytes only: head and N body bytes, then a reset */
    m->limit = m->total;
    if (m->route == MK_R_BYTES &&
        parse_u64(gw_request_header(req, "X-Mock-Reset-After"), MK_BYTES_MAX, &v) == 0 &&
        v < m->total)
        m->limit = v;
}

/* ---- answering ----------------------------------------------------------------------- */

/* Gives req back without a clean end: the client sees the connection close (a truncated
 * message if the head went out). */
static void mk_fail(mk_req *m)
{
    gw_request *req = m->req;
    req->data = NULL;
    m->req = NULL;
    m->flags |= MK_DONE;
    gw_response_fail(req);
}

/* Closes the client connection with a RST once what was written is out. */
static void mk_reset(mk_req *m)
{
    gw_request *req = m->req;
    req->data = NULL;
    m->req = NULL;
    m->flags |= MK_DONE;
    gw_response_reset(req);
}

static const char mk_json_type[] = "application/json";

/* One complete response. body may be NULL when n == 0. */
static void mk_send(mk_req *m, int status, const char *ctype, const char *body, size_t n)
{
    gw_request *req = m->req;
    mk_ctx *c = m->ctx;
    char buf[160];
    const char *hdr = buf;
    int hl;
    if (ctype == mk_json_type) { /* the common case, formatted once */
        if (!c->json_head_n)
            c->json_head_n = snprintf(c->json_head, sizeof c->json_head,
                                      "Content-Type: %s\r\nX-Mock-Name: %s\r\n", ctype,
                                      c->conf.name);
        hdr = c->json_head;
        hl = c->json_head_n;
    } else {
        hl = snprintf(buf, sizeof buf, "%s%s%sX-Mock-Name: %s\r\n", ctype ? "Content-Type: " : "",
                      ctype ? ctype : "", ctype ? "\r\n" : "", c->conf.name);
    }
    int no_body = req->is_head || status == 204 || status == 304;
    int64_t len = (m->flags & MK_CHUNKED) ? -1 : (int64_t)n;

    if (gw_response_begin(req, status, hdr, (size_t)hl, len) < 0) {
        if (m->req) mk_fail(m);
        return;
    }
    if (!no_body && n > 0 && (gw_response_body(m->req, body, n) < 0 || !m->req)) return;
    mk_end(m);
}

static void mk_send_json(mk_req *m, int status, json_t *doc)
{
    char *s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!s) {
        static const char oom[] = "{\"error\":\"out of memory\"}";
        mk_send(m, 500, mk_json_type, oom, sizeof oom - 1);
        return;
    }
    mk_send(m, status, mk_json_type, s, strlen(s));
    free(s);
}

/* A demo document (user, order, shipment) for m->id, rendered once per id. */
static void mk_send_doc(mk_req *m, int kind)
{
    const char *body;
    size_t n;
    if (mk_doc_get(kind, m->id, m->id_n, &body, &n) != 0) {
        mk_send_json(m, 500, NULL);
        return;
    }
    mk_send(m, 200, mk_json_type, body, n);
}

static void mk_send_error(mk_req *m, int status, const char *msg)
{
    mk_send_json(m, status, json_pack("{s:s}", "error", msg));
}

static void mk_answer_bytes(mk_req *m)
{
    gw_request *req = m->req;
    char hdr[160];
    int hl = snprintf(hdr, sizeof hdr,
                      "Content-Type: application/octet-stream\r\nX-Mock-Name: %s\r\n",
                      m->ctx->conf.name);
    int64_t len = (m->flags & MK_CHUNKED) ? -1 : (int64_t)m->total;
    if (gw_response_begin(req, 200, hdr, (size_t)hl, len) < 0) {
        if (m->req) mk_fail(m);
        return;
    }
    if (req->is_head) {
        mk_end(m);
        return;
    }
    mk_pump(m);
}

/* Produces /bytes chunks until done, the client is slow (resume in on_drain) or the turn's
 * budget is spent (resume from a zero timer). */
static void mk_pump(mk_req *m)
{
    for (int turn = 0; m->req && m->sent < m->limit; turn++) {
        if (turn == MK_CHUNKS_PER_TURN) {
            if (mk_timer_start(m, mk_on_pump, 0) != 0) mk_reset(m);
            return;
        }
        uint64_t left = m->limit - m->sent;
        size_t n = left < MK_CHUNK ? (size_t)left : MK_CHUNK;
        int rc = gw_response_body(m->req, pattern + m->sent % 26, n);
        if (rc < 0) return; /* on_abort follows (or ran) */
        m->sent += n;
        if (rc == 1) {
            m->flags |= MK_WAIT_DRAIN;
            return;
        }
    }
    if (!m->req) return;
    if (m->sent == m->total) {
        mk_end(m);
        return;
    }
    /* X-Mock-Reset-After: the head goes out even when no body byte does */
    if (m->sent == 0 && gw_response_body(m->req, "", 0) < 0) return;
    if (m->req) mk_reset(m);
}

static void mk_answer(mk_req *m)
{
    mk_ctx *c = m->ctx;
    m->flags |= MK_ANSWERING;

    switch (m->fault) {
    case MK_F_RESET:
        mk_reset(m);
        return;
    case MK_F_HANG:
        return; /* on_abort frees m when the client goes */
    case MK_F_STATUS:
        mk_send_json(m, m->status, json_pack("{s:s, s:i}", "error", "injected", "status",
                                             (json_int_t)m->status));
        return;
    case MK_F_INVALID_JSON: {
        static const char broken[] = "{\"broken\": ";
        mk_send(m, 200, "application/json", broken, sizeof broken - 1);
        return;
    }
    case MK_F_NONE:
        break;
    }

    if ((m->route == MK_R_USER || m->route == MK_R_ORDER || m->route == MK_R_SHIPMENT) &&
        memmem(m->id, m->id_n, "missing", 7)) {
        mk_send_error(m, 404, "not found");
        return;
    }
    switch (m->route) {
    case MK_R_NOT_FOUND:
        mk_send_error(m, 404, "not found");
        break;
    case MK_R_BAD_METHOD:
        mk_send_error(m, 405, "method not allowed");
        break;
    case MK_R_BAD_REQUEST:
        mk_send_error(m, 400, m->msg);
        break;
    case MK_R_USER:
        if (m->method == MK_M_DELETE)
            mk_send(m, 204, NULL, NULL, 0);
        else
            mk_send_doc(m, MK_DOC_USER);
        break;
    case MK_R_ORDER:
        mk_send_doc(m, MK_DOC_ORDER);
        break;
    case MK_R_SHIPMENT:
        mk_send_doc(m, MK_DOC_SHIPMENT);
        break;
    case MK_R_ECHO: {
        char hash[17];
        snprintf(hash, sizeof hash, "%016" PRIx64, m->body_hash);
        json_t *doc = m->echo;
        m->echo = NULL;
        if (doc) {
            json_object_set_new(doc, "body_bytes", json_integer((json_int_t)m->body_bytes));
            json_object_set_new(doc, "body_fnv1a64", json_string(hash));
        }
        mk_send_json(m, 200, doc);
        break;
    }
    case MK_R_UPLOAD: {
        char hash[17];
        snprintf(hash, sizeof hash, "%016" PRIx64, m->body_hash);
        mk_send_json(m, 200, json_pack("{s:I, s:o}", "body_bytes", (json_int_t)m->body_bytes,
                                       "body_fnv1a64", (m->flags & MK_NO_HASH) ? json_null()
                                                                              : json_string(hash)));
        break;
    }
    case MK_R_BYTES:
        mk_answer_bytes(m);
        break;
    case MK_R_STATS:
        mk_send_json(m, 200, mk_stats_json(&c->stats, c->conf.name));
        break;
    case MK_R_STATS_RESET:
        mk_stats_reset(&c->stats);
        mk_send_json(m, 200, json_pack("{s:b}", "reset", 1));
        break;
    case MK_R_SCRIPT_SET:
        if (m->msg)
            mk_send_error(m, 400, m->msg);
        else
            mk_send_json(m, 200, json_pack("{s:b}", "scripted", 1));
        break;
    case MK_R_SCRIPT_CLEAR:
        json_decref(c->scripts);
        c->scripts = NULL;
        mk_send_json(m, 200, json_pack("{s:b}", "cleared", 1));
        break;
    case MK_R_SCRIPTED:
        mk_send_script(m);
        break;
    case MK_R_FAULTS: {
        /* a candidate that starts failing mid-test, without a restart */
        double rate = m->error_rate;
        if (!(rate >= 0 && rate <= 1)) {
            mk_send_error(m, 400, "error_rate must be a number from 0 to 1");
            break;
        }
        c->conf.error_rate = rate;
        mk_send_json(m, 200, json_pack("{s:f}", "error_rate", rate));
        break;
    }
    }
}

/* Answers once the body has ended and the latency has elapsed. */
static void mk_maybe_answer(mk_req *m)
{
    if (m->req && !(m->flags & (MK_ANSWERING | MK_LATENCY)) && (m->flags & MK_BODY_DONE))
        mk_answer(m);
}

/* ---- callbacks ----------------------------------------------------------------------- */

static void mk_on_latency(uv_timer_t *t)
{
    mk_req *m = t->data;
    m->busy++;
    m->flags &= ~(unsigned)MK_LATENCY;
    mk_maybe_answer(m);
    m->busy--;
    mk_settle(m);
}

static void mk_on_pump(uv_timer_t *t)
{
    mk_req *m = t->data;
    m->busy++;
    mk_pump(m);
    m->busy--;
    mk_settle(m);
}

static void mk_on_request(gw_request *req)
{
    mk_ctx *c = gw_server_options(req->server)->data;
    if (mk_ws_request(req))
        return; /* /ws: the WebSocket echo (ws.c) */
    mk_req *m = calloc(1, sizeof *m);
    if (!m) {
        gw_response_error(req, 500, "out of memory");
        return;
    }
    m->req = req;
    m->ctx = c;
    m->body_hash = MK_FNV_INIT;
    m->method = method_of(req->method);
    req->data = m;
    req->upstream_name = c->conf.name;

    mk_route_request(m, req);
    if (m->route == MK_R_STATS || m->route == MK_R_STATS_RESET ||
        (req->path.n >= 3 && memcmp(req->path.p, "/__", 3) == 0)) { /* /__stats, /__script */
        m->flags |= MK_NO_STATS;
    } else {
        mk_stats_request(&c->stats, req->conn_id, req->path.p, req->path.n);
        mk_pick_fault(m, req);
        if (header_flag(req, "X-Mock-Chunked")) m->flags |= MK_CHUNKED;
        uint64_t ms = c->conf.latency_ms;
        gw_slice lat = gw_request_header(req, "X-Mock-Latency-Ms");
        if (lat.n) parse_u64(lat, UINT32_MAX, &ms);
        if (ms > 0) {
            if (mk_timer_start(m, mk_on_latency, ms) == 0) m->flags |= MK_LATENCY;
        }
    }
    if (m->route == MK_R_ECHO) m->echo = echo_head(m, req);
    if (m->route == MK_R_SCRIPT_SET) m->msg = mk_script_set(c, req);
    gw_slice hv;
    if (m->route == MK_R_FAULTS) {
        char buf[32], *end;
        m->error_rate = -1;
        if (query_param(req->query, "error_rate", &hv) && hv.n > 0 && hv.n < sizeof buf) {
            memcpy(buf, hv.p, hv.n);
            buf[hv.n] = '\0';
            double r = strtod(buf, &end);
            if (!*end)
                m->error_rate = r;
        }
    }
    if (m->route == MK_R_UPLOAD && query_param(req->query, "hash", &hv) && gw_slice_eq(hv, "0"))
        m->flags |= MK_NO_HASH;

    /* the head's slices are invalid from here on */
    m->busy++;
    if (gw_request_read_body(req) == GW_ETOOBIG && m->req) /* only if a limit is ever set */
        mk_send_error(m, 413, "body too large");
    m->busy--;
    mk_settle(m);
}

static void mk_on_body(gw_request *req, const char *p, size_t n)
{
    mk_req *m = req->data;
    if (!m) return;
    m->body_bytes += n;
    if (!(m->flags & MK_NO_HASH))
        m->body_hash = mk_fnv1a64(m->body_hash, p, n);
    if (!(m->flags & MK_NO_STATS)) m->ctx->stats.body_bytes += n;
}

static void mk_on_body_end(gw_request *req)
{
    mk_req *m = req->data;
    if (!m) return;
    m->busy++;
    m->flags |= MK_BODY_DONE;
    mk_maybe_answer(m);
    m->busy--;
    mk_settle(m);
}

static void mk_on_drain(gw_request *req)
{
    mk_req *m = req->data;
    if (!m || !(m->flags & MK_WAIT_DRAIN)) return;
    m->busy++;
    m->flags &= ~(unsigned)MK_WAIT_DRAIN;
    mk_pump(m);
    m->busy--;
    mk_settle(m);
}

static void mk_on_abort(gw_request *req, int err)
{
    mk_req *m = req->data;
    (void)err;
    if (!m) return;
    req->data = NULL;
    m->req = NULL;
    m->flags |= MK_ABORTED;
    if (m->flags & MK_TIMER_INIT) uv_timer_stop(&m->timer); /* never fires on a dead req */
    mk_settle(m);
}

const gw_handler mk_handler = {
    .on_request = mk_on_request,
    .on_body = mk_on_body,
    .on_body_end = mk_on_body_end,
    .on_drain = mk_on_drain,
    .on_abort = mk_on_abort,
};

void mk_handlers_init(void)
{
    for (size_t i = 0; i < sizeof pattern; i++) pattern[i] = (char)('a' + i % 26);
}
