#!/usr/bin/env python3
"""`make test`: unit tests and integration tests on the plain build, then on the ASan+UBSan
build (build/san), then the unit tests and the multi-threaded integration subset on the
ThreadSanitizer build (build/tsan), then each libFuzzer driver (build/fuzz) for a short fixed
number of runs, then a subset under valgrind, then the bench harness once
in quick mode (asserting only that it ran).
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
# ThreadSanitizer: every report fails (exit 66 at the end; run on after the first to see all);
# tests/tsan.supp holds third-party false positives only. The other builds ignore it.
os.environ.setdefault("TSAN_OPTIONS", "exitcode=66:halt_on_error=0:second_deadlock_stack=1:"
                      "suppressions=" + os.path.join(root, "tests", "tsan.supp"))
total_p = total_f = 0
t0 = time.time()


# unit-test binaries run this many at once (each is self-contained); the integration tests
# run one at a time (they time real servers)
UNIT_JOBS = os.cpu_count() or 1
t_section = [time.time(), None]


def section(title):
    now = time.time()
    if t_section[1]:
        print("(%s: %.0f s)" % (t_section[1], now - t_section[0]), flush=True)
    t_section[:] = [now, title]
    print("\n==== %s ====" % title, flush=True)


# Left out of the ASan+UBSan pass (they run on the plain build): long tests whose subject is
# resident memory, descriptor counts or failover timing, which ASan's shadow memory and
# slowdown only blur; ~80 s of the pass, which keeps the suite under 20 minutes on 2 cores.
ASAN_SKIP = ",".join([
    "test_ten_thousand_reloads_under_load_rss_flat", "test_low_nofile_no_client_reset",
    "test_hung_shadow_descriptors_stay_under_the_caps", "test_tunnel_backpressure_bounds_memory",
    "test_slow_1gib_chunked_upload_bounded_memory", "test_sentinel_master_killed_under_load",
    "test_two_instances_one_drives_the_other_takes_over", "test_dashboard_browser_rollback",
])

for build in ("build", "build/san"):
    bins = sorted(glob.glob(os.path.join(build, "tests", "*", "test_*")))
    section("unit tests (%s)" % build)
    p, f = run_unit.run(bins, jobs=UNIT_JOBS)
    print("unit (%s): %d passed, %d failed" % (build, p, f))
    total_p += p
    total_f += f
    section("integration tests (%s)" % build)
    r = subprocess.run([sys.executable, "tests/integration/run.py", "--build", build] +
                       (["--skip", ASAN_SKIP] if build == "build/san" else []),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(r.stdout)
    m = re.search(r"integration \(.*\): (\d+) passed, (\d+) failed", r.stdout)
    if m:
        total_p += int(m.group(1))
        total_f += int(m.group(2))
    elif r.returncode != 0:
        total_f += 1

# ThreadSanitizer build: every unit test, and the integration tests that run more than one
# thread doing real work — two workers (plus the main thread: admin API, route sources,
# reloads), or route changes published from the main thread to a worker under load. TSan
# slows the gateway 5-15x: tests bound by tight timing stay out (test_compose_200_concurrent's
# 300 ms legs, test_cache_redis_hit_shared_by_workers_and_composition's 20 ms Redis replies and
# exact upstream call counts, the 1 GiB uploads). The subset takes about 40 s on 2 cores.
TSAN_SUBSET = ",".join([
    "test_workers_first_connections_together_with_reloads",  # tests/integration/test_threads.py
    "test_flip_under_load", "test_ten_thousand_reloads_under_load_rss_flat", "test_sighup_reloads",
    "test_cache_coalescing_100_concurrent",
    "test_cache_invalidation_redis", "test_cache_redis_killed_and_restarted",
    "test_cache_redis_never_up", "test_compose_client_disconnect",
    "test_two_instances_converge_and_survive_postgres_going_away",
    "test_demo_flip_leaves_the_checkout_clean",
    # cutover plans: two workers' counters read by the main thread's driver under load
    "test_plan_walks_route_to_order_service_under_load",
    # the dashboard's sampler: two workers' counters summed on the main thread under load
    "test_dashboard_numbers_move_under_load",
    # TLS: certificate snapshots built on the threadpool, swapped while two workers handshake
    "test_tls_reload_under_load_drops_nothing",
    # rate limits: the in-process store shared by four workers; two instances x two workers
    # on one Redis; Redis killed while three clients load two workers; the route counter
    "test_local_limit_is_per_process_across_workers", "test_shared_limit_exact_across_two_instances",
    "test_redis_killed_mid_load_falls_back_to_local_share", "test_route_max_in_flight_across_workers",
    # live upstreams: definitions parsed on the threadpool, pools rebuilt on the worker;
    # names resolved on the threadpool, read by the workers
    "test_upstream_change_drains_pools_in_flight_request_keeps_its_definition",
    "test_endpoint_names_re_resolved_every_address_used_last_good_kept",
    # span export: two workers' rings drained by the exporter thread (a hung collector: full
    # rings, a POST timing out, the last flush at SIGTERM)
    "test_otlp_hung_collector_drops_and_counts_and_exits_cleanly",
])
section("unit tests (build/tsan)")
p, f = run_unit.run(sorted(glob.glob(os.path.join("build/tsan", "tests", "*", "test_*"))),
                    jobs=UNIT_JOBS)
print("unit (build/tsan): %d passed, %d failed" % (p, f))
total_p += p
total_f += f
section("integration tests under ThreadSanitizer (build/tsan, multi-threaded subset)")
t_tsan = time.time()
r = subprocess.run([sys.executable, "tests/integration/run.py", "--build", "build/tsan", "-k", TSAN_SUBSET],
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
sys.stdout.write(r.stdout)
print("ThreadSanitizer subset: %.0f s" % (time.time() - t_tsan))
m = re.search(r"integration \(.*\): (\d+) passed, (\d+) failed", r.stdout)
if m:
    total_p += int(m.group(1))
    total_f += int(m.group(2))
elif r.returncode != 0:
    total_f += 1

# libFuzzer drivers (build/fuzz, `make fuzz-bins`): each replays its seed corpus
# (tests/fuzz/corpus/<driver>, crash inputs found earlier included) then mutates for a fixed
# number of runs from a fixed seed, so it stays short and repeatable; `make fuzz` runs long.
# One driver is one test: a crash, a sanitizer report or a broken invariant fails it.
FUZZ_RUNS = 2000
section("fuzz drivers (build/fuzz, %d runs each, -seed=1)" % FUZZ_RUNS)
os.makedirs("build/fuzz/crashes", exist_ok=True)
for b in sorted(glob.glob(os.path.join("build/fuzz", "fuzz_*"))):
    name = os.path.basename(b)
    if not os.access(b, os.X_OK) or not os.path.isdir(os.path.join("tests", "fuzz", "corpus", name)):
        continue
    corpus = os.path.join("tests", "fuzz", "corpus", name)
    work = os.path.join("build", "fuzz", "corpus-test", name) # new units: never the checkout
    subprocess.run(["rm", "-rf", work])
    os.makedirs(work)
    t_f = time.time()
    r = subprocess.run([b, "-runs=%d" % FUZZ_RUNS, "-seed=1", "-max_len=8192",
                        "-artifact_prefix=build/fuzz/crashes/" + name + "-", work, corpus],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    ok = r.returncode == 0
    if not ok:
        sys.stdout.write(r.stdout[-4000:])
    print("[%s] %s (%.1f s)" % ("       OK " if ok else "  FAILED  ", name, time.time() - t_f), flush=True)
    total_p += ok
    total_f += not ok

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
    # TLS: a request over TLS both ways, and reloads (snapshots built on the threadpool)
    "test_tls_get_over_https", "test_tls_reload_admin_ctl_sighup_and_bad_pair",
    # limits: the 429 path, Redis waits and the NOSCRIPT retry, the shed and queue paths
    "test_local_limit_429_headers_and_metrics", "test_shared_limit_survives_script_flush",
    "test_upstream_max_in_flight_sheds_503_at_once", "test_upstream_queue_timeout_503",
    # live upstreams: replaced endpoint sets freed with their last connection
    "test_upstream_change_drains_pools_in_flight_request_keeps_its_definition",
    "test_upstream_added_used_and_removed_through_the_admin_api",
    # HTTP/2: refused streams (nghttp2's checks), GOAWAY on drain with streams finishing
    "test_h2_hardening_refused", "test_h2_goaway_on_drain",
])
section("unit tests under valgrind (build)")
p, f = run_unit.run(sorted(glob.glob(os.path.join("build", "tests", "*", "test_*"))), valgrind=True,
                    jobs=UNIT_JOBS)
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
    section("bench harness smoke run (BENCH_QUICK=1, 1 s runs; asserts only that it produced results)")
    # 1 s per run: the smoke run proves every workload runs against every target, not speed
    # the probes at a tenth of their quick sizes too: the smoke run proves they run, not what
    # they measure (the whole suite must stay under 20 minutes on 2 cores)
    env = dict(os.environ, BENCH_QUICK="1", BENCH_DURATION="1", BENCH_IDLE_CONNS="500",
               BENCH_PIPELINE_REQS="20000", BENCH_SHADOW_REQS="500", BENCH_SCALE_ROUTES="1000",
               BENCH_EXACT_BURST="1000")
    r = subprocess.run(["bash", "bench/run.sh"], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(r.stdout[-4000:])
    ok = r.returncode == 0 and os.path.exists("build/bench/results.json")
    print("[%s] bench quick run" % ("       OK " if ok else "  FAILED  "))
    total_p += ok
    total_f += not ok

section("done")
print("\nall suites finished in %.0f s" % (time.time() - t0))
print("%d passed, %d failed" % (total_p, total_f))
sys.exit(1 if total_f else 0)
