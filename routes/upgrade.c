/* upgrade.c — a route's "upgrade" (the protocols a client may switch to through it, e.g.
 * ["websocket"]) and "tunnel_idle_timeout_ms" (how long an upgraded connection may carry no
 * byte either way). Errors name the field: "FILE: routes[i].upgrade: reason".
 *
 * The tokens are kept lower-cased in one block, each NUL-terminated, an empty one last
 * ("websocket\0h2c\0\0"): a request's Upgrade values are compared with them
 * case-insensitively (RFC 9110 §7.8: protocol names are case-insensitive). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "routes/parse.h"
#include "routes/route_table.h"

#define RT_UPGRADE_MAX 8
#define RT_UPGRADE_TOKEN_MAX 64
#define RT_TUNNEL_IDLE_MAX (24u * 3600 * 1000) /* one day */

/* tchar (RFC 9110 §5.6.2), and "/" for a version ("HTTP/2.0" is a protocol name too). */
static int token_ok(const char *s, size_t n)
{
    if (n == 0 || n > RT_UPGRADE_TOKEN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && !strchr("!#$%&'*+-.^_`|~/", c))
            return 0;
    }
    return 1;
}

int rt__parse_upgrade(rt__parser *ps, json_t *jr, rt_route *r)
{
    json_t *v = json_object_get(jr, "upgrade");
    json_t *t = json_object_get(jr, "tunnel_idle_timeout_ms");
    if (t && (!json_is_integer(t) || json_integer_value(t) < 1 ||
              json_integer_value(t) > RT_TUNNEL_IDLE_MAX))
        return rt__fail(ps, "tunnel_idle_timeout_ms", "must be an integer from 1 to %u",
                        RT_TUNNEL_IDLE_MAX);
    r->tunnel_idle_timeout_ms = t ? (uint32_t)json_integer_value(t) : 0;
    if (!v)
        return 0;
    if (!json_is_array(v))
        return rt__fail(ps, "upgrade", "must be an array of protocol names (e.g. [\"websocket\"])");
    size_t n = json_array_size(v), total = 1;
    if (n > RT_UPGRADE_MAX)
        return rt__fail(ps, "upgrade", "more than %d protocols", RT_UPGRADE_MAX);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_string(e) || !token_ok(json_string_value(e), json_string_length(e)))
            return rt__fail(ps, "upgrade",
                            "[%zu] must be a protocol name (a token of the Upgrade header, "
                            "at most %d characters)", i, RT_UPGRADE_TOKEN_MAX);
        total += json_string_length(e) + 1;
    }
    if (n == 0)
        return 0; /* [] is no upgrade, as absent */
    char *b = malloc(total), *at = b;
    if (!b)
        return rt__fail_nomem(ps);
    *at = '\0';
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(v, i));
        if (rt_route_upgrade_allows(&(rt_route){ .upgrade = b }, gw_slice_of(s))) {
            free(b);
            return rt__fail(ps, "upgrade", "\"%s\" is listed twice", s);
        }
        size_t len = strlen(s);
        for (size_t k = 0; k < len; k++)
            at[k] = (char)tolower((unsigned char)s[k]);
        at[len] = '\0';
        at += len + 1;
        *at = '\0';
    }
    r->upgrade = b;
    return 0;
}

int rt__upgrade_to_json(const rt_route *r, json_t *obj)
{
    int rc = 0;
    if (r->upgrade) {
        json_t *a = json_array();
        for (const char *s = r->upgrade; a && *s; s += strlen(s) + 1)
            rc |= json_array_append_new(a, json_string(s));
        rc |= json_object_set_new(obj, "upgrade", a);
    }
    if (r->tunnel_idle_timeout_ms)
        rc |= json_object_set_new(obj, "tunnel_idle_timeout_ms",
                                  json_integer(r->tunnel_idle_timeout_ms));
    return rc ? -1 : 0;
}

const char *rt_route_upgrade_allows(const rt_route *r, gw_slice token)
{
    if (!r->upgrade || token.n == 0)
        return NULL;
    for (const char *s = r->upgrade; *s; s += strlen(s) + 1)
        if (gw_slice_ieq(token, s))
            return s;
    return NULL;
}
