#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), then the exhaustive corruption test of
# the trained model (every bit flip and truncation, release build), and prints executions and
# findings per target. Exit 1 when any target found a crash (kept in fuzz/artifacts/TARGET/).
#
#   scripts/fuzz.sh 180                    # three minutes per target
#   TARGETS="push csv" scripts/fuzz.sh 60  # some targets only
#   SANITIZER=none scripts/fuzz.sh 60      # without AddressSanitizer (default: address, falling
#                                          # back to none if it does not build)
#
# Needs cargo-fuzz (installed when missing). Works on the stable toolchain with
# RUSTC_BOOTSTRAP=1, which lets it pass the sanitizer and coverage flags cargo-fuzz uses.
# Seeds: the trained firmware model, synthetic models of several sizes (firmware/synth), their
# payloads, a few push streams, and the first lines of SKAB files read from ../shared.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-60}
targets=(${TARGETS:-model_bytes model_payload wire push csv})
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

san=${SANITIZER:-address}
if ! cargo fuzz build -O -s "$san" >build.log 2>&1; then
    echo "sanitizer $san does not build here (see fuzz/build.log); using none" >&2
    san=none
    cargo fuzz build -O -s none
fi
rm -f build.log

# Seeds.
seed=$root/fuzz/corpus
mkdir -p "$seed"/{model_bytes,model_payload,wire,push,csv}
synth=$root/target/fuzz-synth
for spec in "1 2 2 1" "2 3 4 2" "3 8 6 3" "8 16 32 8"; do
    read -r c w h z <<< "$spec"
    f=$seed/model_bytes/synth-$c-$w-$h-$z.snae
    [ -f "$f" ] || cargo run -q --release --manifest-path "$root/firmware/synth/Cargo.toml" \
        --target-dir "$synth" -- "$c" "$w" "$h" "$z" "$f"
done
cp "$root/firmware/model.snae" "$seed/model_bytes/trained.snae"
for f in "$seed"/model_bytes/*.snae; do
    # The payload: without the 10-byte prefix and the 4-byte CRC.
    tail -c +11 "$f" | head -c -4 > "$seed/model_payload/$(basename "$f" .snae).payload"
    # Its header and first channels, for the postcard reader's differential target.
    tail -c +11 "$f" | head -c 512 > "$seed/wire/$(basename "$f" .snae).header"
done
for m in 0 1 2 3; do
    # Model m, then pushes of slowly varying in-range values, a stuck run, specials, a gap.
    { printf "\\x$(printf %02x $m)"
      for t in $(seq 0 40); do
          printf '\x00'
          for c in 0 1 2 3 4 5 6 7; do printf "\\x$(printf %02x $(( (t * 7 + c * 13) % 60 + 70 )))"; done
      done
      printf '\x1a\x1a\x1a\x00\xc8\x64\x64\x64\x64\x64\x64\x64\x0c\x00\xcb\xcc\x64\x64\x64\x64\x64'
    } > "$seed/push/stream-$m"
done
skab=$root/../shared/data/skab
if [ -d "$skab" ]; then
    n=0
    for f in "$skab"/valve1/0.csv "$skab"/valve2/1.csv "$skab"/anomaly-free/anomaly-free.csv; do
        [ -f "$f" ] || continue
        # Selector byte 1 reads SKAB options (';', labels, times); 0 detects and takes all.
        { printf '\x01'; head -n 20 "$f"; } > "$seed/csv/skab-$n"
        { printf '\x00'; head -n 8 "$f"; } > "$seed/csv/plain-$n"
        n=$((n + 1))
    done
fi
printf '\x03time,a,b,label\n0,1.5,2,0\n1,,3,1\n2,NaN,4,true\n' > "$seed/csv/labels"

declare -A max_len=([model_bytes]=40000 [model_payload]=40000 [wire]=1024 [push]=2048 [csv]=4096)
summary=()
status=0
for t in "${targets[@]}"; do
    log=$root/fuzz/artifacts/$t.log
    mkdir -p "$root/fuzz/artifacts/$t"
    echo "== $t: $secs s, sanitizer $san" >&2
    cargo fuzz run -O -s "$san" "$t" "$seed/$t" -- -max_total_time="$secs" \
        -max_len="${max_len[$t]}" -print_final_stats=1 >"$log" 2>&1 || true
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | tr -dc 0-9)
    crashes=$(find "$root/fuzz/artifacts/$t" -type f \( -name 'crash-*' -o -name 'oom-*' \
        -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)
    [ "$crashes" = 0 ] || status=1
    summary+=("$(printf '%-14s %8s s %12s execs %8s/s %6s edges %4s corpus %3s findings' \
        "$t" "$secs" "${execs:-?}" "${rate:-?}" "${cov:-?}" \
        "$(ls "$seed/$t" | wc -l)" "$crashes")")
done

echo "== every bit flip and truncation of firmware/model.snae (release)" >&2
(cd "$root" && cargo test -q --release --all-features --test tests -- --ignored \
    reliability::corruption::every_bit_flip_of_the_trained_model) >&2 || status=1

printf '%s\n' "${summary[@]}"
ls "$root"/fuzz/artifacts/*/ 2>/dev/null | grep -E 'crash-|oom-|timeout-|leak-' || true
exit $status
