/* config_redis.c — "redis" in gateway.json: the Redis of the user cache and of shared rate
 * limits (composers/redis_client.h), in one of three forms:
 *   "redis": "127.0.0.1:6379"                                   -- one server
 *   "redis": { "sentinels": ["10.0.0.1:26379", "10.0.0.2:26379"],
 *              "master_name": "gw" }                            -- a Sentinel-managed master
 *   "redis": { "cluster": ["10.0.0.1:7000", "10.0.0.2:7000"] }  -- Redis Cluster seed nodes
 * Each list holds 1 to 16 "host:port" (names are resolved when connecting). GATEWAY_REDIS
 * ("host:port") replaces any of them. */
#include <string.h>

#include "gateway/config_int.h"

static int gw__redis_list(gw__cfgctx *c, json_t *o, const char *key, cmp_redis_conf *t)
{
    char p[GW__PATH_MAX], el[GW__PATH_MAX + 32];
    json_t *a = json_object_get(o, key), *v;
    size_t i;

    gw__path(p, "redis", key);
    if (!json_is_array(a) || json_array_size(a) == 0)
        return gw__fail(c, p, "must be a non-empty array of \"host:port\" strings");
    if (json_array_size(a) > CMP_REDIS_MAX_ADDRS)
        return gw__fail(c, p, "at most %d addresses", CMP_REDIS_MAX_ADDRS);
    json_array_foreach(a, i, v) {
        snprintf(el, sizeof el, "%s[%zu]", p, i);
        if (!json_is_string(v))
            return gw__fail(c, el, "must be a \"host:port\" string");
        int rc = gw__address(c, el, json_string_value(v), 1, 0, t->addr[i], sizeof t->addr[i],
                             NULL, NULL);
        if (rc != 0)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(t->addr[j], t->addr[i]) == 0)
                return gw__fail(c, el, "listed twice");
    }
    t->n = (int)json_array_size(a);
    return 0;
}

int gw__parse_redis(gw__cfgctx *c, json_t *root, gw_config *k)
{
    static const char *const keys[] = { "sentinels", "master_name", "cluster", NULL };
    cmp_redis_conf *t = &k->redis_topo;
    json_t *v = json_object_get(root, "redis");
    int rc, present = 0;

    memset(t, 0, sizeof *t);
    if (v == NULL)
        return 0;
    if (json_is_string(v)) {
        if ((rc = gw__address(c, "redis", json_string_value(v), 1, 0, k->redis, sizeof k->redis,
                              NULL, NULL)) != 0)
            return rc;
        return cmp_redis_conf_single(t, k->redis) == 0 ? 0
               : gw__fail(c, "redis", "invalid address");
    }
    if (!json_is_object(v))
        return gw__fail(c, "redis", "must be a \"host:port\" string, or an object with "
                                    "\"sentinels\" and \"master_name\", or with \"cluster\"");
    if ((rc = gw__only_keys(c, v, "redis", keys)) != 0)
        return rc;
    int has_s = json_object_get(v, "sentinels") != NULL;
    int has_c = json_object_get(v, "cluster") != NULL;
    if (has_s == has_c)
        return gw__fail(c, "redis", "needs exactly one of \"sentinels\" or \"cluster\"");
    if (has_c) {
        if (json_object_get(v, "master_name") != NULL)
            return gw__fail(c, "redis.master_name", "only with \"sentinels\"");
        t->kind = CMP_REDIS_CLUSTER;
        return gw__redis_list(c, v, "cluster", t);
    }
    t->kind = CMP_REDIS_SENTINEL;
    if ((rc = gw__redis_list(c, v, "sentinels", t)) != 0 ||
        (rc = gw__get_str(c, v, "master_name", "redis", t->master_name, sizeof t->master_name, 0,
                          &present)) != 0)
        return rc;
    if (!present)
        return gw__fail(c, "redis.master_name", "required with \"sentinels\" (the name the "
                                                "sentinels monitor)");
    for (const char *s = t->master_name; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return gw__fail(c, "redis.master_name", "visible ASCII without spaces only");
    return 0;
}
