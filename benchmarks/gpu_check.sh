#!/bin/bash
# Every GPU check of docs/performance.md in one run, for a session with a CUDA machine
# (about six minutes on an H100, most of it compiling):
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# 1. The CUDA tests of the graphed backend, each in its own process: a failed CUDA graph
#    capture leaves the process's CUDA random generator unusable, which would fail every later
#    test in it. Exit status per test in OUT_DIR/graphed_tests.txt, logs of failures in
#    OUT_DIR/graphed_failures.log.
# 2. The other CUDA tests (compiled step, cuDNN path, checkpoints, RNG) -> OUT_DIR/tests.log.
# 3. benchmarks/gpu.py -> OUT_DIR/gpu.json and gpu.md.
# Needs pytest-xdist and pytest-timeout (both on the lent machines) and runs from the repo root
# with src/ on the path. If every graphed test passes, `auto` may start picking the graphed
# backend (src/lstmkit/nn/backends/__init__.py, PREFERENCE).
set -u
out=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
logs=$(mktemp -d)
python3 -m pytest --collect-only -q -p no:cacheprovider tests/nn/test_graphed.py \
  | grep '::' | grep -E 'cuda|alive' > "$logs/ids"
one() {
  name=$(echo "$2" | tr -c 'a-zA-Z0-9\n' '_')
  timeout 300 python3 -m pytest -q -p no:cacheprovider "$2" > "$1/$name.log" 2>&1
  echo "$? $2" >> "$1/results"
}
export -f one
xargs -P 8 -I{} bash -c 'one "$0" "{}"' "$logs" < "$logs/ids"
sort -k2 "$logs/results" > "$out/graphed_tests.txt"
while read -r status id; do
  [ "$status" = 0 ] || { echo "=== $id (exit $status)"; tail -40 "$logs/$(echo "$id" | tr -c 'a-zA-Z0-9\n' '_').log"; }
done < "$out/graphed_tests.txt" > "$out/graphed_failures.log"
echo "graphed tests (exit status, test):"; cat "$out/graphed_tests.txt"
parallel=$(python3 -c "import xdist, pytest_timeout" 2>/dev/null && echo "-n 8 --timeout 300")
timeout 400 python3 -m pytest -q -p no:cacheprovider -rs $parallel \
  tests/nn/test_compiled.py tests/training/test_checkpoint.py tests/training/test_rng.py \
  > "$out/tests.log" 2>&1
echo "other CUDA tests: $(tail -1 "$out/tests.log")"
timeout 400 python3 benchmarks/gpu.py --out "$out/gpu.json" > "$out/gpu.log" 2>&1
echo "gpu.py exit status $?"; tail -16 "$out/gpu.log"
