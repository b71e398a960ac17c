#!/usr/bin/env bash
# Host/device parity: the firmware under QEMU and the host's `sensorae score` score the same
# rows with the same model; rows, alarms, faults and top channels must be identical and scores
# equal within a relative tolerance. Exits non-zero on any mismatch or missing tool.
#
#   firmware/parity.sh                      # SKAB valve1/0.csv, first 1200 rows
#   SENSORAE_STREAM=/path/x.csv SENSORAE_STREAM_ROWS=500 firmware/parity.sh
#   SENSORAE_HOST="/path/to/sensorae" firmware/parity.sh   # an already built host CLI
#   SENSORAE_MODEL=/path/m.snae SENSORAE_FEATURES=vae firmware/parity.sh   # another model
#
# Tolerance: both sides do IEEE-754 binary32 with round-to-nearest, Rust never contracts a*b+c
# into a fused multiply-add, the M4's vmla.f32 rounds the product like a separate multiply, and
# both sides run the same nalgebra and pure-Rust libm code. So the scores are expected to be
# bit-identical (and have been: see README); the 1e-5 relative tolerance (~80 ulp) only keeps
# a future FMA or libm change from failing on rounding, while any real disagreement is far
# larger.
set -euo pipefail
cd "$(dirname "$0")"
fw=$PWD
root=$(cd .. && pwd)
. ./ensure-tools.sh

tol=${SENSORAE_PARITY_TOL:-1e-5}
model=${SENSORAE_MODEL:-model.snae}
case $model in /*) ;; *) model=$fw/$model ;; esac
features=${SENSORAE_FEATURES:-}
rows=${SENSORAE_STREAM_ROWS:-1200}
stream=${SENSORAE_STREAM:-../../shared/data/skab/valve1/0.csv}
case $stream in /*) ;; *) stream=$fw/$stream ;; esac
[ -f "$stream" ] || { echo "error: stream $stream not found" >&2; exit 1; }

out=$fw/target/parity
mkdir -p "$out"
# Both sides get exactly the same rows: the header and the first $rows non-empty lines.
awk -v n="$rows" 'NR == 1 || (length($0) > 1 && k++ < n)' "$stream" > "$out/stream.csv"

echo "== firmware under QEMU" >&2
SENSORAE_MODEL=$model SENSORAE_STREAM=$out/stream.csv SENSORAE_STREAM_ROWS=$rows \
    timeout 600 cargo run --release -q ${features:+--features "$features"} > "$out/device.csv" \
    || { echo "error: firmware run failed (exit $?)" >&2; exit 1; }

echo "== host: sensorae score" >&2
if [ -n "${SENSORAE_HOST:-}" ]; then
    read -r -a host <<< "$SENSORAE_HOST"
else
    host=(cargo run --release -q --manifest-path "$root/Cargo.toml" -p sensorae-host --bin sensorae --)
fi
# The firmware's .cargo/config.toml must not apply to the host build: run from the root.
(cd "$root" && "${host[@]}" score --model "$model" --data "$out/stream.csv" --out "$out/host.csv") \
    || { echo "error: host 'sensorae score' failed (exit $?)" >&2; exit 1; }

echo "== compare" >&2
# Fields 1 (row) and 2 (score) never hold commas; the rest of the line is compared as text.
awk -v tol="$tol" '
    function split3(line, f,   i, j) {
        i = index(line, ","); f[1] = substr(line, 1, i - 1); line = substr(line, i + 1)
        j = index(line, ","); f[2] = substr(line, 1, j - 1); f[3] = substr(line, j + 1)
    }
    function abs(x) { return x < 0 ? -x : x }
    NR == FNR { dev[FNR] = $0; nd = FNR; next }
    {
        nh = FNR
        if (!(FNR in dev)) { bad++; if (bad <= 5) print "host row without device row: " $0; next }
        if (FNR == 1) { if ($0 != dev[1]) { bad++; print "headers differ:\n  device " dev[1] "\n  host   " $0 }; next }
        split3(dev[FNR], d); split3($0, h)
        if (d[1] != h[1] || d[3] != h[3]) { bad++; if (bad <= 5) print "row differs:\n  device " dev[FNR] "\n  host   " $0; next }
        if ((d[2] == "") != (h[2] == "")) { bad++; if (bad <= 5) print "score present on one side only:\n  device " dev[FNR] "\n  host   " $0; next }
        if (d[2] == "") next
        scored++
        if (d[2] != h[2]) unequal++
        diff = abs(d[2] - h[2]); rel = diff / (abs(h[2]) > 1 ? abs(h[2]) : 1)
        if (diff > maxabs) maxabs = diff
        if (rel > maxrel) maxrel = rel
        if (rel > tol) { bad++; if (bad <= 5) print "score beyond tolerance:\n  device " dev[FNR] "\n  host   " $0 }
    }
    END {
        if (nd != nh) { bad++; print "line counts differ: device " nd ", host " nh }
        printf "rows %d, scored %d, max |diff| %g, max relative %g (tolerance %g), bit-identical scores: %s\n",
            nd - 1, scored, maxabs, maxrel, tol, (unequal ? "no (" unequal " differ)" : "yes")
        if (bad || nd < 2) { print "PARITY FAILED: " bad + 0 " mismatches"; exit 1 }
        print "parity ok"
    }' "$out/device.csv" "$out/host.csv"
