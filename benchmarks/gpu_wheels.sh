#!/usr/bin/env bash
# Download, here, the wheels the GPU test machine lacks (it has no package index) into .whl/,
# which .git/info/exclude must list and the device call must name in `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  python-igraph==1.0.0 igraph==1.0.0 texttable==1.7.2 torch-pruning==1.6.1
ls -la .whl
