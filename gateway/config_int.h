/* config_int.h — the parsing helpers config.c shares with the files that parse parts of
 * gateway.json (config_listeners.c). Not for the rest of the gateway. */
#ifndef GW_CONFIG_INT_H
#define GW_CONFIG_INT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "gateway/config.h"

#define GW__MS_MAX 3600000
#define GW__PATH_MAX 512
#define GW__QUOTE_SIZE (80 * 4 + 8)

/* What a parse needs to name its errors. prefix is the file name while the file is being
 * checked and NULL while the environment is (env errors name the variable instead). */
typedef struct gw__cfgctx {
    const char *prefix;
    const char *file;
    size_t dirlen; /* file[0..dirlen) is its folder including the last '/'; 0 = cwd */
    char *err;
    size_t errlen;
} gw__cfgctx;

/* Writes "PREFIX: PATH: reason" into the error buffer; returns GW_EINVAL. */
int gw__fail(gw__cfgctx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "parent.key" (or "key" at the root) into out. */
const char *gw__path(char out[GW__PATH_MAX], const char *parent, const char *key);
/* S quoted for an error message, cut after 80 bytes. */
const char *gw__quote(char out[GW__QUOTE_SIZE], const char *s);
/* Fails on the first member of OBJ not listed in KEYS (NULL-terminated). */
int gw__only_keys(gw__cfgctx *c, json_t *obj, const char *path, const char *const *keys);
/* The member KEY of OBJ, an object when present; *out = NULL when absent. */
int gw__get_obj(gw__cfgctx *c, json_t *obj, const char *key, const char *parent, json_t **out);
int gw__get_int(gw__cfgctx *c, json_t *obj, const char *key, const char *parent,
                json_int_t lo, json_int_t hi, json_int_t *out);
int gw__get_u32(gw__cfgctx *c, json_t *obj, const char *key, const char *parent, uint32_t lo,
                uint32_t hi, uint32_t *out);
int gw__get_ms(gw__cfgctx *c, json_t *obj, const char *key, const char *parent, uint32_t *out);
/* String member KEY into buf[size]; *present says whether it was there. */
int gw__get_str(gw__cfgctx *c, json_t *obj, const char *key, const char *parent, char *buf,
                size_t size, int allow_empty, int *present);
/* Validates address S (named PATH in errors) into buf and, with resolve, addr/len. */
int gw__address(gw__cfgctx *c, const char *path, const char *s, unsigned min_port, int resolve,
                char *buf, size_t size, struct sockaddr_storage *addr, socklen_t *len);
/* REL joined to the config file's folder (unless absolute) into out[size]. */
int gw__resolve_path(gw__cfgctx *c, const char *path, const char *rel, char *out, size_t size);

/* upstreams.NAME (U) into up (defaults set first with gw__upstream_defaults). */
int gw__parse_upstream(gw__cfgctx *c, const char *name, json_t *u, gw_upstream_conf *up);
void gw__upstream_defaults(gw_upstream_conf *up);
int gw__name_ok(const char *s); /* [A-Za-z0-9_.-]{1,63} */

/* config_listeners.c: upstreams.NAME.tls of U (at PATH) into up. */
int gw__parse_upstream_tls(gw__cfgctx *c, json_t *u, const char *path, gw_upstream_conf *up);
/* config_listeners.c: "listen" or "listeners" of ROOT into k->listeners. */
int gw__parse_listeners(gw__cfgctx *c, json_t *root, gw_config *k);
/* config_redis.c: "redis" of ROOT into k->redis (one server) and k->redis_topo. */
int gw__parse_redis(gw__cfgctx *c, json_t *root, gw_config *k);
/* config_redis.c: GATEWAY_REDIS V ("host:port" or "redis://[user:password@]host:port"). */
int gw__parse_redis_env(gw__cfgctx *c, const char *v, gw_config *k);
/* config_limits.c: "rate_limits" of ROOT into k->rate_limits (defaults already set). */
int gw__parse_rate_limits(gw__cfgctx *c, json_t *root, gw_config *k);
/* config_tracing.c: "tracing" of ROOT into k->tracing, and its defaults. */
int gw__parse_tracing(gw__cfgctx *c, json_t *root, gw_config *k);
void gw__tracing_defaults(gw_config *k);
/* config_limits.c: upstreams.NAME.max_in_flight and .queue {max, timeout_ms} of U. */
int gw__parse_upstream_limits(gw__cfgctx *c, json_t *u, const char *path, gw_upstream_conf *up);

#endif
