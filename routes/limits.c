/* limits.c — the limit fields of a route: "rate_limit" { rate, per, burst, key } and
 * "max_in_flight". Parsed after the policies; errors name the field, e.g.
 * "conf/routes.json: routes[2].rate_limit.rate: must be an integer from 1 to 1000000". */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routes/parse.h"

#define RL_MAX_RATE 1000000u
#define RL_MAX_PER_MS (24ull * 3600 * 1000)
#define MAX_IN_FLIGHT 1000000

/* "250ms", "1s", "5m", "1h" into milliseconds; -1 when malformed. */
static int64_t parse_duration(const char *s)
{
    char *end;
    if (!isdigit((unsigned char)s[0]))
        return -1;
    unsigned long long n = strtoull(s, &end, 10);
    if (n == 0 || n > RL_MAX_PER_MS)
        return -1;
    uint64_t unit;
    if (strcmp(end, "ms") == 0)
        unit = 1;
    else if (strcmp(end, "s") == 0)
        unit = 1000;
    else if (strcmp(end, "m") == 0)
        unit = 60000;
    else if (strcmp(end, "h") == 0)
        unit = 3600000;
    else
        return -1;
    return n * unit > RL_MAX_PER_MS ? -1 : (int64_t)(n * unit);
}

static int get_count(rt__parser *ps, json_t *obj, const char *key, uint32_t lo, uint32_t hi,
                     uint32_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return rt__fail(ps, key, "must be an integer from %u to %u", lo, hi);
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

/* "client_ip" | "route" | "header:NAME" */
static int parse_key(rt__parser *ps, json_t *rl, rt_rate_limit *out)
{
    const char *key;
    if (rt__get_string(ps, rl, "key", 0, &key) != 0)
        return -1;
    if (!key || strcmp(key, "client_ip") == 0) {
        out->key = RT_RL_KEY_CLIENT_IP;
        return 0;
    }
    if (strcmp(key, "route") == 0) {
        out->key = RT_RL_KEY_ROUTE;
        return 0;
    }
    static const char tchar[] = "!#$%&'*+-.^_`|~";
    if (strncmp(key, "header:", 7) == 0 && key[7] && strlen(key + 7) <= 128) {
        char name[129];
        size_t n = 0;
        for (const char *p = key + 7; *p; p++) {
            unsigned char c = (unsigned char)*p;
            if (!isalnum(c) && !strchr(tchar, c))
                return rt__fail(ps, "key", "\"%s\": not a valid header name", key + 7);
            name[n++] = (char)tolower(c);
        }
        name[n] = '\0';
        out->key = RT_RL_KEY_HEADER;
        return rt__copy_string(ps, name, &out->key_header);
    }
    return rt__fail(ps, "key", "unknown key kind \"%.64s\" (client_ip, route or header:NAME)",
                    key);
}

int rt__parse_limits(rt__parser *ps, json_t *jr, rt_route *r)
{
    static const char *const fields[] = { "rate", "per", "burst", "key", NULL };
    json_t *rl = json_object_get(jr, "rate_limit");
    if (get_count(ps, jr, "max_in_flight", 1, MAX_IN_FLIGHT, &r->max_in_flight) != 0)
        return -1;
    if (!rl)
        return 0;
    if (!json_is_object(rl))
        return rt__fail(ps, "rate_limit", "must be an object");
    size_t at = rt__where_push(ps, "rate_limit");
    rt_rate_limit *l = &r->rate_limit;
    const char *per;
    if (rt__check_fields(ps, rl, fields) != 0)
        return -1;
    if (!json_object_get(rl, "rate"))
        return rt__fail(ps, "rate", "missing");
    if (get_count(ps, rl, "rate", 1, RL_MAX_RATE, &l->rate) != 0 ||
        rt__get_string(ps, rl, "per", 0, &per) != 0)
        return -1;
    l->per_ms = 1000;
    if (per) {
        int64_t ms = parse_duration(per);
        if (ms < 0)
            return rt__fail(ps, "per", "must be a duration like \"500ms\", \"1s\", \"1m\", "
                                       "\"1h\" (at most 24h)");
        l->per_ms = (uint64_t)ms;
    }
    l->burst = l->rate;
    if (get_count(ps, rl, "burst", 1, RL_MAX_RATE, &l->burst) != 0 || parse_key(ps, rl, l) != 0)
        return -1;
    rt__where_pop(ps, at);
    return 0;
}

/* "per" back as the largest whole unit. */
static void duration_text(uint64_t ms, char *out, size_t n)
{
    if (ms % 3600000 == 0)
        snprintf(out, n, "%lluh", (unsigned long long)(ms / 3600000));
    else if (ms % 60000 == 0)
        snprintf(out, n, "%llum", (unsigned long long)(ms / 60000));
    else if (ms % 1000 == 0)
        snprintf(out, n, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(out, n, "%llums", (unsigned long long)ms);
}

int rt__limits_to_json(const rt_route *r, json_t *obj)
{
    int rc = 0;
    if (r->rate_limit.rate) {
        const rt_rate_limit *l = &r->rate_limit;
        char per[32], key[160];
        duration_text(l->per_ms, per, sizeof per);
        snprintf(key, sizeof key, "%s%s",
                 l->key == RT_RL_KEY_ROUTE ? "route"
                 : l->key == RT_RL_KEY_HEADER ? "header:" : "client_ip",
                 l->key == RT_RL_KEY_HEADER ? l->key_header : "");
        json_t *o = json_pack("{s:I,s:s,s:I,s:s}", "rate", (json_int_t)l->rate, "per", per,
                              "burst", (json_int_t)l->burst, "key", key);
        rc |= json_object_set_new(obj, "rate_limit", o);
    }
    if (r->max_in_flight)
        rc |= json_object_set_new(obj, "max_in_flight", json_integer(r->max_in_flight));
    return rc ? -1 : 0;
}
