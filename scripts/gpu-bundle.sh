#!/usr/bin/env bash
# Prepares gpu-bundle/: everything scripts/gpu-check.sh needs on a lent GPU
# machine (CUDA toolkit, PyTorch, no MLIR, no Debian packages, no network).
# Runs HERE, from anywhere in the repository:
#
#   scripts/gpu-bundle.sh [--compiler PATH] [--jobs N] [--out DIR]
#
#   --compiler PATH  flexmoe-compile for the .fmoe programs (default
#                    $FLEXMOE_COMPILE, else build/bin/flexmoe-compile, else
#                    /work/main/build/bin/flexmoe-compile)
#   --jobs N         ninja's parallelism (default 2)
#   --out DIR        the bundle (default gpu-bundle, in the repository root)
#
# It configures build-gpu (the runtime alone, sm_90a), builds flexmoe-run,
# flexmoe-gpu-tests, flexmoe-nccl-test and gpu_moe_layer, and assembles
#   bin/       the binaries, stripped
#   lib.tar.gz lib/: every shared library they load that a machine with only the
#              CUDA toolkit and PyTorch may lack (per ldd); never libcuda,
#              cudart, cuBLAS(Lt), NCCL (there, NCCL may be only in
#              PyTorch's site-packages: gpu-check.sh finds it) or glibc and
#              libstdc++/libgcc_s (the machine's own are newer), zlib (everywhere)
#   programs/  gpt-moe-tiny.fmoe and gpt-moe-small.fmoe (world size 1)
#   data/      corpus.txt: 1 MiB of the built-in corpus (the machine has
#              no bible-kjv to build it from)
#   scripts/   the Python scripts the check runs
#   MANIFEST   what is in it, with the commit it was built from
# Fails, naming the problem, if anything is missing or the bundle is not
# well under the device tool's 64 MiB.
set -euo pipefail

die() {
  echo "gpu-bundle: error: $*" >&2
  exit 1
}

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null) ||
  die "run it inside the flexmoe repository"
cd "$root"

compiler=${FLEXMOE_COMPILE:-}
jobs=2
out=gpu-bundle
while [ $# -gt 0 ]; do
  case "$1" in
  --compiler) [ $# -ge 2 ] || die "--compiler needs a path"; compiler=$2; shift 2 ;;
  --jobs) [ $# -ge 2 ] || die "--jobs needs a number"; jobs=$2; shift 2 ;;
  --out) [ $# -ge 2 ] || die "--out needs a folder"; out=$2; shift 2 ;;
  -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
  *) die "unknown argument '$1' (see --help)" ;;
  esac
done
if [ -z "$compiler" ]; then
  for candidate in build/bin/flexmoe-compile /work/main/build/bin/flexmoe-compile; do
    if [ -x "$candidate" ]; then compiler=$candidate; break; fi
  done
fi
[ -n "$compiler" ] || die "no flexmoe-compile found: build the compiler (build/bin) or pass --compiler PATH / set FLEXMOE_COMPILE"
[ -x "$compiler" ] || die "the compiler '$compiler' is not an executable file"
case "$jobs" in '' | *[!0-9]*) die "--jobs '$jobs' is not a number" ;; esac
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$nvcc" ] || die "no nvcc: the CUDA toolkit is needed to build the CUDA runtime"

# 1. The runtime alone, for Hopper.
configure_log=$(mktemp)
cmake -G Ninja -S . -B build-gpu -DFLEXMOE_BUILD_COMPILER=OFF \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a >"$configure_log" 2>&1 ||
  { tail -20 "$configure_log" >&2; die "cmake failed (its output above)"; }
grep -q "flexmoe: CUDA ON" "$configure_log" ||
  { rm -f "$configure_log"; die "build-gpu was configured without CUDA (is the toolkit found?)"; }
rm -f "$configure_log"
targets=(flexmoe-run flexmoe-gpu-tests flexmoe-nccl-test gpu_moe_layer)
ninja -C build-gpu -j"$jobs" "${targets[@]}" || die "the build failed"

# 2. A fresh bundle (written beside, then moved: never half a bundle).
tmp=$(mktemp -d "${out%/}.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"/{bin,lib,programs,scripts}
for t in "${targets[@]}"; do
  [ -x "build-gpu/bin/$t" ] || die "build-gpu/bin/$t was not built"
  cp "build-gpu/bin/$t" "$tmp/bin/$t"
  strip --strip-unneeded "$tmp/bin/$t" || die "strip failed on $t"
done

# 3. Shared libraries: what ldd resolves, minus what the GPU machine has.
keep_out='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|librt\.|libpthread\.|libstdc\+\+|libgcc_s|libz\.|libcuda\.|libcudart|libcublas|libcublasLt|libnccl|libnvidia|libnvrtc|libnvJitLink)'
missing=()
for t in "${targets[@]}"; do
  while read -r name _ path _; do
    [ -n "$name" ] || continue
    if [ "$path" = "not" ]; then
      missing+=("$t: $name")
      continue
    fi
    [[ $name =~ $keep_out ]] && continue
    [ -f "$path" ] || continue
    if [ ! -f "$tmp/lib/$name" ]; then
      cp -L "$path" "$tmp/lib/$name"
      strip --strip-unneeded "$tmp/lib/$name" 2>/dev/null || true
    fi
  done < <(ldd "build-gpu/bin/$t" | sed -n 's/^\s*\(\S*\) => \(.*\)$/\1 => \2/p')
done
[ ${#missing[@]} -eq 0 ] || die "ldd cannot resolve here: ${missing[*]}"

# The bundled set must load the binaries with nothing from the system's
# optional packages: check with ldd under the bundle's path only for them.
for t in "${targets[@]}"; do
  deps=$(LD_LIBRARY_PATH="$tmp/lib" ldd "$tmp/bin/$t")
  if grep -q "not found" <<<"$deps"; then
    die "bin/$t: ldd finds no $(grep 'not found' <<<"$deps" | awk '{print $1}' | tr '\n' ' ')"
  fi
  while read -r name _ path _; do
    [[ $name =~ $keep_out ]] && continue
    case "$path" in "$tmp"/lib/*) ;; *) die "bin/$t: $name resolves to $path, not to the bundle" ;; esac
  done < <(sed -n 's/^\s*\(\S*\) => \(\S*\).*$/\1 => \2/p' <<<"$deps")
done

# 4. Programs.
"$compiler" --model gpt-moe-tiny --world-size 1 -o "$tmp/programs/gpt-moe-tiny.fmoe" ||
  die "flexmoe-compile failed on gpt-moe-tiny"
"$compiler" --model gpt-moe-small --world-size 1 -o "$tmp/programs/gpt-moe-small.fmoe" ||
  die "flexmoe-compile failed on gpt-moe-small"

# 5. Training data: the GPU machine has no bible-kjv, so no built-in
# corpus; the first MiB of it (about 30 times what gpu-check trains on).
ninja -C build-gpu -j"$jobs" flexmoe_default_corpus >/dev/null ||
  die "cannot build the corpus (target flexmoe_default_corpus: is Debian's bible-kjv installed? scripts/setup.sh)"
corpus=build-gpu/share/flexmoe/kjv.txt
[ -s "$corpus" ] || die "$corpus is missing or empty"
mkdir -p "$tmp/data"
head -c 1048576 "$corpus" >"$tmp/data/corpus.txt"

# 6. Scripts.
for s in benchmarks/torch_moe_layer.py benchmarks/gpu_report.py \
  benchmarks/gpu_train_step.py scripts/compare-losses.py \
  test/pytorch/gpt_moe.py; do
  [ -f "$s" ] || die "$s is missing"
  cp "$s" "$tmp/scripts/"
done

{
  echo "flexmoe gpu-bundle, built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD -- runtime tools test benchmarks scripts || echo ' (with uncommitted changes)')"
  echo "compiler $compiler"
  echo "nvcc: $("$nvcc" --version | tail -1)"
  (cd "$tmp" && find . -type f ! -name MANIFEST | sort | xargs ls -l | awk '{print $5, $9}')
} >"$tmp/MANIFEST"

# OpenBLAS alone (every CPU kernel of Debian's build) is 36 MB: the
# libraries travel as lib.tar.gz, which gpu-check.sh unpacks.
tar -czf "$tmp/lib.tar.gz" -C "$tmp" lib || die "cannot pack lib/"
rm -rf "$tmp/lib"

size=$(du -sb "$tmp" | cut -f1)
limit=$((32 * 1024 * 1024)) # the device tool carries 64 MiB with the tree
if [ "$size" -gt "$limit" ]; then
  die "the bundle is $((size / 1024 / 1024)) MiB, over the 32 MiB this script allows (the device tool carries 64 MiB in all, the working tree included)"
fi
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "gpu-bundle: $out is $((size / 1024)) KiB ($(ls "$out/bin" | wc -l) binaries, $(tar -tzf "$out/lib.tar.gz" | grep -c '\.so') libraries, $(ls "$out/programs" | wc -l) programs)"
echo "gpu-bundle: next, on the GPU machine: scripts/gpu-check.sh $out \"\$OUT\" (docs/gpu-runbook.md)"
