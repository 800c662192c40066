/* spec.c — reading and validating compositions (see spec.h). */
#include "composers/spec.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "composers/template.h"

#define DEFAULT_DEADLINE_MS 2000
#define DEFAULT_LEG_TIMEOUT_MS 1000
#define MS_MAX 3600000

static void fail(char *err, size_t errlen, const char *src, const char *path, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(err, errlen, "%s: %s: %s", src, path, msg);
}

static int only_keys(json_t *obj, const char *const *keys, const char **bad)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        int ok = 0;
        for (int i = 0; keys[i]; i++)
            ok |= strcmp(k, keys[i]) == 0;
        if (!ok) {
            *bad = k;
            return -1;
        }
    }
    return 0;
}

static int get_ms(json_t *obj, const char *key, uint32_t def, uint32_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > MS_MAX)
        return -1;
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

/* "/a/{id}/b": literal segments of [A-Za-z0-9._~-] and {param} segments. */
static int path_ok(const char *p)
{
    if (p[0] != '/')
        return 0;
    for (const char *s = p + 1; *s;) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0)
            return 0;
        if (s[0] == '{') {
            if (n < 3 || s[n - 1] != '}')
                return 0;
        } else {
            for (size_t i = 0; i < n; i++)
                if (strchr("{}?#* ", s[i]))
                    return 0;
        }
        s += n + (e ? 1 : 0);
        if (!e)
            break;
    }
    return 1;
}

static int parse_leg(cmp_composition *c, int li, json_t *leg, const char *src, const char *base,
                     char *err, size_t errlen)
{
    static const char *const keys[] = { "name", "url", "required", "timeout_ms", "after", NULL };
    char path[160];
    const char *bad;
    snprintf(path, sizeof path, "%s.legs[%d]", base, li);
    if (!json_is_object(leg)) {
        fail(err, errlen, src, path, "must be an object");
        return -1;
    }
    if (only_keys(leg, keys, &bad) < 0) {
        fail(err, errlen, src, path, "unknown field \"%s\"", bad);
        return -1;
    }
    cmp_leg_spec *l = &c->legs[li];
    json_t *name = json_object_get(leg, "name"), *url = json_object_get(leg, "url");
    if (!json_is_string(name) || json_string_length(name) == 0 || json_string_length(name) > 63 ||
        strspn(json_string_value(name), "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
            json_string_length(name)) {
        fail(err, errlen, src, path, "name: required, [A-Za-z0-9_-]{1,63}");
        return -1;
    }
    for (int i = 0; i < li; i++)
        if (strcmp(c->legs[i].name, json_string_value(name)) == 0) {
            fail(err, errlen, src, path, "name: duplicate leg \"%s\"", json_string_value(name));
            return -1;
        }
    if (!json_is_string(url) || json_string_value(url)[0] != '/' || json_string_length(url) > 1024) {
        fail(err, errlen, src, path, "url: required, a path starting with '/'");
        return -1;
    }
    json_t *req = json_object_get(leg, "required");
    if (req && !json_is_boolean(req)) {
        fail(err, errlen, src, path, "required: must be true or false");
        return -1;
    }
    l->name = strdup(json_string_value(name));
    l->url = strdup(json_string_value(url));
    l->required = req && json_is_true(req);
    if (get_ms(leg, "timeout_ms", DEFAULT_LEG_TIMEOUT_MS, &l->timeout_ms) < 0) {
        fail(err, errlen, src, path, "timeout_ms: must be an integer from 1 to %d", MS_MAX);
        return -1;
    }
    return 0;
}

static int parse_composition(cmp_composition *c, json_t *o, int ci, const char *src, char *err,
                             size_t errlen)
{
    static const char *const keys[] = { "id", "path", "deadline_ms", "legs", "max_in_flight",
                                        NULL };
    char base[64];
    const char *bad;
    snprintf(base, sizeof base, "compositions[%d]", ci);
    if (!json_is_object(o)) {
        fail(err, errlen, src, base, "must be an object");
        return -1;
    }
    if (only_keys(o, keys, &bad) < 0) {
        char p[128];
        snprintf(p, sizeof p, "%s.%s", base, bad);
        fail(err, errlen, src, p, "unknown field");
        return -1;
    }
    json_t *id = json_object_get(o, "id"), *path = json_object_get(o, "path");
    json_t *legs = json_object_get(o, "legs");
    if (!json_is_string(id) || json_string_length(id) == 0 || json_string_length(id) > 63) {
        fail(err, errlen, src, base, "id: required, 1..63 characters");
        return -1;
    }
    c->id = strdup(json_string_value(id));
    if (!json_is_string(path) || !path_ok(json_string_value(path))) {
        char p[128];
        snprintf(p, sizeof p, "%s.path", base);
        fail(err, errlen, src, p, "required: literal and {param} segments, starting with '/'");
        return -1;
    }
    c->path = strdup(json_string_value(path));
    if (get_ms(o, "deadline_ms", DEFAULT_DEADLINE_MS, &c->deadline_ms) < 0) {
        char p[128];
        snprintf(p, sizeof p, "%s.deadline_ms", base);
        fail(err, errlen, src, p, "must be an integer from 1 to %d", MS_MAX);
        return -1;
    }
    json_t *mf = json_object_get(o, "max_in_flight");
    if (mf && (!json_is_integer(mf) || json_integer_value(mf) < 1 ||
               json_integer_value(mf) > 1000000)) {
        char p[128];
        snprintf(p, sizeof p, "%s.max_in_flight", base);
        fail(err, errlen, src, p, "must be an integer from 1 to 1000000");
        return -1;
    }
    c->max_in_flight = mf ? (uint32_t)json_integer_value(mf) : 0;
    if (!json_is_array(legs) || json_array_size(legs) == 0 || json_array_size(legs) > CMP_MAX_LEGS) {
        char p[128];
        snprintf(p, sizeof p, "%s.legs", base);
        fail(err, errlen, src, p, "required: 1 to %d legs", CMP_MAX_LEGS);
        return -1;
    }
    size_t i;
    json_t *leg;
    json_array_foreach(legs, i, leg) {
        c->n_legs++; /* counted first: cmp_spec_free frees what a failing leg copied */
        if (parse_leg(c, (int)i, leg, src, base, err, errlen) < 0)
            return -1;
    }
    /* dependencies: from the templates and "after"; params must exist in the path */
    json_array_foreach(legs, i, leg) {
        cmp_leg_spec *l = &c->legs[i];
        char p[160];
        snprintf(p, sizeof p, "%s.legs[%zu].url", base, i);
        const char *unknown;
        l->deps = cmp_template_deps(l->url, c->legs, c->n_legs, &unknown);
        if (unknown) {
            fail(err, errlen, src, p, "refers to an unknown leg in %.40s", unknown);
            return -1;
        }
        for (const char *q = l->url; (q = strchr(q, '{')) != NULL; q++) {
            const char *e = strchr(q, '}');
            if (!e) {
                fail(err, errlen, src, p, "unclosed '{'");
                return -1;
            }
            if (!memchr(q, '.', (size_t)(e - q))) {
                char pat[80];
                snprintf(pat, sizeof pat, "%.*s", (int)(e - q + 1), q);
                if (!strstr(c->path, pat)) {
                    fail(err, errlen, src, p, "%s is not a parameter of the composition's path", pat);
                    return -1;
                }
            }
        }
        json_t *after = json_object_get(leg, "after");
        if (after) {
            size_t j;
            json_t *a;
            snprintf(p, sizeof p, "%s.legs[%zu].after", base, i);
            if (!json_is_array(after)) {
                fail(err, errlen, src, p, "must be an array of leg names");
                return -1;
            }
            json_array_foreach(after, j, a) {
                int found = -1;
                for (int k = 0; k < c->n_legs && json_is_string(a); k++)
                    if (strcmp(c->legs[k].name, json_string_value(a)) == 0)
                        found = k;
                if (found < 0) {
                    fail(err, errlen, src, p, "unknown leg %s", json_is_string(a) ? json_string_value(a) : "(not a string)");
                    return -1;
                }
                l->deps |= 1u << found;
            }
        }
        if (l->timeout_ms > c->deadline_ms)
            l->timeout_ms = c->deadline_ms;
    }
    /* no cycles: repeatedly take legs whose dependencies are all taken */
    unsigned done = 0;
    for (int round = 0; round < c->n_legs; round++)
        for (int k = 0; k < c->n_legs; k++)
            if (!(done & (1u << k)) && (c->legs[k].deps & ~done) == 0)
                done |= 1u << k;
    if (done != (1u << c->n_legs) - 1) {
        char p[128];
        snprintf(p, sizeof p, "%s.legs", base);
        fail(err, errlen, src, p, "dependency cycle between legs");
        return -1;
    }
    return 0;
}

cmp_spec *cmp_spec_parse(const char *json, size_t len, const char *source, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errlen, "%s: line %d column %d: %s", source, je.line, je.column, je.text);
        return NULL;
    }
    cmp_spec *s = calloc(1, sizeof *s);
    json_t *comps = json_object_get(root, "compositions");
    const char *bad;
    static const char *const keys[] = { "compositions", NULL };
    if (!s)
        goto fail;
    if (!json_is_object(root)) {
        fail(err, errlen, source, "(root)", "must be an object");
        goto fail;
    }
    if (only_keys(root, keys, &bad) < 0) {
        fail(err, errlen, source, bad, "unknown field");
        goto fail;
    }
    if (!json_is_array(comps) || json_array_size(comps) > CMP_MAX_COMPOSITIONS) {
        fail(err, errlen, source, "compositions", "required: an array of at most %d", CMP_MAX_COMPOSITIONS);
        goto fail;
    }
    size_t i;
    json_t *o;
    json_array_foreach(comps, i, o) {
        s->n++;
        if (parse_composition(&s->comps[i], o, (int)i, source, err, errlen) < 0)
            goto fail;
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->comps[j].path, s->comps[i].path) == 0 || strcmp(s->comps[j].id, s->comps[i].id) == 0) {
                char p[64];
                snprintf(p, sizeof p, "compositions[%zu]", i);
                fail(err, errlen, source, p, "same id or path as compositions[%zu]", j);
                goto fail;
            }
    }
    json_decref(root);
    return s;
fail:
    json_decref(root);
    cmp_spec_free(s);
    return NULL;
}

cmp_spec *cmp_spec_load(const char *file, char *err, size_t errlen)
{
    FILE *f = fopen(file, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot read: %m", file);
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = cap <= (16u << 20) ? realloc(buf, cap) : NULL;
            if (!nb) {
                free(buf);
                fclose(f);
                snprintf(err, errlen, "%s: cannot read: too large", file);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        if (r == 0)
            break;
        len += r;
    }
    fclose(f);
    cmp_spec *s = cmp_spec_parse(buf, len, file, err, errlen);
    free(buf);
    return s;
}

void cmp_spec_free(cmp_spec *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n; i++) {
        free(s->comps[i].id);
        free(s->comps[i].path);
        for (int j = 0; j < s->comps[i].n_legs; j++) {
            free(s->comps[i].legs[j].name);
            free(s->comps[i].legs[j].url);
        }
    }
    free(s);
}

const cmp_composition *cmp_spec_match(const cmp_spec *s, gw_slice method, gw_slice path,
                                      cmp_params *params)
{
    if (!s || !(gw_slice_eq(method, "GET") || gw_slice_eq(method, "HEAD")))
        return NULL;
    for (int i = 0; i < s->n; i++) {
        const char *pat = s->comps[i].path;
        size_t pi = 0, xi = 0, plen = strlen(pat);
        params->n = 0;
        int ok = 1;
        while (ok && pi < plen && xi < path.n) {
            if (pat[pi] != '/' || path.p[xi] != '/') { ok = 0; break; }
            pi++, xi++;
            size_t pe = pi, xe = xi;
            while (pe < plen && pat[pe] != '/') pe++;
            while (xe < path.n && path.p[xe] != '/') xe++;
            if (pat[pi] == '{') {
                if (xe == xi || params->n >= CMP_MAX_PARAMS) { ok = 0; break; }
                params->names[params->n] = (gw_slice){ pat + pi + 1, pe - pi - 2 };
                params->values[params->n] = (gw_slice){ path.p + xi, xe - xi };
                params->n++;
            } else if (pe - pi != xe - xi || memcmp(pat + pi, path.p + xi, pe - pi) != 0) {
                ok = 0;
            }
            pi = pe, xi = xe;
        }
        if (ok && pi == plen && xi == path.n)
            return &s->comps[i];
    }
    return NULL;
}
