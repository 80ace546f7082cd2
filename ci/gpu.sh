#!/usr/bin/env bash
# GPU run: the whole test suite on the GPU backends, `portaconv check`, the `gpu` benchmark suite
# (strict fp32, then TF32 on both sides) and, with --train, seed-cnn training on CuPy.
# Results go to benchmarks/results/ (JSON + markdown with GPU, driver, CUDA, CuPy, torch versions).
#
# Needs CuPy 13+ and an NVIDIA GPU; torch with CUDA for the oracle and the comparison. Without
# internet, put the wheels of array-api-compat, array-api-extra, array-api-strict, numba and llvmlite
# (the NumPy rows' kernels; without them NumPy runs the reference with a warning), and hypothesis,
# tqdm if missing, in a folder and pass it: WHEELS=/path/to/wheels ci/gpu.sh
# (default: ./.whl, then ../wheels). With internet, a normal `pip install` happens instead.
set -euo pipefail
cd "$(dirname "$0")/.."
train=0
for arg in "$@"; do [ "$arg" = "--train" ] && train=1; done
results=benchmarks/results
mkdir -p "$results"

wheels=${WHEELS:-}
[ -z "$wheels" ] && [ -d .whl ] && wheels=.whl
[ -z "$wheels" ] && [ -d ../wheels ] && wheels=../wheels
if [ -n "$wheels" ]; then
  # Offline: unpack the wheels into a private site directory; no build, no index.
  site=$(mktemp -d)
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  python3 -m pip install -q -e '.[test]'
fi
python3 - <<'PY'
import cupy, numpy, array_api_compat, array_api_extra
print("cupy", cupy.__version__, "numpy", numpy.__version__, "array_api_compat", array_api_compat.__version__,
      "array_api_extra", array_api_extra.__version__, "devices", cupy.cuda.runtime.getDeviceCount())
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$results/gpu-nvidia-smi.csv"

# 1. The parity matrix on the GPU backends (numpy kept as the CPU reference row); in parallel
#    where pytest-xdist is installed.
export PORTACONV_BACKENDS=${PORTACONV_BACKENDS:-cupy,torch-cuda,numpy}
set -o pipefail
parallel=()
python3 -c "import xdist" 2>/dev/null && parallel=(-n "${PYTEST_WORKERS:-8}")
python3 -m pytest -q -p no:cacheprovider "${parallel[@]}" tests 2>&1 | tee "$results/gpu-tests.log"

# 2. Every op on CuPy against float64 NumPy, without torch.
python3 -m portaconv check --backend cupy | tee "$results/gpu-check.log"

# 3. Speed against torch (cuDNN) on the same GPU: strict fp32 on both sides, then TF32 on both.
#    One process for all rows: on a GPU no thread pool or heap carries over between rows.
bench=(--suite gpu --backend cupy --repeat 20 --budget 2 --no-isolate --out "$results")
python3 -m portaconv bench "${bench[@]}" | tee "$results/gpu-bench.log"
CUPY_TF32=1 python3 -m portaconv bench "${bench[@]}" --tf32 | tee "$results/gpu-bench-tf32.log"

# 4. Training on the GPU (the default recipe, 30 epochs; docs/performance.md has the last run), images/s in
#    metrics.json. Fashion-MNIST must be findable offline: set PORTACONV_DATA to its folder.
if [ "$train" = 1 ]; then
  python3 -m portaconv train --backend cupy --no-progress --out "$results/train-cupy" | tee "$results/gpu-train.log"
fi
echo "results in $results/"
