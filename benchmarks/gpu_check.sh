#!/usr/bin/env bash
# Every GPU check of the project in one script, under 8 minutes (../shared/GPU.md):
#   1. the tests marked `gpu` (skipped cleanly without CUDA),
#   2. benchmarks/data_path.py --gpu-check: ResNet-50's data path (256 random images: calibration pass, plan,
#      refit, BN re-estimation, slice, check) on CUDA, timed by stage, and its CPU twin with 16 images,
#   3. benchmarks/gpu_bench.py: kernel and torch-Louvain results against the CPU engines,
#      RMCD timings of resnet50/resnet152/vgg16 on CPU numba and igraph, CUDA torch, CUDA kernel.
# Results (JSON + markdown + logs) go to $OUT, or benchmarks/results/ when unset.
# On the GPU test machine, run from the repository root with the wheels the machine lacks in .whl/
# (benchmarks/gpu_wheels.sh downloads them here); the code runs from the source tree.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/gpu_env.log"

timeout 130 python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
[ "$tests_rc" -eq 5 ] && tests_rc=0  # nothing selected is not a failure here

timeout 200 python3 benchmarks/data_path.py --gpu-check "$OUT" 2>&1 | tee "$OUT/gpu_data_path.log"
data_rc=${PIPESTATUS[0]}

timeout 150 python3 benchmarks/gpu_bench.py --out "$OUT" 2>&1 | tee "$OUT/gpu_bench.log"
bench_rc=${PIPESTATUS[0]}

echo "gpu tests: rc=$tests_rc; data path: rc=$data_rc; gpu bench: rc=$bench_rc"
[ "$tests_rc" -eq 0 ] && [ "$data_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
