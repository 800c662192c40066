/* shadow.c — see shadow.h. */
#include "gateway/shadow.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/gw_errors.h"
#include "http/oneshot.h"
#include "http/span.h"
#include "gateway/access_log.h"
#include "gateway/metrics.h"

#define CAPTURE_MAX (1 << 20) /* bodies larger than this are compared by status only */

typedef struct capture {
    int status;       /* 0 until the head came */
    char *body;
    size_t len;
    int too_big;
} capture;

struct gw_shadow {
    int refs;
    gw_metrics *metrics;
    gw_access_log *log;
    rt_table *table;
    const rt_route *route;
    gw_upstream *up;
    int is_head;
    char request_id[72];
    capture primary, shadow;
    int primary_ok, shadow_ok;
    char shadow_err[64];
    gw_span *span;     /* its CLIENT span, filled as it goes (NULL: not exported) */
};

static void capture_add(capture *c, const char *p, size_t n)
{
    if (c->too_big)
        return;
    if (c->len + n > CAPTURE_MAX) {
        c->too_big = 1;
        return;
    }
    char *nb = realloc(c->body, c->len + n);
    if (!nb) {
        c->too_big = 1;
        return;
    }
    memcpy(nb + c->len, p, n);
    c->body = nb;
    c->len += n;
}

/* Removes a dotted path ("meta.generated_at") from a JSON document. */
static void remove_path(json_t *doc, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = doc;
    char *save = NULL, *tok = strtok_r(buf, ".", &save);
    while (tok && cur) {
        char *next = strtok_r(NULL, ".", &save);
        if (!next) {
            if (json_is_object(cur))
                json_object_del(cur, tok);
            return;
        }
        cur = json_is_object(cur) ? json_object_get(cur, tok) : NULL;
        tok = next;
    }
}

int gw_shadow_bodies_equal(const char *a, size_t an, const char *b, size_t bn,
                           const char *const *ignore, int n_ignore, char *diff, size_t difflen)
{
    json_t *ja = json_loadb(a ? a : "", an, 0, NULL);
    json_t *jb = json_loadb(b ? b : "", bn, 0, NULL);
    int eq;
    if (ja && jb) {
        for (int i = 0; i < n_ignore; i++) {
            remove_path(ja, ignore[i]);
            remove_path(jb, ignore[i]);
        }
        eq = json_equal(ja, jb);
        if (!eq) {
            /* name the first top-level key that differs */
            const char *key;
            json_t *v;
            const char *which = NULL;
            if (json_is_object(ja) && json_is_object(jb)) {
                json_object_foreach(ja, key, v) {
                    if (!json_equal(v, json_object_get(jb, key))) {
                        which = key;
                        break;
                    }
                }
                if (!which)
                    json_object_foreach(jb, key, v) {
                        if (!json_object_get(ja, key)) {
                            which = key;
                            break;
                        }
                    }
            }
            snprintf(diff, difflen, which ? "body differs at \"%s\"" : "body differs", which);
        }
    } else {
        eq = an == bn && (an == 0 || memcmp(a, b, an) == 0);
        if (!eq)
            snprintf(diff, difflen, "%s body differs (%zu vs %zu bytes)",
                     ja || jb ? "one non-JSON" : "non-JSON", an, bn);
    }
    json_decref(ja);
    json_decref(jb);
    return eq;
}

static void shadow_finish(gw_shadow *s)
{
    if (s->primary_ok) {
        char diff[200] = "";
        int match;
        if (!s->shadow_ok) {
            match = 0;
            snprintf(diff, sizeof diff, "shadow failed: %s", s->shadow_err);
        } else if (s->primary.status != s->shadow.status) {
            match = 0;
            snprintf(diff, sizeof diff, "status %d vs %d", s->primary.status, s->shadow.status);
        } else if (s->primary.too_big || s->shadow.too_big || s->is_head) {
            match = 1; /* compared by status only */
        } else {
            match = gw_shadow_bodies_equal(s->primary.body, s->primary.len, s->shadow.body,
                                           s->shadow.len, s->route->shadow.ignore_fields,
                                           s->route->shadow.n_ignore_fields, diff, sizeof diff);
        }
        gw_metrics_shadow(s->metrics, s->route->id, !match);
        gw_metrics_side_shadow(s->metrics, s->route->id, s->up->conf->name, !match);
        if (!match)
            gw_metrics_mismatch_sample(s->route->id, s->up->conf->name, s->request_id, diff);
        if (!match)
            gw_log_event(s->log, "gateway: shadow mismatch route=%s shadow=%s request_id=%s: %s",
                         s->route->id, s->up->conf->name, s->request_id, diff);
    }
    rt_table_unref(s->table);
    free(s->span);
    free(s->primary.body);
    free(s->shadow.body);
    free(s);
}

static void unref(gw_shadow *s)
{
    if (--s->refs == 0)
        shadow_finish(s);
}

/* The shadow side's answer (one-shot exchange, oneshot.h): its body is copied, the exchange
 * is freed after this returns. */
static void sh_on_result(gw_oneshot *o, const gw_oneshot_result *r, void *arg)
{
    gw_shadow *s = arg;
    (void)o;
    gw_span *sp = s->span ? gw_span_begin(GW_TRACE_SAMPLED) : NULL;
    if (sp) {
        *sp = *s->span;
        sp->status = r->err ? 0 : (uint16_t)r->status;
        sp->error = r->err || r->status >= 500;
        GW_SPAN_SET(sp->error_text, r->err ? gw_errname(r->err) : sp->error ? "upstream error status" : "");
        sp->end_ns = uv_hrtime();
        gw_span_commit();
    }
    if (r->err) {
        snprintf(s->shadow_err, sizeof s->shadow_err, "%s", gw_errname(r->err));
    } else {
        s->shadow_ok = 1;
        s->shadow.status = r->status;
        if (r->too_big)
            s->shadow.too_big = 1;
        else if (r->len)
            capture_add(&s->shadow, r->body, r->len);
    }
    unref(s);
}

gw_shadow *gw_shadow_start(gw_upstream *up, gw_metrics *metrics, gw_access_log *log, rt_table *table,
                           const rt_route *route, const char *head, size_t head_len,
                           const gw_request *req, const char *span_id)
{
    const char *request_id = req->request_id;
    int is_head = req->is_head;
    gw_endpoint *ep = up->oneshots ? gw_upstream_pick(up, -1) : NULL;
    if (!ep) {
        gw_metrics_shadow_skipped(metrics, route->id, "no_endpoint");
        return NULL;
    }
    gw_shadow *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->refs = 2; /* the primary side and the shadow side */
    s->metrics = metrics;
    s->log = log;
    s->route = route;
    s->up = up;
    s->is_head = is_head;
    snprintf(s->request_id, sizeof s->request_id, "%s", request_id);
    gw_oneshot *o;
    int skip;
    int r = gw_oneshot_start(up->oneshots, ep, GW_ONESHOT_BACKGROUND, head, head_len, is_head,
                             CAPTURE_MAX, route->shadow.timeout_ms, sh_on_result, s, &o, &skip);
    if (r < 0) {
        /* a full background budget, or a draining worker: the primary goes on alone */
        if (skip)
            gw_metrics_shadow_skipped(metrics, route->id, gw_oneshot_skip_name(skip));
        free(s);
        return NULL;
    }
    rt_table_ref(table);
    s->table = table;
    if (span_id[0] && gw_span_enabled(req->trace.flags) && (s->span = calloc(1, sizeof *s->span))) {
        gw_span *sp = s->span;
        sp->kind = GW_SPAN_CLIENT;
        memcpy(sp->trace_id, req->trace.trace_id, sizeof sp->trace_id);
        memcpy(sp->span_id, span_id, sizeof sp->span_id);
        memcpy(sp->parent_id, req->trace.span_id, sizeof sp->parent_id);
        GW_SPAN_SET(sp->method, req->method_buf);
        GW_SPAN_SET(sp->route, route->id);
        GW_SPAN_SET(sp->upstream, up->conf->name);
        GW_SPAN_SET(sp->role, "shadow");
        sp->start_ns = uv_hrtime();
    }
    return s;
}

void gw_shadow_primary_head(gw_shadow *s, int status)
{
    s->primary.status = status;
}

void gw_shadow_primary_body(gw_shadow *s, const char *p, size_t n)
{
    capture_add(&s->primary, p, n);
}

void gw_shadow_primary_done(gw_shadow *s, int ok)
{
    s->primary_ok = ok;
    unref(s);
}
