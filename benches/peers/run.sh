#!/usr/bin/env bash
# Ours against PyTorch and ONNX Runtime in one run: builds our side, makes its own Python
# virtual environment (torch, onnxruntime, numpy, onnx from PyPI), trains and exports the
# SKAB-size model, then alternates ours and theirs round by round.
#
# Usage: benches/peers/run.sh [--json] [--threads 1|default] [--rounds N] [--epochs N]
# Env: CARGO_TARGET_DIR (default <repo>/target), PEERS_VENV (default $CARGO_TARGET_DIR/peers-venv),
#      SKAB_CSV (default ../shared/data/skab/anomaly-free/anomaly-free.csv beside the repo).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
venv=${PEERS_VENV:-$CARGO_TARGET_DIR/peers-venv}
data=${SKAB_CSV:-$root/../shared/data/skab/anomaly-free/anomaly-free.csv}
work=$CARGO_TARGET_DIR/peers
mkdir -p "$work"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import torch, onnxruntime, numpy, onnx' 2>/dev/null; then
    # PyPI's Linux torch wheel is the CUDA build (about 5.5 GB installed with its nvidia-*
    # dependencies); PyPI has no CPU-only one. The GPU is never used here.
    "$venv/bin/pip" install --quiet torch onnxruntime numpy onnx >&2
fi

cargo build --quiet --release --manifest-path "$here/Cargo.toml" >&2
bin=$CARGO_TARGET_DIR/release/sensorae-peers
"$bin" make-model "$data" "$work/model.snae"
"$bin" export "$work/model.snae" "$data" "$work/model.json"
exec "$venv/bin/python" "$here/peers.py" --bin "$bin" --model "$work/model.snae" \
    --data "$data" --export "$work/model.json" --onnx "$work/model.onnx" "$@"
