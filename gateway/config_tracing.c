/* config_tracing.c — "tracing" in gateway.json: span export as OTLP/HTTP JSON.
 *   "tracing": { "otlp_endpoint": "http://127.0.0.1:4318/v1/traces",  -- absent: no export
 *                "service_name": "gateway", "sample_ratio": 1.0,
 *                "batch_size": 512, "flush_ms": 1000, "max_queue": 8192, "timeout_ms": 2000 }
 * The collector's address is resolved here, at load time, never on a loop. */
#include <string.h>

#include "gateway/config_int.h"

void gw__tracing_defaults(gw_config *k)
{
    strcpy(k->tracing.service_name, "gateway");
    k->tracing.sample_ratio = 1.0;
    k->tracing.batch_size = 512;
    k->tracing.flush_ms = 1000;
    k->tracing.max_queue = 8192;
    k->tracing.timeout_ms = 2000;
}

/* "http://HOST:PORT/PATH" (PATH optional: "/v1/traces") into t. */
static int parse_endpoint(gw__cfgctx *c, const char *url, gw_config *k)
{
    const char *path = "tracing.otlp_endpoint";
    char q[GW__QUOTE_SIZE];
    if (strncmp(url, "http://", 7) != 0)
        return gw__fail(c, path, "%s: must start with http:// (https is not supported)",
                        gw__quote(q, url));
    const char *hp = url + 7, *slash = strchr(hp, '/');
    size_t hn = slash ? (size_t)(slash - hp) : strlen(hp);
    char host[sizeof k->tracing.hostport];
    if (hn == 0 || hn >= sizeof host)
        return gw__fail(c, path, "%s: needs host:port", gw__quote(q, url));
    memcpy(host, hp, hn);
    host[hn] = '\0';
    int rc = gw__address(c, path, host, 1, 1, k->tracing.hostport, sizeof k->tracing.hostport,
                         &k->tracing.addr, &k->tracing.addrlen);
    if (rc != 0)
        return rc;
    const char *p = slash ? slash : "/v1/traces";
    if (strlen(p) >= sizeof k->tracing.path)
        return gw__fail(c, path, "path longer than %zu bytes", sizeof k->tracing.path - 1);
    for (const char *s = p; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return gw__fail(c, path, "%s: the path must be visible ASCII", gw__quote(q, url));
    strcpy(k->tracing.path, p);
    strcpy(k->tracing.otlp_endpoint, url);
    return 0;
}

int gw__parse_tracing(gw__cfgctx *c, json_t *root, gw_config *k)
{
    static const char *const keys[] = { "otlp_endpoint", "service_name", "sample_ratio",
                                        "batch_size",    "flush_ms",     "max_queue",
                                        "timeout_ms",    NULL };
    json_t *o;
    int rc;
    if ((rc = gw__get_obj(c, root, "tracing", "", &o)) != 0 || o == NULL)
        return rc;
    if ((rc = gw__only_keys(c, o, "tracing", keys)) != 0 ||
        (rc = gw__get_u32(c, o, "batch_size", "tracing", 1, 65536, &k->tracing.batch_size)) != 0 ||
        (rc = gw__get_u32(c, o, "flush_ms", "tracing", 10, 60000, &k->tracing.flush_ms)) != 0 ||
        (rc = gw__get_u32(c, o, "max_queue", "tracing", 16, 1048576, &k->tracing.max_queue)) != 0 ||
        (rc = gw__get_u32(c, o, "timeout_ms", "tracing", 10, 60000, &k->tracing.timeout_ms)) != 0)
        return rc;
    json_t *v = json_object_get(o, "sample_ratio");
    if (v) {
        if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1)
            return gw__fail(c, "tracing.sample_ratio", "must be a number from 0 to 1");
        k->tracing.sample_ratio = json_number_value(v);
    }
    int present;
    if ((rc = gw__get_str(c, o, "service_name", "tracing", k->tracing.service_name,
                          sizeof k->tracing.service_name, 0, &present)) != 0)
        return rc;
    v = json_object_get(o, "otlp_endpoint");
    if (v && !json_is_string(v))
        return gw__fail(c, "tracing.otlp_endpoint", "must be a string \"http://host:port/path\"");
    if (v)
        return parse_endpoint(c, json_string_value(v), k);
    return 0;
}
