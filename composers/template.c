/* template.c — leg URL expansion. */
#include "composers/template.h"

#include <stdio.h>
#include <string.h>

static int leg_index(const cmp_leg_spec *specs, int n, const char *name, size_t len)
{
    for (int i = 0; i < n; i++)
        if (strlen(specs[i].name) == len && memcmp(specs[i].name, name, len) == 0)
            return i;
    return -1;
}

unsigned cmp_template_deps(const char *tmpl, const cmp_leg_spec *specs, int n, const char **unknown)
{
    unsigned deps = 0;
    *unknown = NULL;
    for (const char *p = tmpl; (p = strchr(p, '{')) != NULL;) {
        const char *end = strchr(p, '}');
        if (!end)
            break;
        const char *dot = memchr(p + 1, '.', (size_t)(end - p - 1));
        if (dot) {
            int i = leg_index(specs, n, p + 1, (size_t)(dot - p - 1));
            if (i >= 0)
                deps |= 1u << i;
            else if (!*unknown)
                *unknown = p;
        }
        p = end + 1;
    }
    return deps;
}

/* Unreserved characters pass; everything else is %XX (RFC 3986 §2.3). */
static int put_encoded(char *out, size_t *len, size_t cap, const char *v, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        int plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                    ch == '-' || ch == '.' || ch == '_' || ch == '~';
        if (plain) {
            if (*len + 1 >= cap) return -1;
            out[(*len)++] = (char)ch;
        } else {
            if (*len + 3 >= cap) return -1;
            out[(*len)++] = '%';
            out[(*len)++] = hex[ch >> 4];
            out[(*len)++] = hex[ch & 15];
        }
    }
    return 0;
}

static json_t *walk(json_t *doc, const char *path, size_t len)
{
    char key[128];
    json_t *cur = doc;
    size_t i = 0;
    while (cur && i <= len) {
        size_t j = i;
        while (j < len && path[j] != '.')
            j++;
        if (j - i == 0 || j - i >= sizeof key || !json_is_object(cur))
            return NULL;
        memcpy(key, path + i, j - i);
        key[j - i] = '\0';
        cur = json_object_get(cur, key);
        i = j + 1;
    }
    return cur;
}

int cmp_expand(const char *tmpl, const cmp_params *params, const cmp_leg_spec *specs,
               json_t *const *legs, int n_legs, char *out, size_t outlen)
{
    size_t len = 0;
    for (const char *p = tmpl; *p;) {
        if (*p != '{') {
            if (len + 1 >= outlen) return -1;
            out[len++] = *p++;
            continue;
        }
        const char *end = strchr(p, '}');
        if (!end) return -1;
        const char *name = p + 1;
        size_t nlen = (size_t)(end - name);
        const char *dot = memchr(name, '.', nlen);
        if (!dot) {
            int found = 0;
            for (int i = 0; i < params->n; i++) {
                if (params->names[i].n == nlen && memcmp(params->names[i].p, name, nlen) == 0) {
                    if (put_encoded(out, &len, outlen, params->values[i].p, params->values[i].n) < 0)
                        return -1;
                    found = 1;
                    break;
                }
            }
            if (!found) return -1;
        } else {
            int li = leg_index(specs, n_legs, name, (size_t)(dot - name));
            if (li < 0 || !legs[li]) return -1;
            json_t *v = walk(legs[li], dot + 1, (size_t)(end - dot - 1));
            char num[40];
            if (json_is_string(v)) {
                if (json_string_length(v) == 0 ||
                    put_encoded(out, &len, outlen, json_string_value(v), json_string_length(v)) < 0)
                    return -1;
            } else if (json_is_integer(v)) {
                int k = snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
                if (put_encoded(out, &len, outlen, num, (size_t)k) < 0) return -1;
            } else {
                return -1;
            }
        }
        p = end + 1;
    }
    out[len] = '\0';
    return (int)len;
}
