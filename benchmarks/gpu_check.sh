#!/usr/bin/env bash
# One short GPU check (a few minutes): the hot paths on CUDA vs CPU, then the assignment at 128 px (issue 13: the
# paper's SSIM+L1 cost vs the default L2, bfloat16 G(Q)) and the epoch side by side at 128 px on CUDA (NeuroSQL paper
# setting vs defaults vs VAE vs GAN: s / epoch, assignment share, peak memory). Output goes into docs/benchmarks.md.
# QUICK=1 bash benchmarks/gpu_check.sh: the same script on tiny sizes on the CPU (a smoke test, no GPU numbers).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${QUICK:-0}" == "1" ]]; then
    python benchmarks/gpu_check.py --device cpu --quick
    python benchmarks/bench_epoch_side_by_side.py --quick
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python benchmarks/gpu_check.py
if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    python benchmarks/bench_epoch_side_by_side.py --device cuda --threads 4 --sizes 128 --n-128 2000 --epochs 4 \
        --variants paper default
fi
