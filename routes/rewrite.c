/* rewrite.c — the upstream path of a matched request. Runs per request: writes straight into
 * the caller's buffer and never allocates.
 *
 *   strip_prefix only:   "/api/users/5" - "/api"          -> "/users/5"  ("/api" -> "/")
 *   template only:       "/users/{id}" with id=5          -> "/users/5"  (whole path replaced)
 *   both:                template, then the stripped path -> "/v2" + "/users/5"
 *                        ("/api" -> "/v2"; a path without the prefix keeps it: "/v2/x")
 *   query (when given):  appended after "?", or after "&" when the template has its own "?"
 *
 * The rule is the chosen upstream's "rewrites" entry when it has one, else "rewrite".
 */
#include <string.h>

#include "routes/policy.h"

typedef struct writer {
    char *out;
    size_t cap;
    size_t len;
    int overflow;
    int has_query;
} writer;

static void put(writer *w, const char *p, size_t n)
{
    if (n == 0)
        return;
    if (w->overflow || n >= w->cap - w->len) { /* keep a byte for the NUL */
        w->overflow = 1;
        return;
    }
    memcpy(w->out + w->len, p, n);
    w->len += n;
}

static const gw_slice *param_value(const rt_match *m, gw_slice name)
{
    for (int i = 0; i < m->n_params; i++) {
        if (m->param_names[i].n == name.n && memcmp(m->param_names[i].p, name.p, name.n) == 0)
            return &m->param_values[i];
    }
    return NULL;
}

/* Writes TPL with each {name} replaced by its captured value and {**} by the rest.
 * Returns -1 for a name the match did not capture (validation rules that out for a table's
 * own matches). */
static int put_template(writer *w, const char *tpl, const rt_match *m)
{
    const char *p = tpl;
    for (;;) {
        const char *open = strchr(p, '{');
        const char *close = open ? strchr(open, '}') : NULL;
        if (!close) {
            put(w, p, strlen(p));
            break;
        }
        put(w, p, (size_t)(open - p));
        gw_slice name = { open + 1, (size_t)(close - open - 1) };
        const gw_slice *v = gw_slice_eq(name, "**") ? (m->has_rest ? &m->rest : NULL)
                                                    : param_value(m, name);
        if (!v)
            return -1;
        put(w, v->p, v->n);
        p = close + 1;
    }
    w->has_query = strchr(tpl, '?') != NULL;
    return 0;
}

/* PATH without PREFIX when it starts with it at a segment boundary, else PATH unchanged. */
static gw_slice strip(gw_slice path, const char *prefix)
{
    size_t n = strlen(prefix);
    if (path.n < n || memcmp(path.p, prefix, n) != 0 || (path.n > n && path.p[n] != '/'))
        return path;
    if (path.n == n)
        return GW_SLICE_LIT("/");
    return (gw_slice){ path.p + n, path.n - n };
}

/* The rewrite itself: STRIP and TPL are the rule's (either may be NULL). */
static int rewrite_with(const rt_match *m, const char *strip_prefix, const char *tpl,
                        gw_slice path, gw_slice query, char *out, size_t outlen)
{
    writer w = { out, outlen, 0, outlen == 0, 0 };
    gw_slice tail = strip_prefix ? strip(path, strip_prefix) : path;

    if (tpl) {
        if (put_template(&w, tpl, m) != 0)
            return -1;
        /* A template alone replaces the whole path; so does one whose prefix took it all. */
        if (!strip_prefix || gw_slice_eq(tail, "/")) {
            tail.n = 0;
        } else if (w.len > 0 && out[w.len - 1] == '/' && tail.n > 0) {
            tail.p++; /* "/v2/" + "/users" must not give "/v2//users" */
            tail.n--;
        }
    }
    put(&w, tail.p, tail.n);
    if (query.n > 0) {
        put(&w, w.has_query ? "&" : "?", 1);
        put(&w, query.p, query.n);
    }
    if (w.overflow)
        return -1;
    out[w.len] = '\0';
    return (int)w.len;
}

int rt_rewrite_for(const rt_match *m, int upstream_index, gw_slice path, gw_slice query,
                   char *out, size_t outlen)
{
    const rt_route *r = m->route;
    if (!r)
        return -1;
    for (int i = 0; i < r->n_rewrites; i++) {
        const rt_rewrite_rule *rule = &r->rewrites[i];
        if (rule->upstream_index == upstream_index)
            return rewrite_with(m, rule->strip_prefix, rule->rewrite_template, path, query,
                                out, outlen);
    }
    return rewrite_with(m, r->strip_prefix, r->rewrite_template, path, query, out, outlen);
}

int rt_rewrite(const rt_match *m, gw_slice path, gw_slice query, char *out, size_t outlen)
{
    return m->route ? rt_rewrite_for(m, m->route->upstream_index, path, query, out, outlen)
                    : -1;
}
