"""Ours against PyTorch and ONNX Runtime in one run, alternating the two sides round by round.

Ours runs in the `sensorae-peers serve` process (one thread); theirs here, pinned to one thread
unless --threads default. Reports medians over rounds and ratios ours-over-theirs (higher is
better for us). See benches/README.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn
import onnxruntime as ort


def activation(a):
    if a == "linear":
        return nn.Identity()
    if a == "tanh":
        return nn.Tanh()
    if a == "relu":
        return nn.ReLU()
    if a == "sigmoid":
        return nn.Sigmoid()
    return nn.LeakyReLU(a["leaky_relu"])


def build(doc, load_weights):
    n, h, z = doc["n"], doc["h"], doc["z"]
    a = [activation(x) for x in doc["acts"]]
    model = nn.Sequential(
        nn.Linear(n, h), a[0], nn.Linear(h, z), a[1], nn.Linear(z, h), a[2], nn.Linear(h, n), a[3]
    )
    linears = [model[0], model[2], model[4], model[6]]
    p = doc["params"]
    if load_weights:
        # Our weights are column-major with rows = outputs; torch's are row-major [out, in].
        for lin, (w, b) in zip(linears, [("w1", "b1"), ("w2", "b2"), ("w3", "b3"), ("w4", "b4")]):
            out, inp = lin.weight.shape
            wt = np.asarray(p[w], dtype=np.float32).reshape(inp, out).T
            lin.weight.data = torch.from_numpy(np.ascontiguousarray(wt))
            lin.bias.data = torch.from_numpy(np.asarray(p[b], dtype=np.float32))
    else:
        # Our trainer's init for tanh/linear layers: Glorot-uniform weights, zero biases.
        for lin in linears:
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
    return model


def windows(rows, c, w, lo, hi):
    r = np.asarray(rows, dtype=np.float32).reshape(-1, c)[lo:hi]
    starts = range(0, len(r) - w + 1)
    return np.stack([r[s : s + w].reshape(-1) for s in starts])


class Ours:
    def __init__(self, binary, model, data):
        self.p = subprocess.Popen(
            [binary, "serve", model, data], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def ask(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        reply = json.loads(self.p.stdout.readline())
        if "error" in reply:
            sys.exit(f"ours: {reply['error']}")
        return reply


def per_call_ns(f, k):
    f()
    start = time.perf_counter_ns()
    for _ in range(k):
        f()
    return (time.perf_counter_ns() - start) / k


def torch_train(doc, xtr, xval, batch, epochs, seed):
    torch.manual_seed(seed)
    model = build(doc, load_weights=False)
    opt = torch.optim.Adam(model.parameters(), lr=doc["lr"], betas=(0.9, 0.999), eps=1e-8)
    xtr, xval = torch.from_numpy(xtr), torch.from_numpy(xval)
    start = time.perf_counter()
    val = None
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), batch):
            xb = xtr[perm[i : i + batch]]
            loss = ((model(xb) - xb) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        # Validation every epoch, as our trainer does.
        with torch.no_grad():
            model.eval()
            total = 0.0
            for i in range(0, len(xval), batch):
                xb = xval[i : i + batch]
                total += float(((model(xb) - xb) ** 2).mean()) * len(xb)
            val = total / len(xval)
    secs = time.perf_counter() - start
    return {"seconds": secs, "samples_per_s": len(xtr) * epochs / secs, "val_loss": val}


def fma_peak():
    """One core's f32 multiply-add peak in G/s, from /proc/cpuinfo: the nominal clock ("cpu
    MHz", the TSC rate on this VM) times 16 multiply-adds per cycle with AVX2 and FMA (two
    256-bit FMA pipes of 8 lanes, as on Zen 3 and Zen 4, whose AVX-512 runs on the same pipes
    in halves), else 8 (SSE: 4-lane multiply and add, two of each per cycle). Turbo clocks
    above the nominal one show as more than 100 %."""
    mhz, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "cpu MHz" and mhz is None:
                    mhz = float(value)
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    mhz = mhz or 2450.0
    per_cycle = 16 if {"avx2", "fma"} <= flags else 8
    return per_cycle * mhz / 1000, f"{per_cycle} per cycle x {mhz / 1000:.2f} GHz = {per_cycle * mhz / 1000:.1f} G/s"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--export", required=True)
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", default="1", help="'1' or 'default' for torch and ORT")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    doc = json.load(open(args.export))
    if args.threads == "1":
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
    threads = torch.get_num_threads()
    n, c, w = doc["n"], doc["c"], doc["w"]

    model = build(doc, load_weights=True).eval()
    rows = np.asarray(doc["rows"], dtype=np.float32).reshape(-1, c)
    x1 = torch.from_numpy(rows[:w].reshape(1, n).copy())
    with torch.inference_mode():
        parity = float(((model(x1) - x1) ** 2).mean())
    ours_first = doc["first_window_score"]
    if abs(parity - ours_first) > 1e-4 * max(1.0, abs(ours_first)):
        sys.exit(f"parity: torch scores the first window {parity}, ours {ours_first}")

    torch.onnx.export(
        model, (x1,), args.onnx, input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False,
    )
    so = ort.SessionOptions()
    if args.threads == "1":
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(args.onnx, so, providers=["CPUExecutionProvider"])
    x1np = x1.numpy()
    onnx_parity = float(((sess.run(None, {"x": x1np})[0] - x1np) ** 2).mean())
    if abs(onnx_parity - ours_first) > 1e-4 * max(1.0, abs(ours_first)):
        sys.exit(f"parity: onnxruntime scores the first window {onnx_parity}, ours {ours_first}")

    rng = np.random.default_rng(1)
    idx = rng.integers(0, len(rows) - w, 256)
    xb = torch.from_numpy(np.stack([rows[s : s + w].reshape(-1) for s in idx]))
    xbnp = xb.numpy()
    tr, va = doc["train_rows"], doc["val_rows"]
    xtr, xval = windows(doc["rows"], c, w, *tr), windows(doc["rows"], c, w, *va)

    ours = Ours(args.bin, args.model, args.data)
    keys = [
        "ours_b1_dyn", "ours_b1_fixed", "torch_b1", "ort_b1", "ours_b256", "torch_b256",
        "ort_b256", "ours_train32", "torch_train32", "ours_train256", "torch_train256",
    ]
    res = {k: [] for k in keys}
    vals = {"ours": [], "torch": []}

    def torch_b1():
        with torch.inference_mode():
            return per_call_ns(lambda: model(x1), 3000)

    def torch_b256():
        with torch.inference_mode():
            return per_call_ns(lambda: model(xb), 100) / 256

    for r in range(args.rounds):
        ours_side = [
            ("ours_b1_dyn", lambda: ours.ask("score_b1_dyn 30000")["ns_per_window"]),
            ("ours_b1_fixed", lambda: ours.ask("score_b1_fixed 30000")["ns_per_window"]),
            ("ours_b256", lambda: ours.ask("score_b256 100")["ns_per_window"]),
        ]
        their_side = [
            ("torch_b1", torch_b1),
            ("ort_b1", lambda: per_call_ns(lambda: sess.run(None, {"x": x1np}), 5000)),
            ("torch_b256", torch_b256),
            ("ort_b256", lambda: per_call_ns(lambda: sess.run(None, {"x": xbnp}), 100) / 256),
        ]
        # Alternate which side goes first, so drifting load hits both alike.
        for key, f in (ours_side + their_side) if r % 2 == 0 else (their_side + ours_side):
            v = f()
            if v is not None:
                res[key].append(v)
        for batch in (32, 256):
            sides = [("ours", None), ("torch", None)]
            if r % 2:
                sides.reverse()
            for side, _ in sides:
                if side == "ours":
                    o = ours.ask(f"train {batch} {args.epochs}")
                else:
                    o = torch_train(doc, xtr, xval, batch, args.epochs, seed=r)
                res[f"{side}_train{batch}"].append(o["samples_per_s"])
                if batch == 32:
                    vals[side].append(o["val_loss"])

    med = {k: statistics.median(v) if v else None for k, v in res.items()}
    out = {
        "score_b1_vs_torch": med["torch_b1"] / med["ours_b1_dyn"],
        "score_b1_vs_onnxruntime": med["ort_b1"] / med["ours_b1_dyn"],
        "score_b256_vs_torch": med["torch_b256"] / med["ours_b256"],
        "train_b32_vs_torch": med["ours_train32"] / med["torch_train32"],
        "train_b256_vs_torch": med["ours_train256"] / med["torch_train256"],
        "val_loss_ours": statistics.median(vals["ours"]),
        "val_loss_torch": statistics.median(vals["torch"]),
    }
    if med["ours_b1_fixed"]:
        out["score_b1_fixed_vs_torch"] = med["torch_b1"] / med["ours_b1_fixed"]
    out["score_b256_vs_onnxruntime"] = med["ort_b256"] / med["ours_b256"]
    # Multiply-adds per second at b256 against one core's FMA peak (benches/README.md).
    macs = 2 * n * doc["h"] + 2 * doc["h"] * doc["z"]
    peak, peak_how = fma_peak()
    out["fma_peak_gmacs"] = peak
    out["score_b256_gmacs"] = macs / med["ours_b256"]
    out["score_b256_fma_peak_pct"] = 100 * macs / med["ours_b256"] / peak
    if args.json:
        print(json.dumps(out))
        return
    print(f"model N={n} H={doc['h']} Z={doc['z']} ({macs} multiply-adds per window); "
          f"torch {torch.__version__} and onnxruntime {ort.__version__} on {threads} thread(s), "
          f"ours on 1; medians of {args.rounds} alternating rounds, {args.epochs} epochs per training")
    print(f"{'case':<34}{'ours':>14}{'torch':>14}{'onnxruntime':>14}{'ours/torch':>12}{'ours/ort':>10}")

    def row(name, o, t, x, unit, higher_better=False):
        def f(v):
            return "-" if v is None else f"{v:,.1f}"
        rt = (o / t if higher_better else t / o) if (o and t) else None
        rx = (o / x if higher_better else x / o) if (o and x) else None
        print(f"{name + ' (' + unit + ')':<34}{f(o):>14}{f(t):>14}{f(x):>14}"
              f"{'-' if rt is None else f'{rt:.1f}x':>12}{'-' if rx is None else f'{rx:.1f}x':>10}")

    row("score b1, DynDetector::push", med["ours_b1_dyn"], med["torch_b1"], med["ort_b1"], "ns")
    row("score b1, fixed Detector::push", med["ours_b1_fixed"], med["torch_b1"], med["ort_b1"], "ns")
    row("score b256, per window", med["ours_b256"], med["torch_b256"], med["ort_b256"], "ns")
    print(f"score b256, G multiply-adds/s (% of the FMA peak, {peak_how}): " + ", ".join(
        f"{side} {macs / med[k]:.1f} ({100 * macs / med[k] / peak:.0f} %)"
        for side, k in (("ours", "ours_b256"), ("torch", "torch_b256"), ("onnxruntime", "ort_b256"))
    ))
    row("train b32", med["ours_train32"], med["torch_train32"], None, "windows/s", True)
    row("train b256", med["ours_train256"], med["torch_train256"], None, "windows/s", True)
    print(f"final validation loss after {args.epochs} epochs at b32: ours {out['val_loss_ours']:.5f}, "
          f"torch {out['val_loss_torch']:.5f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
