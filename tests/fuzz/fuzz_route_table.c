/* fuzz_route_table.c — routes.json: rt_table_parse (JSON, validation, policies, the compiled
 * matcher), then, for a table that parsed, a match and a rewrite for every route's own
 * pattern (parameters and the final "**" rest filled in) and for a few fixed paths, every
 * policy's rewrite (rt_rewrite_for), and a round trip: rt_table_to_json of the table must
 * parse again and match the same way. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "routes/policy.h"
#include "routes/route_edit.h"
#include "routes/route_table.h"

static const char *const UPSTREAMS[] = { "legacy", "user-service", "order-service",
                                         "logistics-service" };
#define N_UP 4

/* A concrete path for PATTERN: "{x}" -> "v1", a final "**" -> "a/b". */
static size_t concrete(const char *pattern, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = pattern; *p && o + 8 < cap; p++) {
        if (*p == '{') {
            const char *e = strchr(p, '}');
            if (!e)
                break;
            memcpy(out + o, "v1", 2), o += 2;
            p = e;
        } else if (p[0] == '*' && p[1] == '*') {
            memcpy(out + o, "a/b", 3), o += 3;
            p++;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    return o;
}

static const rt_route *match_and_rewrite(const rt_table *t, const char *method, const char *path)
{
    rt_match m;
    char out[2048];
    gw_slice meth = { method, strlen(method) }, p = { path, strlen(path) }, q = { "a=1", 3 };
    if (rt_table_match(t, meth, p, &m) != 0)
        return NULL;
    if (m.n_params < 0 || m.n_params > RT_MAX_PARAMS)
        __builtin_trap();
    rt_rewrite(&m, p, q, out, sizeof out);
    rt_rewrite(&m, p, q, out, 4); /* too small: -1, never an overflow */
    for (int u = -1; u < rt_table_upstream_count(t); u++)
        rt_rewrite_for(&m, u, p, q, out, sizeof out);
    return m.route;
}

static const char *const PATHS[] = { "/", "/api/users/42", "/api/users/42/orders", "/api/orders/1001",
                                     "/api/orders/1/details", "/a//b", "/%2e%2e/x", "/x/" };
static const char *const METHODS[] = { "GET", "POST", "DELETE", "PURGE" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512], path[1024];
    rt_table *t = rt_table_parse((const char *)data, size, "fuzz", UPSTREAMS, N_UP, err, sizeof err);
    if (t == NULL) {
        if (memchr(err, '\0', sizeof err) == NULL)
            __builtin_trap(); /* the error must be NUL-terminated */
        return 0;
    }
    int n = rt_table_count(t);
    for (int i = 0; i < n; i++) {
        const rt_route *r = rt_table_route(t, i);
        concrete(r->path, path, sizeof path);
        for (size_t k = 0; k < sizeof METHODS / sizeof METHODS[0]; k++)
            match_and_rewrite(t, METHODS[k], path);
        if (rt_table_find(t, r->id) != r)
            __builtin_trap();
    }
    for (size_t i = 0; i < sizeof PATHS / sizeof PATHS[0]; i++)
        match_and_rewrite(t, "GET", PATHS[i]);

    /* Round trip: the serialized table parses again, with the same routes matching. */
    json_t *j = rt_table_to_json(t);
    if (j) {
        char *s = json_dumps(j, JSON_COMPACT);
        if (s) {
            rt_table *t2 = rt_table_parse(s, strlen(s), "fuzz-roundtrip", UPSTREAMS, N_UP, err, sizeof err);
            if (t2 == NULL || rt_table_count(t2) != n)
                __builtin_trap(); /* what we write we must read back */
            for (int i = 0; i < n; i++) {
                concrete(rt_table_route(t, i)->path, path, sizeof path);
                const rt_route *a = match_and_rewrite(t, "GET", path);
                const rt_route *b = match_and_rewrite(t2, "GET", path);
                if ((a == NULL) != (b == NULL) || (a && strcmp(a->id, b->id) != 0))
                    __builtin_trap();
            }
            rt_table_unref(t2);
            free(s);
        }
        json_decref(j);
    }
    rt_table_unref(t);
    return 0;
}
