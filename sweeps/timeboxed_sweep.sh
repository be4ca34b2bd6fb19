#!/usr/bin/env bash
# Runs a sweep spec for at most TOTAL_S seconds of wall-clock time and leaves
# the finished runs' records in one archive, $OUT/records.tar.gz, to merge
# into the spec's root elsewhere (`python -m sweeps.lease merge`).
#
# For a machine you hold for a fixed time without network: a batch-queue
# slot, a preemptible or spot instance. What it assumes:
#   * the repository is the working directory's checkout, with its Python
#     packages installed, or given as wheels in $WHEELS (installed without
#     network into a temporary folder on PYTHONPATH);
#   * the spec's data is already on the machine: TFDS data in the folder the
#     spec's config names, or a CIFAR-10 image-folder archive
#     (cifar10-jpeg.tar.gz) in $ARCHIVE_DIR;
#   * only $OUT needs to come back: the records of finished runs (config,
#     metrics, result, the end of the log; a few hundred KB a run), never
#     checkpoints. The runs themselves go to $WORK. A run unfinished at the
#     deadline is stopped and dropped; the next slot runs it again (runs
#     whose records are already merged under the spec's root are skipped).
# Phases, each under `timeout`, so that a slow one cannot eat the rest:
#   1. wheels: installs $WHEELS/*.whl, if any;
#   2. device: prints JAX's backend and devices; stops unless it is $DEVICE;
#   3. data:   loads the spec's data once (`sweeps.lease prepare`);
#   4. runs:   `sweeps.lease run`: the spec's unfinished runs, JOBS at a
#              time, each started only if it is expected to end in the time
#              left; each finished run's record goes into the archive as soon
#              as it ends, beside lease.json and lease.md (what happened to
#              each run);
#   5. report: what is in $OUT.
# The whole output is also in $OUT/timeboxed_sweep.log.
#
# Usage: OUT=DIR TOTAL_S=SECONDS bash sweeps/timeboxed_sweep.sh SPEC \
#          [more `sweeps.lease run` flags, which override the script's]
# Environment:
#   OUT          output folder (required)
#   TOTAL_S      wall-clock seconds for the whole script (required)
#   JOBS         runs at a time (1); on a GPU each takes 0.9/JOBS of its memory
#   RUN_SECONDS  how long one run takes, used until a run of the spec has
#                finished (then the longest finished run's wall time is used)
#   DEVICE       gpu | tpu | cpu | any (any): stop unless JAX's backend is this
#   WHEELS       folder of wheels to install without network (none)
#   WORK         folder of the runs (runs/lease/<spec name>)
#   ARCHIVE_DIR  folder holding cifar10-jpeg.tar.gz for dataset=cifar10_jpeg
#   PYTHON       the interpreter (python3)
# Example, on a CPU (tests/test_lease.py runs the same):
#   OUT=/tmp/slot TOTAL_S=300 JOBS=2 RUN_SECONDS=60 \
#     bash sweeps/timeboxed_sweep.sh sweeps/specs/digits_rehearsal.json
set -uo pipefail
cd "$(dirname "$0")/.."
SPEC=${1:?usage: OUT=DIR TOTAL_S=SECONDS bash sweeps/timeboxed_sweep.sh SPEC [flags]}
shift
: "${OUT:?set OUT to the output folder}"
: "${TOTAL_S:?set TOTAL_S to the wall-clock seconds the script may take}"
PY=${PYTHON:-python3}
JOBS=${JOBS:-1}
DEVICE=${DEVICE:-any}
WHEELS=${WHEELS:-}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
exec > >(tee "$OUT/timeboxed_sweep.log") 2>&1

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

echo "== $SPEC: ${TOTAL_S} s in all, $JOBS runs at a time; $(date -u +%FT%TZ)"

if [[ -n $WHEELS ]] && compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE=${TMPDIR:-/tmp}/timeboxed_sweep_site
  phase wheels 60 "$PY" -m pip install -q --no-index --no-deps --target "$SITE" \
    "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
else
  echo "== wheels: none"
fi

phase device 60 env XLA_PYTHON_CLIENT_PREALLOCATE=false DEVICE="$DEVICE" "$PY" -c '
import os, sys
import jax
backend, wanted = jax.default_backend(), os.environ["DEVICE"]
print("jax", jax.__version__, "backend", backend, jax.devices())
if wanted not in ("any", backend):
  sys.exit(f"JAX sees no {wanted} (backend {backend}); DEVICE=any goes on")
' || exit 1

if [[ -n ${ARCHIVE_DIR:-} ]]; then
  OGC_SHARED_DATA=$(cd "$ARCHIVE_DIR" && pwd) || exit 1
  export OGC_SHARED_DATA
  echo "== data: archives in $OGC_SHARED_DATA"
fi
phase data $((TOTAL_S / 3)) env JAX_PLATFORMS=cpu "$PY" -m sweeps.lease \
  prepare --spec "$SPEC" ${WORK:+--work "$WORK"} || exit 1

# `lease run` stops its runs at its own deadline; the outer `timeout` is a
# backstop, and 30 s stay for the report.
budget=$((TOTAL_S - SECONDS - 30))
phase runs $((budget + 20)) "$PY" -m sweeps.lease run --spec "$SPEC" \
  ${WORK:+--work "$WORK"} \
  --budget-s "$budget" --out "$OUT" --jobs "$JOBS" \
  ${RUN_SECONDS:+--run-seconds "$RUN_SECONDS"} --no-prepare "$@"
rc=$?

echo "== report (at ${SECONDS} s)"
ls -l "$OUT"
cat "$OUT/lease.md" 2>/dev/null
exit $rc
