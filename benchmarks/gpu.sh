#!/usr/bin/env bash
# Times the OGC routes (fused, per-example) against plain CE for a CIFAR
# ResNet-18 train step on one GPU, float32 and bfloat16; prints markdown tables.
# A few minutes on an H100 (six compilations included).
#
# Usage, from anywhere:  bash benchmarks/gpu.sh [benchmarks.resnet_step flags]
# e.g.  bash benchmarks/gpu.sh --repeats 3 --dtypes bfloat16
# PYTHON selects the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

has_gpu() {
  "$PY" -c 'import jax, sys; sys.exit(0 if jax.default_backend() == "gpu" else 1)' \
    >/dev/null 2>&1
}

if ! has_gpu; then
  echo "jax has no GPU backend: installing jax[cuda12]==0.10.2 and the requirements" >&2
  "$PY" -m pip install -q "jax[cuda12]==0.10.2" \
    -r <(grep -v -E '^(jax|jaxlib)([[]|=)' requirements.txt)
  has_gpu || { echo "still no GPU backend after the install; giving up" >&2; exit 1; }
fi

"$PY" - <<'PY'
import flax, jax, optax
print(f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}; "
      f"devices: {jax.devices()}")
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
echo
PYTHONUNBUFFERED=1 "$PY" -m benchmarks.resnet_step "$@"
