#!/usr/bin/env bash
# Sets up, builds and runs every test (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
build_dir=${FLEXMOE_BUILD_DIR:-build}
jobs=${FLEXMOE_JOBS:-$(nproc)}

# The runtime and the plan library on their own, with no MLIR or LLVM in
# sight: proves they build and link without them (DESIGN.md, principle 1).
# Without CUDA too (the full build below compiles the CUDA backend): the
# trainer must build where no toolkit is installed.
cmake -S . -B "$build_dir-runtime" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DFLEXMOE_BUILD_COMPILER=OFF -DFLEXMOE_ENABLE_CUDA=OFF >/dev/null
cmake --build "$build_dir-runtime" -j "$jobs" --target flexmoe_runtime flexmoe-unittests flexmoe-run

# Everything: lit (dialects, passes, tools) and the GoogleTests.
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build_dir" -j "$jobs" --target check
