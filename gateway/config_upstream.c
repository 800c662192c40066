/* config_upstream.c — one upstream definition, for the route table's live upstreams
 * (routes/upstreams.h): the reader the routes source's "upstreams" object goes through
 * (gateway.json's own rules, so both files mean the same by the same keys), a definition
 * back to JSON, and the hand-over of gateway.json's upstreams as the seeds. */
#include <stdio.h>
#include <string.h>

#include "gateway/config_int.h"
#include "routes/upstreams.h"

/* gateway.json's path: relative ca_file paths in the routes source are read from its
 * folder too, whichever source (file, an admin edit, PostgreSQL) brought them. */
static char g_cfg_path[1024];

static int parse_live(json_t *def, const char *name, const char *source, int live,
                      gw_upstream_conf *out, char *err, size_t errlen)
{
    const char *file = g_cfg_path[0] ? g_cfg_path : "";
    const char *slash = strrchr(file, '/');
    gw__cfgctx c = { .prefix = source, .file = file,
                     .dirlen = slash ? (size_t)(slash - file + 1) : 0, .err = err,
                     .errlen = errlen };
    char path[GW__PATH_MAX];
    gw__upstream_defaults(out);
    if (!gw__name_ok(name))
        return gw__fail(&c, "upstreams", "invalid upstream name (must match [A-Za-z0-9_.-]{1,63})");
    gw__path(path, "upstreams", name);
    if (live && json_is_object(def)) {
        /* the concurrency limits are sized per worker at start (inflight_limit.c) */
        static const char *const start_only[] = { "max_in_flight", "queue", NULL };
        for (int i = 0; start_only[i]; i++) {
            char p[GW__PATH_MAX];
            if (json_object_get(def, start_only[i]))
                return gw__fail(&c, gw__path(p, path, start_only[i]),
                                "only in gateway.json (read at start)");
        }
    }
    return gw__parse_upstream(&c, name, def, out) != 0 ? -1 : 0;
}

json_t *gw_upstream_conf_json(const gw_upstream_conf *u)
{
    json_t *o = json_object(), *eps = json_array();
    if (!o || !eps) {
        json_decref(o);
        json_decref(eps);
        return NULL;
    }
    for (int i = 0; i < u->n_endpoints; i++)
        json_array_append_new(eps, json_string(u->endpoints[i].address));
    json_object_set_new(o, "endpoints", eps);
    if (u->host[0])
        json_object_set_new(o, "host", json_string(u->host));
    json_object_set_new(o, "connect_timeout_ms", json_integer(u->connect_timeout_ms));
    json_object_set_new(o, "response_timeout_ms", json_integer(u->response_timeout_ms));
    json_object_set_new(o, "read_timeout_ms", json_integer(u->read_timeout_ms));
    json_object_set_new(o, "send_timeout_ms", json_integer(u->send_timeout_ms));
    json_object_set_new(o, "pool", json_pack("{s:i, s:i}", "max_idle", (int)u->pool_max_idle,
                                             "idle_timeout_ms", (int)u->pool_idle_timeout_ms));
    json_object_set_new(o, "breaker", json_pack("{s:i, s:i}", "failures", (int)u->breaker_failures,
                                                "cooldown_ms", (int)u->breaker_cooldown_ms));
    json_object_set_new(o, "down_ms", json_integer(u->down_ms));
    json_object_set_new(o, "resolve_ms", json_integer(u->resolve_ms));
    if (u->tls) {
        json_t *t = json_object();
        if (u->tls_ca_file[0])
            json_object_set_new(t, "ca_file", json_string(u->tls_ca_file));
        if (u->tls_server_name[0])
            json_object_set_new(t, "server_name", json_string(u->tls_server_name));
        if (!u->tls_verify)
            json_object_set_new(t, "verify", json_false());
        json_object_set_new(o, "tls", json_object_size(t) ? t : (json_decref(t), json_true()));
    }
    if (u->max_in_flight) {
        json_object_set_new(o, "max_in_flight", json_integer(u->max_in_flight));
        json_object_set_new(o, "queue", json_pack("{s:i, s:i}", "max", (int)u->queue_max,
                                                  "timeout_ms", (int)u->queue_timeout_ms));
    }
    return o;
}

int gw_config_upstreams_install(const gw_config *cfg)
{
    snprintf(g_cfg_path, sizeof g_cfg_path, "%s", cfg->path);
    rt_upstreams_set_hooks(parse_live, gw_upstream_conf_json);
    return rt_upstreams_seed(cfg->upstreams, cfg->n_upstreams);
}
