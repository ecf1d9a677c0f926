#!/usr/bin/env bash
# Download, into .whl/, the wheels bench/engine_gpu.py needs on the lent GPU machine beyond what its
# image already has (it has torch, transformers, peft, accelerate, opencv, pillow, numpy, but not
# diffusers nor pydantic-settings), at the versions the tests here use. Run after ./scripts/test has
# made .venv. Then, on the GPU machine (the device tool: carry [".whl"]):
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1 || exit;
#   python3 bench/engine_gpu.py --family sdxl ... ; cp bench/results/engine_gpu-* $OUT/
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(diffusers pydantic pydantic_core pydantic-settings python-dotenv annotated-types typing-inspection importlib_metadata)
pins=()
for name in "${packages[@]}"; do
    pins+=("$name==$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$name'))")")
done
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${pins[@]}"
ls -1 .whl
