#!/usr/bin/env bash
# One short GPU check (under 5 minutes): the hot paths on CUDA vs CPU. Output goes into docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python benchmarks/gpu_check.py
