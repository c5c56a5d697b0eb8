#!/usr/bin/env bash
# Copies the op and pass references that the build generates from ODS
# (mlir-tblgen -gen-op-doc / -gen-pass-doc) into docs/reference/.
# test/Docs/reference-up-to-date.test fails when they drift.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
mkdir -p docs/reference
for doc in NNOps MoeOps ExecOps Passes; do
  cp "$build_dir/docs/gen/$doc.md" "docs/reference/$doc.md"
done
echo "docs/reference/ updated from $build_dir/docs/gen/"
