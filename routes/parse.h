// parse.h — internals shared by the files that turn a routes document into a table:
// route_table.c (the document and the core route fields), parse_policy.c (the cutover
// policy fields) and route_edit.c (mutations re-parse an edited document). Not public API.
#ifndef RT_PARSE_H
#define RT_PARSE_H

#include <jansson.h>

#include "routes/matcher.h"

// What a route id is made of (ids name routes in admin URLs, so they stay URL-safe).
#define RT__ID_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"

// Writes into BUF how errors name route ID at position I: "routes[\"ID\"]" with by_id when
// ID is plain and at most 64 bytes, else "routes[I]".
void rt__route_label(char *buf, size_t len, int by_id, const char *id, size_t i);

typedef struct rt__parser {
    const char *source;
    char *err;
    size_t errlen;
    // JSON path of the object being read: "", "routes[3]", "routes[3].shadow", or with
    // by_id "routes[\"orders\"]".
    char where[256];
    rt_table *t;       // the table being built; upstream names are read from it
    rt__strmap ids;    // id -> rt_route*, to find duplicates as they come
    int by_id;         // name routes by id in errors (admin edits), not by position
} rt__parser;

// Writes "SOURCE: WHERE.FIELD: reason" (FIELD may be NULL) into ps->err; returns -1.
int rt__fail(rt__parser *ps, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int rt__fail_nomem(rt__parser *ps);

// Appends ".FIELD" to ps->where and returns the old length, for rt__where_pop.
size_t rt__where_push(rt__parser *ps, const char *field);
static inline void rt__where_pop(rt__parser *ps, size_t at)
{
    ps->where[at] = '\0';
}

// Fails on a key of OBJ not in the NULL-terminated list KNOWN.
int rt__check_fields(rt__parser *ps, json_t *obj, const char *const *known);
// The string field KEY of OBJ in *out (borrowed from OBJ); NULL when absent and optional.
int rt__get_string(rt__parser *ps, json_t *obj, const char *key, int required,
                   const char **out);
int rt__copy_string(rt__parser *ps, const char *s, const char **dst);
// The index of upstream NAME, or a failure "FIELD: unknown upstream \"NAME\"".
int rt__find_upstream(rt__parser *ps, const char *field, const char *name);
// A methods array (FIELD names it in errors) to RT_M_* bits; absent or empty: RT_M_ANY.
int rt__parse_methods(rt__parser *ps, json_t *v, const char *field, unsigned *bits);
// A rewrite object { strip_prefix, template } checked against PATH; V may be NULL.
int rt__parse_rewrite(rt__parser *ps, json_t *v, const char *field, const char *path,
                      const char **strip, const char **tpl);

// parse_policy.c: reads rewrites, split, sticky, override, shadow and fallback of the route
// object JR into R (ps->where is the route's path). R's upstream_index is already set.
int rt__parse_policies(rt__parser *ps, json_t *jr, rt_route *r);
// limits.c: "rate_limit" and "max_in_flight" of the route object JR into R (the header
// name is freed by rt__route_free_policies).
int rt__parse_limits(rt__parser *ps, json_t *jr, rt_route *r);
// upgrade.c: "upgrade" and "tunnel_idle_timeout_ms" of JR into R (r->upgrade is freed by
// the table); rt__upgrade_to_json adds them back to OBJ (0 or -1).
int rt__parse_upgrade(rt__parser *ps, json_t *jr, rt_route *r);
int rt__upgrade_to_json(const rt_route *r, json_t *obj);
// Adds R's limit fields to the route object OBJ (serialize.c); 0 or -1 (out of memory).
int rt__limits_to_json(const rt_route *r, json_t *obj);
// Frees what rt__parse_policies allocated in R.
void rt__route_free_policies(rt_route *r);

// upstreams.c: the document's "upstreams" object into ps->t (after the seeds).
int rt__parse_upstreams(rt__parser *ps, json_t *root);
// RFC 7396: TARGET (owned) patched by PATCH; returns the result (owned), NULL out of memory.
json_t *rt__merge_patch(json_t *target, const json_t *patch);

// Builds a table from a parsed document (borrowed). The upstream names are copied.
rt_table *rt__table_from_json(json_t *root, const char *source,
                              const char *const *upstreams, int n_upstreams, int by_id,
                              char *err, size_t errlen);

// Reads all of FILE into a malloc'd buffer (at most 64 MiB); NULL with errno set.
char *rt__read_file(const char *file, size_t *len);

// 64-bit FNV-1a, finished with a murmur3 mix so that every output bit depends on every
// input bit (sticky keys are often sequential numbers).
uint64_t rt__hash64(const char *p, size_t n);

#endif
