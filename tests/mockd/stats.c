/* stats.c — counters behind GET /__stats, so a test can prove what reached this instance.
 *
 * Connections are counted as distinct gw_request.conn_id values seen since start or the
 * last reset, so a keep-alive connection opened before a reset counts once it is used
 * again after it. */
#include <stdlib.h>
#include <string.h>

#include "tests/mockd/mockd.h"

int mk_stats_init(mk_stats *st)
{
    memset(st, 0, sizeof *st);
    st->by_path = json_object();
    return st->by_path ? 0 : -1;
}

void mk_stats_free(mk_stats *st)
{
    json_decref(st->by_path);
    st->by_path = NULL;
    free(st->conns);
    st->conns = NULL;
    st->conns_cap = st->conns_n = 0;
}

void mk_stats_reset(mk_stats *st)
{
    st->requests = st->connections = st->body_bytes = 0;
    json_object_clear(st->by_path);
    st->n_paths = 0;
    if (st->conns) memset(st->conns, 0, st->conns_cap * sizeof *st->conns);
    st->conns_n = 0;
}

static size_t conn_slot(uint64_t key, size_t cap)
{
    uint64_t h = key * 0x9e3779b97f4a7c15ULL;
    return (size_t)(h >> 17) & (cap - 1);
}

/* Inserts key; returns 1 if it was new, 0 if present, -1 when out of memory. */
static int conn_insert(mk_stats *st, uint64_t key)
{
    if (st->conns_n >= MK_STATS_MAX_CONNS) {
        memset(st->conns, 0, st->conns_cap * sizeof *st->conns);
        st->conns_n = 0;
    }
    if ((st->conns_n + 1) * 2 > st->conns_cap) {
        size_t cap = st->conns_cap ? st->conns_cap * 2 : 256;
        uint64_t *t = calloc(cap, sizeof *t);
        if (!t) return -1;
        for (size_t i = 0; i < st->conns_cap; i++) {
            if (!st->conns[i]) continue;
            size_t j = conn_slot(st->conns[i], cap);
            while (t[j]) j = (j + 1) & (cap - 1);
            t[j] = st->conns[i];
        }
        free(st->conns);
        st->conns = t;
        st->conns_cap = cap;
    }
    size_t j = conn_slot(key, st->conns_cap);
    while (st->conns[j]) {
        if (st->conns[j] == key) return 0;
        j = (j + 1) & (st->conns_cap - 1);
    }
    st->conns[j] = key;
    st->conns_n++;
    return 1;
}

static int is_plain(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] >= 0x7f) return 0;
    return 1;
}

void mk_stats_request(mk_stats *st, uint64_t conn, const char *path, size_t n)
{
    st->requests++;
    if (conn && conn_insert(st, conn) == 1) st->connections++;

    /* keys must be valid UTF-8: the server may pass obs-text through in a path */
    json_t *key = NULL;
    if (!is_plain(path, n)) {
        if (!(key = mk_jstring(path, n))) return;
        path = json_string_value(key);
        n = json_string_length(key);
    }
    json_t *v = json_object_getn(st->by_path, path, n);
    if (!v && st->n_paths >= MK_STATS_MAX_PATHS) {
        path = "(other)";
        n = strlen(path);
        v = json_object_getn(st->by_path, path, n);
    }
    if (v)
        json_integer_set(v, json_integer_value(v) + 1);
    else if (json_object_setn_new(st->by_path, path, n, json_integer(1)) == 0)
        st->n_paths++;
    json_decref(key);
}

json_t *mk_stats_json(const mk_stats *st, const char *name)
{
    return json_pack("{s:s, s:I, s:I, s:O, s:I, s:I, s:I}", "name", name, "requests",
                     (json_int_t)st->requests, "connections", (json_int_t)st->connections,
                     "by_path", st->by_path, "body_bytes", (json_int_t)st->body_bytes,
                     "ws_open", (json_int_t)st->ws_open, "ws_bytes_out",
                     (json_int_t)st->ws_bytes_out);
}
