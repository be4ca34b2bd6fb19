#!/usr/bin/env bash
# The full recipe (ResNet-18, SGD 0.1, momentum 0.9, wd 5e-4, batch 128, clip 5.0,
# crop + flip + rotation) with OGC-CE on the shared CIFAR-10 copy under 50% symmetric
# noise, on one GPU, meant to finish within about 10 minutes (not yet timed on a
# GPU; lower EPOCHS if it does not): EPOCHS epochs (default 30) with the
# learning-rate drops at 1/3 and 2/3 of them. Prints images/s and the test accuracy
# of every epoch, and what a 150-epoch run would take at that speed.
#
# Usage: bash experiments/gpu_cifar10.sh [WORKDIR] [extra --config.KEY=VALUE ...]
#   EPOCHS=20 DTYPE=bfloat16 METHOD=ce bash experiments/gpu_cifar10.sh runs/gpu_ce
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORKDIR=${1:-runs/gpu_cifar10_${METHOD:-ogc_ce}}
shift || true

if ! "$PY" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
  if command -v nvidia-smi >/dev/null; then
    echo "jax has no GPU backend: installing jax[cuda12]==0.10.2 and the requirements" >&2
    "$PY" -m pip install -q "jax[cuda12]==0.10.2" \
      -r <(grep -v -E '^(jax|jaxlib)([[]|=)' requirements.txt)
  else
    echo "warning: no GPU here; running on $("$PY" -c 'import jax; print(jax.default_backend())')" >&2
  fi
fi

"$PY" -m experiments.train --config experiments/configs/cifar10.py \
  --workdir "$WORKDIR" --config.method="${METHOD:-ogc_ce}" \
  --config.noise.kind=symmetric --config.noise.rate=0.5 \
  --config.num_epochs="${EPOCHS:-30}" --config.dtype="${DTYPE:-float32}" "$@"

"$PY" - "$WORKDIR" <<'PY'
import sys
from experiments import workdir
rows = workdir.read_metrics(sys.argv[1])
print("| epoch | test acc | train acc (clean) | noisy memorised | tau | est. noise | images/s |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for r in rows:
  tau = "-" if r["tau"] is None else f"{r['tau']:.3g}"
  est = "-" if r["estimated_noise_rate"] is None else f"{r['estimated_noise_rate']:.2f}"
  print(f"| {r['epoch']} | {r['test_accuracy']:.4f} | {r['train_accuracy_clean']:.4f} | "
        f"{r['train_accuracy_noisy']:.4f} | {tau} | {est} | {r['images_per_second']:.0f} |")
steady = sorted(r["epoch_time_s"] for r in rows[1:]) or [rows[0]["epoch_time_s"]]
per_epoch = steady[len(steady) // 2]
print(f"\nmedian epoch (training + evaluation): {per_epoch:.1f} s; "
      f"a 150-epoch run would take about {150 * per_epoch / 60:.0f} min")
PY
