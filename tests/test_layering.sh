#!/usr/bin/env bash
# The rooms' dependency order (README "Layout"): http/ <- routes/ <- composers/ <- gateway/.
# Fails, naming the file and the include, when a room includes a header of a room above it.
set -u
cd "$(dirname "$0")/.."
bad=0
check() { # room, forbidden rooms...
  local room=$1; shift
  for up in "$@"; do
    hits=$(grep -n "#include \"$up/" "$room"/*.c "$room"/*.h 2>/dev/null)
    if [ -n "$hits" ]; then
      printf '%s\n' "$hits" | sed "s|\$|   <- $room/ must not include $up/|"
      bad=1
    fi
  done
}
check http routes composers gateway ctl
check routes composers gateway ctl
check composers gateway ctl
check gateway ctl
if [ $bad = 0 ]; then echo "layering: 1 passed, 0 failed"; else echo "layering: 0 passed, 1 failed"; fi
exit $bad
