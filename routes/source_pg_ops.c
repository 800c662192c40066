/* source_pg_ops.c — what the PostgreSQL route source sends and what it does with the answers
 * (source_pg.h): session set-up, loads (parsed on the threadpool, then the cache file), admin
 * writes in one transaction with their audit rows, and the history. The session and the
 * queue are in source_pg.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routes/parse.h"
#include "routes/source_pg_int.h"

/* Session set-up: JSON is exchanged in UTF-8 whatever the database's defaults are. */
static const char SQL_LISTEN[] =
    "SET client_encoding = 'UTF8'; SET statement_timeout = '10s'; LISTEN " RT_PG_CHANNEL;

/* One statement, so one snapshot: the version matches the rows. The fourth column: with
 * gateway_upstreams (migration 000003) its rows as one object; without, whether the table
 * exists now (a load that sees it appear loads again with it). */
#define SQL_LOAD_HEAD                                                                          \
    "SELECT v.version::text,"                                                                  \
    " (SELECT value::text FROM gateway_settings WHERE key = 'legacy_upstream'),"               \
    " (SELECT coalesce(json_agg(doc ORDER BY position, id), '[]')::text FROM gateway_routes),"
static const char SQL_LOAD[] =
    SQL_LOAD_HEAD " (to_regclass('gateway_upstreams') IS NOT NULL)::text"
    " FROM gateway_route_version AS v";
static const char SQL_LOAD_UPSTREAMS[] =
    SQL_LOAD_HEAD " (SELECT coalesce(json_object_agg(name, doc ORDER BY name), '{}')::text"
    " FROM gateway_upstreams)"
    " FROM gateway_route_version AS v";

/* A write: one simple-query string runs as one implicit transaction (any error rolls back
 * all of it). %s are escaped literals. The routes: ids no longer present are deleted; the
 * rest upserted, but a row whose doc and position are unchanged is left alone (updated_at
 * kept). The triggers bump the version once for the transaction, so the audit rows take the
 * version as it is after the route statements, and the last statement reports it. */
static const char SQL_WRITE_ROUTES[] =
    "WITH new AS (SELECT r ->> 'id' AS id, (o - 1)::integer AS position, r AS doc"
    " FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(r, o)),"
    " gone AS (DELETE FROM gateway_routes AS g"
    " WHERE NOT EXISTS (SELECT 1 FROM new WHERE new.id = g.id))"
    " INSERT INTO gateway_routes AS g (id, position, doc) SELECT id, position, doc FROM new"
    " ON CONFLICT (id) DO UPDATE SET position = excluded.position, doc = excluded.doc,"
    " updated_at = now()"
    " WHERE g.position <> excluded.position OR g.doc <> excluded.doc;";
static const char SQL_WRITE_LEGACY[] =
    "INSERT INTO gateway_settings AS s (key, value) VALUES ('legacy_upstream', %s::jsonb)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE s.value <> excluded.value;";
/* gateway_upstreams equal to the document's "upstreams" object, like the routes. */
static const char SQL_WRITE_UPSTREAMS[] =
    "WITH new AS (SELECT key AS name, value AS doc FROM jsonb_each(%s::jsonb)),"
    " gone AS (DELETE FROM gateway_upstreams AS g"
    " WHERE NOT EXISTS (SELECT 1 FROM new WHERE new.name = g.name))"
    " INSERT INTO gateway_upstreams AS g (name, doc) SELECT name, doc FROM new"
    " ON CONFLICT (name) DO UPDATE SET doc = excluded.doc, updated_at = now()"
    " WHERE g.doc <> excluded.doc;";
static const char SQL_WRITE_AUDIT_UPSTREAMS[] =
    "INSERT INTO gateway_route_audit (who, action, route_id, upstream, old_value, new_value,"
    " version)"
    " SELECT a ->> 'who', a ->> 'action', a ->> 'route_id', a ->> 'upstream',"
    " nullif(a -> 'old', 'null'), nullif(a -> 'new', 'null'), v.version"
    " FROM jsonb_array_elements(%s::jsonb) AS a, gateway_route_version AS v;"
    " SELECT version FROM gateway_route_version";
static const char SQL_WRITE_AUDIT[] =
    "INSERT INTO gateway_route_audit (who, action, route_id, old_value, new_value, version)"
    " SELECT a ->> 'who', a ->> 'action', a ->> 'route_id', nullif(a -> 'old', 'null'),"
    " nullif(a -> 'new', 'null'), v.version"
    " FROM jsonb_array_elements(%s::jsonb) AS a, gateway_route_version AS v;"
    " SELECT version FROM gateway_route_version";

static const char SQL_HISTORY_UPSTREAMS[] =
    "SELECT coalesce(json_agg(json_build_object('seq', seq,"
    " 'at', to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
    " 'who', who, 'action', action, 'route_id', route_id, 'upstream', upstream,"
    " 'old', old_value, 'new', new_value, 'version', version) ORDER BY seq DESC), '[]')::text"
    " FROM (SELECT * FROM gateway_route_audit ORDER BY seq DESC LIMIT $1::integer) AS a";
static const char SQL_HISTORY[] =
    "SELECT coalesce(json_agg(json_build_object('seq', seq,"
    " 'at', to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
    " 'who', who, 'action', action, 'route_id', route_id, 'old', old_value, 'new', new_value,"
    " 'version', version) ORDER BY seq DESC), '[]')::text"
    " FROM (SELECT * FROM gateway_route_audit ORDER BY seq DESC LIMIT $1::integer) AS a";

/* ---- loads ----------------------------------------------------------------------------- */

void rt__pg_request_load(rt_pg_source *s, int front, int force)
{
    if (s->state != PG_READY || (s->flags & PG_F_STOPPING))
        return;
    if (s->load == PG_LOAD_QUEUED)
        return; /* the one waiting will see everything committed so far */
    if (s->load != PG_LOAD_NONE) {
        if (force)
            s->flags |= PG_F_LOAD_FORCE;
        return;
    }
    pg_op *op = calloc(1, sizeof(*op));
    if (!op)
        return; /* the next notification or reconnect loads */
    op->kind = PG_OP_LOAD;
    rt__pg_push(s, op, front);
    s->load = PG_LOAD_QUEUED;
    rt__pg_kick(s);
}

void rt__pg_notified(rt_pg_source *s, const char *payload)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(payload, &end, 10);
    int ok = payload[0] >= '0' && payload[0] <= '9' && *end == '\0' && errno == 0;
    switch (s->load) {
    case PG_LOAD_NONE:
        /* Our last load may already have seen it (its notification came after the answer).
         * Any other version is news — also a smaller one: the store may have been reset. */
        if (!ok || !(s->flags & PG_F_HAVE_LOADED) || v != s->loaded_version)
            rt__pg_request_load(s, 0, 0);
        break;
    case PG_LOAD_QUEUED:
        break;
    case PG_LOAD_QUERY:
    case PG_LOAD_PARSE: /* the load's snapshot may predate it: decided when it ends */
        if (!ok)
            s->flags |= PG_F_LOAD_FORCE;
        else if (v > s->notified_max)
            s->notified_max = v;
        break;
    }
}

/* After a load that saw version V: one more when asked for, or notified of a newer one. */
static void load_again(rt_pg_source *s, uint64_t v)
{
    if ((s->flags & PG_F_LOAD_FORCE) || s->notified_max > v) {
        s->flags &= ~(unsigned)PG_F_LOAD_FORCE;
        s->notified_max = 0;
        rt__pg_request_load(s, 0, 0);
    }
}

/* Threadpool: the answer to a document, the document to a table. Touches only the parse_*
 * fields and immutable ones. */
static void parse_work(uv_work_t *w)
{
    rt_pg_source *s = w->data;
    const PGresult *r = s->parse_res;
    json_error_t je;
    json_t *root = json_object();
    json_t *legacy = NULL, *routes = NULL;
    if (!root || json_object_set_new(root, "version", json_integer((json_int_t)s->parse_version)))
        goto nomem;
    if (!PQgetisnull(r, 0, 1)) {
        if (!(legacy = json_loads(PQgetvalue(r, 0, 1), JSON_DECODE_ANY, &je))) {
            snprintf(s->parse_err, sizeof(s->parse_err),
                     "postgres: gateway_settings.legacy_upstream: %s", je.text);
            goto fail;
        }
        if (json_object_set_new(root, "legacy_upstream", legacy))
            goto nomem;
    }
    if (!(routes = json_loads(PQgetvalue(r, 0, 2), 0, &je))) {
        snprintf(s->parse_err, sizeof(s->parse_err), "postgres: gateway_routes: %s", je.text);
        goto fail;
    }
    if (json_object_set_new(root, "routes", routes))
        goto nomem;
    if (s->load_upstreams) {
        json_t *ups = json_loads(PQgetvalue(r, 0, 3), 0, &je);
        if (!ups || !json_is_object(ups)) {
            snprintf(s->parse_err, sizeof(s->parse_err), "postgres: gateway_upstreams: %s",
                     ups ? "not an object" : je.text);
            json_decref(ups);
            goto fail;
        }
        if (json_object_size(ups) == 0)
            json_decref(ups);
        else if (json_object_set_new(root, "upstreams", ups))
            goto nomem;
    }
    s->parse_table = rt__table_from_json(root, "postgres", (const char *const *)s->upstreams,
                                         s->n_upstreams, 0, s->parse_err,
                                         sizeof(s->parse_err));
    if (!s->parse_table)
        goto fail;
    rt_table_set_version(s->parse_table, s->parse_version);
    s->parse_doc = root;
    return;

nomem:
    snprintf(s->parse_err, sizeof(s->parse_err), "postgres: out of memory");
fail:
    json_decref(root);
}

static void cache_done(uv_work_t *w, int status);

static void cache_work(uv_work_t *w)
{
    rt_pg_source *s = w->data;
    s->cache_rc = rt_file_write_atomic(s->cache_file, s->cache_doc, s->cache_err,
                                       sizeof(s->cache_err));
}

/* Takes DOC: written now, or after the write in progress (replacing an older waiting one). */
static void cache_queue(rt_pg_source *s, json_t *doc)
{
    if (!s->cache_file) {
        json_decref(doc);
        return;
    }
    if (s->flags & PG_F_CACHING) {
        json_decref(s->cache_next);
        s->cache_next = doc;
        return;
    }
    s->cache_doc = doc;
    s->flags |= PG_F_CACHING;
    (void)uv_queue_work(s->loop, &s->cache_work, cache_work, cache_done);
}

static void cache_done(uv_work_t *w, int status)
{
    rt_pg_source *s = w->data;
    rt__pg_enter(s);
    s->flags &= ~(unsigned)PG_F_CACHING;
    json_decref(s->cache_doc);
    s->cache_doc = NULL;
    if (status == 0 && s->cache_rc != 0 && !s->cache_failing) {
        fprintf(stderr, "postgres: cache: %s\n", s->cache_err);
        s->cache_failing = 1;
    } else if (status == 0 && s->cache_rc == 0 && s->cache_failing) {
        fprintf(stderr, "postgres: cache: %s written again\n", s->cache_file);
        s->cache_failing = 0;
    }
    json_t *next = s->cache_next;
    s->cache_next = NULL;
    if (next)
        cache_queue(s, next);
    rt__pg_leave(s);
}

static void parse_done(uv_work_t *w, int status)
{
    rt_pg_source *s = w->data;
    rt__pg_enter(s);
    PQclear(s->parse_res);
    s->parse_res = NULL;
    rt_table *t = s->parse_table;
    json_t *doc = s->parse_doc;
    s->parse_table = NULL;
    s->parse_doc = NULL;
    s->load = PG_LOAD_NONE;
    if ((s->flags & PG_F_STOPPING) || status != 0) { /* UV_ECANCELED: only when stopping */
        rt_table_unref(t);
        json_decref(doc);
    } else {
        if (t)
            cache_queue(s, doc);
        s->cb(t, t ? NULL : s->parse_err, s->arg);
        if (!(s->flags & PG_F_STOPPING))
            load_again(s, s->parse_version);
    }
    rt__pg_leave(s);
}

/* The load's answer: RES holds one row (version, legacy_upstream, routes) unless FAILED. */
static void load_answer(rt_pg_source *s, PGresult *res, int failed, const char *err)
{
    if (failed || !res || PQntuples(res) != 1 || PQnfields(res) != 4 || PQgetisnull(res, 0, 0)) {
        PQclear(res);
        if (failed && s->load_upstreams && strstr(err, "gateway_upstreams")) {
            /* migrated down past 000003: load (and write) without the table again */
            s->flags &= ~(unsigned)PG_F_UPSTREAMS;
            s->flags |= PG_F_LOAD_FORCE;
        }
        s->load = PG_LOAD_NONE;
        s->cb(NULL, failed ? err : "postgres: gateway_route_version: no row", s->arg);
        if (!(s->flags & PG_F_STOPPING))
            load_again(s, 0);
        return;
    }
    if (!s->load_upstreams && strcmp(PQgetvalue(res, 0, 3), "true") == 0) {
        /* migration 000003 was applied: this load's table is the last without it */
        s->flags |= PG_F_UPSTREAMS | PG_F_LOAD_FORCE;
    }
    s->parse_version = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    s->loaded_version = s->parse_version;
    s->flags |= PG_F_HAVE_LOADED;
    s->parse_res = res;
    s->parse_table = NULL;
    s->parse_doc = NULL;
    s->parse_err[0] = '\0';
    s->load = PG_LOAD_PARSE;
    (void)uv_queue_work(s->loop, &s->parse_work, parse_work, parse_done);
}

/* ---- sending and answers --------------------------------------------------------------- */

/* The write's SQL with OP's JSON as escaped literals; NULL when out of memory. */
static char *write_sql(PGconn *c, const pg_op *op)
{
    char *routes = PQescapeLiteral(c, op->routes, strlen(op->routes));
    char *audit = PQescapeLiteral(c, op->audit, strlen(op->audit));
    char *legacy = op->legacy ? PQescapeLiteral(c, op->legacy, strlen(op->legacy)) : NULL;
    char *ups = op->upstreams ? PQescapeLiteral(c, op->upstreams, strlen(op->upstreams)) : NULL;
    char *sql = NULL;
    if (routes && audit && (legacy || !op->legacy) && (ups || !op->upstreams)) {
        size_t n = sizeof(SQL_WRITE_ROUTES) + strlen(routes) + sizeof(SQL_WRITE_AUDIT_UPSTREAMS) +
                   strlen(audit) + (legacy ? sizeof(SQL_WRITE_LEGACY) + strlen(legacy) : 0) +
                   (ups ? sizeof(SQL_WRITE_UPSTREAMS) + strlen(ups) : 0);
        if ((sql = malloc(n)) != NULL) {
            size_t at = (size_t)snprintf(sql, n, SQL_WRITE_ROUTES, routes);
            if (legacy)
                at += (size_t)snprintf(sql + at, n - at, SQL_WRITE_LEGACY, legacy);
            if (ups)
                at += (size_t)snprintf(sql + at, n - at, SQL_WRITE_UPSTREAMS, ups);
            snprintf(sql + at, n - at, ups ? SQL_WRITE_AUDIT_UPSTREAMS : SQL_WRITE_AUDIT, audit);
        }
    }
    PQfreemem(ups);
    PQfreemem(routes);
    PQfreemem(audit);
    PQfreemem(legacy);
    return sql;
}

int rt__pg_send(rt_pg_source *s, pg_op *op)
{
    int ok = 0;
    s->res_failed = 0;
    s->res_err[0] = '\0';
    switch (op->kind) {
    case PG_OP_LISTEN:
        ok = PQsendQuery(s->conn, SQL_LISTEN);
        break;
    case PG_OP_LOAD:
        s->load_upstreams = (s->flags & PG_F_UPSTREAMS) != 0;
        ok = PQsendQueryParams(s->conn, s->load_upstreams ? SQL_LOAD_UPSTREAMS : SQL_LOAD,
                               0, NULL, NULL, NULL, NULL, 0);
        if (ok) {
            s->load = PG_LOAD_QUERY;
            s->notified_max = 0;
        }
        break;
    case PG_OP_WRITE: {
        char *sql = write_sql(s->conn, op);
        if (!sql)
            return UV_ENOMEM;
        ok = PQsendQuery(s->conn, sql);
        free(sql);
        break;
    }
    case PG_OP_QUERY:
        ok = PQsendQueryParams(s->conn, op->sql, op->nparams, NULL,
                               (const char *const *)op->params, NULL, NULL, 0);
        break;
    case PG_OP_HISTORY: {
        char limit[16];
        snprintf(limit, sizeof(limit), "%d", op->limit);
        const char *values[1] = { limit };
        ok = PQsendQueryParams(s->conn, (s->flags & PG_F_UPSTREAMS) ? SQL_HISTORY_UPSTREAMS
                                                                     : SQL_HISTORY,
                               1, NULL, values, NULL, NULL, 0);
        break;
    }
    }
    return ok ? 0 : -1;
}

void rt__pg_finish(rt_pg_source *s, pg_op *op, PGresult *res)
{
    int failed = s->res_failed;
    char err[sizeof(s->res_err)];
    memcpy(err, s->res_err, sizeof(err));
    s->res_failed = 0;
    s->res_err[0] = '\0';
    switch (op->kind) {
    case PG_OP_LISTEN:
        PQclear(res);
        if (failed) {
            rt__pg_session_down(s, err + strlen("postgres: "), 1);
            return;
        }
        s->flags |= PG_F_LISTENING;
        rt__pg_request_load(s, 1, 1); /* forced: a parse from before the loss may still run */
        return;
    case PG_OP_LOAD:
        load_answer(s, res, failed, err);
        return;
    case PG_OP_WRITE:
        /* The last statement's answer: the version the change produced. */
        if (!failed && res && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
            s->written_version = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        op->write_done(failed ? UV_EIO : 0, failed ? err : NULL, op->arg);
        return;
    case PG_OP_QUERY: {
        const char *v = !failed && res && PQntuples(res) >= 1 && PQnfields(res) >= 1 &&
                                !PQgetisnull(res, 0, 0)
                            ? PQgetvalue(res, 0, 0)
                            : NULL;
        op->query_done(failed ? UV_EIO : 0, failed ? err : NULL, v, s->session, op->arg);
        PQclear(res);
        return;
    }
    case PG_OP_HISTORY: {
        json_t *changes = NULL;
        if (!failed && res && PQntuples(res) == 1 && PQnfields(res) == 1) {
            json_error_t je;
            changes = json_loads(PQgetvalue(res, 0, 0), 0, &je);
            if (!changes)
                snprintf(err, sizeof(err), "postgres: history: %s", je.text);
        } else if (!failed) {
            snprintf(err, sizeof(err), "postgres: history: unexpected answer");
        }
        PQclear(res);
        op->history_done(changes, changes ? NULL : err, op->arg);
        json_decref(changes);
        return;
    }
    }
}

/* ---- public: write, history, cache ----------------------------------------------------- */

/* An array of objects with distinct string ids. UV_EINVAL, UV_ENOMEM or 0. */
static int valid_routes(const json_t *routes)
{
    size_t i;
    json_t *r;
    if (!json_is_array(routes))
        return UV_EINVAL;
    json_t *seen = json_object();
    if (!seen)
        return UV_ENOMEM;
    int rc = 0;
    json_array_foreach(routes, i, r) {
        const char *id = json_string_value(json_object_get(r, "id"));
        if (!json_is_object(r) || !id || json_object_get(seen, id)) {
            rc = UV_EINVAL;
            break;
        }
        if (json_object_set_new(seen, id, json_true()) != 0) {
            rc = UV_ENOMEM;
            break;
        }
    }
    json_decref(seen);
    return rc;
}

static int valid_audit(const json_t *audit)
{
    size_t i;
    json_t *a;
    if (!audit)
        return 1;
    if (!json_is_array(audit))
        return 0;
    json_array_foreach(audit, i, a) {
        json_t *id = json_object_get(a, "route_id");
        if (!json_is_object(a) || !json_is_string(json_object_get(a, "who")) ||
            !json_is_string(json_object_get(a, "action")) ||
            (id && !json_is_string(id) && !json_is_null(id)))
            return 0;
    }
    return 1;
}

int rt_pg_source_write(rt_pg_source *s, const json_t *new_doc, const json_t *audit,
                       rt_pg_write_cb done, void *arg)
{
    if (!s || !done || !new_doc)
        return UV_EINVAL;
    if (s->flags & PG_F_STOPPING)
        return UV_ECANCELED;
    const json_t *routes = json_object_get(new_doc, "routes");
    const json_t *legacy = json_object_get(new_doc, "legacy_upstream");
    int rc = valid_routes(routes);
    if (rc != 0)
        return rc;
    if ((legacy && !json_is_string(legacy) && !json_is_null(legacy)) || !valid_audit(audit))
        return UV_EINVAL;
    if (json_is_null(legacy))
        legacy = NULL;
    /* ASCII only (\u escapes): the literals then survive any client encoding. */
    const size_t flags = JSON_COMPACT | JSON_ENSURE_ASCII | JSON_ENCODE_ANY;
    pg_op *op = calloc(1, sizeof(*op));
    if (!op)
        return UV_ENOMEM;
    op->kind = PG_OP_WRITE;
    op->write_done = done;
    op->arg = arg;
    op->routes = json_dumps(routes, flags);
    op->audit = audit ? json_dumps(audit, flags) : strdup("[]");
    op->legacy = legacy ? json_dumps(legacy, flags) : NULL;
    const json_t *ups = json_object_get(new_doc, "upstreams");
    if (ups && !json_is_object(ups)) {
        rt__pg_op_free(op);
        return UV_EINVAL;
    }
    if (s->flags & PG_F_UPSTREAMS) /* the table equals the document's, {} included */
        op->upstreams = ups ? json_dumps(ups, flags) : strdup("{}");
    else if (ups && json_object_size(ups) > 0) {
        rt__pg_op_free(op);
        return UV_ENOSYS; /* the store cannot keep them: migration 000003 is missing */
    }
    if (!op->routes || !op->audit || (legacy && !op->legacy) ||
        ((s->flags & PG_F_UPSTREAMS) && !op->upstreams)) {
        rt__pg_op_free(op);
        return UV_ENOMEM;
    }
    rt__pg_push(s, op, 0);
    rt__pg_kick(s);
    return 0;
}

int rt_pg_source_has_upstreams(const rt_pg_source *s)
{
    return s && (s->flags & PG_F_UPSTREAMS);
}

uint64_t rt_pg_source_written_version(const rt_pg_source *s)
{
    return s ? s->written_version : 0;
}

int rt_pg_source_history(rt_pg_source *s, int limit, rt_pg_history_cb done, void *arg)
{
    if (!s || !done || limit < 1)
        return UV_EINVAL;
    if (s->flags & PG_F_STOPPING)
        return UV_ECANCELED;
    pg_op *op = calloc(1, sizeof(*op));
    if (!op)
        return UV_ENOMEM;
    op->kind = PG_OP_HISTORY;
    op->limit = limit;
    op->history_done = done;
    op->arg = arg;
    rt__pg_push(s, op, 0);
    rt__pg_kick(s);
    return 0;
}

int rt_pg_source_query(rt_pg_source *s, const char *sql, int nparams,
                       const char *const *params, rt_pg_query_cb done, void *arg)
{
    if (!s || !sql || !done || nparams < 0 || nparams > RT_PG_QUERY_PARAMS)
        return UV_EINVAL;
    if (s->flags & PG_F_STOPPING)
        return UV_ECANCELED;
    pg_op *op = calloc(1, sizeof(*op));
    if (!op || !(op->sql = strdup(sql))) {
        free(op);
        return UV_ENOMEM;
    }
    op->kind = PG_OP_QUERY;
    for (int i = 0; i < nparams; i++) {
        if (!(op->params[i] = strdup(params[i] ? params[i] : ""))) {
            rt__pg_op_free(op);
            return UV_ENOMEM;
        }
        op->nparams = i + 1;
    }
    op->query_done = done;
    op->arg = arg;
    rt__pg_push(s, op, 0);
    rt__pg_kick(s);
    return 0;
}

rt_table *rt_pg_source_load_cache(const char *cache_file, const char *const *upstreams,
                                  int n_upstreams, char *err, size_t errlen)
{
    /* The cache is a routes document whose "version" is the store's: the table keeps it. */
    return rt_table_load_file(cache_file, upstreams, n_upstreams, err, errlen);
}
