/* config_limits.c — "rate_limits" in gateway.json: how routes' "rate_limit" are enforced.
 *   "rate_limits": { "shared": true,     -- through "redis" when it is set (else in-process)
 *                    "instances": 2,     -- gateways sharing the limit: with Redis slow or
 *                                           down each enforces rate / instances locally
 *                    "timeout_ms": 50,   -- a Redis answer later than this: local share
 *                    "default": { "rate": 100, "per": "1s", ... } }  -- routes without one
 * and per upstream: "max_in_flight": 100, "queue": { "max": 50, "timeout_ms": 1000 } */
#include "gateway/config_int.h"

int gw__parse_rate_limits(gw__cfgctx *c, json_t *root, gw_config *k)
{
    static const char *const keys[] = { "shared", "instances", "timeout_ms", "default", NULL };
    json_t *o;
    int rc;
    if ((rc = gw__get_obj(c, root, "rate_limits", "", &o)) != 0 || o == NULL)
        return rc;
    if ((rc = gw__only_keys(c, o, "rate_limits", keys)) != 0 ||
        (rc = gw__get_u32(c, o, "instances", "rate_limits", 1, 1024,
                          &k->rate_limits.instances)) != 0 ||
        (rc = gw__get_ms(c, o, "timeout_ms", "rate_limits", &k->rate_limits.timeout_ms)) != 0)
        return rc;
    json_t *sh = json_object_get(o, "shared");
    if (sh && !json_is_boolean(sh))
        return gw__fail(c, "rate_limits.shared", "must be true or false");
    if (sh)
        k->rate_limits.shared = json_is_true(sh);
    /* "default": the rate_limit of every route without one (the same fields) */
    json_t *def = json_object_get(o, "default");
    if (def) {
        char reason[200], p[GW__PATH_MAX];
        const char *field;
        if (rt_rate_limit_parse(def, &k->rate_limits.default_limit, k->rate_limits.default_header,
                                &field, reason, sizeof reason) != 0)
            return gw__fail(c, field ? gw__path(p, "rate_limits.default", field)
                                     : "rate_limits.default", "%s", reason);
    }
    return 0;
}

int gw__parse_upstream_limits(gw__cfgctx *c, json_t *u, const char *path, gw_upstream_conf *up)
{
    static const char *const queue_keys[] = { "max", "timeout_ms", NULL };
    char p[GW__PATH_MAX];
    json_t *q;
    int rc;
    if ((rc = gw__get_u32(c, u, "max_in_flight", path, 0, 1000000, &up->max_in_flight)) != 0 ||
        (rc = gw__get_obj(c, u, "queue", path, &q)) != 0 || q == NULL)
        return rc;
    gw__path(p, path, "queue");
    if ((rc = gw__only_keys(c, q, p, queue_keys)) != 0 ||
        (rc = gw__get_u32(c, q, "max", p, 0, 100000, &up->queue_max)) != 0 ||
        (rc = gw__get_ms(c, q, "timeout_ms", p, &up->queue_timeout_ms)) != 0)
        return rc;
    if (up->max_in_flight == 0 && up->queue_max > 0)
        return gw__fail(c, gw__path(p, path, "queue"), "needs max_in_flight");
    return 0;
}
