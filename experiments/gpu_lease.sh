#!/usr/bin/env bash
# One GPU lease of a sweep spec, run on the lent machine (README, "Running on a
# GPU"). Phases, each under `timeout` so that a slow one cannot eat the rest:
#   1. wheels: installs the carried wheels ($WHEELS/*.whl) and puts them on PYTHONPATH;
#   2. device: names the card, and stops unless JAX sees a GPU (ALLOW_CPU=1: go on);
#   3. data:   unpacks and decodes the data once (the carried CIFAR-10 archive
#              in $SHARED_DATA becomes OGC_SHARED_DATA);
#   4. bench:  with BENCH=1 only: `benchmarks.train_loop` (per-step loop, epoch
#              loop, JOBS runs as processes at once; bfloat16 and
#              float32) and `benchmarks.resnet_step` (OGC's cost per step);
#   5. runs:   `python -m experiments.lease run`: the spec's unfinished runs that
#              fit in the time left, JOBS at a time; each finished run's record
#              goes into $OUT/records.tar.gz as soon as it ends;
#   6. report: what is in $OUT.
# The whole script keeps within TOTAL_S seconds; its output is also in
# $OUT/gpu_lease.log.
#
# Usage: OUT=DIR bash experiments/gpu_lease.sh [SPEC] [more `lease run` flags]
#   SPEC defaults to experiments/sweeps/cifar10_resnet18.json; flags after it
#   go to `experiments.lease run` and override the script's own.
# Environment: OUT (required), TOTAL_S (570), JOBS (4), RUN_SECONDS (450: how
#   long a run takes while no run of the spec has finished), WHEELS (.whl),
#   SHARED_DATA (.data), ALLOW_CPU (0), PYTHON (python3), BENCH (0), BENCH_S
#   (420: the benchmarks' share of TOTAL_S), BENCH_FLAGS (more flags for both
#   benchmarks, e.g. --quick in a rehearsal).
# A rehearsal on the CPU:
#   OUT=/tmp/lease ALLOW_CPU=1 JOBS=2 RUN_SECONDS=60 \
#     bash experiments/gpu_lease.sh experiments/sweeps/digits_rehearsal.json
set -uo pipefail
cd "$(dirname "$0")/.."
SPEC=${1:-experiments/sweeps/cifar10_resnet18.json}
shift || true
: "${OUT:?set OUT to the output folder}"
PY=${PYTHON:-python3}
TOTAL_S=${TOTAL_S:-570}
JOBS=${JOBS:-4}
RUN_SECONDS=${RUN_SECONDS:-450}
WHEELS=${WHEELS:-.whl}
SHARED_DATA=${SHARED_DATA:-.data}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_lease.log") 2>&1

phase() {  # phase NAME LIMIT_S COMMAND...: COMMAND under `timeout LIMIT_S`
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  if (( limit < 1 )); then
    echo "== $name: no time left"
    return 124
  fi
  echo "== $name (at ${t0} s, limit ${limit} s)"
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  return $rc
}

echo "== lease of $SPEC: ${TOTAL_S} s in all, $JOBS runs at a time; $(date -u +%FT%TZ)"

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE=${TMPDIR:-/tmp}/ogc_lease_site
  phase wheels 60 "$PY" -m pip install -q --no-index --no-deps --target "$SITE" \
    "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
else
  echo "== wheels: none in $WHEELS"
fi

if command -v nvidia-smi >/dev/null; then
  timeout 20 nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version \
    --format=csv
fi
phase device 60 env XLA_PYTHON_CLIENT_PREALLOCATE=false "$PY" -c '
import os, sys
import jax, ml_collections
print("jax", jax.__version__, "backend", jax.default_backend(), jax.devices())
if jax.default_backend() != "gpu" and os.environ.get("ALLOW_CPU") != "1":
  sys.exit("JAX sees no GPU: the runs would not finish (ALLOW_CPU=1 goes on)")
' || exit 1

if [[ -f $SHARED_DATA/cifar10-jpeg.tar.gz ]]; then
  OGC_SHARED_DATA=$(cd "$SHARED_DATA" && pwd)
  export OGC_SHARED_DATA
  echo "== data: OGC_SHARED_DATA=$OGC_SHARED_DATA"
fi
phase data 180 env JAX_PLATFORMS=cpu "$PY" -m experiments.lease prepare \
  --spec "$SPEC" || exit 1

if [[ ${BENCH:-0} == 1 ]]; then
  bench_end=$((SECONDS + ${BENCH_S:-420}))
  phase bench-loop $((bench_end - SECONDS - 120)) "$PY" -m benchmarks.train_loop \
    --pack "$JOBS" ${BENCH_FLAGS:-}
  phase bench-step $((bench_end - SECONDS)) "$PY" -m benchmarks.resnet_step \
    --repeats 3 ${BENCH_FLAGS:-}
fi

# The lease stops its runs at its own deadline; the outer `timeout` is a
# backstop, and 30 s stay for the report.
budget=$((TOTAL_S - SECONDS - 30))
phase runs $((budget + 20)) "$PY" -m experiments.lease run --spec "$SPEC" \
  --budget-s "$budget" --out "$OUT" --jobs "$JOBS" --run-seconds "$RUN_SECONDS" \
  --no-prepare "$@"
rc=$?

echo "== report (at ${SECONDS} s)"
ls -l "$OUT"
cat "$OUT/lease.md" 2>/dev/null
exit $rc
