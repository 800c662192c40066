/* route_table.c — routes.json to an rt_table: parse with jansson, validate every field,
 * copy the strings the table keeps, and compile the matcher route by route, so the first
 * error reported is the first one in the document. Errors read "SOURCE: json.path: reason".
 * The cutover policy fields of a route are read by parse_policy.c.
 */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/gw_errors.h"
#include "routes/parse.h"

#define RT_MAX_ROUTES 100000
#define RT_MAX_STRING 4096
#define RT_MAX_FILE (64u << 20)

static atomic_int g_alive;

int rt__tables_alive(void)
{
    return atomic_load(&g_alive);
}

void rt__table_free(rt_table *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->n_routes; i++) {
        rt_route *r = &t->routes[i];
        free((char *)r->id);
        free((char *)r->path);
        free((char *)r->upstream);
        free((char *)r->strip_prefix);
        free((char *)r->rewrite_template);
        free((char *)r->upgrade);
        rt__route_free_policies(r);
    }
    free(t->routes);
    t->routes = NULL;
    rt__node_free(t->root);
    t->root = NULL;
    rt__table_upstreams_free(t);
    free(t);
    atomic_fetch_sub(&g_alive, 1);
}

static rt_table *table_new(size_t n_routes)
{
    rt_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    atomic_fetch_add(&g_alive, 1);
    atomic_init(&t->refs, 1);
    t->n_routes = (int)n_routes;
    t->routes = calloc(n_routes ? n_routes : 1, sizeof(*t->routes));
    t->root = calloc(1, sizeof(*t->root));
    if (!t->routes || !t->root) {
        rt__table_free(t);
        return NULL;
    }
    return t;
}

int rt__names_dup(const char *const *names, int n, char ***out, int *n_out)
{
    *n_out = 0;
    *out = calloc((size_t)(n > 0 ? n : 0) + 1, sizeof **out);
    if (!*out)
        return GW_ENOMEM;
    for (int i = 0; i < n; i++) {
        if (!((*out)[i] = strdup(names[i])))
            return GW_ENOMEM; /* the caller frees what was copied: *n_out says how much */
        *n_out = i + 1;
    }
    return 0;
}

void rt__names_free(char **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static int copy_upstreams(rt_table *t, const char *const *names, int n)
{
    return rt__table_upstreams_init(t, names, n);
}

/* ---- errors ------------------------------------------------------------------------------ */

typedef rt__parser parser;

int rt__fail(parser *ps, const char *field, const char *fmt, ...)
{
    if (!ps->err || ps->errlen == 0)
        return -1;
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    snprintf(ps->err, ps->errlen, "%s: %s%s%s: %s", ps->source, ps->where,
             ps->where[0] && field ? "." : "", field ? field : "", reason);
    return -1;
}

int rt__fail_nomem(parser *ps)
{
    if (ps->err && ps->errlen)
        snprintf(ps->err, ps->errlen, "%s: out of memory", ps->source);
    return -1;
}

size_t rt__where_push(parser *ps, const char *field)
{
    size_t at = strlen(ps->where);
    snprintf(ps->where + at, sizeof(ps->where) - at, "%s%s", at ? "." : "", field);
    return at;
}

/* ---- field readers ----------------------------------------------------------------------- */

int rt__check_fields(parser *ps, json_t *obj, const char *const *known)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        const char *const *k = known;
        while (*k && strcmp(*k, key) != 0)
            k++;
        if (!*k)
            return rt__fail(ps, key, "unknown field");
    }
    return 0;
}

/* The string field KEY of OBJ in *out; NULL when absent and not required. */
int rt__get_string(parser *ps, json_t *obj, const char *key, int required, const char **out)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v)
        return required ? rt__fail(ps, key, "missing") : 0;
    if (!json_is_string(v))
        return rt__fail(ps, key, "must be a string");
    if (json_string_length(v) > RT_MAX_STRING)
        return rt__fail(ps, key, "longer than %d bytes", RT_MAX_STRING);
    *out = json_string_value(v);
    return 0;
}

int rt__copy_string(parser *ps, const char *s, const char **dst)
{
    if (!s)
        return 0;
    char *c = strdup(s);
    if (!c)
        return rt__fail_nomem(ps);
    *dst = c;
    return 0;
}

/* Admin edits name the route by id: its position means nothing to whoever sent the PUT.
 * Only ids short and clean enough to quote as they are. */
void rt__route_label(char *buf, size_t len, int by_id, const char *id, size_t i)
{
    size_t n = id ? strlen(id) : 0;
    if (by_id && n > 0 && n <= 64 && strspn(id, RT__ID_CHARS) == n)
        snprintf(buf, len, "routes[\"%s\"]", id);
    else
        snprintf(buf, len, "routes[%zu]", i);
}

/* Ids name routes in admin URLs (/admin/routes/{id}), so they stay URL-safe. */
static int check_id(parser *ps, const char *id)
{
    if (!id[0])
        return rt__fail(ps, "id", "must not be empty");
    if (strspn(id, RT__ID_CHARS) != strlen(id))
        return rt__fail(ps, "id", "\"%s\": only letters, digits and \"-._~\" are allowed", id);
    const rt_route *other = rt__strmap_get(&ps->ids, id, strlen(id));
    if (other)
        return rt__fail(ps, "id", "duplicate id \"%s\" (also routes[%d])", id,
                    (int)(other - ps->t->routes));
    return 0;
}

int rt__parse_methods(parser *ps, json_t *v, const char *key, unsigned *bits)
{
    *bits = 0;
    if (v && !json_is_array(v))
        return rt__fail(ps, key, "must be an array of method names");
    size_t i;
    json_t *m;
    json_array_foreach(v, i, m) {
        char field[48];
        snprintf(field, sizeof(field), "%s[%zu]", key, i);
        if (!json_is_string(m))
            return rt__fail(ps, field, "must be a string");
        gw_slice name = { json_string_value(m), json_string_length(m) };
        int b = rt__method_index(name);
        if (b == RT_N_METHODS - 1)
            return rt__fail(ps, field, "unknown method \"%s\"", name.p);
        if (*bits & (1u << b))
            return rt__fail(ps, field, "duplicate method \"%s\"", name.p);
        *bits |= 1u << b;
    }
    if (*bits == 0)
        *bits = RT_M_ANY;
    return 0;
}

static int parse_size(parser *ps, json_t *obj, const char *key, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    *out = -1;
    if (!v)
        return 0;
    if (!json_is_integer(v))
        return rt__fail(ps, key, "must be an integer");
    if (json_integer_value(v) < 0)
        return rt__fail(ps, key, "must not be negative");
    *out = json_integer_value(v);
    return 0;
}

int rt__find_upstream(parser *ps, const char *field, const char *name)
{
    for (int i = 0; i < ps->t->n_upstreams; i++) {
        if (ps->t->upstreams[i] && strcmp(ps->t->upstreams[i], name) == 0)
            return i;
    }
    return rt__fail(ps, field, "unknown upstream \"%s\"", name);
}

/* ---- patterns ---------------------------------------------------------------------------- */

/* A literal segment of a pattern or strip_prefix: non-empty, no wildcard or {param} syntax
 * (half a "{x}" or a lone "*" is a mistake, not a literal), nothing that ends a path. */
static int check_literal(parser *ps, const char *field, gw_slice seg)
{
    if (seg.n == 0)
        return rt__fail(ps, field, "empty segment");
    for (size_t i = 0; i < seg.n; i++) {
        unsigned char c = (unsigned char)seg.p[i];
        if (c == '{' || c == '}')
            return rt__fail(ps, field, "a {param} must be a whole segment");
        if (c == '*')
            return rt__fail(ps, field, "\"*\" is only allowed as a whole \"**\" segment");
        if (c <= 0x20 || c == 0x7f || c == '?' || c == '#')
            return rt__fail(ps, field, "byte 0x%02x is not allowed", c);
    }
    return 0;
}

static int param_name_ok(gw_slice name)
{
    for (size_t i = 0; i < name.n; i++) {
        char c = name.p[i];
        if (!(c == '_' || c == '-' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
              (c >= 'A' && c <= 'Z')))
            return 0;
    }
    return 1;
}

static int check_pattern(parser *ps, const char *path)
{
    if (path[0] != '/')
        return rt__fail(ps, "path", "must start with \"/\"");
    gw_slice names[RT_MAX_PARAMS];
    int n = 0;
    rt__segs it = rt__segs_of(path, strlen(path));
    gw_slice seg;
    while (rt__segs_next(&it, &seg)) {
        if (rt__seg_is_rest(seg)) {
            if (it.pos != it.end)
                return rt__fail(ps, "path", "\"**\" must be the last segment");
            continue;
        }
        if (!rt__seg_is_param(seg)) {
            if (check_literal(ps, "path", seg) != 0)
                return -1;
            continue;
        }
        gw_slice name = { seg.p + 1, seg.n - 2 };
        if (name.n == 0)
            return rt__fail(ps, "path", "empty {param} name");
        if (!param_name_ok(name))
            return rt__fail(ps, "path", "bad {param} name \"%.*s\"", (int)name.n, name.p);
        for (int i = 0; i < n; i++) {
            if (names[i].n == name.n && memcmp(names[i].p, name.p, name.n) == 0)
                return rt__fail(ps, "path", "duplicate {param} \"%.*s\"", (int)name.n, name.p);
        }
        if (n == RT_MAX_PARAMS)
            return rt__fail(ps, "path", "more than %d {param} segments", RT_MAX_PARAMS);
        names[n++] = name;
    }
    return 0;
}

/* Whether PATH captures NAME: a {NAME} segment, or "**" for a final "**" segment. */
static int captures(const char *path, gw_slice name)
{
    rt__segs it = rt__segs_of(path, strlen(path));
    gw_slice seg;
    while (rt__segs_next(&it, &seg)) {
        if (rt__seg_is_rest(seg) ? gw_slice_eq(name, "**")
                                 : rt__seg_is_param(seg) && seg.n - 2 == name.n &&
                                       memcmp(seg.p + 1, name.p, name.n) == 0)
            return 1;
    }
    return 0;
}

static int check_template(parser *ps, const char *tpl, const char *path, const char *strip)
{
    if (tpl[0] != '/')
        return rt__fail(ps, "template", "must start with \"/\"");
    for (const char *p = tpl; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '}')
            return rt__fail(ps, "template", "unmatched \"}\"");
        if (c <= 0x20 || c == 0x7f || c == '#')
            return rt__fail(ps, "template", "byte 0x%02x is not allowed", c);
        if (c != '{')
            continue;
        const char *close = strchr(p, '}');
        if (!close)
            return rt__fail(ps, "template", "unclosed \"{\"");
        gw_slice name = { p + 1, (size_t)(close - p - 1) };
        if (!captures(path, name))
            return rt__fail(ps, "template", "{%.*s} is not captured by the path", (int)name.n,
                        name.p);
        p = close;
    }
    /* With strip_prefix the rest of the path follows the template: not after a query. */
    if (strip && strchr(tpl, '?'))
        return rt__fail(ps, "template", "a template with \"?\" cannot be used with strip_prefix");
    return 0;
}

/* strip_prefix is literal and whole segments; some path the pattern matches must start with
 * it, or it is a typo that would silently never strip. */
static int check_strip(parser *ps, const char *prefix, const char *path)
{
    if (prefix[0] != '/')
        return rt__fail(ps, "strip_prefix", "must start with \"/\"");
    if (prefix[1] == '\0')
        return rt__fail(ps, "strip_prefix", "must not be \"/\"");
    rt__segs pi = rt__segs_of(prefix, strlen(prefix));
    rt__segs ti = rt__segs_of(path, strlen(path));
    gw_slice pseg, tseg;
    int anything = 0; /* the pattern's "**" was reached: any further segment will do */
    while (rt__segs_next(&pi, &pseg)) {
        if (check_literal(ps, "strip_prefix", pseg) != 0)
            return -1;
        if (anything)
            continue;
        if (!rt__segs_next(&ti, &tseg))
            goto mismatch;
        if (rt__seg_is_rest(tseg))
            anything = 1;
        else if (!rt__seg_is_param(tseg) &&
                 !(tseg.n == pseg.n && memcmp(tseg.p, pseg.p, pseg.n) == 0))
            goto mismatch;
    }
    return 0;
mismatch:
    return rt__fail(ps, "strip_prefix", "the path \"%s\" cannot start with \"%s\"", path, prefix);
}

/* ---- routes ------------------------------------------------------------------------------ */

int rt__parse_rewrite(parser *ps, json_t *v, const char *field, const char *path,
                      const char **strip, const char **tpl)
{
    static const char *const fields[] = { "strip_prefix", "template", NULL };
    *strip = *tpl = NULL;
    if (!v)
        return 0;
    if (!json_is_object(v))
        return rt__fail(ps, field, "must be an object");
    size_t at = rt__where_push(ps, field);
    if (rt__check_fields(ps, v, fields) != 0 || rt__get_string(ps, v, "strip_prefix", 0, strip) != 0 ||
        rt__get_string(ps, v, "template", 0, tpl) != 0 ||
        (*strip && check_strip(ps, *strip, path) != 0) ||
        (*tpl && check_template(ps, *tpl, path, *strip) != 0))
        return -1;
    ps->where[at] = '\0';
    return 0;
}

static int parse_route(parser *ps, int i, json_t *jr)
{
    static const char *const fields[] = {
        "id",     "methods", "path",     "upstream", "rewrite",        "rewrites", "split",
        "sticky", "override", "shadow", "fallback", "max_body_bytes", "cache",
        "allow_encoded_slashes", "rate_limit", "max_in_flight", "upgrade",
        "tunnel_idle_timeout_ms", NULL
    };
    rt_route *r = &ps->t->routes[i];
    const char *id, *path, *upstream, *strip, *tpl;
    const rt_route *conflict = NULL;

    json_t *jid = json_object_get(jr, "id");
    rt__route_label(ps->where, sizeof(ps->where), ps->by_id,
                    json_is_string(jid) ? json_string_value(jid) : NULL, (size_t)i);
    if (!json_is_object(jr))
        return rt__fail(ps, NULL, "must be an object");
    /* Fields in a fixed order, path before rewrite: rewrite is checked against the path. */
    if (rt__check_fields(ps, jr, fields) != 0 ||
        rt__get_string(ps, jr, "id", 1, &id) != 0 || check_id(ps, id) != 0 ||
        rt__parse_methods(ps, json_object_get(jr, "methods"), "methods", &r->methods) != 0 ||
        rt__get_string(ps, jr, "path", 1, &path) != 0 || check_pattern(ps, path) != 0 ||
        rt__get_string(ps, jr, "upstream", 1, &upstream) != 0 ||
        (r->upstream_index = rt__find_upstream(ps, "upstream", upstream)) < 0 ||
        rt__parse_rewrite(ps, json_object_get(jr, "rewrite"), "rewrite", path, &strip,
                          &tpl) != 0 ||
        rt__parse_policies(ps, jr, r) != 0 || rt__parse_limits(ps, jr, r) != 0 ||
        rt__parse_upgrade(ps, jr, r) != 0 ||
        parse_size(ps, jr, "max_body_bytes", &r->max_body_bytes) != 0)
        return -1;
    json_t *jc = json_object_get(jr, "cache");
    if (jc && !json_is_boolean(jc))
        return rt__fail(ps, "cache", "must be true or false");
    r->cache = jc && json_is_true(jc);
    json_t *je = json_object_get(jr, "allow_encoded_slashes");
    if (je && !json_is_boolean(je))
        return rt__fail(ps, "allow_encoded_slashes", "must be true or false");
    r->allow_encoded_slashes = je && json_is_true(je);

    if (rt__copy_string(ps, id, &r->id) != 0 || rt__copy_string(ps, path, &r->path) != 0 ||
        rt__copy_string(ps, upstream, &r->upstream) != 0 ||
        rt__copy_string(ps, strip, &r->strip_prefix) != 0 ||
        rt__copy_string(ps, tpl, &r->rewrite_template) != 0)
        return -1;
    /* Keys borrow the table's own copies, which outlive the map. */
    if (rt__strmap_put(&ps->ids, r->id, strlen(r->id), r) != 0)
        return rt__fail_nomem(ps);

    int rc = rt__matcher_add(ps->t->root, r, &conflict);
    if (rc == GW_EINVAL)
        return rt__fail(ps, "path",
                        "same pattern as routes[%d] (\"%s\") with overlapping methods",
                        (int)(conflict - ps->t->routes), conflict->id);
    return rc == 0 ? 0 : rt__fail_nomem(ps);
}

/* Checks the document root and sets *routes to its routes array. */
static int routes_of(parser *ps, json_t *root, json_t **routes)
{
    static const char *const fields[] = { "version", "legacy_upstream", "upstreams", "routes",
                                          NULL };
    if (!json_is_object(root))
        return rt__fail(ps, "(root)", "must be an object");
    if (rt__check_fields(ps, root, fields) != 0)
        return -1;
    *routes = json_object_get(root, "routes");
    if (!*routes)
        return rt__fail(ps, "routes", "missing");
    if (!json_is_array(*routes))
        return rt__fail(ps, "routes", "must be an array");
    if (json_array_size(*routes) > RT_MAX_ROUTES)
        return rt__fail(ps, "routes", "more than %d routes", RT_MAX_ROUTES);
    return 0;
}

/* "version" and "legacy_upstream". A legacy_upstream given must exist; without one it is
 * "legacy" when there is an upstream of that name, else unknown (rollback then fails, and so
 * does a fallback that names no upstream). */
static int parse_root(parser *ps, json_t *root)
{
    rt_table *t = ps->t;
    json_t *v = json_object_get(root, "version");
    if (v && (!json_is_integer(v) || json_integer_value(v) < 0))
        return rt__fail(ps, "version", "must be a non-negative integer");
    t->version = v ? (uint64_t)json_integer_value(v) : 0;

    const char *legacy;
    if (rt__get_string(ps, root, "legacy_upstream", 0, &legacy) != 0)
        return -1;
    t->legacy_index = -1;
    if (legacy) {
        if ((t->legacy_index = rt__find_upstream(ps, "legacy_upstream", legacy)) < 0)
            return -1;
    } else {
        for (int i = 0; i < t->n_upstreams && t->legacy_index < 0; i++) {
            if (t->upstreams[i] && strcmp(t->upstreams[i], "legacy") == 0)
                t->legacy_index = i;
        }
    }
    t->legacy = t->legacy_index >= 0 ? t->upstreams[t->legacy_index] : "legacy";
    return 0;
}

rt_table *rt__table_from_json(json_t *root, const char *source,
                              const char *const *upstreams, int n_upstreams, int by_id,
                              char *err, size_t errlen)
{
    parser ps = { .source = source ? source : "routes", .err = err, .errlen = errlen,
                  .by_id = by_id };
    json_t *routes = NULL;
    if (routes_of(&ps, root, &routes) != 0)
        goto fail;
    ps.t = table_new(json_array_size(routes));
    if (!ps.t || copy_upstreams(ps.t, upstreams, n_upstreams) != 0) {
        rt__fail_nomem(&ps);
        goto fail;
    }
    if (rt__parse_upstreams(&ps, root) != 0 || parse_root(&ps, root) != 0)
        goto fail;
    for (int i = 0; i < ps.t->n_routes; i++) {
        if (parse_route(&ps, i, json_array_get(routes, (size_t)i)) != 0)
            goto fail;
    }
    rt__strmap_free(&ps.ids);
    if (err && errlen)
        err[0] = '\0';
    return ps.t;

fail:
    rt__strmap_free(&ps.ids);
    rt__table_free(ps.t);
    ps.t = NULL;
    return NULL;
}

rt_table *rt_table_parse(const char *json, size_t len, const char *source,
                         const char *const *upstreams, int n_upstreams,
                         char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (err && errlen)
            snprintf(err, errlen, "%s: line %d column %d: %s", source ? source : "routes",
                     jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    rt_table *t = rt__table_from_json(root, source, upstreams, n_upstreams, 0, err, errlen);
    json_decref(root);
    return t;
}

char *rt__read_file(const char *file, size_t *len)
{
    FILE *f = fopen(file, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    int saved = 0;
    for (;;) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 65536;
            char *nbuf = ncap <= RT_MAX_FILE ? realloc(buf, ncap) : NULL;
            if (!nbuf) {
                saved = ncap <= RT_MAX_FILE ? ENOMEM : EFBIG;
                goto fail;
            }
            buf = nbuf;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0 && ferror(f)) {
            saved = errno ? errno : EIO;
            goto fail;
        }
        if (got == 0)
            break;
    }
    fclose(f);
    *len = n;
    return buf;

fail:
    free(buf);
    buf = NULL;
    fclose(f);
    errno = saved;
    return NULL;
}

rt_table *rt_table_load_file(const char *file, const char *const *upstreams, int n_upstreams,
                             char *err, size_t errlen)
{
    size_t len = 0;
    char *text = rt__read_file(file, &len);
    if (!text) {
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot read: %s", file, strerror(errno));
        return NULL;
    }
    rt_table *t = rt_table_parse(text, len, file, upstreams, n_upstreams, err, errlen);
    free(text);
    text = NULL;
    return t;
}
