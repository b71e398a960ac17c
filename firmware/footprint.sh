#!/usr/bin/env bash
# Flash, RAM, stack and instruction counts of the detector on a Cortex-M4F, for the committed
# model and larger synthetic ones; prints a Markdown table (also in target/footprint/table.md).
#
#   firmware/footprint.sh                 # model.snae, then C=8 W=16 H=64 Z=8 and C=8 W=32 H=32 Z=8
#   firmware/footprint.sh "8 16 32 8"     # only these sizes (synthetic models)
#   OPT=s firmware/footprint.sh           # another opt-level than Cargo.toml's
#   FEATURES=runtime-load firmware/footprint.sh   # the file reader instead of build-time decoding
#   firmware/footprint.sh --profile       # also: where one scored window's instructions go
#
# Core code (`core-size.py`): functions reachable from the out-of-line `load` and `push` wrappers
# and the read-only data they address; not the harness, semihosting, vector table or model.
#
# Method: `src/bin/footprint.rs` (no core::fmt) paints the stack, pushes the recorded stream and
# times every push with SysTick on the core clock, under `qemu -icount shift=0` (the virtual
# clock advances 1 ns per instruction). It first times a loop of exactly 200,000 instructions;
# the script checks that this gives a whole number of instructions per tick and uses it.
set -euo pipefail
cd "$(dirname "$0")"
fw=$PWD
. ./ensure-tools.sh
need_apt arm-none-eabi-size binutils-arm-none-eabi
need_apt python3 python3

profile=0
specs=()
for a in "$@"; do
    case $a in --profile) profile=1 ;; *) specs+=("$a") ;; esac
done
[ ${#specs[@]} -gt 0 ] || specs=(model.snae "8 16 64 8" "8 32 32 8")
[ -z "${OPT:-}" ] || export CARGO_PROFILE_RELEASE_OPT_LEVEL=$OPT
out=$fw/target/footprint
mkdir -p "$out"
qemu=(qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic
      -semihosting-config enable=on,target=native)
elf=$fw/target/thumbv7em-none-eabihf/release/footprint

model_for() { # spec -> path of a model file
    if [ -f "$1" ]; then
        echo "$fw/$1"
    else
        local m
        m=$out/synth-$(echo "$1" | tr ' ' x).snae
        read -r c w h z <<< "$1"
        cargo run --release -q --manifest-path synth/Cargo.toml --target-dir target/synth \
            --target "$(rustc -vV | sed -n 's/^host: //p')" -- "$c" "$w" "$h" "$z" "$m" >&2
        echo "$m"
    fi
}

table=$out/table.md
{
    echo "| model (C, W, H, Z) | params | MACs/window | flash: code | flash: core code | flash: weights (.snae) | flash: detector initialiser (.data) | static RAM (.data+.bss) | size_of detector | peak stack of load / push | RAM besides window and weights | instructions/window | instructions/MAC | instructions/push, warming up |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
} > "$table"

for spec in "${specs[@]}"; do
    model=$(model_for "$spec")
    echo "== $spec: building and running $(basename "$model")" >&2
    SENSORAE_MODEL=$model cargo build --release -q ${FEATURES:+--features "$FEATURES"} --bin footprint
    timeout 300 "${qemu[@]}" -icount shift=0 -kernel "$elf" > "$out/run.txt" \
        || { echo "error: footprint run failed for $spec" >&2; cat "$out/run.txt" >&2; exit 1; }
    arm-none-eabi-size -A "$elf" > "$out/size.txt"
    # Core code: what `load` and `push` reach, by symbol attribution (see core-size.py).
    core=$(python3 "$fw/core-size.py" "$elf" | awk '$1 == "core_code_bytes" { print $2 }')
    awk -v label="$spec" -v opt="${OPT:-Cargo.toml}" -v core="$core" '
        FNR == NR { v[$1] = $2; next }
        $1 ~ /^\.(vector_table|text|rodata|data|bss|uninit)$/ { s[$1] = $2 }
        END {
            calib = v["calib_ticks_per_200000_insns"]
            if (calib == 0 || 200000 % calib != 0) {
                print "error: clock check failed: 200000 instructions took " calib " ticks" > "/dev/stderr"; exit 1
            }
            ipt = 200000 / calib
            n = v["channels"] * v["window"]
            code = s[".vector_table"] + s[".text"] + s[".rodata"] - v["model_bytes"] - v["stream_bytes"]
            ram = s[".data"] + s[".bss"] + s[".uninit"]
            other = ram - 4 * v["params"] - 4 * n + v["stack_peak_push"]
            win = v["ticks_scored_total_lo"] + 4294967296 * v["ticks_scored_total_hi"]
            win = win * ipt / v["pushes_scored"]
            warm = v["pushes_other"] ? v["ticks_other_total"] * ipt / v["pushes_other"] : 0
            printf "| %d, %d, %d, %d | %d | %d | %d B | %d B | %d B | %d B | %d B | %d B | %d B / %d B | %d B | %.0f | %.2f | %.0f |\n",
                v["channels"], v["window"], v["hidden"], v["latent"], v["params"], v["macs"],
                code, core, v["model_bytes"], s[".data"], ram, v["size_of_detector"],
                v["stack_peak_load"], v["stack_peak_push"], other, win, win / v["macs"], warm
            printf "%s: %d instructions per SysTick tick (clock check), %d windows scored, opt-level %s\n",
                label, ipt, v["pushes_scored"], opt > "/dev/stderr"
            printf "%s: peak stack of load %d B, of push %d B (model %d B, loaded in place)\n",
                label, v["stack_peak_load"], v["stack_peak_push"], v["model_bytes"] > "/dev/stderr"
        }' "$out/run.txt" "$out/size.txt" >> "$table"
done
cat "$table"

if [ $profile = 1 ]; then
    need_apt python3 python3
    model=$(model_for "${specs[0]}")
    echo "== profile: one scored window of $(basename "$model"), every instruction traced" >&2
    w=$(awk '/^window /{print $2}' "$out/run.txt")
    SENSORAE_MODEL=$model SENSORAE_STREAM_ROWS=$((w + 4)) cargo build --release -q ${FEATURES:+--features "$FEATURES"} --bin footprint
    timeout 600 "${qemu[@]}" -singlestep -d exec,nochain -D "$out/exec.log" -kernel "$elf" > /dev/null
    python3 - "$elf" "$out/exec.log" <<'PY'
# Attributes the instructions of the last `push` to the innermost sensorae function (through
# inlining, by the debug line tables) and to the innermost function of any crate.
import collections, re, subprocess, sys
elf, log = sys.argv[1], sys.argv[2]
syms = {}
for line in subprocess.run(["arm-none-eabi-nm", "-S", "-C", elf], capture_output=True, text=True).stdout.splitlines():
    p = line.split(None, 3)
    if len(p) == 4:
        syms[p[3]] = (int(p[0], 16), int(p[1], 16))
push, _ = syms["footprint::push"]
main, main_len = syms["footprint::__cortex_m_rt_main"]
pushes, cur = [], None
for line in open(log):
    pc = int(line.split("[")[1].split("/")[1], 16)
    if pc == push and cur is None:
        cur = []
    if cur is not None:
        if main <= pc < main + main_len:
            pushes.append(cur)
            cur = None
        else:
            cur.append(pc)
last = collections.Counter(pushes[-1])
out = subprocess.run(["arm-none-eabi-addr2line", "-e", elf, "-f", "-C", "-i", "-a"] + [hex(a) for a in sorted(last)],
                     capture_output=True, text=True).stdout
by_core, by_inner = collections.Counter(), collections.Counter()
for block in re.split(r"\n(?=0x[0-9a-f]{8}\n)", out.strip()):
    lines = block.split("\n")
    frames = lines[1::2]
    n = last[int(lines[0], 16)]
    by_core[next((f for f in frames if f.startswith("sensorae::")), frames[-1])] += n
    by_inner[frames[0]] += n
total = sum(last.values())
print(f"\ninstructions of the last (scored) push: {total}")
print("by sensorae function (callees inlined into it included):")
for f, n in by_core.most_common(30):
    print(f"  {n:7d} {100 * n / total:5.1f}%  {f[:100]}")
print("by innermost function:")
for f, n in by_inner.most_common(30):
    print(f"  {n:7d} {100 * n / total:5.1f}%  {f[:100]}")
PY
fi
