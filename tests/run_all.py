#!/usr/bin/env python3
"""`make test`: unit tests and integration tests on the plain build, then on the ASan+UBSan
build (build/san), then a subset under valgrind, then the bench harness once in quick mode
(asserting only that it ran).
Ends with the total 'N passed, N failed' line."""
import glob
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_unit  # noqa: E402

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(root)
total_p = total_f = 0
t0 = time.time()


def section(title):
    print("\n==== %s ====" % title, flush=True)


for build in ("build", "build/san"):
    bins = sorted(glob.glob(os.path.join(build, "tests", "*", "test_*")))
    section("unit tests (%s)" % build)
    p, f = run_unit.run(bins)
    print("unit (%s): %d passed, %d failed" % (build, p, f))
    total_p += p
    total_f += f
    section("integration tests (%s)" % build)
    r = subprocess.run([sys.executable, "tests/integration/run.py", "--build", build],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(r.stdout)
    m = re.search(r"integration \(.*\): (\d+) passed, (\d+) failed", r.stdout)
    if m:
        total_p += int(m.group(1))
        total_f += int(m.group(2))
    elif r.returncode != 0:
        total_f += 1

# valgrind (memcheck) on the plain build: a behaviour subset (valgrind is ~20x slower, and
# timing-bound tests would only measure valgrind). Any memory error or definite leak makes the
# gateway exit 99, which fails the test.
VALGRIND_SUBSET = ",".join([
    "test_smoke", "test_keepalive", "test_pipelined", "test_chunked_request", "test_expect_100",
    "test_smuggling_heads", "test_upstream_hop", "test_upstream_forward", "test_rollback_all",
    "test_put_validation", "test_shadow_compares", "test_compose_healthy", "test_compose_head",
    "test_ops_access_log", "test_routes_view", "test_compose_client_disconnect",
    "test_sighup_reloads", "test_file_invalid_rejected", "test_cache_lru_without_redis",
    "test_cache_redis_never_up", "test_shadow_post_bodies",
    "test_client_leaving", "test_request_head_and_body", "test_long_header_values",
])
section("unit tests under valgrind (build)")
p, f = run_unit.run(sorted(glob.glob(os.path.join("build", "tests", "*", "test_*"))), valgrind=True)
print("unit under valgrind: %d passed, %d failed" % (p, f))
total_p += p
total_f += f

section("integration tests under valgrind (build, subset)")
r = subprocess.run([sys.executable, "tests/integration/run.py", "--build", "build", "-k", VALGRIND_SUBSET],
                   env=dict(os.environ, GW_VALGRIND="1"), stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT, text=True)
sys.stdout.write(r.stdout)
m = re.search(r"integration \(.*\): (\d+) passed, (\d+) failed", r.stdout)
if m:
    total_p += int(m.group(1))
    total_f += int(m.group(2))
elif r.returncode != 0:
    total_f += 1

if os.path.exists("bench/run.sh"):
    section("bench harness smoke run (BENCH_QUICK=1; asserts only that it produced results)")
    env = dict(os.environ, BENCH_QUICK="1")
    r = subprocess.run(["bash", "bench/run.sh"], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(r.stdout[-4000:])
    ok = r.returncode == 0 and os.path.exists("build/bench/results.json")
    print("[%s] bench quick run" % ("       OK " if ok else "  FAILED  "))
    total_p += ok
    total_f += not ok

print("\nall suites finished in %.0f s" % (time.time() - t0))
print("%d passed, %d failed" % (total_p, total_f))
sys.exit(1 if total_f else 0)
