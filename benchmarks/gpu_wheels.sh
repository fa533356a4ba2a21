#!/usr/bin/env bash
# Wheels, for a GPU machine without network, of the packages it lacks (its Python 3.12 already has
# torch, cupy, accelerate, timm, pyarrow, scikit-learn, safetensors, fsspec, xxhash, pyyaml, tqdm):
# the versions installed here, for CPython 3.12 on manylinux x86-64, into .whl/ (git ignores it).
# DALI's wheel is larger than one transfer carries and is not included.
#
#   bash benchmarks/gpu_wheels.sh        # then: bash benchmarks/gpu_proof.sh on the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(webdataset braceexpand awkward awkward-cpp uproot cramjam)
mkdir -p .whl
for name in "${packages[@]}"; do
  version=$(python3 -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  spec=${version:+$name==$version}
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${spec:-$name}"
done
du -ch .whl/*.whl | tail -n 1
