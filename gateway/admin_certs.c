/* admin_certs.c — see admin_certs.h. */
#include "gateway/admin_certs.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http/gw_errors.h"

static void iso_time(time_t t, char out[32])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *cert_json(const gw_tls_cert_info *ci, time_t now)
{
    char nb[32], na[32];
    iso_time(ci->not_before, nb);
    iso_time(ci->not_after, na);
    json_t *sans = json_array();
    const char *p = ci->sans;
    while (*p) {
        const char *e = strstr(p, ", ");
        size_t n = e ? (size_t)(e - p) : strlen(p);
        json_array_append_new(sans, json_stringn(p, n));
        p += n + (e ? 2 : 0);
    }
    return json_pack("{s:s, s:s, s:o, s:s, s:s, s:s, s:s, s:I}", "file", ci->file, "subject",
                     ci->subject, "sans", sans, "key_type", ci->key_type, "issuer", ci->issuer,
                     "not_before", nb, "not_after", na, "expires_in_s",
                     (json_int_t)(ci->not_after - now));
}

static json_t *certs_json(gw_certs *s)
{
    time_t now = time(NULL);
    json_t *ls = json_array();
    for (int i = 0; i < s->cfg->n_listeners; i++) {
        gw_tls_slot *slot = gw_certs_slot(s, i);
        if (!slot)
            continue;
        gw_tls_ctx *x = gw_tls_slot_acquire(slot);
        json_t *cs = json_array();
        for (int k = 0; k < gw_tls_ctx_cert_count(x); k++)
            json_array_append_new(cs, cert_json(gw_tls_ctx_cert(x, k), now));
        gw_tls_ctx_unref(x);
        json_array_append_new(ls, json_pack("{s:s, s:o}", "listen", s->cfg->listeners[i].listen,
                                            "certificates", cs));
    }
    char lr[32];
    iso_time(s->last_reload, lr);
    return json_pack("{s:o, s:s, s:I, s:I, s:s?}", "listeners", ls, "loaded_at", lr,
                     "reloads_ok", (json_int_t)s->reloads_ok, "reloads_failed",
                     (json_int_t)s->reloads_failed, "last_error",
                     s->last_error[0] ? s->last_error : NULL);
}

static void send_doc(gw_request *req, int status, json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(doc);
    if (!text) {
        gw_response_error(req, 500, "out of memory");
        return;
    }
    size_t n = strlen(text);
    text[n] = '\n';
    gw_response_simple(req, status, "application/json", text, n + 1, NULL);
    free(text);
}

/* A reload answers later: the request waits in this, which outlives a client that left. */
typedef struct reload_req {
    gw_request *req; /* NULL once the client went away */
    gw_certs *certs;
} reload_req;

static void on_reloaded(int status, const char *err, void *arg)
{
    reload_req *r = arg;
    gw_request *req = r->req;
    gw_certs *s = r->certs;
    free(r);
    if (!req)
        return;
    req->data = NULL;
    if (status != 0) {
        gw_response_error(req, status == GW_ECLOSED ? 503 : 422, err ? err : "reload failed");
        return;
    }
    json_t *doc = certs_json(s);
    json_object_set_new(doc, "reloaded", json_true());
    send_doc(req, 200, doc);
}

static void reload_abort(gw_request *req, int err)
{
    reload_req *r = req->data;
    (void)err;
    if (r)
        r->req = NULL; /* on_reloaded frees it */
    req->data = NULL;
}

static void ignore_body(gw_request *req, const char *p, size_t n) { (void)req; (void)p; (void)n; }
static void ignore_req(gw_request *req) { (void)req; }

static const gw_handler reload_handler = {
    .on_request = ignore_req,
    .on_body = ignore_body,
    .on_body_end = ignore_req,
    .on_drain = ignore_req,
    .on_abort = reload_abort,
};

int gw_admin_certs_serve(gw_certs *s, gw_request *req, gw_slice path)
{
    int get = gw_slice_eq(req->method, "GET") || gw_slice_eq(req->method, "HEAD");
    if (gw_slice_eq(path, "/admin/certificates")) {
        if (!get)
            gw_response_error(req, 405, "method not allowed");
        else
            send_doc(req, 200, certs_json(s));
        return 1;
    }
    if (!gw_slice_eq(path, "/admin/certificates/reload"))
        return 0;
    if (!gw_slice_eq(req->method, "POST")) {
        gw_response_error(req, 405, "method not allowed");
        return 1;
    }
    if (!gw_certs_any(s)) {
        gw_response_error(req, 409, "no TLS listener is configured");
        return 1;
    }
    reload_req *r = calloc(1, sizeof *r);
    if (!r) {
        gw_response_error(req, 500, "out of memory");
        return 1;
    }
    r->req = req;
    r->certs = s;
    req->data = r;
    gw_request_set_handler(req, &reload_handler);
    gw_certs_reload(s, on_reloaded, r);
    return 1;
}

/* Prometheus label value: backslash, quote and newline escaped. */
static void label(char *out, size_t outlen, const char *v)
{
    size_t o = 0;
    for (; *v && o + 3 < outlen; v++) {
        if (*v == '\\' || *v == '"') {
            out[o++] = '\\';
            out[o++] = *v;
        } else if (*v == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *v;
        }
    }
    out[o] = '\0';
}

int gw_admin_certs_metrics(gw_certs *s, char **text, size_t *len)
{
    if (!gw_certs_any(s))
        return 0;
    size_t cap = *len + 4096, at = *len;
    char *b = realloc(*text, cap);
    if (!b)
        return -1;
    *text = b;
#define APPEND(...)                                                                         \
    do {                                                                                    \
        int n_ = snprintf(NULL, 0, __VA_ARGS__);                                             \
        if (at + (size_t)n_ + 1 > cap) {                                                    \
            size_t nc_ = (at + (size_t)n_ + 1) * 2;                                          \
            char *nb_ = realloc(*text, nc_);                                                \
            if (!nb_)                                                                       \
                return -1;                                                                  \
            *text = nb_;                                                                    \
            cap = nc_;                                                                      \
        }                                                                                   \
        snprintf(*text + at, cap - at, __VA_ARGS__);                                        \
        at += (size_t)n_;                                                                   \
    } while (0)
    APPEND("# HELP gateway_tls_certificate_expiry_seconds Seconds until the certificate "
           "expires (negative: expired).\n# TYPE gateway_tls_certificate_expiry_seconds gauge\n");
    time_t now = time(NULL);
    for (int i = 0; i < s->cfg->n_listeners; i++) {
        gw_tls_slot *slot = gw_certs_slot(s, i);
        if (!slot)
            continue;
        gw_tls_ctx *x = gw_tls_slot_acquire(slot);
        for (int k = 0; k < gw_tls_ctx_cert_count(x); k++) {
            const gw_tls_cert_info *ci = gw_tls_ctx_cert(x, k);
            char f[1100], sub[600];
            label(f, sizeof f, ci->file);
            label(sub, sizeof sub, ci->subject);
            APPEND("gateway_tls_certificate_expiry_seconds{listener=\"%s\",file=\"%s\","
                   "subject=\"%s\",key_type=\"%s\"} %lld\n", s->cfg->listeners[i].listen, f, sub,
                   ci->key_type, (long long)(ci->not_after - now));
        }
        gw_tls_ctx_unref(x);
    }
    APPEND("# HELP gateway_tls_certificate_reloads_total Certificate reloads, by result.\n"
           "# TYPE gateway_tls_certificate_reloads_total counter\n"
           "gateway_tls_certificate_reloads_total{result=\"ok\"} %llu\n"
           "gateway_tls_certificate_reloads_total{result=\"failed\"} %llu\n",
           (unsigned long long)s->reloads_ok, (unsigned long long)s->reloads_failed);
#undef APPEND
    *len = at;
    return 0;
}
