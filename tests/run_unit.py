#!/usr/bin/env python3
"""Runs cmocka unit-test binaries given on the command line from the repo root; prints their
output and a 'N passed, N failed' line counted from cmocka's summaries. Exit 1 on failure."""
import concurrent.futures
import os
import re
import subprocess
import sys


VALGRIND = ["valgrind", "--quiet", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite", "--child-silent-after-fork=yes"]


def _one(b, valgrind):
    env = dict(os.environ, GW_UNDER_VALGRIND="1") if valgrind else None
    return subprocess.run((VALGRIND if valgrind else []) + [b], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env)


def run(binaries, valgrind=False, jobs=1):
    """JOBS binaries at once (each is self-contained: its own loop, port 0 sockets, temp
    files); their outputs are printed whole, in the given order."""
    passed = failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        done = list(pool.map(lambda b: (b, _one(b, valgrind)), binaries))
    for b, p in done:
        sys.stdout.write(p.stdout)
        ok = re.search(r"\[  PASSED  \] (\d+) test", p.stdout)
        bad = re.search(r"\[  FAILED  \] (\d+) test", p.stdout)
        n_ok = int(ok.group(1)) if ok else 0
        n_bad = int(bad.group(1)) if bad else 0
        tsan = "WARNING: ThreadSanitizer" in p.stdout  # exits 66 at the end (TSAN_OPTIONS)
        if (p.returncode != 0 or tsan) and n_bad == 0:
            n_bad = 1  # crashed, sanitizer abort before cmocka's summary, or a race report
            print("%s: exited %d%s" % (b, p.returncode, " (ThreadSanitizer reports)" if tsan else ""))
        passed += n_ok
        failed += n_bad
    return passed, failed


if __name__ == "__main__":
    p, f = run(sys.argv[1:])
    print("unit: %d passed, %d failed" % (p, f))
    sys.exit(1 if f else 0)
