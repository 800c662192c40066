#!/usr/bin/env python3
"""Runs every test_* function in tests/integration/test_*.py against the binaries in --build.
Prints one line per test and ends with 'N passed, N failed'; exits 1 on any failure."""
import argparse
import glob
import importlib.util
import os
import sys
import time
import traceback

here = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser()
ap.add_argument("--build", default="build")
ap.add_argument("-k", default="", help="run only tests whose name contains this (comma: any of)")
ap.add_argument("--skip", default="", help="leave out tests whose name contains this (comma: any of)")
args = ap.parse_args()
os.environ["GW_BUILD"] = args.build
sys.path.insert(0, here)

from harness import Skip  # noqa: E402 — after the path is set

passed = failed = skipped = 0
failures = []
for path in sorted(glob.glob(os.path.join(here, "test_*.py"))):
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for fn_name in sorted(n for n in dir(mod) if n.startswith("test_")):
        full = "%s.%s" % (name, fn_name)
        if args.k and not any(k and k in full for k in args.k.split(",")):
            continue
        if args.skip and any(k and k in full for k in args.skip.split(",")):
            continue
        t0 = time.time()
        try:
            getattr(mod, fn_name)()
            passed += 1
            print("[       OK ] %s (%.2fs)" % (full, time.time() - t0), flush=True)
        except Skip as e:
            skipped += 1
            print("[ SKIPPED  ] %s: %s" % (full, e), flush=True)
        except Exception:
            failed += 1
            failures.append(full)
            print("[  FAILED  ] %s (%.2fs)" % (full, time.time() - t0), flush=True)
            traceback.print_exc()
print("integration (%s): %d passed, %d failed%s" % (args.build, passed, failed,
                                                    ", %d skipped" % skipped if skipped else ""))
for f in failures:
    print("  failed: " + f)
sys.exit(1 if failed else 0)
