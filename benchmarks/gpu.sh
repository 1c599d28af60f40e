#!/usr/bin/env bash
# GPU throughput of the study's six backbones (bare model vs the full locbench pipeline) in one short run.
# Needs only the repository and its pip-installed dependencies: random init, synthetic data, no internet.
# Writes benchmarks/out/bench_gpu.json and bench_gpu.md. Extra arguments go to bench_gpu.py, e.g.
#   bash benchmarks/gpu.sh --sizes 256 --budget-s 300
# Before borrowing a GPU, on any machine: the same code paths on the CPU with tiny models (bench_gpu_dry_run.json)
#   bash benchmarks/gpu.sh --dry-run
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv 2>/dev/null || true
exec timeout 540 "$PY" benchmarks/bench_gpu.py "$@"
