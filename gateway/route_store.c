/* route_store.c — see route_store.h. */
#include "route_store.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../routes/route_edit.h"
#include "../routes/source_file.h"
#include "metrics.h"

#define MAX_PENDING_RELOADS 16
#define HISTORY_LINE_MAX (256 * 1024)

typedef struct pending_reload {
    gw_store_done done;
    void *arg;
} pending_reload;

struct gw_route_store {
    uv_loop_t *loop;
    const gw_config *cfg;
    rt_file_source *file;
    char history_path[1100];
    pending_reload pending[MAX_PENDING_RELOADS];
    int n_pending;
};

static void upstream_names(const gw_config *cfg, const char **names)
{
    for (int i = 0; i < cfg->n_upstreams; i++)
        names[i] = cfg->upstreams[i].name;
}

rt_table *gw_route_store_check(const gw_config *cfg, char *err, size_t errlen)
{
    const char *names[GW_MAX_UPSTREAMS];
    upstream_names(cfg, names);
    if (cfg->routes_source != GW_ROUTES_FILE) {
        snprintf(err, errlen, "%.900s: routes.source: \"postgres\" is not supported by this build yet",
                 cfg->path);
        return NULL;
    }
    return rt_table_load_file(cfg->routes_file, names, cfg->n_upstreams, err, errlen);
}

static uint64_t publish(rt_table *t, const char *why)
{
    rt_current_publish(t);
    atomic_fetch_add(&gw_process_stats.reloads_ok, 1);
    rt_table *now = rt_current_acquire();
    uint64_t v = rt_table_version(now);
    fprintf(stderr, "gateway: routes %s: version %llu in force (%d routes)\n", why,
            (unsigned long long)v, rt_table_count(now));
    rt_table_unref(now);
    return v;
}

static void answer_pending(gw_route_store *s, int status, const char *err, json_t *result)
{
    int n = s->n_pending;
    pending_reload p[MAX_PENDING_RELOADS];
    memcpy(p, s->pending, sizeof p);
    s->n_pending = 0;
    for (int i = 0; i < n; i++)
        p[i].done(status, err, result, p[i].arg);
}

/* Every table the file watcher (or a reload) produced. */
static void on_file_table(rt_table *t, const char *err, void *arg)
{
    gw_route_store *s = arg;
    if (!t) {
        atomic_fetch_add(&gw_process_stats.reloads_failed, 1);
        rt_table *cur = rt_current_acquire();
        fprintf(stderr, "gateway: routes: reload rejected, version %llu stays in force: %s\n",
                (unsigned long long)(cur ? rt_table_version(cur) : 0), err);
        if (cur)
            rt_table_unref(cur);
        answer_pending(s, 422, err, NULL);
        return;
    }
    int count = rt_table_count(t);
    uint64_t v = publish(t, "reloaded");
    json_t *res = json_pack("{s:b, s:I, s:i}", "reloaded", 1, "version", (json_int_t)v, "routes", count);
    answer_pending(s, 0, NULL, res);
    json_decref(res);
}

int gw_route_store_open(gw_route_store **out, uv_loop_t *loop, const gw_config *cfg, char *err,
                        size_t errlen)
{
    rt_table *t = gw_route_store_check(cfg, err, errlen);
    if (!t)
        return -1;
    gw_route_store *s = calloc(1, sizeof *s);
    if (!s) {
        rt_table_unref(t);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->loop = loop;
    s->cfg = cfg;
    snprintf(s->history_path, sizeof s->history_path, "%s.history.jsonl", cfg->routes_file);
    publish(t, "loaded");
    const char *names[GW_MAX_UPSTREAMS];
    upstream_names(cfg, names);
    int r = rt_file_source_start(loop, cfg->routes_file, names, cfg->n_upstreams, 0,
                                 on_file_table, s, &s->file);
    if (r < 0)
        fprintf(stderr, "gateway: routes: cannot watch %s (%s); SIGHUP and POST /admin/reload still reload it\n",
                cfg->routes_file, uv_strerror(r));
    *out = s;
    return 0;
}

const char *gw_route_store_kind(const gw_route_store *s)
{
    return s->cfg->routes_source == GW_ROUTES_FILE ? "file" : "postgres";
}

void gw_route_store_reload(gw_route_store *s, gw_store_done done, void *arg)
{
    if (!s->file) {
        /* no watcher (its directory could not be watched): read synchronously, on the
         * main loop, which serves no requests */
        char err[1024];
        rt_table *t = gw_route_store_check(s->cfg, err, sizeof err);
        if (done && s->n_pending < MAX_PENDING_RELOADS)
            s->pending[s->n_pending++] = (pending_reload){ done, arg };
        on_file_table(t, err, s);
        return;
    }
    if (done) {
        if (s->n_pending >= MAX_PENDING_RELOADS) {
            done(503, "too many reloads in progress", NULL, arg);
            return;
        }
        s->pending[s->n_pending++] = (pending_reload){ done, arg };
    }
    rt_file_source_reload(s->file);
}

static void iso_now(char *out, size_t n)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t l = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + l, n - l, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* The history of a file source: one JSON object per line, appended on the main loop. */
static void append_history(gw_route_store *s, json_t *audit, uint64_t version)
{
    FILE *f = fopen(s->history_path, "a");
    if (!f) {
        fprintf(stderr, "gateway: routes: cannot append to %s: %s\n", s->history_path, strerror(errno));
        return;
    }
    char at[40];
    iso_now(at, sizeof at);
    size_t i;
    json_t *e;
    json_array_foreach(audit, i, e) {
        json_object_set_new(e, "at", json_string(at));
        json_object_set_new(e, "version", json_integer((json_int_t)version));
        char *line = json_dumps(e, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (line) {
            fprintf(f, "%s\n", line);
            free(line);
        }
    }
    fclose(f);
}

void gw_route_store_apply(gw_route_store *s, rt_table *next, json_t *audit, gw_store_done done,
                          void *arg)
{
    char err[1024];
    json_t *doc = rt_table_to_json(next);
    int r = doc ? (s->file ? rt_file_source_write(s->file, doc, err, sizeof err)
                           : rt_file_write_atomic(s->cfg->routes_file, doc, err, sizeof err))
                : (snprintf(err, sizeof err, "out of memory"), -1);
    json_decref(doc);
    if (r != 0) {
        rt_table_unref(next);
        json_decref(audit);
        done(500, err, NULL, arg);
        return;
    }
    uint64_t v = publish(next, "changed");
    append_history(s, audit, v);
    json_decref(audit);
    json_t *res = json_pack("{s:I}", "version", (json_int_t)v);
    done(0, NULL, res, arg);
    json_decref(res);
}

void gw_route_store_history(gw_route_store *s, int limit, gw_store_done done, void *arg)
{
    json_t *changes = json_array();
    FILE *f = fopen(s->history_path, "r");
    if (f) {
        char *line = malloc(HISTORY_LINE_MAX);
        while (line && fgets(line, HISTORY_LINE_MAX, f)) {
            json_t *e = json_loads(line, 0, NULL);
            if (e)
                json_array_insert_new(changes, 0, e); /* newest first */
        }
        free(line);
        fclose(f);
    }
    while (limit > 0 && json_array_size(changes) > (size_t)limit)
        json_array_remove(changes, json_array_size(changes) - 1);
    json_t *res = json_pack("{s:o}", "changes", changes);
    done(0, NULL, res, arg);
    json_decref(res);
}

void gw_route_store_close(gw_route_store *s)
{
    if (!s)
        return;
    if (s->file)
        rt_file_source_stop(s->file);
    answer_pending(s, 503, "shutting down", NULL);
    free(s);
}
