/* parse_policy.c — the cutover policy fields of a route: per-upstream "rewrites", "split",
 * "sticky", "override", "shadow" and "fallback". Called by parse_route after the core
 * fields, in that order, so the first error is the first field in that order. Upstream names
 * point into the table's copy of the upstream list; arrays and other strings belong to the
 * route and are freed by rt__route_free_policies. */
#include <stdlib.h>
#include <string.h>

#include "routes/parse.h"
#include "routes/policy.h"

#define MAX_WEIGHT 100000
#define MAX_STRING 4096
#define SAFE_METHODS (RT_M_GET | RT_M_HEAD | RT_M_OPTIONS)

void rt__route_free_policies(rt_route *r)
{
    for (int i = 0; i < r->n_rewrites; i++) {
        free((char *)r->rewrites[i].strip_prefix);
        free((char *)r->rewrites[i].rewrite_template);
    }
    free(r->rewrites);
    r->rewrites = NULL;
    r->n_rewrites = 0;
    free(r->split);
    r->split = NULL;
    r->n_split = 0;
    free((char *)r->sticky_header);
    free((char *)r->sticky_cookie);
    free((char *)r->override_header);
    r->sticky_header = r->sticky_cookie = r->override_header = NULL;
    for (int i = 0; i < r->shadow.n_ignore_fields; i++)
        free((char *)r->shadow.ignore_fields[i]);
    free(r->shadow.ignore_fields);
    r->shadow.ignore_fields = NULL;
    r->shadow.n_ignore_fields = 0;
    free((char *)r->rate_limit.key_header);
    r->rate_limit.key_header = NULL;
}

/* An HTTP token (RFC 9110 5.6.2): what header and cookie names are made of. */
static int token_ok(const char *s)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (!*s)
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c && strchr(extra, c))))
            return 0;
    }
    return 1;
}

/* The object field KEY of JR, or NULL when absent; fails when present and not an object. */
static int get_object(rt__parser *ps, json_t *jr, const char *key, json_t **out)
{
    *out = json_object_get(jr, key);
    if (*out && !json_is_object(*out))
        return rt__fail(ps, key, "must be an object");
    return 0;
}

static int parse_rewrites(rt__parser *ps, json_t *jr, rt_route *r, const char *path)
{
    json_t *v, *rw;
    const char *name;
    if (get_object(ps, jr, "rewrites", &v) != 0)
        return -1;
    if (!v)
        return 0;
    r->rewrites = calloc(json_object_size(v) + 1, sizeof(*r->rewrites));
    if (!r->rewrites)
        return rt__fail_nomem(ps);
    size_t at = rt__where_push(ps, "rewrites");
    json_object_foreach(v, name, rw) {
        rt_rewrite_rule *rule = &r->rewrites[r->n_rewrites];
        const char *strip, *tpl;
        if ((rule->upstream_index = rt__find_upstream(ps, name, name)) < 0 ||
            rt__parse_rewrite(ps, rw, name, path, &strip, &tpl) != 0)
            return -1;
        rule->upstream = ps->t->upstreams[rule->upstream_index];
        r->n_rewrites++; /* counted before the copies, so a half-built rule is freed */
        if (rt__copy_string(ps, strip, &rule->strip_prefix) != 0 ||
            rt__copy_string(ps, tpl, &rule->rewrite_template) != 0)
            return -1;
    }
    rt__where_pop(ps, at);
    return 0;
}

static int parse_split(rt__parser *ps, json_t *jr, rt_route *r)
{
    json_t *v, *w;
    const char *name;
    if (get_object(ps, jr, "split", &v) != 0)
        return -1;
    if (!v)
        return 0;
    r->split = calloc(json_object_size(v) + 1, sizeof(*r->split));
    if (!r->split)
        return rt__fail_nomem(ps);
    size_t at = rt__where_push(ps, "split");
    json_object_foreach(v, name, w) {
        rt_split_side *side = &r->split[r->n_split];
        if ((side->upstream_index = rt__find_upstream(ps, name, name)) < 0)
            return -1;
        if (!json_is_integer(w) || json_integer_value(w) < 0 ||
            json_integer_value(w) > MAX_WEIGHT)
            return rt__fail(ps, name, "must be an integer from 0 to %d", MAX_WEIGHT);
        side->upstream = ps->t->upstreams[side->upstream_index];
        side->weight = (uint32_t)json_integer_value(w);
        r->split_total += side->weight;
        r->n_split++;
    }
    rt__where_pop(ps, at);
    if (r->split_total == 0)
        return rt__fail(ps, "split", "at least one weight must be greater than 0");
    return 0;
}

/* A header or cookie name field KEY of V (whose path is pushed), copied into *dst. */
static int get_name(rt__parser *ps, json_t *v, const char *key, const char *dflt,
                    const char **dst)
{
    const char *s;
    if (rt__get_string(ps, v, key, 0, &s) != 0)
        return -1;
    if (!s)
        s = dflt;
    if (s && !token_ok(s))
        return rt__fail(ps, key, "\"%s\" is not a valid %s name", s, key);
    return rt__copy_string(ps, s, dst);
}

static int parse_sticky(rt__parser *ps, json_t *jr, rt_route *r)
{
    static const char *const fields[] = { "header", "cookie", NULL };
    json_t *v;
    if (get_object(ps, jr, "sticky", &v) != 0)
        return -1;
    if (!v)
        return 0;
    if (r->n_split == 0)
        return rt__fail(ps, "sticky", "only allowed with \"split\"");
    size_t at = rt__where_push(ps, "sticky");
    if (rt__check_fields(ps, v, fields) != 0 ||
        get_name(ps, v, "header", NULL, &r->sticky_header) != 0 ||
        get_name(ps, v, "cookie", NULL, &r->sticky_cookie) != 0)
        return -1;
    rt__where_pop(ps, at);
    if (!r->sticky_header == !r->sticky_cookie)
        return rt__fail(ps, "sticky", "needs exactly one of \"header\" or \"cookie\"");
    return 0;
}

static int parse_override(rt__parser *ps, json_t *jr, rt_route *r)
{
    static const char *const fields[] = { "header", NULL };
    json_t *v;
    if (get_object(ps, jr, "override", &v) != 0)
        return -1;
    if (!v)
        return 0;
    size_t at = rt__where_push(ps, "override");
    if (rt__check_fields(ps, v, fields) != 0 ||
        get_name(ps, v, "header", RT_OVERRIDE_HEADER, &r->override_header) != 0)
        return -1;
    rt__where_pop(ps, at);
    return 0;
}

/* "a.b.c": object keys from the response's root; no empty key. */
static int dotted_path_ok(const char *s)
{
    if (!*s || *s == '.' || s[strlen(s) - 1] == '.' || strstr(s, ".."))
        return 0;
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    }
    return 1;
}

static int parse_ignore_fields(rt__parser *ps, json_t *v, rt_route *r)
{
    if (!v)
        return 0;
    if (!json_is_array(v))
        return rt__fail(ps, "ignore_fields", "must be an array of strings");
    r->shadow.ignore_fields = calloc(json_array_size(v) + 1, sizeof(char *));
    if (!r->shadow.ignore_fields)
        return rt__fail_nomem(ps);
    size_t i;
    json_t *f;
    json_array_foreach(v, i, f) {
        char field[48];
        snprintf(field, sizeof(field), "ignore_fields[%zu]", i);
        if (!json_is_string(f))
            return rt__fail(ps, field, "must be a string");
        const char *s = json_string_value(f);
        if (json_string_length(f) > MAX_STRING)
            return rt__fail(ps, field, "longer than %d bytes", MAX_STRING);
        if (strlen(s) != json_string_length(f) || !dotted_path_ok(s))
            return rt__fail(ps, field, "\"%s\" is not a dotted path like \"meta.generated_at\"",
                            s);
        if (rt__copy_string(ps, s, &r->shadow.ignore_fields[i]) != 0)
            return -1;
        r->shadow.n_ignore_fields++;
    }
    return 0;
}

static int parse_shadow(rt__parser *ps, json_t *jr, rt_route *r)
{
    static const char *const fields[] = { "upstream", "percent", "ignore_fields", "methods",
                                          "timeout_ms", NULL };
    json_t *v;
    const char *up;
    r->shadow.upstream_index = -1;
    if (get_object(ps, jr, "shadow", &v) != 0)
        return -1;
    if (!v)
        return 0;
    size_t at = rt__where_push(ps, "shadow");
    json_t *pct = json_object_get(v, "percent");
    json_t *methods = json_object_get(v, "methods");
    json_t *tmo = json_object_get(v, "timeout_ms");
    if (rt__check_fields(ps, v, fields) != 0 || rt__get_string(ps, v, "upstream", 1, &up) != 0)
        return -1;
    int idx = rt__find_upstream(ps, "upstream", up);
    if (idx < 0)
        return -1;
    if (pct && (!json_is_integer(pct) || json_integer_value(pct) < 0 ||
                json_integer_value(pct) > 100))
        return rt__fail(ps, "percent", "must be an integer from 0 to 100");
    if (tmo && (!json_is_integer(tmo) || json_integer_value(tmo) < 1 ||
                json_integer_value(tmo) > 3600000))
        return rt__fail(ps, "timeout_ms", "must be an integer from 1 to 3600000");
    if (json_is_array(methods) && json_array_size(methods) == 0)
        return rt__fail(ps, "methods", "must not be empty");
    if (rt__parse_methods(ps, methods, "methods", &r->shadow.methods) != 0 ||
        parse_ignore_fields(ps, json_object_get(v, "ignore_fields"), r) != 0)
        return -1;
    rt__where_pop(ps, at);
    if (!methods)
        r->shadow.methods = SAFE_METHODS;
    r->shadow.percent = pct ? (int)json_integer_value(pct) : 100;
    r->shadow.timeout_ms = tmo ? (uint32_t)json_integer_value(tmo) : RT_SHADOW_TIMEOUT_MS;
    r->shadow.upstream_index = idx;
    r->shadow.upstream = ps->t->upstreams[idx];
    return 0;
}

static int parse_on(rt__parser *ps, json_t *v, unsigned *on)
{
    static const char *const names[] = { "404", "5xx", "connect" }; /* RT_FB_* bit order */
    *on = RT_FB_ALL;
    if (!v)
        return 0;
    if (!json_is_array(v))
        return rt__fail(ps, "on", "must be an array of \"404\", \"5xx\", \"connect\"");
    if (json_array_size(v) == 0)
        return rt__fail(ps, "on", "must not be empty");
    *on = 0;
    size_t i;
    json_t *c;
    json_array_foreach(v, i, c) {
        char field[32];
        snprintf(field, sizeof(field), "on[%zu]", i);
        if (!json_is_string(c))
            return rt__fail(ps, field, "must be a string");
        int b = 0;
        while (b < 3 && strcmp(json_string_value(c), names[b]) != 0)
            b++;
        if (b == 3)
            return rt__fail(ps, field,
                            "unknown condition \"%s\" (expected \"404\", \"5xx\" or \"connect\")",
                            json_string_value(c));
        if (*on & (1u << b))
            return rt__fail(ps, field, "duplicate \"%s\"", names[b]);
        *on |= 1u << b;
    }
    return 0;
}

static int parse_fallback(rt__parser *ps, json_t *jr, rt_route *r)
{
    static const char *const fields[] = { "upstream", "on", NULL };
    json_t *v;
    const char *up;
    int idx;
    r->fallback.upstream_index = -1;
    if (get_object(ps, jr, "fallback", &v) != 0)
        return -1;
    if (!v)
        return 0;
    size_t at = rt__where_push(ps, "fallback");
    if (rt__check_fields(ps, v, fields) != 0 || rt__get_string(ps, v, "upstream", 0, &up) != 0)
        return -1;
    if (up)
        idx = rt__find_upstream(ps, "upstream", up);
    else if ((idx = ps->t->legacy_index) < 0)
        return rt__fail(ps, "upstream", "missing, and the legacy upstream \"%s\" is unknown",
                        ps->t->legacy);
    if (idx < 0 || parse_on(ps, json_object_get(v, "on"), &r->fallback.on) != 0)
        return -1;
    rt__where_pop(ps, at);
    r->fallback.upstream_index = idx;
    r->fallback.upstream = ps->t->upstreams[idx];
    return 0;
}

int rt__parse_policies(rt__parser *ps, json_t *jr, rt_route *r)
{
    const char *path = json_string_value(json_object_get(jr, "path")); /* checked already */
    if (parse_rewrites(ps, jr, r, path) != 0 || parse_split(ps, jr, r) != 0 ||
        parse_sticky(ps, jr, r) != 0 || parse_override(ps, jr, r) != 0 ||
        parse_shadow(ps, jr, r) != 0 || parse_fallback(ps, jr, r) != 0)
        return -1;
    return 0;
}
