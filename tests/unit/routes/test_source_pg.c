/* test_source_pg.c — routes/source_pg against a REAL PostgreSQL. The group set-up makes a
 * throwaway cluster in a temp dir (initdb, pg_ctl start on a free port, unix socket in the
 * temp dir; as the 'postgres' OS user when we are root), applies the route store migration
 * (up, down, up again) with psql, and the teardown stops exactly that postmaster (pg_ctl
 * stop -m fast). A guardian child stops it and removes the dir if this process dies without
 * its teardown (crash, sanitizer abort). Missing PostgreSQL binaries FAIL the run.
 *
 * Each test runs a libuv loop, changes the store the way operators and other gateways do
 * (a second libpq connection, psql), and states which callbacks must follow and with what.
 * Every test ends by stopping the source and closing the loop: a handle left open fails it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "routes/matcher.h"
#include "routes/route_edit.h"
#include "routes/route_table.h"
#include "routes/source_pg.h"

#define MIGRATION_UP "conf/sql/000001_route_store.up.sql"
#define MIGRATION_DOWN "conf/sql/000001_route_store.down.sql"

static const char *const UPSTREAMS[] = { "legacy", "user-service", "order-service" };

/* ---- the PostgreSQL cluster -------------------------------------------------------------- */

static struct {
    char bin[256];      /* /usr/lib/postgresql/N/bin */
    char dir[64];       /* temp dir: data/, the socket, logs, cache files */
    char data[128];
    int port;
    char conninfo[256];
    int as_postgres;    /* we are root: run server binaries as 'postgres' */
    pid_t guardian;
    int guardian_fd;    /* its pipe: EOF (we died or closed it) makes it clean up */
    PGconn *admin;      /* the "other client" that changes the store */
} pg;

/* Runs ARGV (as 'postgres' when AS_PG and we are root), output appended to DIR/cmd.log.
 * Returns the exit status, or -1. */
static int run(const char *const *argv, int as_pg)
{
    const char *full[32];
    int n = 0;
    if (as_pg && pg.as_postgres) {
        full[n++] = "runuser";
        full[n++] = "-u";
        full[n++] = "postgres";
        full[n++] = "--";
    }
    for (int i = 0; argv[i] && n < 31; i++)
        full[n++] = argv[i];
    full[n] = NULL;
    char log[160];
    snprintf(log, sizeof(log), "%s/cmd.log", pg.dir);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execvp(full[0], (char *const *)full);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void dump_log(const char *name)
{
    char path[160], line[512];
    snprintf(path, sizeof(path), "%s/%s", pg.dir, name);
    FILE *fp = fopen(path, "r");
    while (fp && fgets(line, sizeof(line), fp))
        fprintf(stderr, "  %s: %s", name, line);
    if (fp)
        fclose(fp);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int pg_start(void)
{
    char ctl[300], log[160], opts[300];
    snprintf(ctl, sizeof(ctl), "%s/pg_ctl", pg.bin);
    snprintf(log, sizeof(log), "%s/pg.log", pg.dir);
    snprintf(opts, sizeof(opts),
             "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
             pg.port, pg.dir);
    const char *argv[] = { ctl, "-D", pg.data, "-l", log, "-w", "-t", "30", "-o", opts, "start",
                           NULL };
    if (run(argv, 1) != 0) {
        dump_log("cmd.log");
        dump_log("pg.log");
        return -1;
    }
    return 0;
}

static int pg_stop(void)
{
    char ctl[300];
    snprintf(ctl, sizeof(ctl), "%s/pg_ctl", pg.bin);
    const char *argv[] = { ctl, "-D", pg.data, "-m", "fast", "-w", "stop", NULL };
    return run(argv, 1);
}

static int psql_file(const char *file)
{
    char psql[300], port[16];
    snprintf(psql, sizeof(psql), "%s/psql", pg.bin);
    snprintf(port, sizeof(port), "%d", pg.port);
    const char *argv[] = { psql, "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-h", pg.dir, "-p",
                           port, "-U", "postgres", "-d", "postgres", "-f", file, NULL };
    return run(argv, 0);
}

/* The highest-versioned /usr/lib/postgresql/N/bin with initdb, pg_ctl and psql. */
static int find_bin(void)
{
    glob_t g;
    int best = -1;
    if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) != 0)
        return -1;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        int v = atoi(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"));
        char ctl[300], psql[300];
        snprintf(ctl, sizeof(ctl), "/usr/lib/postgresql/%d/bin/pg_ctl", v);
        snprintf(psql, sizeof(psql), "/usr/lib/postgresql/%d/bin/psql", v);
        if (v > best && access(ctl, X_OK) == 0 && access(psql, X_OK) == 0) {
            best = v;
            snprintf(pg.bin, sizeof(pg.bin), "/usr/lib/postgresql/%d/bin", v);
        }
    }
    globfree(&g);
    return best < 0 ? -1 : 0;
}

/* A child that waits for EOF on a pipe only we hold, then stops the cluster and removes the
 * dir: the clean-up still happens when this process dies without running its teardown. */
static int start_guardian(void)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    char script[1024];
    snprintf(script, sizeof(script),
             "%s %s/pg_ctl -D %s -m immediate stop >/dev/null 2>&1; rm -rf %s",
             pg.as_postgres ? "runuser -u postgres --" : "", pg.bin, pg.data, pg.dir);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        char c;
        close(fds[1]);
        while (read(fds[0], &c, 1) != 0 && errno == EINTR) {
        }
        execl("/bin/sh", "sh", "-c", script, (char *)NULL);
        _exit(127);
    }
    close(fds[0]);
    pg.guardian = pid;
    pg.guardian_fd = fds[1];
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    if (find_bin() != 0) {
        fprintf(stderr, "test_source_pg: FAIL: PostgreSQL server binaries not found "
                        "(/usr/lib/postgresql/*/bin/initdb, pg_ctl, psql): apt-get install "
                        "postgresql (make deps)\n");
        return -1;
    }
    if (access(MIGRATION_UP, R_OK) != 0 || access(MIGRATION_DOWN, R_OK) != 0) {
        fprintf(stderr, "test_source_pg: FAIL: %s not found: run from the repository root\n",
                MIGRATION_UP);
        return -1;
    }
    snprintf(pg.dir, sizeof(pg.dir), "/tmp/test_source_pg_XXXXXX");
    if (!mkdtemp(pg.dir))
        return -1;
    snprintf(pg.data, sizeof(pg.data), "%s/data", pg.dir);
    pg.as_postgres = geteuid() == 0;
    if (pg.as_postgres) {
        struct passwd *pw = getpwnam("postgres");
        if (!pw || chown(pg.dir, pw->pw_uid, pw->pw_gid) != 0) {
            fprintf(stderr, "test_source_pg: FAIL: running as root needs the 'postgres' OS "
                            "user (the postgresql package creates it)\n");
            rmdir(pg.dir);
            return -1;
        }
    }
    if (start_guardian() != 0)
        return -1;
    char initdb[300];
    snprintf(initdb, sizeof(initdb), "%s/initdb", pg.bin);
    const char *argv[] = { initdb, "-D", pg.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                           "--locale=C", "--no-sync", NULL };
    if (run(argv, 1) != 0) {
        fprintf(stderr, "test_source_pg: FAIL: initdb failed\n");
        dump_log("cmd.log");
        return -1;
    }
    pg.port = free_port();
    if (pg.port < 0 || pg_start() != 0) {
        fprintf(stderr, "test_source_pg: FAIL: PostgreSQL did not start\n");
        return -1;
    }
    /* up, down, up: the down migration undoes everything the up one made. */
    if (psql_file(MIGRATION_UP) != 0 || psql_file(MIGRATION_DOWN) != 0 ||
        psql_file(MIGRATION_UP) != 0) {
        fprintf(stderr, "test_source_pg: FAIL: applying the migration failed\n");
        dump_log("cmd.log");
        return -1;
    }
    snprintf(pg.conninfo, sizeof(pg.conninfo), "host=%s port=%d dbname=postgres user=postgres",
             pg.dir, pg.port);
    pg.admin = PQconnectdb(pg.conninfo);
    if (PQstatus(pg.admin) != CONNECTION_OK) {
        fprintf(stderr, "test_source_pg: FAIL: %s", PQerrorMessage(pg.admin));
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    PQfinish(pg.admin);
    pg.admin = NULL;
    int rc = pg.port > 0 ? pg_stop() : 0;
    if (pg.guardian > 0) {
        close(pg.guardian_fd); /* the guardian removes the dir */
        while (waitpid(pg.guardian, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    return rc == 0 ? 0 : -1;
}

/* Runs SQL on the admin connection (reconnecting after a restart); fails the test on error. */
static void sql(const char *q)
{
    PGresult *r = PQexec(pg.admin, q);
    if (PQstatus(pg.admin) != CONNECTION_OK) { /* the server was restarted: once more */
        PQclear(r);
        PQreset(pg.admin);
        r = PQexec(pg.admin, q);
    }
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(r));
        PQclear(r);
        fail_msg("%s: %s", q, msg);
    }
    PQclear(r);
}

/* The first column of the first row of Q, into buf. */
static const char *sql_value(const char *q, char *buf, size_t len)
{
    PGresult *r = PQexec(pg.admin, q);
    if (PQstatus(pg.admin) != CONNECTION_OK) {
        PQclear(r);
        PQreset(pg.admin);
        r = PQexec(pg.admin, q);
    }
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), 1);
    snprintf(buf, len, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return buf;
}

static uint64_t db_version(void)
{
    char buf[32];
    return strtoull(sql_value("SELECT version FROM gateway_route_version", buf, sizeof(buf)),
                    NULL, 10);
}

/* ---- the fixture ------------------------------------------------------------------------- */

typedef struct fixture {
    uv_loop_t loop;
    uv_timer_t stopper;
    char cache[160];
    rt_pg_source *src;
    int calls;
    int tables;           /* callbacks with a table */
    rt_table *last;       /* the last table delivered (held) */
    char last_err[1024];  /* "" when the last callback had a table */
    uint64_t t_cb;        /* uv_hrtime of the last callback */
    int stop_in_cb;
    /* write / history */
    int done_calls;
    int done_status;
    char done_err[512];
    json_t *changes;
    uint64_t written;     /* rt_pg_source_written_version in the last successful write */
    char value[256];      /* query: the value answered ("<NULL>" for none) */
    uint64_t session;     /* query: the session it ran on */
} fixture;

static void on_table(rt_table *t, const char *err, void *arg)
{
    fixture *f = arg;
    f->calls++;
    f->t_cb = uv_hrtime();
    if (t) {
        assert_null(err);
        f->tables++;
        rt_table_unref(f->last);
        f->last = t;
        f->last_err[0] = '\0';
    } else {
        assert_non_null(err);
        snprintf(f->last_err, sizeof(f->last_err), "%s", err);
    }
    if (f->stop_in_cb) {
        rt_pg_source_stop(f->src);
        rt_pg_source_stop(f->src); /* twice is fine */
    }
}

static void on_write(int status, const char *err, void *arg)
{
    fixture *f = arg;
    f->done_calls++;
    if (status == 0)
        f->written = rt_pg_source_written_version(f->src);
    f->done_status = status;
    snprintf(f->done_err, sizeof(f->done_err), "%s", err ? err : "");
    assert_true(status == 0 ? err == NULL : err != NULL);
}

static void on_history(json_t *changes, const char *err, void *arg)
{
    fixture *f = arg;
    f->done_calls++;
    f->done_status = changes ? 0 : -1;
    snprintf(f->done_err, sizeof(f->done_err), "%s", err ? err : "");
    assert_true(changes ? err == NULL : err != NULL);
    json_decref(f->changes);
    f->changes = changes ? json_incref(changes) : NULL;
}

static void on_stopper(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static void run_for(fixture *f, uint64_t ms)
{
    uv_timer_start(&f->stopper, on_stopper, ms, 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&f->stopper);
}

/* Runs the loop until *COUNTER reaches N, failing after LIMIT_MS. */
static void run_until(fixture *f, const int *counter, int n, int limit_ms)
{
    for (int waited = 0; *counter < n; waited += 2) {
        if (waited > limit_ms)
            fail_msg("waited %d ms for call %d, got %d", limit_ms, n, *counter);
        run_for(f, 2);
    }
}

static const char SEED[] =
    "TRUNCATE gateway_routes, gateway_settings, gateway_route_audit;"
    "INSERT INTO gateway_settings VALUES ('legacy_upstream', '\"legacy\"');"
    "INSERT INTO gateway_routes (id, position, doc) VALUES"
    " ('users', 0, '{\"id\":\"users\",\"path\":\"/api/users/**\",\"upstream\":\"legacy\"}'),"
    " ('ship', 1, '{\"id\":\"ship\",\"path\":\"/api/orders/{id}/shipment\","
    "\"upstream\":\"legacy\"}'),"
    /* same position as ship: (position, id) orders it first */
    " ('orders', 1, '{\"id\":\"orders\",\"path\":\"/api/orders/{id}\",\"upstream\":\"legacy\","
    "\"methods\":[\"GET\"]}')";

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    static int n;
    snprintf(f->cache, sizeof(f->cache), "%s/cache-%d.json", pg.dir, ++n);
    uv_loop_init(&f->loop);
    uv_timer_init(&f->loop, &f->stopper);
    *state = f;
    sql(SEED);
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rt_pg_source_stop(f->src);
    uv_close((uv_handle_t *)&f->stopper, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&f->loop); /* UV_EBUSY when a handle was left open */
    rt_table_unref(f->last);
    json_decref(f->changes);
    unlink(f->cache);
    free(f);
    return rc == 0 && rt__tables_alive() == 0 ? 0 : -1;
}

static void start(fixture *f)
{
    assert_int_equal(rt_pg_source_start(&f->loop, pg.conninfo, UPSTREAMS, 3, f->cache, on_table,
                                        f, &f->src),
                     0);
    assert_non_null(f->src);
}

/* Starts the source and waits for its first table. */
static void start_loaded(fixture *f)
{
    start(f);
    run_until(f, &f->calls, 1, 5000);
    assert_string_equal(f->last_err, "");
    assert_int_equal(f->tables, 1);
}

static const char *route_upstream(const fixture *f, const char *id)
{
    assert_non_null(f->last);
    const rt_route *r = rt_table_find(f->last, id);
    assert_non_null(r);
    return r->upstream;
}

/* Waits until the cache file holds version V; returns its table. */
static rt_table *wait_cache(fixture *f, uint64_t v)
{
    char err[512];
    for (int waited = 0; waited <= 5000; waited += 5) {
        rt_table *t = rt_pg_source_load_cache(f->cache, UPSTREAMS, 3, err, sizeof(err));
        if (t && rt_table_version(t) == v)
            return t;
        rt_table_unref(t);
        run_for(f, 5);
    }
    fail_msg("cache %s never reached version %llu (%s)", f->cache, (unsigned long long)v, err);
    return NULL;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_initial_load(void **state)
{
    fixture *f = *state;
    uint64_t v = db_version();
    start(f);
    assert_int_equal(rt_pg_source_connected(f->src), 0); /* connects from the loop */
    run_until(f, &f->calls, 1, 5000);
    assert_string_equal(f->last_err, "");
    assert_int_equal(rt_table_version(f->last), v);
    assert_int_equal(rt_table_count(f->last), 3);
    assert_string_equal(rt_table_route(f->last, 0)->id, "users");
    assert_string_equal(rt_table_route(f->last, 1)->id, "orders"); /* position tie: by id */
    assert_string_equal(rt_table_route(f->last, 2)->id, "ship");
    assert_string_equal(rt_table_legacy_upstream(f->last), "legacy");
    assert_int_equal(rt_table_route(f->last, 1)->methods, RT_M_GET);
    assert_int_equal(rt_pg_source_connected(f->src), 1);

    /* The cache: the same table, the same version. */
    rt_table *c = wait_cache(f, v);
    json_t *a = rt_table_to_json(f->last), *b = rt_table_to_json(c);
    assert_true(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    rt_table_unref(c);

    /* Nothing changes: no more callbacks. */
    run_for(f, 300);
    assert_int_equal(f->calls, 1);

    /* An explicit reload calls back with the same version; a second one asked for while the
     * first waits is served by it. */
    rt_pg_source_reload(f->src);
    rt_pg_source_reload(f->src);
    run_until(f, &f->calls, 2, 5000);
    run_for(f, 200);
    assert_int_equal(f->calls, 2);
    assert_int_equal(rt_table_version(f->last), v);

    char err[512];
    assert_null(rt_pg_source_load_cache("/nonexistent/cache.json", UPSTREAMS, 3, err,
                                        sizeof(err)));
    assert_string_equal(err, "/nonexistent/cache.json: cannot read: No such file or directory");
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct spawned {
    uv_process_t proc;
    int exited;
    int64_t status;
    uint64_t t_exit;
} spawned;

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    spawned *sp = p->data;
    (void)sig;
    sp->exited = 1;
    sp->status = status;
    sp->t_exit = uv_hrtime();
    uv_close((uv_handle_t *)p, NULL);
}

static void test_notify_latency(void **state)
{
    fixture *f = *state;
    start_loaded(f);
    enum { FLIPS = 20 };
    uint64_t ns[FLIPS];
    for (int i = 0; i < FLIPS; i++) {
        const char *up = i % 2 ? "legacy" : "user-service";
        char q[256];
        snprintf(q, sizeof(q),
                 "UPDATE gateway_routes SET doc = jsonb_set(doc, '{upstream}', '\"%s\"') "
                 "WHERE id = 'users'",
                 up);
        int calls = f->calls;
        sql(q); /* committed when it returns */
        uint64_t t0 = uv_hrtime();
        run_until(f, &f->calls, calls + 1, 5000);
        ns[i] = f->t_cb - t0;
        assert_string_equal(f->last_err, "");
        assert_string_equal(route_upstream(f, "users"), up);
        assert_int_equal(rt_table_version(f->last), db_version());
        assert_true(ns[i] < 1000000000ull); /* the bar is 100 ms; 1 s keeps this unflaky */
    }
    qsort(ns, FLIPS, sizeof(ns[0]), cmp_u64);
    printf("NOTIFY latency, commit -> table delivered, %d flips: min %.2f ms, median %.2f ms, "
           "max %.2f ms\n",
           FLIPS, ns[0] / 1e6, ns[FLIPS / 2] / 1e6, ns[FLIPS - 1] / 1e6);

    /* Committed by psql, the loop running meanwhile: from spawning psql to the table. */
    char psql[300], port[16];
    snprintf(psql, sizeof(psql), "%s/psql", pg.bin);
    snprintf(port, sizeof(port), "%d", pg.port);
    char *args[] = { psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pg.dir, "-p", port, "-U",
                     "postgres", "-d", "postgres", "-c",
                     "UPDATE gateway_routes SET doc = jsonb_set(doc, '{upstream}', "
                     "'\"order-service\"') WHERE id = 'orders'",
                     NULL };
    spawned sp = { .exited = 0 };
    uv_process_options_t o = { .file = psql, .args = args, .exit_cb = on_exit_cb };
    sp.proc.data = &sp;
    int calls = f->calls;
    uint64_t t0 = uv_hrtime();
    assert_int_equal(uv_spawn(&f->loop, &sp.proc, &o), 0);
    run_until(f, &f->calls, calls + 1, 5000);
    run_until(f, &sp.exited, 1, 5000);
    assert_int_equal(sp.status, 0);
    assert_string_equal(route_upstream(f, "orders"), "order-service");
    printf("psql UPDATE: spawn -> table delivered %.2f ms (psql exited after %.2f ms)\n",
           (f->t_cb - t0) / 1e6, (sp.t_exit - t0) / 1e6);
    assert_true(f->t_cb - t0 < 1000000000ull);

    /* One transaction of several statements on both tables: one version, one table. */
    uint64_t v = db_version();
    calls = f->calls;
    sql("BEGIN;"
        "UPDATE gateway_routes SET doc = jsonb_set(doc, '{upstream}', '\"legacy\"');"
        "DELETE FROM gateway_routes WHERE id = 'ship';"
        "UPDATE gateway_settings SET value = '\"order-service\"';"
        "COMMIT");
    assert_int_equal(db_version(), v + 1);
    run_until(f, &f->calls, calls + 1, 5000);
    run_for(f, 200);
    assert_int_equal(f->calls, calls + 1);
    assert_int_equal(rt_table_version(f->last), v + 1);
    assert_int_equal(rt_table_count(f->last), 2);
    assert_string_equal(rt_table_legacy_upstream(f->last), "order-service");

    /* A burst of commits while the loop is not running: coalesced, ending at the last. */
    calls = f->calls;
    for (int i = 0; i < 5; i++)
        sql(i % 2 ? "UPDATE gateway_settings SET value = '\"legacy\"'"
                  : "UPDATE gateway_settings SET value = '\"user-service\"'");
    v = db_version();
    for (int waited = 0; !f->last || rt_table_version(f->last) != v; waited += 5) {
        if (waited > 5000)
            fail_msg("never got version %llu", (unsigned long long)v);
        run_for(f, 5);
    }
    run_for(f, 200);
    assert_int_equal(rt_table_version(f->last), v);
    assert_string_equal(rt_table_legacy_upstream(f->last), "user-service");
    printf("5 commits in a burst: %d load(s)\n", f->calls - calls);
    assert_true(f->calls - calls <= 5);
}

static void test_invalid_route(void **state)
{
    fixture *f = *state;
    start_loaded(f);
    uint64_t v = db_version();
    rt_table *c = wait_cache(f, v);
    rt_table_unref(c);

    sql("UPDATE gateway_routes SET doc = jsonb_set(doc, '{upstream}', '\"nope\"') "
        "WHERE id = 'orders'");
    run_until(f, &f->calls, 2, 5000);
    assert_int_equal(f->tables, 1);
    assert_string_equal(f->last_err, "postgres: routes[1].upstream: unknown upstream \"nope\"");
    assert_int_equal(rt_pg_source_connected(f->src), 1);
    /* The cache keeps the last good table. */
    run_for(f, 100);
    c = wait_cache(f, v);
    rt_table_unref(c);

    /* orders fixed, but an unknown field in a route added at the end. */
    sql("BEGIN;"
        "UPDATE gateway_routes SET doc = jsonb_set(doc, '{upstream}', '\"order-service\"') "
        "WHERE id = 'orders';"
        "INSERT INTO gateway_routes VALUES ('x', 9, '{\"id\":\"x\",\"path\":\"/x\","
        "\"upstream\":\"legacy\",\"colour\":1}');"
        "COMMIT");
    run_until(f, &f->calls, 3, 5000);
    assert_int_equal(f->tables, 1);
    printf("invalid stored route: %s\n", f->last_err);
    assert_string_equal(f->last_err, "postgres: routes[3].colour: unknown field");

    /* Fixed: a table again. */
    sql("DELETE FROM gateway_routes WHERE id = 'x'");
    run_until(f, &f->calls, 4, 5000);
    assert_string_equal(f->last_err, "");
    assert_string_equal(route_upstream(f, "orders"), "order-service");
    assert_int_equal(rt_table_version(f->last), db_version());
}

static void wait_done(fixture *f, int n)
{
    run_until(f, &f->done_calls, n, 5000);
    run_for(f, 1);
    assert_int_equal(f->done_calls, n); /* exactly once */
}

static int is_iso8601_ms(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (strlen(s) != strlen(shape))
        return 0;
    for (size_t i = 0; shape[i]; i++) {
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
            return 0;
    }
    return 1;
}

static void test_write_history(void **state)
{
    fixture *f = *state;
    char err[512], before[1024], after[1024], buf[64];
    start_loaded(f);
    uint64_t v = db_version();

    /* An admin change: flip users, drop ship, add one, change legacy_upstream. */
    rt_table *t1 = rt_table_flip(f->last, "users", "user-service", err, sizeof(err));
    assert_non_null(t1);
    rt_table *t2 = rt_table_delete_route(t1, "ship", err, sizeof(err));
    assert_non_null(t2);
    json_t *route = json_pack("{s:s, s:s}", "path", "/api/new", "upstream", "order-service");
    rt_table *t3 = rt_table_with_route(t2, "new", route, err, sizeof(err));
    assert_non_null(t3);
    json_t *doc = rt_table_to_json(t3);
    json_object_set_new(doc, "legacy_upstream", json_string("user-service"));
    json_t *audit = json_pack(
        "[{s:s, s:s, s:s, s:{s:s}, s:{s:s}}, {s:s, s:s, s:s, s:{s:s}, s:n}]", "who", "alice",
        "action", "flip", "route_id", "users", "old", "upstream", "legacy", "new", "upstream",
        "user-service", "who", "alice", "action", "delete", "route_id", "ship", "old", "upstream",
        "legacy", "new");
    assert_int_equal(rt_pg_source_write(f->src, doc, audit, on_write, f), 0);
    assert_int_equal(f->done_calls, 0); /* never from inside the call */
    int calls = f->calls;
    wait_done(f, 1);
    assert_int_equal(f->done_status, 0);
    assert_int_equal(db_version(), v + 1);
    assert_int_equal(f->written, v + 1);
    /* Our own NOTIFY brings the new table, as for any other writer. */
    run_until(f, &f->calls, calls + 1, 5000);
    assert_int_equal(rt_table_version(f->last), v + 1);
    assert_int_equal(rt_table_count(f->last), 3);
    assert_string_equal(rt_table_route(f->last, 2)->id, "new");
    assert_string_equal(route_upstream(f, "users"), "user-service");
    assert_null(rt_table_find(f->last, "ship"));
    assert_string_equal(rt_table_legacy_upstream(f->last), "user-service");
    assert_string_equal(sql_value("SELECT string_agg(id || ':' || position, ',' ORDER BY "
                                  "position) FROM gateway_routes",
                                  buf, sizeof(buf)),
                        "users:0,orders:1,new:2");

    /* history: newest first, the version the change produced. */
    assert_int_equal(rt_pg_source_history(f->src, 10, on_history, f), 0);
    wait_done(f, 2);
    assert_non_null(f->changes);
    assert_int_equal(json_array_size(f->changes), 2);
    json_t *h0 = json_array_get(f->changes, 0), *h1 = json_array_get(f->changes, 1);
    assert_true(json_integer_value(json_object_get(h0, "seq")) >
                json_integer_value(json_object_get(h1, "seq")));
    assert_string_equal(json_string_value(json_object_get(h0, "action")), "delete");
    assert_string_equal(json_string_value(json_object_get(h0, "route_id")), "ship");
    assert_true(json_is_null(json_object_get(h0, "new")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(h0, "old"),
                                                          "upstream")),
                        "legacy");
    assert_string_equal(json_string_value(json_object_get(h1, "action")), "flip");
    assert_string_equal(json_string_value(json_object_get(h1, "who")), "alice");
    assert_string_equal(json_string_value(json_object_get(json_object_get(h1, "new"),
                                                          "upstream")),
                        "user-service");
    assert_int_equal(json_integer_value(json_object_get(h0, "version")), v + 1);
    assert_int_equal(json_integer_value(json_object_get(h1, "version")), v + 1);
    assert_true(is_iso8601_ms(json_string_value(json_object_get(h0, "at"))));
    assert_int_equal(rt_pg_source_history(f->src, 1, on_history, f), 0);
    wait_done(f, 3);
    assert_int_equal(json_array_size(f->changes), 1);

    /* The same document again: no row touched (updated_at kept), still one new version. */
    sql_value("SELECT string_agg(id || updated_at::text, ',' ORDER BY id) FROM gateway_routes",
              before, sizeof(before));
    assert_int_equal(rt_pg_source_write(f->src, doc, NULL, on_write, f), 0);
    wait_done(f, 4);
    assert_int_equal(f->done_status, 0);
    sql_value("SELECT string_agg(id || updated_at::text, ',' ORDER BY id) FROM gateway_routes",
              after, sizeof(after));
    assert_string_equal(before, after);
    assert_int_equal(db_version(), v + 2);
    assert_int_equal(f->written, v + 2);

    /* A write the store refuses in its last statement (the audit row: jsonb has no
     * \u0000): rolled back whole, the route change made before it included. */
    json_t *bad = json_deep_copy(doc);
    json_object_set_new(json_array_get(json_object_get(bad, "routes"), 1), "upstream",
                        json_string("order-service")); /* orders */
    json_t *bad_audit = json_pack("[{s:s, s:s, s:s%}]", "who", "bob", "action", "flip", "old",
                                  "a\0b", (size_t)3);
    assert_int_equal(rt_pg_source_write(f->src, bad, bad_audit, on_write, f), 0);
    wait_done(f, 5);
    assert_int_equal(f->done_status, UV_EIO);
    assert_string_equal(f->done_err, "postgres: unsupported Unicode escape sequence");
    assert_int_equal(db_version(), v + 2);
    assert_string_equal(sql_value("SELECT doc ->> 'upstream' FROM gateway_routes "
                                  "WHERE id = 'orders'", buf, sizeof(buf)),
                        "legacy");
    assert_string_equal(sql_value("SELECT string_agg(id || updated_at::text, ',' ORDER BY id) "
                                  "FROM gateway_routes", after, sizeof(after)),
                        before);
    assert_string_equal(sql_value("SELECT count(*) FROM gateway_route_audit", buf, sizeof(buf)),
                        "2");
    json_decref(bad_audit);

    /* Refused before sending: done never fires. */
    json_t *noroutes = json_pack("{s:[{s:s}]}", "routes", "path", "/no-id");
    json_t *noaudit = json_pack("[{s:s}]", "action", "flip"); /* no "who" */
    json_t *dup = json_deep_copy(doc);
    json_array_append(json_object_get(dup, "routes"),
                      json_array_get(json_object_get(doc, "routes"), 0)); /* "users" twice */
    assert_int_equal(rt_pg_source_write(f->src, dup, NULL, on_write, f), UV_EINVAL);
    json_decref(dup);
    assert_int_equal(rt_pg_source_write(f->src, noroutes, NULL, on_write, f), UV_EINVAL);
    assert_int_equal(rt_pg_source_write(f->src, doc, noaudit, on_write, f), UV_EINVAL);
    assert_int_equal(rt_pg_source_history(f->src, 0, on_history, f), UV_EINVAL);
    run_for(f, 50);
    assert_int_equal(f->done_calls, 5);

    json_decref(noroutes);
    json_decref(noaudit);
    json_decref(bad);
    json_decref(audit);
    json_decref(doc);
    json_decref(route);
    rt_table_unref(t1);
    rt_table_unref(t2);
    rt_table_unref(t3);
}

static void on_query(int status, const char *err, const char *value, uint64_t session,
                     void *arg)
{
    fixture *f = arg;
    f->done_calls++;
    f->done_status = status;
    f->session = session;
    snprintf(f->done_err, sizeof(f->done_err), "%s", err ? err : "");
    snprintf(f->value, sizeof(f->value), "%s", value ? value : "<NULL>");
    assert_true(status == 0 ? err == NULL : err != NULL);
}

/* rt_pg_source_query: parameters, the first value, SQL NULL and no row, a server error, and
 * session-level state (an advisory lock) that belongs to the source's session alone. */
static void test_query(void **state)
{
    fixture *f = *state;
    char buf[64];
    start_loaded(f);
    uint64_t session = rt_pg_source_session(f->src);
    assert_true(session >= 1);
    const char *params[2] = { "a", "b" };
    assert_int_equal(rt_pg_source_query(f->src, "SELECT $1::text || '-' || $2::text", 2, params,
                                        on_query, f), 0);
    assert_int_equal(f->done_calls, 0); /* never from inside the call */
    wait_done(f, 1);
    assert_int_equal(f->done_status, 0);
    assert_string_equal(f->value, "a-b");
    assert_int_equal(f->session, session);
    assert_int_equal(rt_pg_source_query(f->src, "SELECT NULL", 0, NULL, on_query, f), 0);
    wait_done(f, 2);
    assert_string_equal(f->value, "<NULL>");
    assert_int_equal(rt_pg_source_query(f->src, "SELECT 1 WHERE false", 0, NULL, on_query, f), 0);
    wait_done(f, 3);
    assert_int_equal(f->done_status, 0);
    assert_string_equal(f->value, "<NULL>");
    assert_int_equal(rt_pg_source_query(f->src, "SELECT * FROM no_such_table", 0, NULL,
                                        on_query, f), 0);
    wait_done(f, 4);
    assert_int_equal(f->done_status, UV_EIO);
    assert_string_equal(f->done_err, "postgres: relation \"no_such_table\" does not exist");
    /* the lock the source takes is its session's: another client cannot take it */
    assert_int_equal(rt_pg_source_query(f->src, "SELECT pg_try_advisory_lock(4242)::text", 0,
                                        NULL, on_query, f), 0);
    wait_done(f, 5);
    assert_string_equal(f->value, "true");
    assert_string_equal(sql_value("SELECT pg_try_advisory_lock(4242)::text", buf, sizeof(buf)),
                        "false");
    /* refused before sending: done never fires */
    assert_int_equal(rt_pg_source_query(f->src, NULL, 0, NULL, on_query, f), UV_EINVAL);
    assert_int_equal(rt_pg_source_query(f->src, "SELECT 1", RT_PG_QUERY_PARAMS + 1, params,
                                        on_query, f), UV_EINVAL);
    run_for(f, 50);
    assert_int_equal(f->done_calls, 5);
}

static void test_reconnect(void **state)
{
    fixture *f = *state;
    start_loaded(f);
    uint64_t v = db_version();
    rt_table *c = wait_cache(f, v);
    rt_table_unref(c);

    /* PostgreSQL goes away: no callback, the table in force stays with the caller. */
    assert_int_equal(pg_stop(), 0);
    run_for(f, 600);
    assert_int_equal(f->calls, 1);
    assert_int_equal(rt_pg_source_connected(f->src), 0);

    /* Writes and history requests fail while down, exactly once each. */
    json_t *doc = rt_table_to_json(f->last);
    assert_int_equal(rt_pg_source_write(f->src, doc, NULL, on_write, f), 0);
    wait_done(f, 1);
    assert_int_equal(f->done_status, UV_ENOTCONN);
    assert_string_equal(f->done_err, "postgres: not connected");
    assert_int_equal(rt_pg_source_history(f->src, 5, on_history, f), 0);
    wait_done(f, 2);
    assert_string_equal(f->done_err, "postgres: not connected");
    json_decref(doc);

    /* A gateway starting now would serve the cache. */
    char err[512];
    c = rt_pg_source_load_cache(f->cache, UPSTREAMS, 3, err, sizeof(err));
    assert_non_null(c);
    assert_int_equal(rt_table_version(c), v);
    assert_int_equal(rt_table_count(c), 3);
    rt_table_unref(c);

    /* Back: reconnect (backoff at most 5 s) and reload: the callback fires again. */
    assert_int_equal(pg_start(), 0);
    uint64_t t0 = uv_hrtime();
    run_until(f, &f->calls, 2, 8000);
    printf("reconnected and reloaded %.0f ms after PostgreSQL was back\n",
           (f->t_cb - t0) / 1e6);
    assert_string_equal(f->last_err, "");
    assert_int_equal(rt_table_version(f->last), v);
    assert_int_equal(rt_pg_source_connected(f->src), 1);

    /* LISTEN is in force again. */
    sql("UPDATE gateway_routes SET doc = jsonb_set(doc, '{upstream}', '\"user-service\"') "
        "WHERE id = 'users'");
    run_until(f, &f->calls, 3, 5000);
    assert_string_equal(route_upstream(f, "users"), "user-service");
    assert_int_equal(rt_table_version(f->last), v + 1);
    c = wait_cache(f, v + 1);
    rt_table_unref(c);
}

static void test_stop_pending(void **state)
{
    fixture *f = *state;
    json_t *doc = json_pack("{s:[]}", "routes");

    /* Stopped before connecting: pending requests fire at once, with UV_ECANCELED. */
    start(f);
    assert_int_equal(rt_pg_source_write(f->src, doc, NULL, on_write, f), 0);
    assert_int_equal(rt_pg_source_history(f->src, 3, on_history, f), 0);
    rt_pg_source_stop(f->src);
    assert_int_equal(f->done_calls, 2);
    assert_int_equal(f->done_status, -1); /* history: no changes */
    assert_string_equal(f->done_err, "postgres: source stopped");
    assert_int_equal(rt_pg_source_write(f->src, doc, NULL, on_write, f), UV_ECANCELED);
    rt_pg_source_stop(f->src);
    f->src = NULL;
    run_for(f, 100);
    assert_int_equal(f->calls, 0);
    assert_int_equal(f->done_calls, 2);

    /* Nothing listening: no table, not connected; requests fail; stop is clean. */
    char conninfo[128];
    snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d user=postgres", free_port());
    assert_int_equal(rt_pg_source_start(&f->loop, conninfo, UPSTREAMS, 3, NULL, on_table, f,
                                        &f->src),
                     0);
    run_for(f, 300);
    assert_int_equal(rt_pg_source_connected(f->src), 0);
    assert_int_equal(rt_pg_source_history(f->src, 3, on_history, f), 0);
    wait_done(f, 3);
    assert_string_equal(f->done_err, "postgres: not connected");
    rt_pg_source_stop(f->src);
    f->src = NULL;
    run_for(f, 50);
    assert_int_equal(f->calls, 0);

    /* Stopped from the table callback: nothing after it. */
    f->stop_in_cb = 1;
    start(f);
    run_until(f, &f->calls, 1, 5000);
    sql("UPDATE gateway_settings SET value = '\"user-service\"'");
    run_for(f, 300);
    assert_int_equal(f->calls, 1);
    f->src = NULL; /* stopped and freed: teardown must not stop it again */

    /* Stopped with a write on the wire or queued: it fires once. */
    f->stop_in_cb = 0;
    start(f);
    run_until(f, &f->calls, 2, 5000);
    json_t *cur = rt_table_to_json(f->last);
    assert_int_equal(rt_pg_source_write(f->src, cur, NULL, on_write, f), 0);
    run_for(f, 1);
    rt_pg_source_stop(f->src);
    f->src = NULL;
    assert_int_equal(f->done_calls, 4);
    assert_true(f->done_status == 0 || f->done_status == UV_ECANCELED);
    json_decref(cur);

    /* Several hosts, the first refusing (libpq changes sockets while connecting); and
     * localhost, which may be ::1 (refused: the server listens on 127.0.0.1) then 127.0.0.1. */
    const char *fmts[] = { "host=127.0.0.1,%s port=%d,%d dbname=postgres user=postgres",
                           "host=localhost port=%d dbname=postgres user=postgres" };
    for (int i = 0; i < 2; i++) {
        if (i == 0)
            snprintf(conninfo, sizeof(conninfo), fmts[0], pg.dir, free_port(), pg.port);
        else
            snprintf(conninfo, sizeof(conninfo), fmts[1], pg.port);
        int calls = f->calls;
        assert_int_equal(rt_pg_source_start(&f->loop, conninfo, UPSTREAMS, 3, NULL, on_table, f,
                                            &f->src),
                         0);
        run_until(f, &f->calls, calls + 1, 5000);
        assert_string_equal(f->last_err, "");
        assert_int_equal(rt_pg_source_connected(f->src), 1);
        rt_pg_source_stop(f->src);
        f->src = NULL;
    }

    /* Refused at start. */
    rt_pg_source *s = (rt_pg_source *)1;
    assert_int_equal(rt_pg_source_start(&f->loop, "not a conninfo", UPSTREAMS, 3, NULL, on_table,
                                        f, &s),
                     UV_EINVAL);
    assert_null(s);
    assert_int_equal(rt_pg_source_start(&f->loop, pg.conninfo, UPSTREAMS, 3, NULL, NULL, f, &s),
                     UV_EINVAL);
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_initial_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notify_latency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_route, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_pending, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
