/* limits.c — the limit fields of a route: "rate_limit" { rate, per, burst, key } and
 * "max_in_flight". Parsed after the policies; errors name the field, e.g.
 * "conf/routes.json: routes[2].rate_limit.rate: must be an integer from 1 to 1000000". */
#include <ctype.h>
#include <stdarg.h>
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

/* A parse error: the field and the reason, for the caller to name the way it names things. */
typedef struct rl_err {
    const char *field;
    char *reason;
    size_t n;
} rl_err;

static int fail(rl_err *e, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(rl_err *e, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    e->field = field;
    vsnprintf(e->reason, e->n, fmt, ap);
    va_end(ap);
    return -1;
}

static int get_count(rl_err *e, json_t *obj, const char *key, uint32_t lo, uint32_t hi,
                     uint32_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return fail(e, key, "must be an integer from %u to %u", lo, hi);
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

/* "client_ip" | "route" | "header:NAME" (NAME lower-cased into HDR) */
static int parse_key(rl_err *e, json_t *rl, rt_rate_limit *out, char *hdr)
{
    json_t *jk = json_object_get(rl, "key");
    if (jk && !json_is_string(jk))
        return fail(e, "key", "must be a string");
    const char *key = jk ? json_string_value(jk) : NULL;
    if (!key || strcmp(key, "client_ip") == 0) {
        out->key = RT_RL_KEY_CLIENT_IP;
        return 0;
    }
    if (strcmp(key, "route") == 0) {
        out->key = RT_RL_KEY_ROUTE;
        return 0;
    }
    static const char tchar[] = "!#$%&'*+-.^_`|~";
    if (strncmp(key, "header:", 7) == 0 && key[7] && strlen(key + 7) < RT_RL_HEADER_MAX) {
        size_t n = 0;
        for (const char *p = key + 7; *p; p++) {
            unsigned char c = (unsigned char)*p;
            if (!isalnum(c) && !strchr(tchar, c))
                return fail(e, "key", "\"%.64s\": not a valid header name", key + 7);
            hdr[n++] = (char)tolower(c);
        }
        hdr[n] = '\0';
        out->key = RT_RL_KEY_HEADER;
        out->key_header = hdr;
        return 0;
    }
    return fail(e, "key", "unknown key kind \"%.64s\" (client_ip, route or header:NAME)", key);
}

int rt_rate_limit_parse(json_t *rl, rt_rate_limit *l, char *hdr, const char **field,
                        char *reason, size_t reason_len)
{
    static const char *const fields[] = { "rate", "per", "burst", "key", NULL };
    rl_err e = { NULL, reason, reason_len };
    const char *name;
    json_t *v;
    memset(l, 0, sizeof *l);
    *field = NULL;
    if (!json_is_object(rl)) {
        snprintf(reason, reason_len, "must be an object");
        return -1;
    }
    json_object_foreach(rl, name, v) {
        int known = 0;
        for (int i = 0; fields[i]; i++)
            known |= strcmp(name, fields[i]) == 0;
        if (!known) {
            *field = name;
            snprintf(reason, reason_len, "unknown field");
            return -1;
        }
    }
    int rc = 0;
    if (!json_object_get(rl, "rate"))
        rc = fail(&e, "rate", "missing");
    else
        rc = get_count(&e, rl, "rate", 1, RL_MAX_RATE, &l->rate);
    json_t *jp = json_object_get(rl, "per");
    l->per_ms = 1000;
    if (rc == 0 && jp) {
        int64_t ms = json_is_string(jp) ? parse_duration(json_string_value(jp)) : -1;
        if (ms < 0)
            rc = fail(&e, "per", "must be a duration like \"500ms\", \"1s\", \"1m\", \"1h\" "
                                 "(at most 24h)");
        else
            l->per_ms = (uint64_t)ms;
    }
    l->burst = l->rate;
    if (rc == 0)
        rc = get_count(&e, rl, "burst", 1, RL_MAX_RATE, &l->burst);
    if (rc == 0)
        rc = parse_key(&e, rl, l, hdr);
    if (rc != 0) {
        *field = e.field;
        memset(l, 0, sizeof *l);
    }
    return rc;
}

int rt__parse_limits(rt__parser *ps, json_t *jr, rt_route *r)
{
    json_t *rl = json_object_get(jr, "rate_limit");
    json_t *mf = json_object_get(jr, "max_in_flight");
    if (mf && (!json_is_integer(mf) || json_integer_value(mf) < 1 ||
               json_integer_value(mf) > MAX_IN_FLIGHT))
        return rt__fail(ps, "max_in_flight", "must be an integer from 1 to %d", MAX_IN_FLIGHT);
    r->max_in_flight = mf ? (uint32_t)json_integer_value(mf) : 0;
    if (!rl)
        return 0;
    char hdr[RT_RL_HEADER_MAX], reason[200];
    const char *field;
    if (rt_rate_limit_parse(rl, &r->rate_limit, hdr, &field, reason, sizeof reason) != 0) {
        if (!field)
            return rt__fail(ps, "rate_limit", "%s", reason);
        size_t at = rt__where_push(ps, "rate_limit");
        rt__fail(ps, field, "%s", reason);
        rt__where_pop(ps, at);
        return -1;
    }
    if (r->rate_limit.key_header) {
        r->rate_limit.key_header = NULL;
        return rt__copy_string(ps, hdr, &r->rate_limit.key_header);
    }
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
