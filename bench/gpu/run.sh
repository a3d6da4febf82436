#!/usr/bin/env bash
# The one prepared GPU call of vtl (docs/gpu.md): install the carried wheels on the bare H200, then the gpu tests and
# the encoder / decode / 7B training / eval measurements, each phase time-boxed; figures and log under $OUT.
#
#   bench/gpu/run.sh [--wheels DIR] [--out DIR] [--dry-run] [gpu_bench.py options, e.g. --only encoder,eval]
#
# On the device machine (carry bench/gpu/wheels):  bench/gpu/run.sh            (~8 minutes; writes $OUT)
# Here, on CPU, tiny sizes, under 2 minutes:       bench/gpu/run.sh --dry-run  (writes bench/out/gpu-dry)
set -uo pipefail
cd "$(dirname "$0")/../.."
WHEELS=bench/gpu/wheels
DRY=0
OUTDIR=""
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS=$2; shift 2 ;;
    --out) OUTDIR=$2; shift 2 ;;
    --dry-run) DRY=1; PASS+=("$1"); shift ;;
    *) PASS+=("$1"); shift ;;
  esac
done
if [ "$DRY" = 1 ]; then
  OUTDIR=${OUTDIR:-bench/out/gpu-dry}
  PY=${PYTHON:-$( [ -x /work/main/.venv/bin/python ] && echo /work/main/.venv/bin/python || echo python3 )}
  export DS_ACCELERATOR=cpu
else
  OUTDIR=${OUTDIR:-${OUT:-bench/out/gpu}}
  PY=${PYTHON:-python3}
  export DS_ACCELERATOR=cuda
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    t=$(date +%s)
    # --no-deps: the image has every dependency but the carried ones (fetch_wheels.sh names them all).
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/vtl-site \
      "$WHEELS"/*.whl || echo "WARNING: wheel install failed; phases needing deepspeed/open_clip/av will say so"
    export PYTHONPATH=/tmp/vtl-site${PYTHONPATH:+:$PYTHONPATH}
    echo "wheels installed from $WHEELS in $(( $(date +%s) - t ))s"
  else
    echo "WARNING: no wheels in $WHEELS (run bench/gpu/fetch_wheels.sh here and carry the folder)"
  fi
fi
mkdir -p "$OUTDIR"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false \
  RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1
"$PY" bench/gpu/gpu_bench.py --out "$OUTDIR" "${PASS[@]}" 2>&1 | tee "$OUTDIR/gpu_bench.log"
exit "${PIPESTATUS[0]}"
