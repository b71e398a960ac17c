#!/usr/bin/env bash
# Before/after on a noisy machine: runs two criterion bench executables alternately and prints
# each benchmark's median of the per-run medians, and the ratio before/after.
# Usage: benches/ab.sh BEFORE_EXE AFTER_EXE [ROUNDS] [criterion filter]
# Bench executables: `cargo bench ... --no-run` prints their paths; copy one aside before
# rebuilding.
set -euo pipefail
before=$1 after=$2 rounds=${3:-3} filter=${4:-}
tmp=$(mktemp -d)
for r in $(seq 1 "$rounds"); do
    for side in before after; do
        exe=$before; [ "$side" = after ] && exe=$after
        "$exe" --bench --warm-up-time 1 --measurement-time 2 --noplot $filter 2>/dev/null \
            | awk -v s="$side" '/^[^ ]/ && !/^Benchmarking/ {n=$0; sub(/ +time:.*/, "", n); name=n}
                /time: +\[[0-9]/ {sub(/.*time: +\[/, ""); split($0, f, " "); print s "\t" name "\t" f[3] " " f[4]}' \
            >> "$tmp/all"
    done
done
python3 - "$tmp/all" <<'PY'
import sys, statistics, collections
unit = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
d = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    side, name, t = line.rstrip("\n").split("\t")
    v, u = t.split()
    d[name.strip()][side].append(float(v) * unit[u])
print(f"{'benchmark':<48}{'before ns':>14}{'after ns':>14}{'speed-up':>10}")
for name, s in d.items():
    b, a = statistics.median(s["before"]), statistics.median(s["after"])
    print(f"{name:<48}{b:>14,.1f}{a:>14,.1f}{b / a:>9.2f}x")
PY
rm -r "$tmp"
