#!/usr/bin/env bash
# The README's first command: sets up and builds flexmoe, compiles the tiny
# GPT-MoE preset for one CPU process and trains it on the built-in corpus
# (the King James Bible, byte-level) for 500 steps, then prints a summary
# with the eval loss beside the corpus's byte-unigram entropy.
#
# Everything lands in runs/gpt-moe-tiny/: the program, a metrics CSV and
# the final checkpoint. Extra arguments go to flexmoe-run (e.g. --steps 600).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
build_dir=${FLEXMOE_BUILD_DIR:-build}
jobs=${FLEXMOE_JOBS:-$(nproc)}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build_dir" -j "$jobs" --target flexmoe-compile flexmoe-run

run_dir=runs/gpt-moe-tiny
mkdir -p "$run_dir"
# 32 sequences of 64 bytes a step; lr 3e-3 peaks after a 50-step warm-up and
# decays (cosine) to 3e-4.
"$build_dir/bin/flexmoe-compile" --model gpt-moe-tiny --world-size 1 \
  --batch 32 --seq-len 64 --lr 3e-3 -o "$run_dir/gpt-moe-tiny.fmoe"
exec "$build_dir/bin/flexmoe-run" "$run_dir/gpt-moe-tiny.fmoe" \
  --steps 500 --eval-every 100 --log-every 10 \
  --metrics "$run_dir/metrics.csv" --checkpoint-dir "$run_dir/checkpoints" "$@"
