/* config_limits.c — "rate_limits" in gateway.json: how routes' "rate_limit" are enforced.
 *   "rate_limits": { "shared": true,     -- through "redis" when it is set (else in-process)
 *                    "instances": 2,     -- gateways sharing the limit: with Redis slow or
 *                                           down each enforces rate / instances locally
 *                    "timeout_ms": 50 }  -- a Redis answer later than this: local share */
#include "gateway/config_int.h"

int gw__parse_rate_limits(gw__cfgctx *c, json_t *root, gw_config *k)
{
    static const char *const keys[] = { "shared", "instances", "timeout_ms", NULL };
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
    return 0;
}
