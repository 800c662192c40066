// route_table.h — the route table: model, JSON parsing and validation, the compiled matcher,
// path rewriting, and the refcounted immutable snapshot that workers pin per request.
//
// routes.json:
//   { "legacy_upstream": "legacy",       -- optional, default "legacy": where rollback goes
//     "version": 7,                      -- optional, written by rt_table_to_json
//     "upstreams": { NAME: {...} },      -- optional: upstream definitions (upstreams.h)
//     "routes": [ { "id": "users", "methods": ["GET","PUT"], "path": "/api/users/**",
//                   "upstream": "user-service",
//                   "rewrite": { "strip_prefix": "/api" }            -- or
//                   "rewrite": { "template": "/users/{id}" },        -- and/or both
//                   "max_body_bytes": 1048576,
//                   "allow_encoded_slashes": true,   -- optional: forward "%2F" (else 400)
//                   ...cutover policies: "rewrites", "split", "sticky", "override",
//                   "shadow", "fallback" — see the rt_route fields below and policy.h } ] }
//
// Path patterns: "/a/b" exact; "{name}" matches one non-empty segment and captures it;
// a final "/**" matches the rest (zero or more segments) and is captured as "**".
// Most specific wins: compared segment by segment from the left, a literal segment beats a
// {param}, which beats "/**"; an exact-length match beats a "/**" one. Methods: a route lists
// methods (absent or empty = any). A route whose path matches but whose methods don't is
// skipped and the search goes on to the next most specific one.
#ifndef RT_ROUTE_TABLE_H
#define RT_ROUTE_TABLE_H

#define RT_SHADOW_TIMEOUT_MS 2000 /* shadow.timeout_ms when absent */

#include <stddef.h>
#include <stdint.h>

#include "http/gw_slice.h"

#define RT_MAX_PARAMS 16

/* Method bits. */
enum {
    RT_M_GET = 1 << 0, RT_M_HEAD = 1 << 1, RT_M_POST = 1 << 2, RT_M_PUT = 1 << 3,
    RT_M_PATCH = 1 << 4, RT_M_DELETE = 1 << 5, RT_M_OPTIONS = 1 << 6, RT_M_OTHER = 1 << 7,
    RT_M_ANY = 0xff
};

/* "rewrites": { NAME: { "strip_prefix", "template" } } — the rewrite used whenever upstream
 * NAME is the one a request goes to, instead of the route's "rewrite". {} means none. */
typedef struct rt_rewrite_rule {
    const char *upstream;
    int upstream_index;
    const char *strip_prefix;     /* NULL when absent */
    const char *rewrite_template; /* NULL when absent */
} rt_rewrite_rule;

/* One side of "split": { NAME: weight, ... }. */
typedef struct rt_split_side {
    const char *upstream;
    int upstream_index;
    uint32_t weight;              /* 0..100000 */
} rt_split_side;

/* Bits of rt_route.fallback.on. */
enum { RT_FB_404 = 1 << 0, RT_FB_5XX = 1 << 1, RT_FB_CONNECT = 1 << 2, RT_FB_ALL = 7 };

/* "rate_limit": { "rate": 100, "per": "1s", "burst": 50, "key": "client_ip" } — GCRA per
 * key (limits.c parses it, gateway/ratelimit*.c enforces it). */
enum { RT_RL_KEY_CLIENT_IP = 0, RT_RL_KEY_HEADER = 1, RT_RL_KEY_ROUTE = 2 };
typedef struct rt_rate_limit {
    uint32_t rate;             /* requests per "per"; 0: the route has no limit */
    uint64_t per_ms;           /* "per": "500ms" | "1s" | "1m" | "1h" (1 ms .. 1 day) */
    uint32_t burst;            /* requests that may arrive at once; default = rate */
    int key;                   /* RT_RL_KEY_*: what one limit counts */
    const char *key_header;    /* "header:NAME": NAME (lower case); else NULL */
} rt_rate_limit;

#define RT_RL_HEADER_MAX 129 /* a key header name, with its NUL */

/* Reads a rate_limit object RL into *L (what routes' "rate_limit" and gateway.json's
 * "rate_limits.default" share): a header name goes into HDR[RT_RL_HEADER_MAX] and
 * L->key_header points there. On error returns -1 with the offending FIELD ("rate", ...;
 * NULL: the object itself) and the REASON. */
struct json_t;
int rt_rate_limit_parse(struct json_t *rl, rt_rate_limit *l, char *hdr, const char **field,
                        char *reason, size_t reason_len);

/* Upstream names in the policy fields point into the table's own copy of the upstream list:
 * they live as long as the table. *_index fields index that list (the one given to
 * rt_table_parse), as upstream_index does. */
typedef struct rt_route {
    const char *id;
    unsigned methods;          /* RT_M_* bits; RT_M_ANY when the route lists none */
    const char *path;          /* the pattern as written */
    const char *upstream;      /* upstream name, validated against the known upstreams */
    int upstream_index;        /* index of that name in the list given to rt_table_parse */
    const char *strip_prefix;  /* NULL when absent */
    const char *rewrite_template; /* NULL when absent; may use {param} and {**} */
    int64_t max_body_bytes;    /* -1: the gateway's default limit */
    int cache;                 /* "cache": true — GET answers (200 JSON, 404) are cached by
                                  path in the user cache, and a successful PUT/PATCH/DELETE
                                  on the same path evicts it */
    int allow_encoded_slashes; /* "allow_encoded_slashes": true — "%2F" inside a segment is
                                  forwarded (for upstreams that need it); by default the
                                  gateway refuses it with 400, as a path may escape its
                                  prefix route where an upstream decodes it before routing */

    int n_rewrites;            /* "rewrites", in document order */
    rt_rewrite_rule *rewrites;
    int n_split;               /* 0: no split, "upstream" decides; else at least one weight */
    rt_split_side *split;      /*   is > 0 and the split decides */
    uint64_t split_total;      /* sum of the weights */
    const char *sticky_header; /* "sticky": at most one of the two is set; only with split */
    const char *sticky_cookie;
    const char *override_header; /* "override": NULL when absent */
    struct {
        const char *upstream;  /* NULL when no shadow */
        int upstream_index;    /* -1 when no shadow */
        int percent;           /* 0..100 */
        unsigned methods;      /* RT_M_* bits; default GET|HEAD|OPTIONS */
        int n_ignore_fields;
        const char **ignore_fields; /* dotted JSON paths the response comparison skips */
        uint32_t timeout_ms;   /* the whole shadow exchange, independent of the primary's
                                  timeouts; default RT_SHADOW_TIMEOUT_MS */
    } shadow;
    rt_rate_limit rate_limit;  /* "rate_limit"; rate 0 when absent */
    uint32_t max_in_flight;    /* "max_in_flight": requests of this route at once in the
                                  process (compositions included); 0 = unlimited */
    /* "upgrade": ["websocket"] — the protocols a client may switch to through this route
     * (its Upgrade header is forwarded, a 101 opens a tunnel: http/tunnel.h); NULL: none.
     * Lower-cased, NUL-separated, an empty name last (upgrade.c). */
    const char *upgrade;
    uint32_t tunnel_idle_timeout_ms; /* a tunnel with no byte either way this long is closed;
                                        0: gateway.json limits.tunnel_idle_timeout_ms */
    struct {
        const char *upstream;  /* NULL when no fallback */
        int upstream_index;    /* -1 when no fallback */
        unsigned on;           /* RT_FB_* bits; only for GET, HEAD and OPTIONS requests */
    } fallback;
} rt_route;

/* The route's own spelling of protocol TOKEN when "upgrade" lists it (case-insensitive),
 * else NULL. */
const char *rt_route_upgrade_allows(const rt_route *r, gw_slice token);

typedef struct rt_match {
    const rt_route *route;
    int n_params;
    gw_slice param_names[RT_MAX_PARAMS];
    gw_slice param_values[RT_MAX_PARAMS]; /* slices into the path given to rt_table_match */
    int has_rest;
    gw_slice rest;             // what "/**" matched, without its leading '/', may be empty
} rt_match;

typedef struct rt_table rt_table;

/* Parses and validates a routes document and compiles its matcher. upstreams[0..n) are the
 * upstream names a route may use; the table keeps its own copy (for rt_table_* mutations,
 * see route_edit.h). source names the document in errors. A "version" in the document
 * becomes the table's version. On error returns NULL
 * and writes "SOURCE: json.path: reason" (e.g. "conf/routes.json: routes[2].upstream: unknown
 * upstream \"foo\"") into err. Rejects: non-object root, missing/duplicate ids, bad methods,
 * patterns not starting with '/', "**" not last, empty or duplicate {param} names, two routes
 * with the same pattern and overlapping methods, unknown upstream, template params that the
 * pattern does not capture, strip_prefix that the pattern cannot start with, negative sizes,
 * unknown fields, and every malformed policy (see policy.h for what each means). */
rt_table *rt_table_parse(const char *json, size_t len, const char *source,
                         const char *const *upstreams, int n_upstreams,
                         char *err, size_t errlen);
/* Reads FILE then rt_table_parse. */
rt_table *rt_table_load_file(const char *file, const char *const *upstreams, int n_upstreams,
                             char *err, size_t errlen);

/* Refcount: parse returns a table holding one reference. Thread-safe (atomic). The last
 * unref frees the table. */
void rt_table_ref(rt_table *t);
void rt_table_unref(rt_table *t);

uint64_t rt_table_version(const rt_table *t);
void rt_table_set_version(rt_table *t, uint64_t version); /* before the table is published */
int rt_table_count(const rt_table *t);
const rt_route *rt_table_route(const rt_table *t, int i);
/* The route with id ID, or NULL. Linear: for admin use, not per request. */
const rt_route *rt_table_find(const rt_table *t, const char *id);
/* The upstream names the table was parsed with: index i is what *_index fields hold. */
int rt_table_upstream_count(const rt_table *t);
const char *rt_table_upstream(const rt_table *t, int i);
/* legacy_upstream (rollback's target): its name, and its index or -1 when unknown. */
const char *rt_table_legacy_upstream(const rt_table *t);
int rt_table_legacy_index(const rt_table *t);

/* Finds the most specific route for METHOD (e.g. "GET") and PATH (no query string).
 * Returns 0 and fills *m, or -1 when nothing matches. O(path length) in the common case. */
int rt_table_match(const rt_table *t, gw_slice method, gw_slice path, rt_match *m);

/* Writes the upstream path for a matched request into out: strip_prefix first, then the
 * template with {param}/{**} substituted, then "?query" appended when query.n > 0.
 * Returns the length written (NUL-terminated), or -1 if it would not fit in outlen.
 * The rewrite is the primary upstream's: its "rewrites" entry if any, else "rewrite". For
 * another upstream (split, override, shadow, fallback) use rt_rewrite_for (policy.h). */
int rt_rewrite(const rt_match *m, gw_slice path, gw_slice query, char *out, size_t outlen);

/* The process-wide current snapshot (Varnish-style: swap under a lock, requests pin).
 * rt_current_acquire returns a referenced table (or NULL before the first publish); the
 * caller unrefs it when its request ends. rt_current_publish takes over the caller's
 * reference to T, gives it the next version number, and drops the reference to the old one.
 * rt_current_generation is a cheap atomic read that changes on each publish, so a worker
 * can keep its own pinned copy and re-acquire only when it changed. */
rt_table *rt_current_acquire(void);
void rt_current_publish(rt_table *t);
uint64_t rt_current_generation(void);
/* Like rt_current_publish, but T keeps its version as set (a shared store's revision, which
 * every instance on that store must show alike), even if not above the last one. */
void rt_current_publish_exact(rt_table *t);
void rt_current_clear(void); /* drops the current table (shutdown, tests) */
/* Bumps the generation without a new table: workers look again at what the table's
 * upstreams resolve to (gateway/resolver.c found new addresses). */
void rt_current_touch(void);

#endif
