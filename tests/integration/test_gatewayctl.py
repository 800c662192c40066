"""gatewayctl, the operator CLI: usage errors, the admin API commands against a real gateway
(each change proven by a request through the gateway and by what mockd counted), and the
database migrations against a real PostgreSQL started here in a temp dir.

Every gatewayctl run is checked for exit code and for sanitizer reports on its stderr."""
import glob
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from harness import BUILD, ROOT, Postgres, Stack, _pg_bin, free_port, request, sanitizer_errors, wait_until

GATEWAYCTL = os.path.join(ROOT, BUILD, "gatewayctl")

UPSTREAMS = {"legacy": 1, "user-service": 1, "order-service": 1}
ROUTES = [
    # per-upstream rewrites, so that after a rollback legacy gets the path it serves
    {"id": "users", "path": "/api/users/**", "upstream": "user-service",
     "rewrites": {"user-service": {"strip_prefix": "/api"}}},
    {"id": "orders", "methods": ["GET", "POST"], "path": "/api/orders/**", "upstream": "legacy",
     "rewrites": {"order-service": {"strip_prefix": "/api"}}},
    {"id": "legacy", "path": "/**", "upstream": "legacy"},
]


def clean_env(extra=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=23")
    e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1:exitcode=24")
    e.update(extra or {})
    return e


def ctl(*args, env=None, timeout=30):
    """Runs gatewayctl with ARGS (GATEWAY_* cleared unless ENV sets them).
    Returns (exit code, stdout, stderr)."""
    cp = subprocess.run([GATEWAYCTL] + list(args), cwd=ROOT, env=clean_env(env),
                        capture_output=True, timeout=timeout)
    out, err = cp.stdout.decode("utf-8", "replace"), cp.stderr.decode("utf-8", "replace")
    errs = sanitizer_errors(err)
    assert not errs, "sanitizer errors in gatewayctl %s:\n%s" % (args, err)
    return cp.returncode, out, err


def admin(s, *args, env=None):
    return ctl("--admin", "http://127.0.0.1:%d" % s.admin_port, "--token", "test-token", *args,
               env=env)


def ok(s, *args):
    rc, out, err = admin(s, *args)
    assert rc == 0, (args, rc, out, err)
    assert err == "", (args, err)
    return out


def upstream_of(s, path, method="GET"):
    st, h, body = request(s.port, method, path)
    assert st == 200, (path, st, body)
    return h["x-gateway-upstream"]


def list_version(s):
    out = ok(s, "routes", "list")
    m = re.match(r"version (\d+) ", out)
    assert m, out
    return int(m.group(1))


def stack():
    return Stack(upstreams=UPSTREAMS, routes=ROUTES)


# ---- usage ----------------------------------------------------------------------------------

def test_help_lists_every_command():
    for args in (["--help"], ["-h"], ["routes", "--help"], ["help"]):
        rc, out, err = ctl(*args)
        assert rc == 0 and err == "", (args, rc, err)
        for cmd in ("routes list", "routes show ID", "routes flip ID UPSTREAM",
                    "routes split ID UP=W,UP=W", "routes shadow ID UPSTREAM", "routes unshadow ID",
                    "routes history", "routes reload", "rollback ID", "rollback --all",
                    "db migrate", "--down", "--to VERSION", "db status", "--admin URL",
                    "--token T", "--pg CONNINFO", "--dir DIR"):
            assert cmd in out, (cmd, out)


def test_usage_errors_exit_2_before_any_network():
    # --admin points at a port nothing listens on: a usage error must win over a connect error
    dead = "http://127.0.0.1:%d" % free_port()
    cases = [
        ([], "missing command"),
        (["frobnicate"], 'unknown command "frobnicate"'),
        (["--bogus", "routes", "list"], 'unknown option "--bogus"'),
        (["--token"], "--token needs a value"),
        (["routes"], "missing subcommand"),
        (["routes", "lst"], 'unknown subcommand "lst"'),
        (["routes", "show"], "missing argument"),
        (["routes", "list", "extra"], "too many arguments"),
        (["routes", "flip", "orders"], "missing argument"),
        (["routes", "flip", "orders", ""], "empty argument"),
        (["routes", "split", "orders", "legacy=x"], '"legacy=x": weight "x" is not an integer 0..100000'),
        (["routes", "split", "orders", "legacy=90,=10"], '"=10": empty upstream name'),
        (["routes", "split", "orders", "legacy=90,order-service"], '"order-service": want UP=W'),
        (["routes", "split", "orders", "legacy=100001"], 'weight "100001" is not an integer'),
        (["routes", "split", "orders", "legacy=-1"], 'weight "-1"'),
        (["routes", "split", "orders", "legacy=1,,b=2"], "empty part"),
        (["routes", "split", "orders", "a=1,a=2"], 'upstream "a" given twice'),
        (["routes", "unshadow"], "missing argument"),
        (["rollback"], "missing ID or --all"),
        (["rollback", "orders", "--all"], "want exactly one of ID or --all"),
        (["rollback", "--everything"], 'unknown option "--everything"'),
        (["db"], "missing subcommand"),
        (["db", "upgrade"], 'unknown subcommand "upgrade"'),
        (["db", "migrate", "--to", "x", "--pg", "host=nowhere"], '--to "x"'),
        (["db", "migrate", "--to", "-3", "--pg", "host=nowhere"], '--to "-3"'),
        (["db", "migrate", "--sideways", "--pg", "host=nowhere"], 'unknown option "--sideways"'),
        (["db", "status", "--down", "--pg", "host=nowhere"], 'unknown option "--down"'),
        (["db", "migrate"], "no database: give --pg CONNINFO or set GATEWAY_PG"),
    ]
    for args, msg in cases:
        rc, out, err = ctl("--admin", dead, *args)
        assert rc == 2, (args, rc, out, err)
        assert err.startswith("gatewayctl: "), (args, err)
        assert msg in err, (args, msg, err)
        assert out == "", (args, out)
    rc, _, err = ctl("--admin", "https://127.0.0.1:1", "routes", "list")
    assert rc == 2 and "only http:// is supported" in err, (rc, err)


# ---- admin API ------------------------------------------------------------------------------

def test_wrong_or_missing_token_is_refused_with_the_401_message():
    with stack() as s:
        url = "http://127.0.0.1:%d" % s.admin_port
        for args in (["--token", "wrong"], []):
            rc, out, err = ctl("--admin", url, *args, "routes", "list")
            assert rc == 1, (args, rc, out, err)
            assert out == ""
            assert err.startswith("gatewayctl: routes list: HTTP 401"), err
            assert "missing or invalid bearer token" in err, err
        # a refused change changes nothing
        rc, _, err = ctl("--admin", url, "--token", "wrong", "routes", "flip", "orders", "order-service")
        assert rc == 1 and "HTTP 401" in err, err
        assert upstream_of(s, "/api/orders/1") == "legacy"
    rc, out, err = ctl("--admin", url, "--token", "test-token", "routes", "list")
    assert rc == 1 and "connect: Connection refused" in err, (rc, err)


def test_routes_list_and_show_and_the_admin_url_defaults():
    with stack() as s:
        out = ok(s, "routes", "list")
        lines = out.splitlines()
        assert re.match(r"version \d+ \(source: file, legacy upstream: legacy, 3 routes\)$", lines[0]), lines
        assert lines[1].split() == ["ID", "METHODS", "PATH", "UPSTREAM", "SHADOW"], lines
        rows = [l.split() for l in lines[2:]]
        assert rows == [["users", "*", "/api/users/**", "user-service", "-"],
                        ["orders", "GET,POST", "/api/orders/**", "legacy", "-"],
                        ["legacy", "*", "/**", "legacy", "-"]], rows

        shown = json.loads(ok(s, "routes", "show", "orders"))
        assert shown["id"] == "orders" and shown["upstream"] == "legacy", shown
        assert shown["methods"] == ["GET", "POST"] and shown["path"] == "/api/orders/**", shown
        assert shown["rewrites"] == {"order-service": {"strip_prefix": "/api"}}, shown

        rc, out, err = admin(s, "routes", "show", "nope")
        assert rc == 1 and out == "", (rc, out)
        assert err.startswith("gatewayctl: routes show: HTTP 404") and "no such route" in err, err

        # URL and token from the environment: GATEWAY_ADMIN_URL wins over GATEWAY_ADMIN_LISTEN
        good = "127.0.0.1:%d" % s.admin_port
        bad = "127.0.0.1:%d" % free_port()
        for env in ({"GATEWAY_ADMIN_LISTEN": good},
                    {"GATEWAY_ADMIN_URL": "http://" + good, "GATEWAY_ADMIN_LISTEN": bad},
                    {"GATEWAY_ADMIN_URL": "http://" + good + "/"}):
            env["GATEWAY_ADMIN_TOKEN"] = "test-token"
            rc, out, err = ctl("routes", "list", env=env)
            assert rc == 0 and out.startswith("version "), (env, rc, err)
        # --token beats GATEWAY_ADMIN_TOKEN
        rc, _, err = ctl("--token", "wrong", "routes", "list",
                         env={"GATEWAY_ADMIN_LISTEN": good, "GATEWAY_ADMIN_TOKEN": "test-token"})
        assert rc == 1 and "HTTP 401" in err, err


def test_flip_and_split_move_traffic():
    with stack() as s:
        v0 = list_version(s)
        assert upstream_of(s, "/api/orders/1") == "legacy"

        out = ok(s, "routes", "flip", "orders", "order-service")
        assert out.startswith("orders: upstream order-service, no shadow"), out
        assert upstream_of(s, "/api/orders/1") == "order-service"
        # the per-upstream rewrite applies: order-service got /orders/1
        assert s.mock("order-service").stats()["by_path"] == {"/orders/1": 1}
        assert list_version(s) == v0 + 1

        # a refused change: the server's error text and status, exit 1, nothing moved
        rc, out, err = admin(s, "routes", "flip", "orders", "nope")
        assert rc == 1 and out == "", (rc, out)
        assert err.startswith("gatewayctl: routes flip: HTTP 422"), err
        assert 'unknown upstream "nope"' in err, err
        rc, _, err = admin(s, "routes", "flip", "ghost", "legacy")
        assert rc == 1 and "HTTP 404" in err and 'no route "ghost"' in err, err
        assert upstream_of(s, "/api/orders/1") == "order-service"

        out = ok(s, "routes", "split", "orders", "legacy=1,order-service=0")
        assert "upstream legacy 1 / order-service 0" in out, out
        for m in s.mocks.values():
            m[0].reset()
        for i in range(20):
            assert upstream_of(s, "/api/orders/%d" % i) == "legacy"
        assert s.mock("legacy").stats()["requests"] == 20
        assert s.mock("order-service").stats()["requests"] == 0

        ok(s, "routes", "split", "orders", "legacy=0,order-service=5")
        for i in range(20):
            assert upstream_of(s, "/api/orders/%d" % i) == "order-service"
        assert s.mock("order-service").stats()["requests"] == 20
        shown = json.loads(ok(s, "routes", "show", "orders"))
        assert shown["split"] == {"legacy": 0, "order-service": 5}, shown
        out = ok(s, "routes", "list")
        assert re.search(r"^orders +GET,POST +/api/orders/\*\* +legacy 0 / order-service 5 +-$",
                         out, re.M), out

        # flip drops the split
        ok(s, "routes", "flip", "orders", "legacy")
        assert "split" not in json.loads(ok(s, "routes", "show", "orders"))
        assert upstream_of(s, "/api/orders/1") == "legacy"


def test_shadow_and_unshadow():
    with stack() as s:
        out = ok(s, "routes", "shadow", "orders", "order-service")
        assert out.startswith("orders: upstream legacy, shadow order-service"), out
        assert json.loads(ok(s, "routes", "show", "orders"))["shadow"]["upstream"] == "order-service"
        assert re.search(r"^orders .* legacy +order-service$", ok(s, "routes", "list"), re.M)
        for i in range(5):
            assert upstream_of(s, "/api/orders/%d" % i) == "legacy"  # the answer stays legacy's
        # ... and a copy of each reached order-service, rewritten for it
        wait_until(lambda: s.mock("order-service").stats()["requests"] == 5, 5, "5 shadow copies")
        assert s.mock("order-service").stats()["by_path"] == {"/orders/%d" % i: 1 for i in range(5)}
        assert s.mock("legacy").stats()["requests"] == 5

        out = ok(s, "routes", "unshadow", "orders")
        assert out.startswith("orders: upstream legacy, no shadow"), out
        assert "shadow" not in json.loads(ok(s, "routes", "show", "orders"))
        s.mock("order-service").reset()
        for i in range(5):
            assert upstream_of(s, "/api/orders/%d" % i) == "legacy"
        # no copy comes: the only check that has to wait out a time (it cannot fail falsely)
        time.sleep(0.3)
        assert s.mock("order-service").stats()["requests"] == 0
        assert s.mock("legacy").stats()["requests"] == 10


def test_history_lists_each_change():
    with stack() as s:
        v0 = list_version(s)
        ok(s, "routes", "flip", "orders", "order-service")
        ok(s, "routes", "split", "orders", "legacy=90,order-service=10")
        ok(s, "routes", "shadow", "users", "order-service")
        out = ok(s, "routes", "history")
        lines = out.splitlines()
        assert lines[0].split() == ["AT", "WHO", "ACTION", "ROUTE", "VERSION", "CHANGE"], lines
        body = lines[1:]
        assert len(body) == 3, out
        # newest first, one line each: at, who, action, route, version, old → new
        assert re.match(r"\d{4}-\d\d-\d\dT\S+ +\S+ +\S+ +users +%d +shadow: - → order-service$" % (v0 + 3),
                        body[0]), body[0]
        assert re.search(r" orders +%d +split: - → legacy 90 / order-service 10$" % (v0 + 2), body[1]), body[1]
        assert re.search(r" orders +%d +upstream: legacy → order-service$" % (v0 + 1), body[2]), body[2]


def test_reload_picks_up_the_file_and_reports_a_bad_one():
    with stack() as s:
        v0 = list_version(s)
        s.routes["routes"].insert(0, {"id": "ship", "path": "/api/ship/**",
                                      "upstream": "order-service",
                                      "rewrite": {"strip_prefix": "/api/ship"}})
        s.write()
        out = ok(s, "routes", "reload")
        m = re.match(r"reloaded: version (\d+), 4 routes$", out.strip())
        assert m and int(m.group(1)) > v0, out
        assert upstream_of(s, "/api/ship/orders/1") == "order-service"
        assert "ship" in ok(s, "routes", "list")

        s.routes["routes"][0]["upstream"] = "nope"
        s.write()
        rc, out, err = admin(s, "routes", "reload")
        assert rc == 1 and out == "", (rc, out)
        assert err.startswith("gatewayctl: routes reload: HTTP 4"), err
        assert 'unknown upstream "nope"' in err, err
        # the table in force stays
        assert upstream_of(s, "/api/ship/orders/1") == "order-service"


def test_rollback_one_and_all():
    with stack() as s:
        ok(s, "routes", "flip", "orders", "order-service")
        ok(s, "routes", "shadow", "orders", "user-service")
        assert upstream_of(s, "/api/orders/1") == "order-service"

        out = ok(s, "rollback", "orders")
        assert out.startswith("rolled back to legacy: orders"), out
        assert upstream_of(s, "/api/orders/1") == "legacy"
        assert upstream_of(s, "/api/users/1") == "user-service"  # only that one
        assert json.loads(ok(s, "routes", "show", "orders"))["shadow"]["upstream"] == "user-service"

        rc, _, err = admin(s, "rollback", "ghost")
        assert rc == 1 and "HTTP 404" in err, err

        ok(s, "routes", "split", "orders", "legacy=1,order-service=1")
        v = list_version(s)
        out = ok(s, "rollback", "--all")
        m = re.match(r"rolled back to legacy: (\S+) \(version (\d+)\)$", out.strip())
        assert m, out
        assert sorted(m.group(1).split(",")) == ["orders", "users"], out
        assert int(m.group(2)) == v + 1, out  # one atomic change
        assert list_version(s) == v + 1
        assert upstream_of(s, "/api/orders/1") == "legacy"
        assert upstream_of(s, "/api/users/1") == "legacy"
        assert s.mock("legacy").stats()["by_path"].get("/api/users/1") == 1

        out = ok(s, "rollback", "--all")
        assert out.startswith("nothing to roll back"), out


# ---- db: a real PostgreSQL ------------------------------------------------------------------

# gatewayctl's pg_advisory_lock key while it migrates ("gwschema" as a big-endian int64)
MIGRATION_LOCK_KEY = int.from_bytes(b"gwschema", "big")


def _migrations(files):
    d = tempfile.mkdtemp(prefix="gwctl-sql-")
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    return d


def _exists(pg, table, db="postgres"):
    return pg.sql("SELECT to_regclass('%s') IS NOT NULL" % table, db) == "t"


def test_db_migrate_status_down():
    d = _migrations({
        "000001_widgets.up.sql": "CREATE TABLE widgets (id int PRIMARY KEY);\n"
                                 "INSERT INTO widgets VALUES (1), (2);\n",
        "000001_widgets.down.sql": "DROP TABLE widgets;\n",
        "000002_gadgets.up.sql": "CREATE TABLE gadgets (id int);\nCREATE INDEX ON gadgets (id);\n",
        "000002_gadgets.down.sql": "DROP TABLE gadgets;\n",
        "000010_gizmos.up.sql": "CREATE TABLE gizmos (id int);\n",
        "000010_gizmos.down.sql": "DROP TABLE gizmos;\n",
        "README": "not a migration\n",
    })
    try:
        with Postgres() as pg:
            pgi = ["--pg", pg.conninfo(), "--dir", d]

            rc, out, err = ctl("db", "status", *pgi)
            assert rc == 0 and err == "", (rc, err)
            rows = [l.split() for l in out.splitlines()]
            assert rows[0] == ["VERSION", "NAME", "STATE", "APPLIED", "AT"], rows
            assert rows[1:4] == [["000001", "widgets", "pending", "-"], ["000002", "gadgets", "pending", "-"],
                                 ["000010", "gizmos", "pending", "-"]], rows
            assert rows[4] == ["at", "version", "0:", "0", "applied,", "3", "pending"], rows
            assert not _exists(pg, "gateway_schema_migrations")  # status only reads

            rc, out, err = ctl("db", "migrate", "--to", "2", *pgi)
            assert rc == 0 and err == "", (rc, err)
            assert re.match(r"applied 000001_widgets \(\d+ ms\)\napplied 000002_gadgets \(\d+ ms\)\n$", out), out
            assert _exists(pg, "widgets") and _exists(pg, "gadgets") and not _exists(pg, "gizmos")
            assert pg.sql("SELECT string_agg(version || ':' || name, ',' ORDER BY version) "
                          "FROM gateway_schema_migrations") == "1:widgets,2:gadgets"

            # the rest, from the environment: GATEWAY_PG and GATEWAY_SQL_DIR
            rc, out, err = ctl("db", "migrate", env={"GATEWAY_PG": pg.conninfo(), "GATEWAY_SQL_DIR": d})
            assert rc == 0 and re.match(r"applied 000010_gizmos \(\d+ ms\)\n$", out), (rc, out, err)
            rc, out, err = ctl("db", "migrate", *pgi)
            assert rc == 0 and out == "nothing to migrate: up to date\n", (rc, out, err)

            rc, out, err = ctl("db", "status", *pgi)
            assert rc == 0, err
            lines = out.splitlines()
            for line, name in zip(lines[1:4], ("widgets", "gadgets", "gizmos")):
                assert re.match(r"\d{6} +%s +applied +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$" % name, line), line
            assert lines[4] == "at version 10: 3 applied, 0 pending", lines

            # --down: the latest only
            rc, out, err = ctl("db", "migrate", "--down", *pgi)
            assert rc == 0 and re.match(r"rolled back 000010_gizmos \(\d+ ms\)\n$", out), (rc, out, err)
            assert not _exists(pg, "gizmos") and _exists(pg, "gadgets")
            # --down --to 0: everything, newest first
            rc, out, err = ctl("db", "migrate", "--down", "--to", "0", *pgi)
            assert rc == 0, err
            assert re.match(r"rolled back 000002_gadgets \(\d+ ms\)\nrolled back 000001_widgets \(\d+ ms\)\n$", out), out
            assert not _exists(pg, "widgets") and not _exists(pg, "gadgets")
            assert pg.sql("SELECT count(*) FROM gateway_schema_migrations") == "0"
            rc, out, err = ctl("db", "migrate", "--down", *pgi)
            assert rc == 0 and out == "nothing to roll back\n", (rc, out, err)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_db_failed_migration_rolls_back_and_bad_inputs():
    d = _migrations({
        "000001_ok.up.sql": "CREATE TABLE ok_t (id int);\n",
        "000001_ok.down.sql": "DROP TABLE ok_t;\n",
        # the first statement succeeds, the second fails: neither may stay
        "000002_broken.up.sql": "CREATE TABLE half (id int);\nINSERT INTO nowhere VALUES (1);\n",
        "000002_broken.down.sql": "DROP TABLE half;\n",
        "000003_later.up.sql": "CREATE TABLE later (id int);\n",
    })
    try:
        with Postgres() as pg:
            pgi = ["--pg", pg.conninfo(), "--dir", d]
            rc, out, err = ctl("db", "migrate", *pgi)
            assert rc == 1, (rc, out, err)
            assert re.match(r"applied 000001_ok \(\d+ ms\)\n$", out), out
            assert err.startswith("gatewayctl: db migrate: %s/000002_broken.up.sql: ERROR:" % d), err
            assert 'relation "nowhere" does not exist' in err, err
            assert _exists(pg, "ok_t") and not _exists(pg, "half") and not _exists(pg, "later")
            rc, out, _ = ctl("db", "status", *pgi)
            assert re.search(r"^000002 +broken +pending +-$", out, re.M), out
            assert "at version 1: 1 applied, 2 pending" in out, out

            # no .down.sql for the applied migration to revert: refused before touching anything
            os.rename(os.path.join(d, "000002_broken.up.sql"), os.path.join(d, "000002_broken.up.sql.off"))
            os.rename(os.path.join(d, "000002_broken.down.sql"), os.path.join(d, "000002_broken.down.sql.off"))
            rc, out, err = ctl("db", "migrate", *pgi)
            assert rc == 0 and re.match(r"applied 000003_later \(\d+ ms\)\n$", out), (rc, out, err)
            rc, out, err = ctl("db", "migrate", "--down", *pgi)
            assert rc == 1 and "000003_later.down.sql: no such file" in err, (rc, out, err)
            assert _exists(pg, "later")

            # bad file names, a lone .down.sql, a missing dir, an unreachable database
            with open(os.path.join(d, "4_Oops.UP.sql"), "w") as f:
                f.write("SELECT 1;\n")
            rc, _, err = ctl("db", "migrate", *pgi)
            assert rc == 1 and "4_Oops.UP.sql: bad migration file name" in err, err
            os.remove(os.path.join(d, "4_Oops.UP.sql"))
            with open(os.path.join(d, "000004_orphan.down.sql"), "w") as f:
                f.write("SELECT 1;\n")
            rc, _, err = ctl("db", "status", *pgi)
            assert rc == 1 and "000004_orphan.down.sql has no 000004_orphan.up.sql" in err, err
            os.remove(os.path.join(d, "000004_orphan.down.sql"))
            rc, _, err = ctl("db", "status", "--pg", pg.conninfo(), "--dir", d + "/missing")
            assert rc == 1 and "No such file or directory" in err, err
            rc, _, err = ctl("db", "status", "--dir", d, "--pg",
                             "host=127.0.0.1 port=%d user=postgres connect_timeout=2" % free_port())
            assert rc == 1 and err.startswith("gatewayctl: db status: connect: "), err
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_db_two_migrators_do_not_race_and_the_shipped_migrations_apply():
    d = _migrations({
        "000001_slow.up.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(0.2);\n",
        "000001_slow.down.sql": "DROP TABLE slow;\n",
    })
    try:
        with Postgres() as pg:
            pgi = ["--pg", pg.conninfo(), "--dir", d]
            # Hold the migrators' advisory lock from another session, start two migrators,
            # see both queue on the lock, release it: they must then run one after the other.
            holder = subprocess.Popen([_pg_bin("psql"), "-X", "-q", "-At", "-d", pg.conninfo()],
                                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            try:
                holder.stdin.write(b"SELECT pg_advisory_lock(%d);\n" % MIGRATION_LOCK_KEY)
                holder.stdin.flush()
                locks = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted = %s "
                         "AND (classid::bigint << 32 | objid::bigint) = %d")
                wait_until(lambda: pg.sql(locks % ("true", MIGRATION_LOCK_KEY)) == "1", 10, "the lock held")
                results = [None, None]

                def run(i):
                    results[i] = ctl("db", "migrate", *pgi)

                threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
                for t in threads:
                    t.start()
                wait_until(lambda: pg.sql(locks % ("false", MIGRATION_LOCK_KEY)) == "2", 10,
                         "two migrators waiting")
                assert not _exists(pg, "slow")
                holder.stdin.close()  # the session ends, the lock goes
                for t in threads:
                    t.join()
            finally:
                if holder.poll() is None:
                    holder.kill()
                holder.wait()
            # both succeed; exactly one applied it, the other found nothing left to do
            assert all(r[0] == 0 for r in results), results
            assert all("waiting for another migrator" in r[2] for r in results), results
            outs = sorted(r[1] for r in results)
            assert re.match(r"applied 000001_slow \(\d+ ms\)\n$", outs[0]), outs
            assert outs[1] == "nothing to migrate: up to date\n", outs
            assert pg.sql("SELECT count(*) FROM gateway_schema_migrations") == "1"

            # The shipped migrations, from the default directory conf/sql (cwd = repo root),
            # into a database of their own: up, status, down to nothing, up again.
            shipped = sorted(glob.glob(os.path.join(ROOT, "conf", "sql", "*.up.sql")))
            assert shipped, "conf/sql has no migrations"
            pg.sql("CREATE DATABASE shipped")
            env = {"GATEWAY_PG": pg.conninfo("shipped")}
            rc, out, err = ctl("db", "migrate", env=env)
            assert rc == 0, (out, err)
            assert out.count("applied ") == len(shipped), out
            assert _exists(pg, "gateway_routes", "shipped")
            rc, out, err = ctl("db", "status", env=env)
            assert rc == 0 and "0 pending" in out and "pending  " not in out, (out, err)
            rc, out, err = ctl("db", "migrate", "--down", "--to", "0", env=env)
            assert rc == 0 and out.count("rolled back ") == len(shipped), (out, err)
            assert not _exists(pg, "gateway_routes", "shipped")
            assert pg.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
                          "AND tablename <> 'gateway_schema_migrations'", "shipped") == "0"
            rc, out, err = ctl("db", "migrate", env=env)
            assert rc == 0 and out.count("applied ") == len(shipped), (out, err)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_history_limit():
    with stack() as s:
        ok(s, "routes", "flip", "orders", "order-service")
        ok(s, "routes", "flip", "orders", "legacy")
        body = ok(s, "routes", "history", "--limit", "1").splitlines()[1:]
        assert len(body) == 1 and "order-service → legacy" in body[0], body
        assert len(ok(s, "routes", "history").splitlines()[1:]) == 2
        for bad in (["--limit"], ["--limit", "0"], ["--limit", "10001"], ["--limit", "x"],
                    ["--limit", "1", "extra"]):
            rc, out, err = admin(s, "routes", "history", *bad)
            assert rc == 2 and "routes history" in err, (bad, rc, out, err)
