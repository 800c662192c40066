/* serialize.c — a table back to its canonical routes document (route_edit.h). Fields come
 * out in the order the parser reads them, with every default written out, so a document
 * read, written and read again gives an equivalent table and a stable text. */
#include "routes/matcher.h"
#include "routes/parse.h"
#include "routes/route_edit.h"
#include "routes/upstreams.h"

/* Builds into an object and remembers whether any step failed (jansson returns NULL or -1
 * when out of memory; json_object_set_new accepts a NULL value and fails). */
typedef struct builder {
    json_t *obj;
    int failed;
} builder;

static void set(builder *b, const char *key, json_t *v)
{
    if (json_object_set_new(b->obj, key, v) != 0)
        b->failed = 1;
}

static void set_str(builder *b, const char *key, const char *s)
{
    if (s)
        set(b, key, json_string(s));
}

static json_t *finish(builder *b)
{
    if (!b->obj || b->failed) {
        json_decref(b->obj);
        return NULL;
    }
    return b->obj;
}

static json_t *methods_json(unsigned bits)
{
    json_t *a = json_array();
    for (int b = 0; a && b < RT_N_METHODS; b++) {
        const char *name = rt__method_name(b);
        if ((bits & (1u << b)) && name && json_array_append_new(a, json_string(name)) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *rewrite_json(const char *strip_prefix, const char *tpl)
{
    builder b = { json_object(), 0 };
    set_str(&b, "strip_prefix", strip_prefix);
    set_str(&b, "template", tpl);
    return finish(&b);
}

static json_t *rewrites_json(const rt_route *r)
{
    builder b = { json_object(), 0 };
    for (int i = 0; i < r->n_rewrites; i++) {
        const rt_rewrite_rule *rule = &r->rewrites[i];
        set(&b, rule->upstream, rewrite_json(rule->strip_prefix, rule->rewrite_template));
    }
    return finish(&b);
}

static json_t *split_json(const rt_route *r)
{
    builder b = { json_object(), 0 };
    for (int i = 0; i < r->n_split; i++)
        set(&b, r->split[i].upstream, json_integer(r->split[i].weight));
    return finish(&b);
}

static json_t *shadow_json(const rt_route *r)
{
    builder b = { json_object(), 0 };
    set_str(&b, "upstream", r->shadow.upstream);
    set(&b, "percent", json_integer(r->shadow.percent));
    set(&b, "methods", methods_json(r->shadow.methods));
    if (r->shadow.timeout_ms != RT_SHADOW_TIMEOUT_MS) /* the default stays implicit */
        set(&b, "timeout_ms", json_integer(r->shadow.timeout_ms));
    if (r->shadow.n_ignore_fields > 0) {
        json_t *a = json_array();
        for (int i = 0; a && i < r->shadow.n_ignore_fields; i++) {
            if (json_array_append_new(a, json_string(r->shadow.ignore_fields[i])) != 0)
                b.failed = 1;
        }
        set(&b, "ignore_fields", a);
    }
    return finish(&b);
}

static json_t *fallback_json(const rt_route *r)
{
    static const char *const on[] = { "404", "5xx", "connect" }; /* RT_FB_* bit order */
    builder b = { json_object(), 0 };
    set_str(&b, "upstream", r->fallback.upstream);
    json_t *a = json_array();
    for (int i = 0; a && i < 3; i++) {
        if ((r->fallback.on & (1u << i)) && json_array_append_new(a, json_string(on[i])) != 0)
            b.failed = 1;
    }
    set(&b, "on", a);
    return finish(&b);
}

json_t *rt_route_to_json(const rt_route *r)
{
    if (!r)
        return NULL;
    builder b = { json_object(), 0 };
    if (!b.obj)
        return NULL;
    set_str(&b, "id", r->id);
    if (r->methods != RT_M_ANY)
        set(&b, "methods", methods_json(r->methods));
    set_str(&b, "path", r->path);
    set_str(&b, "upstream", r->upstream);
    if (r->strip_prefix || r->rewrite_template)
        set(&b, "rewrite", rewrite_json(r->strip_prefix, r->rewrite_template));
    if (r->n_rewrites > 0)
        set(&b, "rewrites", rewrites_json(r));
    if (r->n_split > 0)
        set(&b, "split", split_json(r));
    if (r->sticky_header || r->sticky_cookie) {
        json_t *s = r->sticky_header ? json_pack("{s:s}", "header", r->sticky_header)
                                     : json_pack("{s:s}", "cookie", r->sticky_cookie);
        set(&b, "sticky", s);
    }
    if (r->override_header)
        set(&b, "override", json_pack("{s:s}", "header", r->override_header));
    if (r->shadow.upstream_index >= 0)
        set(&b, "shadow", shadow_json(r));
    if (r->fallback.upstream_index >= 0)
        set(&b, "fallback", fallback_json(r));
    if (r->max_body_bytes >= 0)
        set(&b, "max_body_bytes", json_integer(r->max_body_bytes));
    if (r->cache)
        set(&b, "cache", json_true());
    if (r->allow_encoded_slashes)
        set(&b, "allow_encoded_slashes", json_true());
    if (b.obj && rt__upgrade_to_json(r, b.obj) != 0)
        b.failed = 1;
    if (b.obj && rt__limits_to_json(r, b.obj) != 0)
        b.failed = 1;
    return finish(&b);
}

json_t *rt_table_to_json(const rt_table *t)
{
    if (!t)
        return NULL;
    builder b = { json_object(), 0 };
    if (!b.obj)
        return NULL;
    set(&b, "version", json_integer((json_int_t)t->version));
    if (t->legacy_index >= 0)
        set_str(&b, "legacy_upstream", t->legacy);
    json_t *ups = NULL; /* the routes source's own definitions (not gateway.json's) */
    for (int i = 0; i < t->n_upstreams; i++) {
        const rt_upstream_def *d = t->defs[i];
        if (!d || !d->from_routes)
            continue;
        if (!ups && !(ups = json_object()))
            b.failed = 1;
        if (ups && json_object_set_new(ups, t->upstreams[i], json_deep_copy(d->json)) != 0)
            b.failed = 1;
    }
    if (ups)
        set(&b, "upstreams", ups);
    json_t *routes = json_array();
    for (int i = 0; routes && i < t->n_routes; i++) {
        if (json_array_append_new(routes, rt_route_to_json(&t->routes[i])) != 0)
            b.failed = 1;
    }
    set(&b, "routes", routes);
    return finish(&b);
}
