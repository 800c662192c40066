/* admin.c — the admin API handler (see admin.h). */
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../routes/route_table.h"

static int token_ok(const gw_admin *a, const gw_request *req)
{
    const char *tok = a->cfg->admin_token;
    if (!tok[0])
        return 0; /* no token configured: the admin API is closed */
    gw_slice auth = gw_request_header(req, "authorization");
    size_t tl = strlen(tok);
    if (auth.n != tl + 7 || strncasecmp(auth.p, "Bearer ", 7) != 0)
        return 0;
    /* constant time in the token's length */
    unsigned char diff = 0;
    for (size_t i = 0; i < tl; i++)
        diff |= (unsigned char)(auth.p[7 + i] ^ tok[i]);
    return diff == 0;
}

static void send_json(gw_request *req, int status, const char *body)
{
    gw_response_simple(req, status, "application/json", body, strlen(body), NULL);
}

static void serve_metrics(gw_admin *a, gw_request *req)
{
    rt_table *t = rt_current_acquire();
    uint64_t version = t ? rt_table_version(t) : 0;
    if (t)
        rt_table_unref(t);
    char *text;
    size_t len;
    if (gw_metrics_render(a->metrics, a->n_workers, version, &text, &len) != 0) {
        gw_response_error(req, 500, "out of memory");
        return;
    }
    gw_response_simple(req, 200, "text/plain; version=0.0.4", text, len, NULL);
    free(text);
}

static void serve_reload(gw_admin *a, gw_request *req)
{
    char err[1024], body[1400];
    if (a->reload(a, err, sizeof err) != 0) {
        gw_response_error(req, 422, err);
        return;
    }
    rt_table *t = rt_current_acquire();
    snprintf(body, sizeof body, "{\"reloaded\":true,\"version\":%llu,\"routes\":%d}",
             (unsigned long long)(t ? rt_table_version(t) : 0), t ? rt_table_count(t) : 0);
    if (t)
        rt_table_unref(t);
    send_json(req, 200, body);
}

static void admin_on_request(gw_request *req)
{
    gw_admin *a = gw_server_options(req->server)->data;
    gw_slice path = req->path;
    int get = gw_slice_eq(req->method, "GET") || gw_slice_eq(req->method, "HEAD");
    if (gw_slice_eq(path, "/healthz")) {
        if (!get) { gw_response_error(req, 405, "method not allowed"); return; }
        send_json(req, 200, "{\"status\":\"ok\"}");
        return;
    }
    if (gw_slice_eq(path, "/readyz")) {
        if (!get) { gw_response_error(req, 405, "method not allowed"); return; }
        if (a->ready)
            send_json(req, 200, "{\"status\":\"ready\"}");
        else
            gw_response_error(req, 503, "not ready: no route table loaded yet");
        return;
    }
    if (gw_slice_eq(path, "/metrics")) {
        if (!get) { gw_response_error(req, 405, "method not allowed"); return; }
        serve_metrics(a, req);
        return;
    }
    if (path.n >= 7 && memcmp(path.p, "/admin/", 7) == 0) {
        if (!token_ok(a, req)) {
            gw_response_simple(req, 401, "application/json",
                               "{\"error\":\"missing or invalid bearer token\",\"status\":401}", 55,
                               "WWW-Authenticate: Bearer\r\n");
            return;
        }
        if (gw_slice_eq(path, "/admin/reload")) {
            if (!gw_slice_eq(req->method, "POST")) { gw_response_error(req, 405, "use POST"); return; }
            serve_reload(a, req);
            return;
        }
    }
    gw_response_error(req, 404, "not found");
}

static void admin_on_body(gw_request *req, const char *p, size_t n) { (void)req; (void)p; (void)n; }
static void admin_on_body_end(gw_request *req) { (void)req; }
static void admin_on_drain(gw_request *req) { (void)req; }
static void admin_on_abort(gw_request *req, int err) { (void)req; (void)err; }

static const gw_handler admin_handler = {
    .on_request = admin_on_request,
    .on_body = admin_on_body,
    .on_body_end = admin_on_body_end,
    .on_drain = admin_on_drain,
    .on_abort = admin_on_abort,
};

int gw_admin_start(gw_admin *a, uv_loop_t *loop)
{
    gw_server_opts opts = {
        .limits = { .max_uri_bytes = 4096, .max_header_bytes = 16384, .max_headers = 64,
                    .max_body_bytes = 1 << 20, .header_timeout_ms = 10000,
                    .body_timeout_ms = 10000, .idle_timeout_ms = 30000, .send_timeout_ms = 30000 },
        .gateway_headers = 1,
        .data = a,
    };
    return gw_server_init(&a->server, loop, (const struct sockaddr *)&a->cfg->admin_addr, &opts,
                          &admin_handler);
}

void gw_admin_stop(gw_admin *a)
{
    if (a->server) {
        gw_server_close(a->server, NULL);
        a->server = NULL;
    }
}
