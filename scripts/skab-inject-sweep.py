#!/usr/bin/env python3
"""Rule v5's label-free selection (README, SKAB benchmark): 240 settings of the alarm knobs,
each run on the anomaly-free pieces with injected anomalies (`sensorae bench skab
--anomaly-free --inject`), variant ae, everything else the benchmark's defaults.

The rule, written down before the sweep was run:
  selected = the highest injected causal F1; ties broken by the lower injected causal FAR,
  then by the setting closest to v3 (rate 0.1, sigma:3, alarm 2/8, EWMA 1): first the fewest
  knobs that differ from v3, then the smallest sum over the knobs of the distance between
  their positions in the grid, then the first in the grid's order below.
The result is adopted as rule v5 iff its injected causal F1 is higher than v3's.

Runs sequentially (a 2-core machine). Writes one TSV row per setting (--out, default stdout)
and the selection to stderr; --labelled then runs the selected setting once on the 34
labelled files.

Usage: scripts/skab-inject-sweep.py [--bin PATH] [--data DIR] [--out FILE] [--labelled]
Build first: cargo build --release -p sensorae-host
"""

import argparse
import itertools
import json
import os
import subprocess
import sys

RATES = ["0.005", "0.01", "0.02", "0.05", "0.1"]
THRESHOLDS = ["sigma:3", "sigma:4", "sigma:5", "sigma:6"]
ALARM_ON = ["2", "4"]
ALARM_OFF = ["4", "8", "16"]
EWMA = ["1", "0.5"]
GRID = [RATES, THRESHOLDS, ALARM_ON, ALARM_OFF, EWMA]
FLAGS = ["--adapt-rate", "--threshold", "--alarm-on", "--alarm-off", "--ewma"]
V3 = ("0.1", "sigma:3", "2", "8", "1")


def set_string(setting):
    return " ".join(f"{flag} {value}" for flag, value in zip(FLAGS, setting))


def distance_to_v3(setting):
    """(knobs that differ from v3, summed grid-position distance to v3)."""
    differ = sum(a != b for a, b in zip(setting, V3))
    steps = sum(abs(g.index(a) - g.index(b)) for g, a, b in zip(GRID, setting, V3))
    return differ, steps


def bench(binary, data, setting, injected):
    args = [binary, "bench", "skab", "--data", data, "--json", "--set", set_string(setting)]
    if injected:
        args[3:3] = ["--anomaly-free", "--inject"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {(r["variant"], r["alignment"]): r for r in rows}


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", default=os.path.join(target, "release", "sensorae"))
    p.add_argument("--data", default=os.path.join(root, "..", "shared", "data", "skab"))
    p.add_argument("--out", help="TSV of all settings (default: stdout)")
    p.add_argument("--labelled", action="store_true",
                   help="then run the selected setting once on the 34 labelled files")
    a = p.parse_args()

    results = []
    out = open(a.out, "w") if a.out else sys.stdout
    print("rate\tthreshold\talarm_on\talarm_off\tewma\tf1\tfar\tmar\tlb_f1\tlb_far\tlb_mar",
          file=out)
    for i, setting in enumerate(itertools.product(*GRID)):
        rows = bench(a.bin, a.data, setting, injected=True)
        c, lb = rows[("ae", "causal")], rows[("ae", "leaderboard")]
        results.append((setting, c))
        print("\t".join(setting) + "\t" + "\t".join(
            f"{r[k]:.6f}" for r in (c, lb) for k in ("f1", "far", "mar")), file=out, flush=True)
        print(f"\r{i + 1}/240", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if a.out:
        out.close()

    def key(item):
        setting, c = item
        return (-c["f1"], c["far"], *distance_to_v3(setting))

    ranked = sorted(results, key=key)  # stable: grid order breaks any remaining tie
    best, c = ranked[0]
    tied = [s for s, r in ranked if key((s, r)) == key(ranked[0])]
    v3 = next(r for s, r in results if s == V3)
    say = lambda *x: print(*x, file=sys.stderr)
    say(f"selected: --set '{set_string(best)}'")
    say(f"  injected causal F1 {c['f1']:.3f} / FAR {c['far']:.2f} / MAR {c['mar']:.2f}")
    if len(tied) > 1:
        say(f"  ({len(tied)} settings tied on every criterion; the first in grid order taken)")
    say(f"v3: injected causal F1 {v3['f1']:.3f} / FAR {v3['far']:.2f} / MAR {v3['mar']:.2f}")
    adopted = c["f1"] > v3["f1"]
    say(f"adopted as rule v5: {'yes' if adopted else 'no'} (injected F1 {c['f1']:.6f} vs v3 "
        f"{v3['f1']:.6f})")
    if a.labelled:
        rows = bench(a.bin, a.data, best, injected=False)
        for al in ("causal", "leaderboard"):
            r = rows[("ae", al)]
            say(f"labelled ae {al}: F1 {r['f1']:.3f} / FAR {r['far']:.2f} / MAR {r['mar']:.2f}")


if __name__ == "__main__":
    main()
