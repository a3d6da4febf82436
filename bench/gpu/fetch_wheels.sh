#!/usr/bin/env bash
# Fetch the wheels bench/gpu/run.sh installs on the bare H200 (Python 3.12, x86-64, no network there).
#
#   bench/gpu/fetch_wheels.sh [DIR]        # default bench/gpu/wheels (git-ignored; never commit wheels)
#
# Only what the GPU image lacks (docs/gpu.md): deepspeed (+ hjson, pydantic and its three), open_clip_torch (+ ftfy,
# wcwidth), webdataset (+ braceexpand) and PyAV. Ray (~70 MB) and decord (no cp312 wheel) stay behind: the bench
# needs neither. Versions are this repo's venv's, so the GPU runs what the CPU tests ran. The whole folder plus the
# working tree must stay under the device tool's 64 MiB a call; the script prints the total.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-bench/gpu/wheels}
PY=${PYTHON:-/work/main/.venv/bin/python}
mkdir -p "$DIR"
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
ver() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
pure=(hjson pydantic annotated-types typing-inspection open_clip_torch ftfy wcwidth webdataset braceexpand)
binary=(pydantic_core av)
specs=()
for p in "${pure[@]}"; do specs+=("$p==$(ver "$p")"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
  "${PLAT[@]}" --platform any -d "$DIR" "${specs[@]}"
for p in "${binary[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    "${PLAT[@]}" -d "$DIR" "$p==$(ver "$p")"
done
# DeepSpeed ships an sdist only: build a pure-Python wheel (no ops compiled; torch_adam needs none). Built on a machine
# without CUDA it records accelerator_name='cpu', which DeepSpeed reads only to reuse prebuilt ops (there are none);
# run.sh sets DS_ACCELERATOR=cuda on the GPU, which is what picks the accelerator.
DSV=$(ver deepspeed)
if ! ls "$DIR"/deepspeed-"$DSV"-*.whl >/dev/null 2>&1; then
  DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DIR" "deepspeed==$DSV"
fi
# One version of each: two copies of a name stop the install on the GPU machine.
dups=$(ls "$DIR"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
[ -z "$dups" ] || { echo "more than one version of: $dups (delete the extra wheels in $DIR)"; exit 1; }
ls -l "$DIR"/*.whl | awk '{printf "%8.2f MiB  %s\n", $5/1048576, $9}'
du -cb "$DIR"/*.whl | tail -1 | awk '{printf "wheels: %.2f MiB of the 64 MiB a call (the working tree counts too)\n", $1/1048576}'
