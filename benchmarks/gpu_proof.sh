#!/usr/bin/env bash
# The GPU proof in one run, sized for about 7 minutes on one H100 or H200: every GPU test (kernels
# against the CPU twin in every dtype and layout, stream order, compute-sanitizer memcheck and
# racecheck), the kernels' write rate against the device-to-device copy, the four pipelines with
# ResNet50 (224 px, bf16) and the light model on one loader worker, and the trainer's GPU path
# (bf16 autocast, images drawn by the CUDA kernel, a kill and a resume).
#
#   bash benchmarks/gpu_proof.sh [RESULTS_DIR]       # default benchmarks/results/<gpu>-<date>
#
# Packages the GPU machine lacks travel as wheels in .whl/ (benchmarks/gpu_wheels.sh makes them);
# they are installed into /tmp/site first. When $OUT is set (a folder that is copied back from the
# GPU machine), the results folder is also packed into $OUT/gpu-proof.tar.gz, with report.md beside it.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi || true
log=$(mktemp)
python3 -m benchmarks.run_all --gpu-proof ${1:+--out "$1"} 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
dir=$(sed -n 's/^wrote \(.*\)\/report\.md.*/\1/p' "$log" | tail -n 1)
if [ -n "${OUT:-}" ] && [ -n "$dir" ]; then
  cp "$log" "$dir/logs/gpu_proof.log"
  tar -czf "$OUT/gpu-proof.tar.gz" -C "$(dirname "$dir")" "$(basename "$dir")"
  cp "$dir/report.md" "$OUT/report.md"
fi
exit "$rc"
