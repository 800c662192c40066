/* admin.c — the admin API handler (see admin.h).
 *
 *   GET  /healthz  /readyz  /metrics                          (no token)
 *   GET  /admin/routes                 the table in force, as JSON, with its version
 *   GET  /admin/routes/history         the audit trail, newest first (?limit=N)
 *   GET|PUT|PATCH|DELETE /admin/routes/{id}
 *   GET  /admin/upstreams, GET|PUT|PATCH|DELETE /admin/upstreams/{name}  (admin_upstreams.c)
 *   POST /admin/rollback               {} = every route, {"id": "x"} = one; one atomic change
 *   POST /admin/reload                 re-read the active source
 *   GET  /admin/certificates, POST /admin/certificates/reload   (admin_certs.c)
 *   /admin/cutovers...                 cutover plans (admin_cutover.c)
 *   GET  /dashboard[/...] (no token), GET /admin/dashboard    the dashboard (admin_dashboard.c)
 *
 * A change builds a new table from the one in force (routes/route_edit.h), validates it
 * whole, writes it to the active source with its audit entries (who = the token's name),
 * then publishes it. Requests are answered after the store confirms; a client that left
 * meanwhile only leaves a flag for the late callback.
 */
#include "gateway/admin.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/admin_certs.h"
#include "gateway/admin_dashboard.h"
#include "gateway/admin_upstreams.h"
#include "gateway/resolver.h"
#include "gateway/cutover.h"
#include "gateway/tunnels.h"
#include "routes/route_edit.h"
#include "routes/route_table.h"

#define BODY_MAX (1 << 20)

typedef enum admin_op {
    OP_NONE, OP_PUT, OP_PATCH, OP_DELETE, OP_ROLLBACK, OP_RELOAD, OP_HISTORY,
    OP_CUTOVER_STEP,  /* a cutover plan's route change (gw_admin_cutover_step) */
    OP_CUTOVER_API,   /* /admin/cutovers*: handed to admin_cutover.c once the body is in */
    OP_UPSTREAM,      /* /admin/upstreams/{name} (id): action "upstream-put|patch|delete" */
} admin_op;

/* A request that answers later. A change goes through: queued (a->queue_*), computing (on the
 * threadpool: the in/out fields below; nothing else of it is touched meanwhile), storing
 * (gw_route_store_apply), then answered. One change at a time (a->changing), each made to
 * the table in force when it starts, so none is lost to another. */
typedef struct admin_req {
    gw_request *req;    /* NULL once the client went away */
    gw_admin *a;
    admin_op op;
    char who[64];
    char id[256];
    char *body;
    size_t len;
    int waiting_store;  /* a store (or change) callback will come: free there */
    json_t *changed;    /* ids a change touched, for the answer */
    gw_admin_change_cb internal_cb; /* a change the gateway made itself: told, not answered */
    void *internal_arg;
    char action[32];    /* OP_CUTOVER_STEP: the audit action */
    char reason[512];   /* OP_CUTOVER_STEP: the audit reason */
    struct admin_req *queue_next;
    uv_work_t work;
    /* in (set on the loop before the work is queued) */
    json_t *edit;       /* the parsed body of PUT/PATCH, or rollback's id */
    rt_table *cur;      /* the table the change is made to (a reference) */
    /* out (set on the threadpool, read on the loop after) */
    rt_table *next;     /* NULL: err/status say why */
    json_t *doc;        /* next as a document, for the store */
    json_t *audit;
    json_t *referrers;  /* OP_UPSTREAM refused with 409: what still uses the upstream */
    int status;
    char err[1024];
} admin_req;

int gw_admin_token_equal(const char *token, const char *given, size_t n)
{
    /* Every byte of the token's buffer is read, with the given bytes zero-padded (or cut) to
     * it, and the lengths are folded in arithmetically: no branch or early exit depends on
     * the token, so the time says neither where a guess goes wrong nor how long the token
     * is. Only N (the client's own length) decides which given bytes are read. */
    unsigned diff = n >= GW_ADMIN_TOKEN_BYTES; /* longer than any token: never equal */
    unsigned ended = 0, tl = 0;
    for (size_t j = 0; j < GW_ADMIN_TOKEN_BYTES; j++) {
        unsigned t = (unsigned char)token[j];
        ended |= ((t - 1u) >> 8) & 1u;      /* 1 from the token's NUL on */
        unsigned keep = ended - 1u;          /* all ones before the NUL, 0 after */
        unsigned g = j < n ? (unsigned char)given[j] : 0u;
        diff |= (t & keep) ^ g;
        tl += keep & 1u;
    }
    diff |= tl ^ (unsigned)(n < GW_ADMIN_TOKEN_BYTES ? n : 0);
    diff |= (unsigned)(tl == 0); /* an empty token (admin API disabled) matches nothing */
    return diff == 0;
}

/* The name of the token in the Authorization header, or NULL. Every token is compared, in
 * time that depends on none of them (gw_admin_token_equal). */
static const char *token_name(const gw_admin *a, const gw_request *req)
{
    gw_slice auth = gw_request_header(req, "authorization");
    if (auth.n < 8 || strncasecmp(auth.p, "Bearer ", 7) != 0)
        return NULL;
    gw_slice given = { auth.p + 7, auth.n - 7 };
    const char *found = NULL;
    for (int i = -1; i < a->cfg->n_admin_tokens; i++) {
        const char *tok = i < 0 ? a->cfg->admin_token : a->cfg->admin_tokens[i].token;
        int eq = gw_admin_token_equal(tok, given.p, given.n);
        if (eq && !found)
            found = i < 0 ? "admin" : a->cfg->admin_tokens[i].name;
    }
    return found;
}

int gw_admin_on_loopback(const gw_config *cfg)
{
    const struct sockaddr_storage *ss = &cfg->admin_addr;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
    }
    return 0;
}

int gw_admin_check_tokens(const gw_config *cfg, int token_from_env, char *err, size_t errlen)
{
    if (gw_admin_on_loopback(cfg))
        return 0;
    for (int i = -1; i < cfg->n_admin_tokens; i++) {
        const char *tok = i < 0 ? cfg->admin_token : cfg->admin_tokens[i].token;
        size_t n = strnlen(tok, GW_ADMIN_TOKEN_BYTES);
        if (n == 0 || n >= GW_ADMIN_MIN_TOKEN)
            continue; /* empty: that token is off (401), nothing to guess */
        if (i < 0 && token_from_env)
            snprintf(err, errlen, "env GATEWAY_ADMIN_TOKEN: %zu bytes, shorter than %d, while "
                     "admin.listen (%s) is not loopback", n, GW_ADMIN_MIN_TOKEN, cfg->admin_listen);
        else
            snprintf(err, errlen, "%.900s: admin.%s%.64s: %zu bytes, shorter than %d, while "
                     "admin.listen (%s) is not loopback", cfg->path, i < 0 ? "token" : "tokens.",
                     i < 0 ? "" : cfg->admin_tokens[i].name, n, GW_ADMIN_MIN_TOKEN,
                     cfg->admin_listen);
        return -1;
    }
    return 0;
}

static void send_json(gw_request *req, int status, json_t *doc)
{
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text) {
        gw_response_error(req, 500, "out of memory");
        return;
    }
    size_t n = strlen(text);
    text[n] = '\n'; /* replace the NUL: the body is sent by length */
    gw_response_simple(req, status, "application/json", text, n + 1, NULL);
    free(text);
}

void gw_admin_send_json(gw_request *req, int status, json_t *doc)
{
    send_json(req, status, doc);
}

static void send_text_json(gw_request *req, int status, const char *body)
{
    gw_response_simple(req, status, "application/json", body, strlen(body), NULL);
}

/* Frees r and returns its request (or NULL if the client left), unlinked from r: answer it
 * after this, so that an abort following a failed write never finds freed state. */
static gw_request *detach(admin_req *r)
{
    gw_request *req = r->req;
    if (req)
        req->data = NULL;
    json_decref(r->changed);
    json_decref(r->edit);
    json_decref(r->doc);
    json_decref(r->audit);
    json_decref(r->referrers);
    rt_table_unref(r->cur);
    rt_table_unref(r->next);
    free(r->body);
    free(r);
    return req;
}

/* ---- main loop lag ------------------------------------------------------------------- */

#define LAG_PROBE_MS 10
#define LAG_WINDOW_NS (10 * 1000000000ull)

/* A 10 ms timer on the main loop: how late it fires is how long the loop was busy with
 * something else. The gauge is the largest lateness in the current and the previous 10 s
 * window, so a stall shows for 10 to 20 s after it. */
static void on_lag_probe(uv_timer_t *t)
{
    gw_admin *a = t->data;
    uint64_t now = uv_hrtime();
    uint64_t late = now > a->lag_due ? now - a->lag_due : 0;
    if (now - a->lag_window_start >= LAG_WINDOW_NS) {
        a->lag_max_prev = a->lag_max_cur;
        a->lag_max_cur = 0;
        a->lag_window_start = now;
    }
    if (late > a->lag_max_cur)
        a->lag_max_cur = late;
    a->lag_due = now + LAG_PROBE_MS * 1000000ull;
}

static double lag_seconds(const gw_admin *a)
{
    uint64_t m = a->lag_max_cur > a->lag_max_prev ? a->lag_max_cur : a->lag_max_prev;
    return (double)m / 1e9;
}

/* ---- reads --------------------------------------------------------------------------- */

static void serve_metrics(gw_admin *a, gw_request *req)
{
    rt_table *t = rt_current_acquire();
    uint64_t version = t ? rt_table_version(t) : 0;
    char *text;
    size_t len;
    /* the upstreams in force, at their indices (the table's, when there is one) */
    const char *names[GW_MAX_UPSTREAMS];
    char name_buf[GW_MAX_UPSTREAMS][GW_NAME_MAX];
    int n_names = t ? rt_table_upstream_count(t) : a->cfg->n_upstreams;
    if (n_names > GW_MAX_UPSTREAMS)
        n_names = GW_MAX_UPSTREAMS;
    for (int i = 0; i < n_names; i++) {
        const char *nm = t ? rt_table_upstream(t, i) : a->cfg->upstreams[i].name;
        snprintf(name_buf[i], sizeof name_buf[i], "%s", nm ? nm : "");
        names[i] = name_buf[i];
    }
    if (t)
        rt_table_unref(t);
    static const char lag_fmt[] =
        "# HELP gateway_main_loop_lag_seconds Largest delay of the main loop (admin API, route "
        "changes, reloads) over the last 10 to 20 s.\n"
        "# TYPE gateway_main_loop_lag_seconds gauge\n"
        "gateway_main_loop_lag_seconds %.6f\n";
    char lag[sizeof lag_fmt + 64];
    int ln = snprintf(lag, sizeof lag, lag_fmt, lag_seconds(a));
    char *more = NULL;
    if (gw_metrics_render(a->metrics, a->n_workers, version, names, n_names, &text,
                          &len) != 0 ||
        !(more = realloc(text, len + (size_t)ln + 1))) {
        free(more ? more : text);
        gw_response_error(req, 500, "out of memory");
        return;
    }
    text = more;
    memcpy(text + len, lag, (size_t)ln + 1);
    len += (size_t)ln;
    if (gw_resolver_metrics(&text, &len) != 0) {
        free(text);
        gw_response_error(req, 500, "out of memory");
        return;
    }
    if (a->cutover && gw_cutover_metrics(a->cutover, &text, &len) != 0) {
        free(text);
        gw_response_error(req, 500, "out of memory");
        return;
    }
    if (a->certs && gw_admin_certs_metrics(a->certs, &text, &len) != 0) {
        free(text);
        gw_response_error(req, 500, "out of memory");
        return;
    }
    gw_response_simple(req, 200, "text/plain; version=0.0.4", text, len, NULL);
    free(text);
}

static void add_tunnel_count(const char *upstream, int64_t active, void *arg)
{
    json_object_set_new(arg, upstream, json_integer(active));
}

/* GET /admin/routes/{id}: the route, and for one that allows upgrades (or had tunnels) its
 * open tunnels per upstream ("tunnels", read-only: a PUT of this document ignores it). An
 * open tunnel does not follow a flip: a cutover is over when the old side reads 0. */
static json_t *route_doc(const rt_route *r)
{
    json_t *doc = rt_route_to_json(r), *tun = json_object();
    gw_tunnels_of_route(r->id, add_tunnel_count, tun);
    if (doc && tun && (r->upgrade || json_object_size(tun)))
        json_object_set(doc, "tunnels", tun);
    json_decref(tun);
    return doc;
}

static void serve_routes(gw_admin *a, gw_request *req, const char *id)
{
    rt_table *t = rt_current_acquire();
    if (!t) {
        gw_response_error(req, 503, "no route table loaded");
        return;
    }
    if (id) {
        const rt_route *r = rt_table_find(t, id);
        if (!r)
            gw_response_error(req, 404, "no such route");
        else {
            json_t *doc = route_doc(r);
            send_json(req, 200, doc);
            json_decref(doc);
        }
    } else {
        json_t *doc = rt_table_to_json(t);
        json_object_set_new(doc, "source", json_string(gw_route_store_kind(a->store)));
        send_json(req, 200, doc);
        json_decref(doc);
    }
    rt_table_unref(t);
}

/* ---- changes ------------------------------------------------------------------------- */

static void on_store_done(int status, const char *err, json_t *result, void *arg)
{
    admin_req *r = arg;
    if (result && r->changed)
        json_object_set(result, "changed", r->changed);
    char msg[sizeof r->err];
    snprintf(msg, sizeof msg, "%s", err ? err : "route store failed"); /* err may be r->err */
    gw_admin_change_cb cb = r->internal_cb;
    void *cb_arg = r->internal_arg;
    gw_request *req = detach(r);
    if (cb) {
        cb(status, status ? msg : NULL, cb_arg);
        return;
    }
    if (!req)
        return;
    if (status != 0)
        gw_response_error(req, status, msg);
    else if (result)
        send_json(req, 200, result);
    else
        send_text_json(req, 200, "{}");
}

/* An audit entry for route ID when its JSON differs between O and N (either NULL: added or
 * removed). */
static void audit_route(json_t *audit, json_t *changed_ids, const char *who, const char *action,
                        const char *id, const rt_route *o, const rt_route *n)
{
    json_t *oj = o ? rt_route_to_json(o) : json_null();
    json_t *nj = n ? rt_route_to_json(n) : json_null();
    if ((o || n) && !json_equal(oj, nj)) {
        json_array_append_new(audit, json_pack("{s:s, s:s, s:s, s:O, s:O}", "who", who, "action",
                                               action, "route_id", id, "old", oj, "new", nj));
        json_array_append_new(changed_ids, json_string(id));
    }
    json_decref(oj);
    json_decref(nj);
}

/* The audit entries of a change of route ID (NULL: of every route, rollback --all) from OLD
 * to NEXT: only the routes the change can have touched are compared, so its cost is the
 * changed routes, not the table (rollback --all keeps every route in its place). */
static json_t *diff_audit(const rt_table *old, const rt_table *next, const char *id,
                          const char *who, const char *action, json_t *changed_ids)
{
    json_t *audit = json_array();
    if (id) {
        audit_route(audit, changed_ids, who, action, id, rt_table_find(old, id),
                    rt_table_find(next, id));
        return audit;
    }
    for (int i = 0; i < rt_table_count(old); i++) {
        const rt_route *o = rt_table_route(old, i), *n = rt_table_route(next, i);
        if (!n || strcmp(o->id, n->id) != 0)
            n = rt_table_find(next, o->id);
        audit_route(audit, changed_ids, who, action, o->id, o, n);
    }
    return audit;
}

static const char *op_action(const admin_req *r)
{
    switch (r->op) {
    case OP_PUT: return "put";
    case OP_PATCH: return "patch";
    case OP_DELETE: return "delete";
    case OP_ROLLBACK: return r->edit ? "rollback" : "rollback-all";
    case OP_CUTOVER_STEP: return r->action;
    case OP_UPSTREAM: return r->action;
    default: return "";
    }
}

/* Threadpool: the edit, the parse and compile of the new table, its audit and document.
 * Touches only R's in/out fields and the (immutable) tables. */
static void change_work(uv_work_t *w)
{
    admin_req *r = w->data;
    rt_table *cur = r->cur;
    char *err = r->err;
    size_t el = sizeof r->err;
    switch (r->op) {
    case OP_PUT: r->next = rt_table_with_route(cur, r->id, r->edit, err, el); break;
    case OP_PATCH: r->next = rt_table_patch_route(cur, r->id, r->edit, err, el); break;
    case OP_DELETE: r->next = rt_table_delete_route(cur, r->id, err, el); break;
    case OP_ROLLBACK:
        r->next = rt_table_rollback(cur, r->edit ? json_string_value(r->edit) : NULL, err, el);
        break;
    case OP_CUTOVER_STEP:
        r->next = rt_table_cutover_step(
            cur, r->id, json_string_value(json_object_get(r->edit, "legacy")),
            json_string_value(json_object_get(r->edit, "target")),
            (int)json_integer_value(json_object_get(r->edit, "weight")), err, el);
        break;
    case OP_UPSTREAM:
        r->next = gw_admin_upstream_edit(cur, r->action + 9, r->id, r->edit, &r->status,
                                         &r->referrers, err, el);
        if (r->next) {
            r->changed = json_array();
            r->audit = gw_admin_upstream_audit(cur, r->next, r->id, r->who, r->action);
            if (json_array_size(r->audit) > 0) {
                json_array_append_new(r->changed, json_string(r->id));
                r->doc = rt_table_to_json(r->next);
            }
        }
        return;
    default: break;
    }
    if (!r->next) {
        r->status = strstr(err, "no route \"") ? 404 : 422;
        return;
    }
    const char *id = r->op == OP_ROLLBACK ? (r->edit ? json_string_value(r->edit) : NULL) : r->id;
    r->changed = json_array();
    r->audit = diff_audit(cur, r->next, id, r->who, op_action(r), r->changed);
    if (r->reason[0]) {
        size_t i;
        json_t *e;
        json_array_foreach(r->audit, i, e)
            json_object_set_new(e, "reason", json_string(r->reason));
    }
    if (json_array_size(r->changed) > 0)
        r->doc = rt_table_to_json(r->next);
}

static void pump(gw_admin *a);

/* The change in progress ended (answered or dropped): start the next. */
static void change_finished(gw_admin *a)
{
    a->changing = NULL;
    pump(a);
}

static void on_change_stored(int status, const char *err, json_t *result, void *arg)
{
    admin_req *r = arg;
    gw_admin *a = r->a;
    on_store_done(status, err, result, r);
    change_finished(a);
}

static void change_after(uv_work_t *w, int status)
{
    admin_req *r = w->data;
    gw_admin *a = r->a;
    rt_table_unref(r->cur);
    r->cur = NULL;
    if (status != 0 || a->stopping) {
        on_store_done(503, "shutting down", NULL, r);
        change_finished(a);
        return;
    }
    if (!r->next && r->referrers && r->req) {
        /* 409: the error names what still uses the upstream */
        json_t *body = json_pack("{s:s, s:i, s:O}", "error", r->err, "status", r->status,
                                 "referrers", r->referrers);
        int st = r->status;
        gw_request *req = detach(r);
        send_json(req, st, body);
        json_decref(body);
        change_finished(a);
        return;
    }
    if (!r->next) {
        on_store_done(r->status, r->err[0] ? r->err : "invalid change", NULL, r);
        change_finished(a);
        return;
    }
    size_t n = json_array_size(r->changed);
    fprintf(stderr, "gateway: admin: %s by %s: %s%s%zu route(s) changed\n", op_action(r), r->who,
            r->id[0] ? r->id : "", r->id[0] ? ": " : "", n);
    if (n == 0) {
        /* nothing differs: no new version, no write, no history entry */
        json_t *res = json_pack("{s:I}", "version", (json_int_t)(rt_table_version(r->next) - 1));
        on_store_done(0, NULL, res, r);
        json_decref(res);
        change_finished(a);
        return;
    }
    if (!r->doc) {
        on_store_done(500, "out of memory", NULL, r);
        change_finished(a);
        return;
    }
    rt_table *next = r->next;
    json_t *doc = r->doc, *audit = r->audit;
    r->next = NULL;
    r->doc = r->audit = NULL;
    gw_route_store_apply(a->store, next, doc, audit, on_change_stored, r);
}

/* Starts the next queued change, unless one is in progress. */
static void pump(gw_admin *a)
{
    while (!a->changing && a->queue_head && !a->stopping) {
        admin_req *r = a->queue_head;
        a->queue_head = r->queue_next;
        if (!a->queue_head)
            a->queue_tail = NULL;
        r->queue_next = NULL;
        if (!(r->cur = rt_current_acquire())) {
            on_store_done(503, "no route table loaded", NULL, r);
            continue;
        }
        a->changing = r;
        r->work.data = r;
        /* Fails only for a NULL work callback. */
        (void)uv_queue_work(a->loop, &r->work, change_work, change_after);
    }
}

/* Queues R (its edit set) behind the changes already waiting. */
static void enqueue(admin_req *r)
{
    gw_admin *a = r->a;
    r->waiting_store = 1;
    if (a->queue_tail)
        a->queue_tail->queue_next = r;
    else
        a->queue_head = r;
    a->queue_tail = r;
    pump(a);
}

void gw_admin_cutover_step(gw_admin *a, const char *id, const char *legacy, const char *target,
                           int weight, const char *action, const char *reason,
                           gw_admin_change_cb cb, void *arg)
{
    admin_req *r = calloc(1, sizeof *r);
    json_t *edit = r ? json_pack("{s:s, s:s, s:i}", "legacy", legacy, "target", target,
                                 "weight", weight) : NULL;
    if (!r || !edit || a->stopping || strlen(id) >= sizeof r->id) {
        free(r);
        json_decref(edit);
        cb(a->stopping ? 503 : 500, a->stopping ? "shutting down" : "cannot queue the change", arg);
        return;
    }
    r->a = a;
    r->op = OP_CUTOVER_STEP;
    r->edit = edit;
    r->internal_cb = cb;
    r->internal_arg = arg;
    snprintf(r->who, sizeof r->who, "cutover");
    snprintf(r->id, sizeof r->id, "%s", id);
    snprintf(r->action, sizeof r->action, "%s", action);
    snprintf(r->reason, sizeof r->reason, "%s", reason);
    enqueue(r);
}

static void run_change(admin_req *r)
{
    if (r->op == OP_CUTOVER_API) {
        /* answered by admin_cutover.c, now or once its route change is in force */
        r->waiting_store = 1;
        gw_admin_cutover_request(r->a, r->req, r->who, r->id, r->body, r->len, on_store_done, r);
        return;
    }
    json_t *body = NULL;
    json_error_t jerr;
    if (r->op == OP_PUT || r->op == OP_PATCH || (r->op == OP_ROLLBACK && r->len) ||
        (r->op == OP_UPSTREAM && strcmp(r->action, "upstream-delete") != 0)) {
        body = json_loadb(r->body ? r->body : "", r->len, JSON_REJECT_DUPLICATES, &jerr);
        if (!body || !json_is_object(body)) {
            char msg[300];
            snprintf(msg, sizeof msg, "request body: %s", body ? "must be a JSON object" : jerr.text);
            json_decref(body);
            gw_response_error(detach(r), 400, msg);
            return;
        }
    }
    free(r->body);
    r->body = NULL;
    if (r->op == OP_ROLLBACK) {
        json_t *idv = body ? json_object_get(body, "id") : NULL;
        if (idv && !json_is_string(idv)) {
            json_decref(body);
            gw_response_error(detach(r), 400, "request body: id: must be a string");
            return;
        }
        r->edit = json_incref(idv);
        json_decref(body);
    } else {
        r->edit = body;
    }
    gw_admin *a = r->a;
    if (r->op == OP_UPSTREAM && gw_route_store_pg(a->store) && !gw_route_store_has_upstreams(a->store)) {
        gw_response_error(detach(r), 501, "upstream changes need migration 000003_upstreams "
                                          "(gatewayctl db migrate)");
        return;
    }
    if (r->op == OP_UPSTREAM && strcmp(r->action, "upstream-delete") == 0) {
        /* a cutover plan under way still needs its sides: checked here, on the loop */
        json_t *refs = json_array();
        gw_admin_upstream_plan_refs(a, r->id, refs);
        if (json_array_size(refs) > 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "routes: upstreams.%.80s: still in use by a cutover plan",
                     r->id);
            json_t *b = json_pack("{s:s, s:i, s:o}", "error", msg, "status", 409, "referrers", refs);
            send_json(detach(r), 409, b);
            json_decref(b);
            return;
        }
        json_decref(refs);
    }
    if (a->stopping) {
        gw_response_error(detach(r), 503, "shutting down");
        return;
    }
    enqueue(r);
}

/* ---- history ------------------------------------------------------------------------- */

/* ?limit=N (1..GW_HISTORY_MAX; absent: the default). Returns the limit, or -1 for a bad
 * value. Other parameters are ignored. */
static int history_limit(gw_slice q)
{
    int limit = GW_HISTORY_DEFAULT;
    size_t i = 0;
    while (i < q.n) {
        size_t j = i;
        while (j < q.n && q.p[j] != '&')
            j++;
        if (j - i >= 6 && memcmp(q.p + i, "limit=", 6) == 0) {
            size_t k = i + 6;
            long v = 0;
            if (k == j)
                return -1;
            for (; k < j; k++) {
                if (q.p[k] < '0' || q.p[k] > '9' || (v = v * 10 + (q.p[k] - '0')) > GW_HISTORY_MAX)
                    return -1;
            }
            if (v < 1)
                return -1;
            limit = (int)v;
        }
        i = j + 1;
    }
    return limit;
}

/* ---- dispatch ------------------------------------------------------------------------ */

static int method_is(const gw_request *req, const char *m) { return gw_slice_eq(req->method, m); }

static void admin_on_request(gw_request *req)
{
    gw_admin *a = gw_server_options(req->server)->data;
    gw_slice path = req->path;
    int get = method_is(req, "GET") || method_is(req, "HEAD");
    if (gw_slice_eq(path, "/healthz") || gw_slice_eq(path, "/readyz") || gw_slice_eq(path, "/metrics")) {
        if (!get) {
            gw_response_error(req, 405, "method not allowed");
        } else if (gw_slice_eq(path, "/healthz")) {
            send_text_json(req, 200, "{\"status\":\"ok\"}");
        } else if (gw_slice_eq(path, "/readyz")) {
            rt_table *t = rt_current_acquire();
            int loaded = t != NULL;
            if (t)
                rt_table_unref(t);
            if (a->ready && loaded)
                send_text_json(req, 200, "{\"status\":\"ready\"}");
            else
                gw_response_error(req, 503, "not ready: no route table loaded yet");
        } else {
            serve_metrics(a, req);
        }
        return;
    }
    if (gw_admin_dashboard_page(a, req, path))
        return; /* the page itself holds no data: its data requests carry the token */
    if (path.n < 7 || memcmp(path.p, "/admin/", 7) != 0) {
        gw_response_error(req, 404, "not found");
        return;
    }
    const char *who = token_name(a, req);
    if (!who) {
        static const char body401[] = "{\"error\":\"missing or invalid bearer token\",\"status\":401}";
        gw_response_simple(req, 401, "application/json", body401, sizeof body401 - 1,
                           "WWW-Authenticate: Bearer\r\n");
        return;
    }
    if (a->certs && gw_admin_certs_serve(a->certs, req, path))
        return; /* /admin/certificates (admin_certs.c) */
    if (get && gw_admin_upstreams_read(a, req, path))
        return; /* GET /admin/upstreams[/{name}] (admin_upstreams.c) */
    if (gw_slice_eq(path, "/admin/dashboard")) {
        gw_admin_dashboard_data(a, req);
        return;
    }
    static const char prefix[] = "/admin/routes/";
    if (gw_slice_eq(path, "/admin/routes")) {
        if (!get) goto not_allowed;
        serve_routes(a, req, NULL);
        return;
    }
    if (path.n > sizeof prefix - 1 && memcmp(path.p, prefix, sizeof prefix - 1) == 0 && get &&
        !gw_slice_eq(path, "/admin/routes/history")) {
        char id[256];
        size_t idn = path.n - (sizeof prefix - 1);
        if (idn >= sizeof id || memchr(path.p + sizeof prefix - 1, '/', idn)) {
            gw_response_error(req, 404, "no such route");
            return;
        }
        memcpy(id, path.p + sizeof prefix - 1, idn);
        id[idn] = '\0';
        serve_routes(a, req, id);
        return;
    }
    /* everything below answers later (store I/O, request body): keep state */
    admin_req *r = calloc(1, sizeof *r);
    if (!r) {
        gw_response_error(req, 500, "out of memory");
        return;
    }
    r->req = req;
    r->a = a;
    snprintf(r->who, sizeof r->who, "%s", who);
    req->data = r;
    if (gw_slice_eq(path, "/admin/cutovers") ||
        (path.n > 16 && memcmp(path.p, "/admin/cutovers/", 16) == 0)) {
        if (path.n >= sizeof r->id) {
            gw_response_error(detach(r), 404, "no such cutover plan");
            return;
        }
        memcpy(r->id, path.p, path.n);
        r->id[path.n] = '\0';
        r->op = OP_CUTOVER_API;
        if (req->has_body) {
            if (gw_request_read_body(req) != 0)
                gw_response_error(detach(r), 413, "request body too large");
            return;
        }
        run_change(r);
        return;
    }
    if (gw_slice_eq(path, "/admin/routes/history")) {
        if (!get) goto not_allowed;
        int limit = history_limit(req->query);
        if (limit < 0) {
            char msg[100];
            snprintf(msg, sizeof msg, "limit: must be an integer from 1 to %d", GW_HISTORY_MAX);
            gw_response_error(detach(r), 400, msg);
            return;
        }
        r->waiting_store = 1;
        gw_route_store_history(a->store, limit, on_store_done, r);
        return;
    }
    if (gw_slice_eq(path, "/admin/reload")) {
        if (!method_is(req, "POST")) goto not_allowed;
        r->waiting_store = 1;
        gw_route_store_reload(a->store, on_store_done, r);
        return;
    }
    if (gw_slice_eq(path, "/admin/rollback")) {
        if (!method_is(req, "POST")) goto not_allowed;
        r->op = OP_ROLLBACK;
    } else if (gw_admin_upstream_name(path, r->id, GW_NAME_MAX) == 0) {
        const char *act = method_is(req, "PUT") ? "upstream-put" : method_is(req, "PATCH")
                        ? "upstream-patch" : method_is(req, "DELETE") ? "upstream-delete" : NULL;
        if (!act) goto not_allowed;
        r->op = OP_UPSTREAM;
        snprintf(r->action, sizeof r->action, "%s", act);
    } else if (gw_slice_eq(path, "/admin/upstreams")) {
        goto not_allowed;
    } else if (path.n > sizeof prefix - 1 && memcmp(path.p, prefix, sizeof prefix - 1) == 0) {
        size_t idn = path.n - (sizeof prefix - 1);
        if (idn >= sizeof r->id || memchr(path.p + sizeof prefix - 1, '/', idn)) {
            gw_response_error(detach(r), 404, "no such route");
            return;
        }
        memcpy(r->id, path.p + sizeof prefix - 1, idn);
        r->id[idn] = '\0';
        r->op = method_is(req, "PUT") ? OP_PUT : method_is(req, "PATCH") ? OP_PATCH
              : method_is(req, "DELETE") ? OP_DELETE : OP_NONE;
        if (r->op == OP_NONE) goto not_allowed;
    } else {
        gw_response_error(detach(r), 404, "not found");
        return;
    }
    /* a change: take the body first (if any), then apply */
    if (req->has_body) {
        if (gw_request_read_body(req) != 0)
            gw_response_error(detach(r), 413, "request body too large");
        return;
    }
    run_change(r);
    return;
not_allowed:
    if (req->data)
        detach(req->data);
    gw_response_error(req, 405, "method not allowed");
}

static void admin_on_body(gw_request *req, const char *p, size_t n)
{
    admin_req *r = req->data;
    if (!r || r->len + n > BODY_MAX)
        return; /* the server's max_body_bytes (1 MiB) answers 413 first */
    char *nb = realloc(r->body, r->len + n + 1);
    if (!nb)
        return;
    memcpy(nb + r->len, p, n);
    r->body = nb;
    r->len += n;
}

static void admin_on_body_end(gw_request *req)
{
    admin_req *r = req->data;
    if (r)
        run_change(r);
}

static void admin_on_drain(gw_request *req) { (void)req; }

static void admin_on_abort(gw_request *req, int err)
{
    admin_req *r = req->data;
    (void)err;
    if (!r)
        return;
    r->req = NULL;
    req->data = NULL;
    if (!r->waiting_store)
        detach(r);
}

static const gw_handler admin_handler = {
    .on_request = admin_on_request,
    .on_body = admin_on_body,
    .on_body_end = admin_on_body_end,
    .on_drain = admin_on_drain,
    .on_abort = admin_on_abort,
};

int gw_admin_start(gw_admin *a, uv_loop_t *loop)
{
    a->loop = loop;
    if (!a->lag_started) {
        uv_timer_init(loop, &a->lag_timer);
        a->lag_timer.data = a;
        a->lag_started = 1;
        a->lag_window_start = uv_hrtime();
        a->lag_due = a->lag_window_start + LAG_PROBE_MS * 1000000ull;
        uv_timer_start(&a->lag_timer, on_lag_probe, LAG_PROBE_MS, LAG_PROBE_MS);
    }
    gw_server_opts opts = {
        .limits = { .max_uri_bytes = 4096, .max_header_bytes = 16384, .max_headers = 64,
                    .max_body_bytes = BODY_MAX, .header_timeout_ms = 10000,
                    .body_timeout_ms = 10000, .idle_timeout_ms = 30000, .send_timeout_ms = 30000 },
        .gateway_headers = 1,
        .data = a,
    };
    return gw_server_init(&a->server, loop, (const struct sockaddr *)&a->cfg->admin_addr, &opts,
                          &admin_handler);
}

void gw_admin_stop(gw_admin *a)
{
    a->stopping = 1;
    /* queued changes never start; the one in progress ends by itself (change_after) */
    while (a->queue_head) {
        admin_req *r = a->queue_head;
        a->queue_head = r->queue_next;
        on_store_done(503, "shutting down", NULL, r);
    }
    a->queue_tail = NULL;
    gw_admin_dashboard_close(a);
    if (a->lag_started == 1) {
        uv_close((uv_handle_t *)&a->lag_timer, NULL);
        a->lag_started = 2;
    }
    if (a->server) {
        gw_server_close(a->server, NULL);
        a->server = NULL;
    }
}
