/* source_pg.c — PostgreSQL route source (source_pg.h): the session (connect, poll, lose,
 * reconnect with backoff), the queue of operations on it, and the public entry points.
 * What each operation sends and does with its answer is in source_pg_ops.c; the states are
 * documented in source_pg_int.h.
 *
 * Every entry from libuv (poll, timers, threadpool completion) and rt_pg_source_stop hold
 * the re-entrancy guard (depth) while they may call out to user code, so a callback may
 * stop the source: memory is freed when the outermost entry leaves. Code that called out
 * checks PG_F_STOPPING and the state before touching the session again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routes/matcher.h"
#include "routes/source_pg_int.h"

static void on_poll(uv_poll_t *h, int status, int events);
static void on_timer(uv_timer_t *t);

/* ---- memory ---------------------------------------------------------------------------- */

static void free_source(rt_pg_source *s)
{
    rt__names_free(s->upstreams, s->n_upstreams);
    free(s->conninfo);
    free(s->cache_file);
    free(s);
}

int rt__pg_idle(const rt_pg_source *s)
{
    return s->open_handles == 0 && s->depth == 0 && s->load != PG_LOAD_PARSE &&
           !(s->flags & PG_F_CACHING);
}

void rt__pg_leave(rt_pg_source *s)
{
    if (--s->depth == 0 && (s->flags & PG_F_STOPPING) && rt__pg_idle(s))
        free_source(s);
}

static void on_close(uv_handle_t *h)
{
    rt_pg_source *s = h->data;
    s->open_handles--;
    if ((s->flags & PG_F_STOPPING) && rt__pg_idle(s))
        free_source(s);
}

static void on_poll_close(uv_handle_t *h)
{
    pg_poll *p = (pg_poll *)h;
    rt_pg_source *s = p->s;
    free(p);
    s->open_handles--;
    if ((s->flags & PG_F_STOPPING) && rt__pg_idle(s))
        free_source(s);
}

void rt__pg_message(const char *msg, char *buf, size_t len)
{
    if (!msg || !*msg)
        msg = "unknown error";
    static const char *const prefixes[] = { "ERROR:  ", "FATAL:  ", "PANIC:  " };
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        if (strncmp(msg, prefixes[i], strlen(prefixes[i])) == 0)
            msg += strlen(prefixes[i]);
    }
    size_t n = strcspn(msg, "\n");
    snprintf(buf, len, "%.*s", (int)n, msg);
}

/* ---- the operation queue --------------------------------------------------------------- */

void rt__pg_push(rt_pg_source *s, pg_op *op, int front)
{
    if (front) {
        op->next = s->head;
        s->head = op;
        if (!s->tail)
            s->tail = op;
    } else {
        op->next = NULL;
        if (s->tail)
            s->tail->next = op;
        else
            s->head = op;
        s->tail = op;
    }
}

static pg_op *pop(rt_pg_source *s)
{
    pg_op *op = s->head;
    if (op) {
        s->head = op->next;
        if (!s->head)
            s->tail = NULL;
        op->next = NULL;
    }
    return op;
}

void rt__pg_op_free(pg_op *op)
{
    if (!op)
        return;
    free(op->routes);
    free(op->legacy);
    free(op->upstreams);
    free(op->audit);
    free(op->sql);
    for (int i = 0; i < op->nparams; i++)
        free(op->params[i]);
    free(op);
}

void rt__pg_op_fail(rt_pg_source *s, pg_op *op, int status, const char *err)
{
    if (op->kind == PG_OP_LOAD && (s->load == PG_LOAD_QUEUED || s->load == PG_LOAD_QUERY))
        s->load = PG_LOAD_NONE;
    if (op->kind == PG_OP_WRITE)
        op->write_done(status, err, op->arg);
    else if (op->kind == PG_OP_HISTORY)
        op->history_done(NULL, err, op->arg);
    else if (op->kind == PG_OP_QUERY)
        op->query_done(status, err, NULL, s->session, op->arg);
    rt__pg_op_free(op);
}

/* Fails every queued operation, one at a time (a callback may queue more, or stop). */
static void fail_queued(rt_pg_source *s, int status, const char *err)
{
    pg_op *op;
    while ((op = pop(s)) != NULL)
        rt__pg_op_fail(s, op, status, err);
}

static void on_kick(uv_timer_t *t);

/* Dispatches (or, while down, fails) queued operations on the next loop iteration: public
 * entry points never call back from inside themselves. */
void rt__pg_kick(rt_pg_source *s)
{
    if (!(s->flags & PG_F_KICK)) {
        s->flags |= PG_F_KICK;
        uv_timer_start(&s->kick, on_kick, 0, 0);
    }
}

/* ---- the session ----------------------------------------------------------------------- */

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static void unwatch(rt_pg_source *s)
{
    if (s->poll) {
        /* Stopped now (epoll forgets the fd at once), before libpq may close the socket. */
        uv_poll_stop(&s->poll->h);
        uv_close((uv_handle_t *)&s->poll->h, on_poll_close);
        s->poll = NULL;
        s->poll_fd = -1;
    }
}

/* Watches libpq's current socket for EVENTS; a new handle when the fd number changed. */
static int watch(rt_pg_source *s, int events)
{
    int fd = PQsocket(s->conn);
    if (fd < 0)
        return UV_EBADF;
    if (s->poll && s->poll_fd != fd)
        unwatch(s);
    if (!s->poll) {
        pg_poll *p = malloc(sizeof(*p));
        if (!p)
            return UV_ENOMEM;
        int rc = uv_poll_init(s->loop, &p->h, fd);
        if (rc != 0) {
            free(p); /* not registered with the loop when init fails */
            return rc;
        }
        p->s = s;
        p->h.data = s;
        s->poll = p;
        s->poll_fd = fd;
        s->open_handles++;
    }
    return uv_poll_start(&s->poll->h, events, on_poll);
}

/* Ends the session (a failed attempt when !WAS_READY), arms the reconnect, and fails what
 * was sent or queued. Logs a transition once. */
void rt__pg_session_down(rt_pg_source *s, const char *why, int was_ready)
{
    char msg[512];
    rt__pg_message(why, msg, sizeof(msg));
    unwatch(s);
    PQfinish(s->conn);
    s->conn = NULL;
    s->state = PG_DOWN;
    s->flags &= ~(unsigned)(PG_F_LISTENING | PG_F_WANT_WRITE | PG_F_LOAD_FORCE);
    PQclear(s->res);
    s->res = NULL;
    s->res_failed = 0;
    if (s->load == PG_LOAD_QUEUED || s->load == PG_LOAD_QUERY)
        s->load = PG_LOAD_NONE; /* the reconnect loads */

    if (was_ready)
        fprintf(stderr, "postgres: connection lost: %s; reconnecting\n", msg);
    else if (!(s->flags & PG_F_LOGGED_DOWN))
        fprintf(stderr, "postgres: cannot connect: %s; retrying every %d..%d ms\n", msg,
                RT_PG_BACKOFF_MIN_MS, RT_PG_BACKOFF_MAX_MS);
    s->flags |= PG_F_LOGGED_DOWN;
    uv_timer_start(&s->timer, on_timer, s->backoff_ms, 0);
    s->backoff_ms *= 2;
    if (s->backoff_ms > RT_PG_BACKOFF_MAX_MS)
        s->backoff_ms = RT_PG_BACKOFF_MAX_MS;

    pg_op *op = s->inflight;
    s->inflight = NULL;
    if (op)
        rt__pg_op_fail(s, op, UV_ECONNRESET, "postgres: connection lost");
    if (!(s->flags & PG_F_STOPPING) && s->state == PG_DOWN)
        fail_queued(s, UV_ENOTCONN, "postgres: not connected");
}

/* Sends queued operations, one at a time, while the session is idle. */
static void dispatch(rt_pg_source *s)
{
    while (s->state == PG_READY && !s->inflight && s->head) {
        pg_op *op = pop(s);
        int rc = rt__pg_send(s, op);
        if (rc == UV_ENOMEM) {
            rt__pg_op_fail(s, op, UV_ENOMEM, "postgres: out of memory");
            if (s->flags & PG_F_STOPPING)
                return;
            continue;
        }
        if (rc != 0) {
            rt__pg_push(s, op, 1); /* not sent: fails as "not connected" with the rest */
            rt__pg_session_down(s, PQerrorMessage(s->conn), 1);
            return;
        }
        s->inflight = op;
        int f = PQflush(s->conn);
        if (f < 0) {
            rt__pg_session_down(s, PQerrorMessage(s->conn), 1);
            return;
        }
        if (f == 1 && !(s->flags & PG_F_WANT_WRITE)) {
            s->flags |= PG_F_WANT_WRITE;
            if (watch(s, UV_READABLE | UV_WRITABLE) != 0)
                rt__pg_session_down(s, "cannot poll the socket", 1);
        }
    }
}

static void connected(rt_pg_source *s)
{
    uv_timer_stop(&s->timer);
    if (PQsetnonblocking(s->conn, 1) != 0) {
        rt__pg_session_down(s, PQerrorMessage(s->conn), 0);
        return;
    }
    s->state = PG_READY;
    s->session++;
    s->backoff_ms = RT_PG_BACKOFF_MIN_MS;
    s->flags &= ~(unsigned)PG_F_LOGGED_DOWN;
    fprintf(stderr, "postgres: connected\n");
    if (watch(s, UV_READABLE) != 0) {
        rt__pg_session_down(s, "cannot poll the socket", 1);
        return;
    }
    /* LISTEN first, before everything queued meanwhile; its answer queues the load. */
    pg_op *op = calloc(1, sizeof(*op));
    if (!op) {
        rt__pg_session_down(s, "out of memory", 1);
        return;
    }
    op->kind = PG_OP_LISTEN;
    rt__pg_push(s, op, 1);
    dispatch(s);
}

/* One step of PQconnectPoll's protocol: R says what to wait for next. */
static void connect_step(rt_pg_source *s, PostgresPollingStatusType r)
{
    int events;
    switch (r) {
    case PGRES_POLLING_OK:
        connected(s);
        return;
    case PGRES_POLLING_FAILED:
        rt__pg_session_down(s, PQerrorMessage(s->conn), 0);
        return;
    case PGRES_POLLING_READING:
        events = UV_READABLE;
        break;
    default:
        events = UV_WRITABLE;
        break;
    }
    /* A new handle after every step: libpq may have closed its socket and opened another
     * (next host or address, SSL/GSS fallback) that got the same fd number, which a handle
     * kept across the change would watch no more. */
    unwatch(s);
    if (watch(s, events) != 0)
        rt__pg_session_down(s, "cannot poll the socket", 0);
}

static void connect_start(rt_pg_source *s)
{
    s->conn = PQconnectStart(s->conninfo);
    if (!s->conn) {
        rt__pg_session_down(s, "out of memory", 0);
        return;
    }
    if (PQstatus(s->conn) == CONNECTION_BAD) {
        rt__pg_session_down(s, PQerrorMessage(s->conn), 0);
        return;
    }
    PQsetNoticeProcessor(s->conn, ignore_notice, NULL);
    s->state = PG_CONNECTING;
    /* libpq ignores connect_timeout with PQconnectPoll: the timeout is ours. */
    uv_timer_start(&s->timer, on_timer, RT_PG_CONNECT_TIMEOUT_MS, 0);
    connect_step(s, PGRES_POLLING_WRITING); /* "as if it had returned WRITING" at first */
}

/* Reads everything the server sent: results of the operation in flight (then the next one
 * is sent) and notifications. */
static void session_io(rt_pg_source *s, int events)
{
    if ((events & UV_READABLE) && !PQconsumeInput(s->conn)) {
        rt__pg_session_down(s, PQerrorMessage(s->conn), 1);
        return;
    }
    if (s->flags & PG_F_WANT_WRITE) {
        int f = PQflush(s->conn);
        if (f < 0) {
            rt__pg_session_down(s, PQerrorMessage(s->conn), 1);
            return;
        }
        if (f == 0) {
            s->flags &= ~(unsigned)PG_F_WANT_WRITE;
            if (watch(s, UV_READABLE) != 0) {
                rt__pg_session_down(s, "cannot poll the socket", 1);
                return;
            }
        }
    }
    while (s->inflight && !PQisBusy(s->conn)) {
        PGresult *r = PQgetResult(s->conn);
        if (r) {
            ExecStatusType st = PQresultStatus(r);
            if (st == PGRES_TUPLES_OK) {
                PQclear(s->res);
                s->res = r;
                continue;
            }
            if ((st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE) && !s->res_failed) {
                const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
                char line[400];
                rt__pg_message(m ? m : PQresultErrorMessage(r), line, sizeof(line));
                snprintf(s->res_err, sizeof(s->res_err), "postgres: %s", line);
                s->res_failed = 1;
            }
            PQclear(r);
            continue;
        }
        pg_op *op = s->inflight;
        PGresult *res = s->res;
        s->inflight = NULL;
        s->res = NULL;
        rt__pg_finish(s, op, res); /* calls out; clears res_failed */
        rt__pg_op_free(op);
        if ((s->flags & PG_F_STOPPING) || s->state != PG_READY)
            return;
        dispatch(s);
        if ((s->flags & PG_F_STOPPING) || s->state != PG_READY)
            return;
    }
    PGnotify *n;
    while ((n = PQnotifies(s->conn)) != NULL) {
        if (strcmp(n->relname, RT_PG_CHANNEL) == 0)
            rt__pg_notified(s, n->extra);
        PQfreemem(n);
    }
    if (PQstatus(s->conn) == CONNECTION_BAD)
        rt__pg_session_down(s, PQerrorMessage(s->conn), 1);
    else
        dispatch(s); /* a load a notification asked for: now rather than on the kick */
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    pg_poll *p = (pg_poll *)h;
    rt_pg_source *s = p->s;
    if (p != s->poll || (s->flags & PG_F_STOPPING))
        return;
    rt__pg_enter(s);
    /* An error on the socket (libuv reports POLLERR as UV_EBADF and stops the handle) is
     * left to libpq, which then says what happened: a refused connection (it may go on to
     * the next host), or the server gone. */
    if (s->state == PG_CONNECTING)
        connect_step(s, PQconnectPoll(s->conn));
    else if (s->state == PG_READY && status == 0)
        session_io(s, events);
    else if (s->state == PG_READY)
        rt__pg_session_down(s, PQconsumeInput(s->conn) ? uv_strerror(status)
                                                       : PQerrorMessage(s->conn), 1);
    rt__pg_leave(s);
}

static void on_timer(uv_timer_t *t)
{
    rt_pg_source *s = t->data;
    rt__pg_enter(s);
    if (s->state == PG_DOWN)
        connect_start(s);
    else if (s->state == PG_CONNECTING)
        rt__pg_session_down(s, "timeout expired", 0);
    rt__pg_leave(s);
}

static void on_kick(uv_timer_t *t)
{
    rt_pg_source *s = t->data;
    s->flags &= ~(unsigned)PG_F_KICK;
    rt__pg_enter(s);
    if (s->state == PG_DOWN)
        fail_queued(s, UV_ENOTCONN, "postgres: not connected");
    else
        dispatch(s);
    rt__pg_leave(s);
}

/* ---- public entry points --------------------------------------------------------------- */

int rt_pg_source_start(uv_loop_t *loop, const char *conninfo, const char *const *upstreams,
                       int n_upstreams, const char *cache_file, rt_file_cb cb, void *arg,
                       rt_pg_source **out)
{
    *out = NULL;
    if (!loop || !conninfo || !cb || n_upstreams < 0 || (n_upstreams > 0 && !upstreams))
        return UV_EINVAL;
    /* A malformed conninfo would fail every attempt forever: refuse it now. */
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (!opts) {
        int oom = perr == NULL;
        PQfreemem(perr);
        return oom ? UV_ENOMEM : UV_EINVAL;
    }
    PQconninfoFree(opts);

    rt_pg_source *s = calloc(1, sizeof(*s));
    if (!s)
        return UV_ENOMEM;
    s->loop = loop;
    s->cb = cb;
    s->arg = arg;
    s->poll_fd = -1;
    s->backoff_ms = RT_PG_BACKOFF_MIN_MS;
    s->parse_work.data = s->cache_work.data = s;
    int rc = 0;
    if (!(s->conninfo = strdup(conninfo)) || (cache_file && !(s->cache_file = strdup(cache_file))) ||
        rt__names_dup(upstreams, n_upstreams, &s->upstreams, &s->n_upstreams) != 0)
        rc = UV_ENOMEM;
    if (rc != 0) {
        free_source(s);
        return rc;
    }
    uv_timer_init(loop, &s->timer);
    uv_timer_init(loop, &s->kick);
    s->timer.data = s->kick.data = s;
    s->open_handles = 2;
    /* Connect from the loop, not from inside start. */
    uv_timer_start(&s->timer, on_timer, 0, 0);
    *out = s;
    return 0;
}

uint64_t rt_pg_source_session(const rt_pg_source *s)
{
    return s ? s->session : 0;
}

int rt_pg_source_connected(const rt_pg_source *s)
{
    return s && s->state == PG_READY && (s->flags & PG_F_LISTENING) ? 1 : 0;
}

void rt_pg_source_reload(rt_pg_source *s)
{
    if (!s || (s->flags & PG_F_STOPPING) || s->state != PG_READY)
        return;
    rt__pg_request_load(s, 0, 1);
}

void rt_pg_source_stop(rt_pg_source *s)
{
    if (!s || (s->flags & PG_F_STOPPING))
        return;
    rt__pg_enter(s);
    s->flags |= PG_F_STOPPING;
    unwatch(s);
    PQfinish(s->conn);
    s->conn = NULL;
    s->state = PG_DOWN;
    PQclear(s->res);
    s->res = NULL;
    uv_close((uv_handle_t *)&s->timer, on_close);
    uv_close((uv_handle_t *)&s->kick, on_close);
    /* A parse not started yet is cancelled (its completion then sees UV_ECANCELED); one
     * running finishes and its table is dropped. Cache writes complete: the file ends up
     * with the last table delivered. */
    if (s->load == PG_LOAD_PARSE)
        (void)uv_cancel((uv_req_t *)&s->parse_work);
    pg_op *op = s->inflight;
    s->inflight = NULL;
    if (op)
        rt__pg_op_fail(s, op, UV_ECANCELED, "postgres: source stopped");
    fail_queued(s, UV_ECANCELED, "postgres: source stopped");
    rt__pg_leave(s);
}
