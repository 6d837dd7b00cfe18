#!/usr/bin/env bash
# The speed issue's device run, in one call (docs/gpu.md, "Speed and memory"). Needs .bench/ from
# scripts/benchmark_bundle.sh carried:
#   carry: [".bench"]
#   bash scripts/gpu_speed_check.sh
# Writes device.txt, bench.txt/json and low_vram_test.txt under $OUT (or ./out). The memory caps
# are scripts/gpu_memory_check.sh's (they need the rasteriser wheels, which do not fit beside .bench).
set -uo pipefail
out=${OUT:-out}
mkdir -p "$out" /tmp/site
export PYTHONUNBUFFERED=1
tar -xJf .bench/spconv.tar.xz -C /tmp/site
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
PYTHONPATH=/tmp/site timeout 480 python3 scripts/benchmark.py --official .bench/TRELLIS --step-cache 3 \
  --distilled-steps 2 --compile default --syncs --json "$out/bench.json" 2>&1 | tee "$out/bench.txt"
timeout 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/pipelines/test_low_vram.py 2>&1 | tail -3 \
  | tee "$out/low_vram_test.txt"
