#!/usr/bin/env bash
# The GPU suite: peak memory and step time at Llama-2-7B's shapes (lora, rosa-robust, spa, fft) against
# the RoSA paper, Triton bf16 correctness, sparse kernel timings, NF4 merged vs unmerged evaluation.
# Under a time budget (--budget, default 450 s; never yet run on a GPU, so its real duration is unknown);
# writes the `gpu-suite` section of docs/benchmarks.md and docs/gpu-suite.json.
# Uses .venv/bin/python when present, else python3; installs nothing.
#
#   bash bench/gpu_suite.sh              # on a CUDA machine (exit 2 with one line on a CPU-only one)
#   bash bench/gpu_suite.sh --dry-run    # anywhere: every part's setup on the meta device, no writes
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
exec "$PY" bench/gpu_suite.py "$@"
