/* route_store.c — see route_store.h. */
#include "gateway/route_store.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "routes/route_edit.h"
#include "routes/source_file.h"
#include "routes/source_pg.h"
#include "gateway/metrics.h"

#define MAX_PENDING_RELOADS 16

typedef struct pending_reload {
    gw_store_done done;
    void *arg;
} pending_reload;

struct gw_route_store {
    uv_loop_t *loop;
    const gw_config *cfg;
    rt_file_source *file;
    rt_pg_source *pg;
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
    if (cfg->routes_source == GW_ROUTES_POSTGRES) {
        /* --check does not reach the database: it checks the last good table, if any */
        rt_table *t = rt_pg_source_load_cache(cfg->routes_cache_file, names, cfg->n_upstreams,
                                              err, errlen);
        if (!t && strstr(err, "cannot read"))
            return rt_table_parse("{\"routes\":[]}", 13, "postgres", names, cfg->n_upstreams,
                                  err, errlen);
        return t;
    }
    return rt_table_load_file(cfg->routes_file, names, cfg->n_upstreams, err, errlen);
}

static uint64_t publish_as(rt_table *t, const char *why, int exact)
{
    if (exact)
        rt_current_publish_exact(t);
    else
        rt_current_publish(t);
    atomic_fetch_add(&gw_process_stats.reloads_ok, 1);
    rt_table *now = rt_current_acquire();
    uint64_t v = rt_table_version(now);
    fprintf(stderr, "gateway: routes %s: version %llu in force (%d routes)\n", why,
            (unsigned long long)v, rt_table_count(now));
    rt_table_unref(now);
    return v;
}

/* The file source numbers its own versions; PostgreSQL's are the store's revision, alike on
 * every instance. */
static uint64_t publish_for(gw_route_store *s, rt_table *t, const char *why)
{
    return publish_as(t, why, s->pg != NULL);
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
    if (s->pg) {
        /* our own writes were published when they committed: the NOTIFY that follows
         * brings the same version again */
        rt_table *cur = rt_current_acquire();
        int same = cur && rt_table_version(cur) == rt_table_version(t);
        if (cur)
            rt_table_unref(cur);
        if (same) {
            json_t *res = json_pack("{s:b, s:I, s:i}", "reloaded", 1, "version",
                                    (json_int_t)rt_table_version(t), "routes", count);
            rt_table_unref(t);
            answer_pending(s, 0, NULL, res);
            json_decref(res);
            return;
        }
    }
    uint64_t v = publish_for(s, t, "reloaded");
    json_t *res = json_pack("{s:b, s:I, s:i}", "reloaded", 1, "version", (json_int_t)v, "routes", count);
    answer_pending(s, 0, NULL, res);
    json_decref(res);
}

static int open_postgres(gw_route_store *s, char *err, size_t errlen)
{
    const char *names[GW_MAX_UPSTREAMS];
    upstream_names(s->cfg, names);
    char cerr[1024];
    rt_table *t = rt_pg_source_load_cache(s->cfg->routes_cache_file, names, s->cfg->n_upstreams,
                                          cerr, sizeof cerr);
    if (t)
        publish_as(t, "loaded from the cache file", 1);
    int r = rt_pg_source_start(s->loop, s->cfg->pg_conninfo, names, s->cfg->n_upstreams,
                               s->cfg->routes_cache_file, on_file_table, s, &s->pg);
    if (r < 0) {
        snprintf(err, errlen, "%.900s: routes.conninfo: %s", s->cfg->path,
                 r == UV_EINVAL ? "not a valid libpq connection string" : uv_strerror(r));
        return -1;
    }
    return 0;
}

int gw_route_store_open(gw_route_store **out, uv_loop_t *loop, const gw_config *cfg, char *err,
                        size_t errlen)
{
    if (cfg->routes_source == GW_ROUTES_POSTGRES) {
        gw_route_store *s = calloc(1, sizeof *s);
        if (!s) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        s->loop = loop;
        s->cfg = cfg;
        if (open_postgres(s, err, errlen) != 0) {
            free(s);
            return -1;
        }
        *out = s;
        return 0;
    }
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
    publish_as(t, "loaded", 0);
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

struct rt_pg_source *gw_route_store_pg(gw_route_store *s)
{
    return s ? s->pg : NULL;
}

int gw_route_store_has_upstreams(gw_route_store *s)
{
    return !s->pg || rt_pg_source_has_upstreams(s->pg);
}

void gw_route_store_reload(gw_route_store *s, gw_store_done done, void *arg)
{
    if (s->pg) {
        if (!rt_pg_source_connected(s->pg)) {
            if (done)
                done(503, "postgres: not connected; the last table stays in force", NULL, arg);
            return;
        }
        if (done) {
            if (s->n_pending >= MAX_PENDING_RELOADS) {
                done(503, "too many reloads in progress", NULL, arg);
                return;
            }
            s->pending[s->n_pending++] = (pending_reload){ done, arg };
        }
        rt_pg_source_reload(s->pg);
        return;
    }
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
static void append_history(const char *path, json_t *audit, uint64_t version)
{
    FILE *f = fopen(path, "a");
    if (!f) {
        fprintf(stderr, "gateway: routes: cannot append to %s: %s\n", path, strerror(errno));
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

typedef struct pg_apply {
    gw_route_store *s;
    rt_table *next;
    gw_store_done done;
    void *arg;
} pg_apply;

static void on_pg_written(int status, const char *err, void *arg)
{
    pg_apply *a = arg;
    if (status != 0) {
        rt_table_unref(a->next);
        a->done(status == UV_EIO ? 422 : 503, err, NULL, a->arg);
        free(a);
        return;
    }
    /* in force here at once, with the store's version; the NOTIFY brings it to the others */
    rt_table_set_version(a->next, rt_pg_source_written_version(a->s->pg));
    uint64_t v = publish_as(a->next, "changed", 1);
    json_t *res = json_pack("{s:I}", "version", (json_int_t)v);
    a->done(0, NULL, res, a->arg);
    json_decref(res);
    free(a);
}

static void apply_postgres(gw_route_store *s, rt_table *next, json_t *doc, json_t *audit,
                           gw_store_done done, void *arg)
{
    pg_apply *a = malloc(sizeof *a);
    if (!a || !doc) {
        free(a);
        json_decref(doc);
        json_decref(audit);
        rt_table_unref(next);
        done(500, "out of memory", NULL, arg);
        return;
    }
    *a = (pg_apply){ s, next, done, arg };
    int r = rt_pg_source_write(s->pg, doc, audit, on_pg_written, a);
    json_decref(doc);
    json_decref(audit);
    if (r < 0) {
        rt_table_unref(next);
        free(a);
        done(r == UV_ENOTCONN ? 503 : 500, r == UV_ENOTCONN ? "postgres: not connected" : uv_strerror(r),
             NULL, arg);
    }
}

/* A file-source change while its write runs on the threadpool. Holds no pointer to the
 * store: the store may be closed (shutdown) before the write ends. */
typedef struct file_apply {
    rt_table *next;
    json_t *audit;
    gw_store_done done;
    void *arg;
    char history_path[1100];
} file_apply;

static void on_file_written(int status, const char *err, void *arg)
{
    file_apply *a = arg;
    if (status != 0) {
        rt_table_unref(a->next);
        a->done(500, err, NULL, a->arg);
    } else {
        uint64_t v = publish_as(a->next, "changed", 0);
        append_history(a->history_path, a->audit, v);
        json_t *res = json_pack("{s:I}", "version", (json_int_t)v);
        a->done(0, NULL, res, a->arg);
        json_decref(res);
    }
    json_decref(a->audit);
    free(a);
}

void gw_route_store_apply(gw_route_store *s, rt_table *next, json_t *doc, json_t *audit,
                          gw_store_done done, void *arg)
{
    if (!doc)
        doc = rt_table_to_json(next);
    if (s->pg) {
        apply_postgres(s, next, doc, audit, done, arg);
        return;
    }
    file_apply *a = doc ? malloc(sizeof *a) : NULL;
    if (a) {
        *a = (file_apply){ next, audit, done, arg, "" };
        snprintf(a->history_path, sizeof a->history_path, "%s", s->history_path);
    }
    if (a && s->file) {
        int r = rt_file_source_write_async(s->file, doc, on_file_written, a);
        if (r == 0)
            return; /* the write owns doc now */
        json_decref(doc);
        char err[1200];
        snprintf(err, sizeof err, "%s: cannot write: %s", s->cfg->routes_file, uv_strerror(r));
        on_file_written(-1, err, a);
        return;
    }
    /* no watcher (its directory could not be watched): write here, on the main loop */
    char err[1024];
    int r = a ? rt_file_write_atomic(s->cfg->routes_file, doc, err, sizeof err)
              : (snprintf(err, sizeof err, "out of memory"), -1);
    json_decref(doc);
    if (a) {
        on_file_written(r, err, a);
        return;
    }
    rt_table_unref(next);
    json_decref(audit);
    done(500, err, NULL, arg);
}

typedef struct pg_hist {
    gw_store_done done;
    void *arg;
} pg_hist;

static void on_pg_history(json_t *changes, const char *err, void *arg)
{
    pg_hist *h = arg;
    if (!changes) {
        h->done(503, err, NULL, h->arg);
    } else {
        json_t *res = json_pack("{s:O}", "changes", changes);
        h->done(0, NULL, res, h->arg);
        json_decref(res);
    }
    free(h);
}

/* A history read of the file source on the threadpool; holds no pointer to the store. */
typedef struct file_hist {
    uv_work_t work;
    char path[1100];
    int limit;
    json_t *changes; /* out */
    char err[1200];  /* out */
    gw_store_done done;
    void *arg;
} file_hist;

static void history_work(uv_work_t *w)
{
    file_hist *h = w->data;
    h->changes = rt_file_history_tail(h->path, h->limit, h->err, sizeof h->err);
}

static void history_done(uv_work_t *w, int status)
{
    file_hist *h = w->data;
    (void)status; /* never cancelled */
    if (!h->changes) {
        h->done(500, h->err, NULL, h->arg);
    } else {
        json_t *res = json_pack("{s:o}", "changes", h->changes);
        h->done(0, NULL, res, h->arg);
        json_decref(res);
    }
    free(h);
}

void gw_route_store_history(gw_route_store *s, int limit, gw_store_done done, void *arg)
{
    if (limit < 1)
        limit = GW_HISTORY_DEFAULT;
    if (s->pg) {
        pg_hist *h = malloc(sizeof *h);
        if (!h) {
            done(500, "out of memory", NULL, arg);
            return;
        }
        *h = (pg_hist){ done, arg };
        int r = rt_pg_source_history(s->pg, limit, on_pg_history, h);
        if (r < 0) {
            free(h);
            done(503, r == UV_ENOTCONN ? "postgres: not connected" : uv_strerror(r), NULL, arg);
        }
        return;
    }
    file_hist *h = calloc(1, sizeof *h);
    if (!h) {
        done(500, "out of memory", NULL, arg);
        return;
    }
    snprintf(h->path, sizeof h->path, "%s", s->history_path);
    h->limit = limit;
    h->done = done;
    h->arg = arg;
    h->work.data = h;
    (void)uv_queue_work(s->loop, &h->work, history_work, history_done);
}

void gw_route_store_close(gw_route_store *s)
{
    if (!s)
        return;
    if (s->file)
        rt_file_source_stop(s->file);
    if (s->pg)
        rt_pg_source_stop(s->pg);
    answer_pending(s, 503, "shutting down", NULL);
    free(s);
}
