/* ctl_db.c — gatewayctl: PostgreSQL migrations (db migrate, db status). */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <llhttp.h>

#include "ctl/ctl.h"

/* ---- db: migrations ------------------------------------------------------------------------ */

typedef struct ctl_mig {
    long long version;
    char stem[320];        /* "000001_route_store": the file name without .up.sql */
    char name[256];        /* "route_store" */
    char *up, *down;       /* file paths, NULL when there is none */
    int applied;
    char applied_at[64];
} ctl_mig;

typedef struct ctl_migs {
    ctl_mig *v;
    size_t n, cap;
} ctl_migs;

static void migs_free(ctl_migs *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].up);
        free(m->v[i].down);
    }
    free(m->v);
    m->v = NULL;
    m->n = m->cap = 0;
}

static ctl_mig *migs_find(ctl_migs *m, long long version)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->v[i].version == version)
            return &m->v[i];
    }
    return NULL;
}

static ctl_mig *migs_add(ctl_migs *m, long long version)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        ctl_mig *v = realloc(m->v, cap * sizeof *v);
        if (!v)
            return NULL;
        m->v = v;
        m->cap = cap;
    }
    ctl_mig *x = &m->v[m->n++];
    memset(x, 0, sizeof *x);
    x->version = version;
    return x;
}

static int mig_cmp(const void *a, const void *b)
{
    long long x = ((const ctl_mig *)a)->version, y = ((const ctl_mig *)b)->version;
    return x < y ? -1 : x > y;
}

/* "NNNNNN_name.up.sql" / ".down.sql": digits (1..18), '_', a name of [A-Za-z0-9_-].
 * Returns 1 (up) or 0 (down) with *version, stem and name set, -1 when it does not match. */
static int parse_mig_name(const char *fn, long long *version, char *stem, size_t stemlen,
                          char *name, size_t namelen)
{
    size_t nd = strspn(fn, "0123456789");
    if (nd == 0 || nd > 18 || fn[nd] != '_')
        return -1;
    const char *nm = fn + nd + 1;
    size_t nl = strspn(nm, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-");
    int up;
    if (strcmp(nm + nl, ".up.sql") == 0)
        up = 1;
    else if (strcmp(nm + nl, ".down.sql") == 0)
        up = 0;
    else
        return -1;
    if (nl == 0 || nl >= namelen || nd + 1 + nl >= stemlen)
        return -1;
    *version = strtoll(fn, NULL, 10);
    memcpy(stem, fn, nd + 1 + nl);
    stem[nd + 1 + nl] = '\0';
    memcpy(name, nm, nl);
    name[nl] = '\0';
    return up;
}

/* Reads DIR's migration files into M, sorted by version. CTL_OK or CTL_FAIL (printed). */
static int scan_migrations(const char *what, const char *dir, ctl_migs *m)
{
    DIR *d = opendir(dir);
    if (!d)
        return ctl_fail(what, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = CTL_OK;
    while (rc == CTL_OK && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 4 || strcmp(e->d_name + l - 4, ".sql") != 0)
            continue;
        long long version;
        char stem[320], name[256];
        int up = parse_mig_name(e->d_name, &version, stem, sizeof stem, name, sizeof name);
        if (up < 0) {
            rc = ctl_fail(what, "%s/%s: bad migration file name: want NNNNNN_name.up.sql or "
                          "NNNNNN_name.down.sql", dir, e->d_name);
            break;
        }
        ctl_mig *x = migs_find(m, version);
        if (x && strcmp(x->stem, stem) != 0) {
            rc = ctl_fail(what, "%s: version %lld is both %s and %s", dir, version, x->stem, stem);
            break;
        }
        if (!x && !(x = migs_add(m, version))) {
            rc = ctl_fail(what, "out of memory");
            break;
        }
        snprintf(x->stem, sizeof x->stem, "%s", stem);
        snprintf(x->name, sizeof x->name, "%s", name);
        size_t pl = strlen(dir) + 1 + l + 1;
        char *path = malloc(pl);
        if (!path) {
            rc = ctl_fail(what, "out of memory");
            break;
        }
        snprintf(path, pl, "%s/%s", dir, e->d_name);
        free(up ? x->up : x->down);
        *(up ? &x->up : &x->down) = path;
    }
    closedir(d);
    if (rc != CTL_OK)
        return rc;
    qsort(m->v, m->n, sizeof *m->v, mig_cmp);
    for (size_t i = 0; i < m->n; i++) {
        if (!m->v[i].up)
            return ctl_fail(what, "%s/%s.down.sql has no %s.up.sql", dir, m->v[i].stem,
                            m->v[i].stem);
    }
    return CTL_OK;
}

static char *read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s", strerror(errno));
        return NULL;
    }
    ctl_buf b = { 0 };
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (ctl_buf_add(&b, chunk, n) != 0) {
            snprintf(err, errlen, "out of memory");
            fclose(f);
            ctl_buf_free(&b);
            return NULL;
        }
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        snprintf(err, errlen, "read error");
        ctl_buf_free(&b);
        return NULL;
    }
    if (!b.p && ctl_buf_add(&b, "", 0) != 0) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return b.p;
}

/* The server's message without the trailing newline libpq leaves on it. */
static const char *pg_msg(const char *s, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", s && s[0] ? s : "unknown error");
    size_t l = strlen(out);
    while (l > 0 && (out[l - 1] == '\n' || out[l - 1] == ' '))
        out[--l] = '\0';
    return out;
}

/* Runs SQL (no parameters, any number of statements). 0 or -1 with err set. */
static int pg_exec(PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
    if (!ok)
        pg_msg(r ? PQresultErrorMessage(r) : PQerrorMessage(c), err, errlen);
    PQclear(r);
    return ok ? 0 : -1;
}

static int pg_exec_params(PGconn *c, const char *sql, int n, const char *const *params,
                          PGresult **out, char *err, size_t errlen)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        pg_msg(r ? PQresultErrorMessage(r) : PQerrorMessage(c), err, errlen);
        PQclear(r);
        return -1;
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return 0;
}

/* Server notices: warnings and errors reach the operator, NOTICE/INFO chatter does not. */
static void notice_receiver(void *arg, const PGresult *r)
{
    const char *what = arg;
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (sev && (strcmp(sev, "NOTICE") == 0 || strcmp(sev, "INFO") == 0 ||
                strcmp(sev, "LOG") == 0 || strncmp(sev, "DEBUG", 5) == 0))
        return;
    char msg[1024];
    fprintf(stderr, "gatewayctl: %s: server: %s\n", what,
            pg_msg(PQresultErrorMessage(r), msg, sizeof msg));
}

static PGconn *pg_connect(const char *what, const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    if (!c) {
        ctl_fail(what, "connect: out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[1024];
        ctl_fail(what, "connect: %s", pg_msg(PQerrorMessage(c), msg, sizeof msg));
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeReceiver(c, notice_receiver, (void *)what);
    return c;
}

/* Marks M's entries applied from gateway_schema_migrations, and adds the applied versions
 * no file describes (stem "NNNNNN_name", no up/down). A missing table: nothing applied. */
static int load_applied(const char *what, PGconn *c, ctl_migs *m)
{
    char err[1024];
    PGresult *r;
    if (pg_exec_params(c, "SELECT to_regclass('gateway_schema_migrations') IS NOT NULL", 0,
                       NULL, &r, err, sizeof err) != 0)
        return ctl_fail(what, "%s", err);
    int exists = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!exists)
        return CTL_OK;
    if (pg_exec_params(c, "SELECT version, name, to_char(applied_at AT TIME ZONE 'UTC', "
                          "'YYYY-MM-DD HH24:MI:SS') || ' UTC' "
                          "FROM gateway_schema_migrations ORDER BY version",
                       0, NULL, &r, err, sizeof err) != 0)
        return ctl_fail(what, "gateway_schema_migrations: %s", err);
    int rc = CTL_OK;
    for (int i = 0; i < PQntuples(r); i++) {
        long long v = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        ctl_mig *x = migs_find(m, v);
        if (!x) {
            if (!(x = migs_add(m, v))) {
                rc = ctl_fail(what, "out of memory");
                break;
            }
            snprintf(x->name, sizeof x->name, "%s", PQgetvalue(r, i, 1));
            snprintf(x->stem, sizeof x->stem, "%06lld_%s", v, x->name);
        }
        x->applied = 1;
        snprintf(x->applied_at, sizeof x->applied_at, "%s", PQgetvalue(r, i, 2));
    }
    PQclear(r);
    qsort(m->v, m->n, sizeof *m->v, mig_cmp);
    return rc;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Applies (up) or reverts (down) one migration in its own transaction, together with its
 * bookkeeping row. CTL_OK or CTL_FAIL (printed, transaction rolled back). */
static int run_migration(const char *what, PGconn *c, const ctl_mig *x, int up)
{
    const char *path = up ? x->up : x->down;
    char err[4096];
    char *sql = read_file(path, err, sizeof err);
    if (!sql)
        return ctl_fail(what, "%s: %s", path, err);
    double t0 = now_ms();
    char version[32];
    snprintf(version, sizeof version, "%lld", x->version);
    const char *params[2] = { version, x->name };
    int rc = CTL_FAIL;
    if (pg_exec(c, "BEGIN", err, sizeof err) != 0) {
        ctl_fail(what, "BEGIN: %s", err);
        goto done;
    }
    if (pg_exec(c, sql, err, sizeof err) != 0) {
        ctl_fail(what, "%s: %s", path, err);
        goto rollback;
    }
    if (up ? pg_exec_params(c, "INSERT INTO gateway_schema_migrations (version, name) "
                               "VALUES ($1::bigint, $2)", 2, params, NULL, err, sizeof err)
           : pg_exec_params(c, "DELETE FROM gateway_schema_migrations WHERE version = $1::bigint",
                            1, params, NULL, err, sizeof err)) {
        ctl_fail(what, "%s: recording it in gateway_schema_migrations: %s", path, err);
        goto rollback;
    }
    if (pg_exec(c, "COMMIT", err, sizeof err) != 0) {
        ctl_fail(what, "%s: COMMIT: %s", path, err);
        goto rollback;
    }
    printf("%s %s (%.0f ms)\n", up ? "applied" : "rolled back", x->stem, now_ms() - t0);
    fflush(stdout);
    rc = CTL_OK;
    goto done;
rollback:
    pg_exec(c, "ROLLBACK", err, sizeof err);
done:
    free(sql);
    return rc;
}

typedef struct ctl_db_opts {
    const char *conninfo;
    const char *dir;
    long long to;          /* -1: not given */
    int down;
} ctl_db_opts;

static int db_migrate(const ctl_db_opts *o)
{
    const char *what = o->down ? "db migrate --down" : "db migrate";
    ctl_migs m = { 0 };
    int rc = scan_migrations(what, o->dir, &m);
    if (rc != CTL_OK) {
        migs_free(&m);
        return rc;
    }
    PGconn *c = pg_connect(what, o->conninfo);
    if (!c) {
        migs_free(&m);
        return CTL_FAIL;
    }
    char err[1024];
    PGresult *r = NULL;
    const char *key[1] = { CTL_LOCK_KEY };
    /* One migrator at a time: try first so a waiting operator learns why nothing happens. */
    if (pg_exec_params(c, "SELECT pg_try_advisory_lock($1::bigint)", 1, key, &r, err,
                       sizeof err) != 0) {
        rc = ctl_fail(what, "advisory lock: %s", err);
        goto out;
    }
    int got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!got) {
        fprintf(stderr, "gatewayctl: %s: waiting for another migrator (advisory lock %s)\n",
                what, CTL_LOCK_KEY);
        if (pg_exec_params(c, "SELECT pg_advisory_lock($1::bigint)", 1, key, NULL, err,
                           sizeof err) != 0) {
            rc = ctl_fail(what, "advisory lock: %s", err);
            goto out;
        }
    }
    /* Under the lock: what is applied is now stable. */
    if (pg_exec(c, "CREATE TABLE IF NOT EXISTS gateway_schema_migrations ("
                   "version bigint PRIMARY KEY, name text NOT NULL, "
                   "applied_at timestamptz NOT NULL DEFAULT now())", err, sizeof err) != 0) {
        rc = ctl_fail(what, "creating gateway_schema_migrations: %s", err);
        goto unlock;
    }
    if ((rc = load_applied(what, c, &m)) != CTL_OK)
        goto unlock;

    int done = 0;
    if (!o->down) {
        for (size_t i = 0; i < m.n && rc == CTL_OK; i++) {
            ctl_mig *x = &m.v[i];
            if (x->applied || !x->up || (o->to >= 0 && x->version > o->to))
                continue;
            rc = run_migration(what, c, x, 1);
            done++;
        }
    } else {
        /* Check the whole plan before reverting anything: every step needs its .down.sql. */
        for (size_t i = m.n; i-- > 0;) {
            ctl_mig *x = &m.v[i];
            if (!x->applied || (o->to >= 0 && x->version <= o->to))
                continue;
            if (!x->down) {
                rc = ctl_fail(what, "%s/%s.down.sql: no such file (needed to roll back %lld)",
                              o->dir, x->stem, x->version);
                goto unlock;
            }
            if (o->to < 0)
                break;
        }
        for (size_t i = m.n; i-- > 0 && rc == CTL_OK;) {
            ctl_mig *x = &m.v[i];
            if (!x->applied || (o->to >= 0 && x->version <= o->to))
                continue;
            rc = run_migration(what, c, x, 0);
            done++;
            if (o->to < 0)
                break;
        }
    }
    if (rc == CTL_OK && done == 0)
        printf(o->down ? "nothing to roll back\n" : "nothing to migrate: up to date\n");
unlock:
    pg_exec_params(c, "SELECT pg_advisory_unlock($1::bigint)", 1, key, NULL, err, sizeof err);
out:
    PQfinish(c);
    migs_free(&m);
    return rc;
}

static int db_status(const ctl_db_opts *o)
{
    const char *what = "db status";
    ctl_migs m = { 0 };
    int rc = scan_migrations(what, o->dir, &m);
    PGconn *c = NULL;
    if (rc != CTL_OK)
        goto out;
    if (!(c = pg_connect(what, o->conninfo))) {
        rc = CTL_FAIL;
        goto out;
    }
    if ((rc = load_applied(what, c, &m)) != CTL_OK)
        goto out;
    ctl_table t = { .cols = 4 };
    char *head[] = { "VERSION", "NAME", "STATE", "APPLIED AT" };
    int bad = ctl_table_row(&t, head);
    size_t n_applied = 0, n_pending = 0;
    long long at = 0;
    for (size_t i = 0; i < m.n; i++) {
        ctl_mig *x = &m.v[i];
        char version[32];
        snprintf(version, sizeof version, "%.*s", (int)strcspn(x->stem, "_"), x->stem);
        const char *state = x->applied ? (x->up ? "applied" : "applied (no file)") : "pending";
        char *cells[4] = { version, x->name, (char *)state, x->applied ? x->applied_at : "-" };
        bad |= ctl_table_row(&t, cells);
        if (x->applied) {
            n_applied++;
            at = x->version;
        } else {
            n_pending++;
        }
    }
    if (!bad)
        ctl_table_print(&t);
    ctl_table_free(&t);
    if (bad) {
        rc = ctl_fail(what, "out of memory");
        goto out;
    }
    printf("at version %lld: %zu applied, %zu pending\n", at, n_applied, n_pending);
out:
    if (c)
        PQfinish(c);
    migs_free(&m);
    return rc;
}

int ctl_cmd_db(int argc, char **argv)
{
    static const char syn[] = "db migrate [--to VERSION] [--down] | db status "
                              "[--pg CONNINFO] [--dir DIR]";
    if (argc < 1)
        return ctl_usage("db", syn, "missing subcommand");
    int migrate = strcmp(argv[0], "migrate") == 0;
    if (!migrate && strcmp(argv[0], "status") != 0)
        return ctl_usage("db", syn, "unknown subcommand \"%s\"", argv[0]);
    const char *what = migrate ? "db migrate" : "db status";
    ctl_db_opts o = { .conninfo = getenv("GATEWAY_PG"), .dir = getenv("GATEWAY_SQL_DIR"),
                      .to = -1 };
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = NULL;
        const char *eq = strchr(arg, '=');
        char opt[32];
        size_t ol = eq ? (size_t)(eq - arg) : strlen(arg);
        snprintf(opt, sizeof opt, "%.*s", (int)(ol < sizeof opt ? ol : sizeof opt - 1), arg);
        int takes = strcmp(opt, "--pg") == 0 || strcmp(opt, "--dir") == 0 ||
                    (migrate && strcmp(opt, "--to") == 0);
        if (takes) {
            if (eq)
                val = eq + 1;
            else if (i + 1 < argc)
                val = argv[++i];
            else
                return ctl_usage(what, syn, "%s needs a value", opt);
        }
        if (strcmp(opt, "--pg") == 0) {
            o.conninfo = val;
        } else if (strcmp(opt, "--dir") == 0) {
            o.dir = val;
        } else if (takes) { /* --to */
            char *end;
            errno = 0;
            long long v = strtoll(val, &end, 10);
            if (!val[0] || *end || errno || v < 0 || val[0] == '-' || val[0] == '+')
                return ctl_usage(what, syn, "--to \"%s\": want a migration version (an integer "
                                 ">= 0)", val);
            o.to = v;
        } else if (migrate && strcmp(arg, "--down") == 0) {
            o.down = 1;
        } else if (arg[0] == '-') {
            return ctl_usage(what, syn, "unknown option \"%s\"", arg);
        } else {
            return ctl_usage(what, syn, "unexpected argument \"%s\"", arg);
        }
    }
    if (!o.conninfo || !o.conninfo[0])
        return ctl_usage(what, syn, "no database: give --pg CONNINFO or set GATEWAY_PG");
    if (!o.dir || !o.dir[0])
        o.dir = "conf/sql";
    return migrate ? db_migrate(&o) : db_status(&o);
}
