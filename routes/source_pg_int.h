/* source_pg_int.h — internals shared by source_pg.c (connection, operation queue, public
 * entry points) and source_pg_ops.c (what each operation sends and does with its answer:
 * loads, writes, history; the cache file). Not public API.
 *
 * States of the session (s->state), from the loop thread's point of view:
 *   PG_DOWN        conn NULL, no poll handle. s->timer, when armed, is the reconnect backoff.
 *                  Queued user operations fail (UV_ENOTCONN) on the next kick.
 *   PG_CONNECTING  conn set, PQconnectPoll in progress; s->poll watches what it asked for;
 *                  s->timer is the connect timeout. Queued operations wait.
 *   PG_READY       connected, non-blocking. inflight is the operation whose results are being
 *                  read (NULL when idle); the poll handle watches readable, plus writable
 *                  while PG_F_WANT_WRITE. LISTEN is in force once PG_F_LISTENING.
 * Independent of the state: a load may be on the threadpool (load == PG_LOAD_PARSE) and the
 * cache file may be being written (PG_F_CACHING); both finish even after the session went
 * down. Stopping (PG_F_STOPPING): everything closes; freed when no handle is open, no
 * threadpool work is in flight and no call out to user code is in progress (depth 0). */
#ifndef RT_SOURCE_PG_INT_H
#define RT_SOURCE_PG_INT_H

#include <libpq-fe.h>
#include <stdint.h>

#include "routes/source_pg.h"

enum pg_state { PG_DOWN, PG_CONNECTING, PG_READY };

enum {
    PG_F_STOPPING = 1 << 0,    /* rt_pg_source_stop was called */
    PG_F_LISTENING = 1 << 1,   /* LISTEN succeeded on the current session */
    PG_F_WANT_WRITE = 1 << 2,  /* PQflush left data: watch writable too */
    PG_F_LOAD_FORCE = 1 << 3,  /* a reload was asked for during a load: load again after it */
    PG_F_CACHING = 1 << 4,     /* cache_work is queued or running */
    PG_F_LOGGED_DOWN = 1 << 5, /* "lost"/"cannot connect" logged; next log is "connected" */
    PG_F_HAVE_LOADED = 1 << 6, /* loaded_version is meaningful */
    PG_F_KICK = 1 << 7,        /* the kick timer is armed */
    PG_F_UPSTREAMS = 1 << 8,   /* the store has gateway_upstreams (migration 000003): loads
                                  read it, writes write it (found by a load) */
};

/* Where the load is. A load is never in the queue twice. */
enum pg_load { PG_LOAD_NONE, PG_LOAD_QUEUED, PG_LOAD_QUERY, PG_LOAD_PARSE };

enum pg_op_kind { PG_OP_LISTEN, PG_OP_LOAD, PG_OP_WRITE, PG_OP_HISTORY, PG_OP_QUERY };

typedef struct pg_op {
    struct pg_op *next;
    enum pg_op_kind kind;
    char *routes;     /* PG_OP_WRITE: compact JSON of the routes array */
    char *legacy;     /*   legacy_upstream's JSON, or NULL */
    char *upstreams;  /*   the document's "upstreams" object's JSON ("{}" when none) */
    char *audit;      /*   the audit array's JSON */
    int limit;        /* PG_OP_HISTORY */
    char *sql;        /* PG_OP_QUERY: one statement */
    char *params[RT_PG_QUERY_PARAMS];
    int nparams;
    rt_pg_query_cb query_done;
    rt_pg_write_cb write_done;
    rt_pg_history_cb history_done;
    void *arg;
} pg_op;

/* A poll handle for one socket; a new one whenever libpq's socket changes. Freed in its
 * close callback. */
typedef struct pg_poll {
    uv_poll_t h;
    rt_pg_source *s;
} pg_poll;

struct rt_pg_source {
    uv_loop_t *loop;
    char *conninfo;
    char **upstreams;
    int n_upstreams;
    char *cache_file;            /* NULL: no cache */
    rt_file_cb cb;
    void *arg;

    enum pg_state state;
    unsigned flags;
    int depth;                   /* calls out to user code in progress (re-entrancy guard) */
    int open_handles;            /* timer, kick, poll handles not yet closed */
    PGconn *conn;
    pg_poll *poll;               /* watching PQsocket(conn), or NULL */
    int poll_fd;
    uv_timer_t timer;            /* backoff (PG_DOWN) or connect timeout (PG_CONNECTING) */
    uv_timer_t kick;             /* 0 ms: dispatch or fail queued operations off-stack */
    uint64_t backoff_ms;         /* the next reconnect delay */
    uint64_t session;            /* counts connections: a new session per connect */

    pg_op *head, *tail;          /* operations waiting, in order */
    pg_op *inflight;             /* sent, its results being read */
    PGresult *res;               /* inflight's last PGRES_TUPLES_OK result */
    int res_failed;              /* inflight got an error result... */
    char res_err[512];           /* ...this one: "postgres: <primary message>" */

    /* Loads. Notifications during a load raise notified_max; one newer than the loaded
     * version loads again after it. */
    enum pg_load load;
    uint64_t loaded_version;     /* the version of the last load that got an answer */
    uint64_t notified_max;       /* the highest version notified during the current load */
    uint64_t written_version;    /* what the last committed write produced */
    uv_work_t parse_work;
    PGresult *parse_res;         /* in: the load's answer */
    uint64_t parse_version;      /* in */
    int load_upstreams;          /* the load in flight reads gateway_upstreams (its 4th column) */
    rt_table *parse_table;       /* out: the table, or NULL and parse_err */
    json_t *parse_doc;           /* out: the document, kept for the cache file */
    char parse_err[1024];        /* out */

    /* The cache file: one write at a time; the newest document waits in cache_next. */
    uv_work_t cache_work;
    json_t *cache_doc;           /* being written */
    json_t *cache_next;          /* to write after it */
    int cache_rc;                /* out */
    char cache_err[1024];        /* out */
    int cache_failing;           /* a failure was logged; the next success is logged too */
};

/* source_pg.c */
void rt__pg_push(rt_pg_source *s, pg_op *op, int front);
void rt__pg_kick(rt_pg_source *s);
/* Ends the session (a failed attempt when !WAS_READY), arms the reconnect, fails what was
 * sent or queued, logs the transition once. The caller holds the re-entrancy guard. */
void rt__pg_session_down(rt_pg_source *s, const char *why, int was_ready);
/* Drops OP (an internal operation, or a user one whose callback already ran). */
void rt__pg_op_free(pg_op *op);
/* Calls OP's callback with STATUS/ERR (user operations; internal ones are just dropped),
 * then frees it. The caller holds the re-entrancy guard. */
void rt__pg_op_fail(rt_pg_source *s, pg_op *op, int status, const char *err);
/* Copies the first line of a libpq message, without "ERROR:  "/"FATAL:  ", into BUF. */
void rt__pg_message(const char *msg, char *buf, size_t len);

/* source_pg_ops.c */
/* Queues a load when none is waiting (FRONT: before user operations); one in progress
 * loads again after it when FORCE. Only while PG_READY. */
void rt__pg_request_load(rt_pg_source *s, int front, int force);
/* A NOTIFY with PAYLOAD (the version) arrived. */
void rt__pg_notified(rt_pg_source *s, const char *payload);
/* Sends OP on s->conn. Returns 0; -1 when the connection failed (the caller takes it down);
 * or UV_ENOMEM when OP could not be built (the caller fails OP). */
int rt__pg_send(rt_pg_source *s, pg_op *op);
/* OP's answer is complete: RES (owned, may be NULL), or s->res_failed and s->res_err. Calls
 * back. The caller holds the re-entrancy guard and frees OP. */
void rt__pg_finish(rt_pg_source *s, pg_op *op, PGresult *res);
/* 1 when S can be freed: no handle open, no threadpool work, not inside a callback. */
int rt__pg_idle(const rt_pg_source *s);
/* The guard around calls out. leave frees a stopped S when nothing else holds it. */
static inline void rt__pg_enter(rt_pg_source *s)
{
    s->depth++;
}
void rt__pg_leave(rt_pg_source *s);

#endif
