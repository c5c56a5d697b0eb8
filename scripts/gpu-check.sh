#!/usr/bin/env bash
# Checks and benchmarks the CUDA backend on a GPU machine in one command,
# from the repository root, with a bundle made by scripts/gpu-bundle.sh:
#
#   scripts/gpu-check.sh gpu-bundle "$OUT" [--budget SECONDS]
#                        [--only a,b,..] [--skip a,b,..]
#
# Stages, in this order, each under `timeout`, each logged, a failure never
# stopping the next (docs/gpu-runbook.md says how to read them):
#   env          nvidia-smi, versions, `ldd` misses of the bundled binaries
#   gpu-tests    flexmoe-gpu-tests (JUnit XML in gpu-tests.xml); on a GPU
#                nothing may skip
#   nccl         flexmoe-nccl-test as one process (world size 1, no mpirun)
#   train        gpt-moe-tiny for 50 steps: cpu, cuda fp32, cuda bf16;
#                scripts/compare-losses.py against the cpu run
#   memcheck     compute-sanitizer memcheck on the GPU tests
#   racecheck    compute-sanitizer racecheck on the shared-memory kernels
#   moe-layer    benchmarks/gpu_moe_layer (flexmoe vs dense cuBLASLt)
#   torch-layer  benchmarks/torch_moe_layer.py (PyTorch peers)
#   report       benchmarks/gpu_report.py: the markdown table (report.md)
#   train-step   benchmarks/gpu_train_step.py (gpt-moe-small, flexmoe-run
#                vs PyTorch)
# Stages that need a GPU (all but env and report) SKIP where none answers;
# the sanitizer stages SKIP without compute-sanitizer, the torch ones
# without `import torch`, train and flexmoe's train-step rows without
# `flexmoe-run --device`.
#
# The whole run keeps to --budget seconds (default 480): a stage's timeout
# is cut to what is left, and a stage that cannot start in time SKIPs.
#
# What it writes into OUTDIR (at most 4 files: the device tool brings back
# 8): summary.txt (PASS/FAIL/SKIP and seconds per stage, rewritten after
# every stage), report.md (the benchmark table), gpu-check.log (this
# script's console) and gpu-check.tar.gz (every stage's <stage>.log,
# gpu-tests.xml, the metrics CSVs and benchmark JSON lines; refreshed after
# every stage, so a run cut short still brings back what it did).
#
# Exit status: 0 when no stage FAILed (SKIPs allowed: on a machine without
# a GPU every GPU stage SKIPs and the exit is 0), 1 when one did, 2 on bad
# arguments or an unusable bundle.
#
# Environment: PYTHON (default python3), GPU_CHECK_MEMCHECK_FILTER and
# GPU_CHECK_RACECHECK_FILTER (gtest filters, defaults below); for tests of
# this script on a machine without a GPU, GPU_CHECK_ASSUME_GPU=1 runs the
# GPU stages anyway and GPU_CHECK_SANITIZER names a compute-sanitizer.
set -uo pipefail

usage() {
  echo "usage: scripts/gpu-check.sh BUNDLE OUTDIR [--budget SECONDS] [--only a,b] [--skip a,b]" >&2
  echo "gpu-check: error: $*" >&2
  exit 2
}

[ $# -ge 2 ] || usage "BUNDLE and OUTDIR are required"
bundle=$1
outdir=$2
shift 2
budget=480
only=""
skip=""
while [ $# -gt 0 ]; do
  case "$1" in
  --budget) [ $# -ge 2 ] || usage "--budget needs seconds"; budget=$2; shift 2 ;;
  --only) [ $# -ge 2 ] || usage "--only needs stage names"; only=$2; shift 2 ;;
  --skip) [ $# -ge 2 ] || usage "--skip needs stage names"; skip=$2; shift 2 ;;
  *) usage "unknown argument '$1'" ;;
  esac
done
case "$budget" in '' | *[!0-9]*) usage "--budget '$budget' is not a number of seconds" ;; esac
all_stages="env gpu-tests nccl train memcheck racecheck moe-layer torch-layer report train-step"
for s in ${only//,/ } ${skip//,/ }; do
  [[ " $all_stages " == *" $s "* ]] || usage "unknown stage '$s' (stages: $all_stages)"
done

[ -d "$bundle" ] || usage "no bundle folder '$bundle' (make it with scripts/gpu-bundle.sh and carry it)"
bundle=$(cd "$bundle" && pwd)
for f in lib.tar.gz bin/flexmoe-run bin/flexmoe-gpu-tests bin/flexmoe-nccl-test bin/gpu_moe_layer \
  programs/gpt-moe-tiny.fmoe programs/gpt-moe-small.fmoe data/corpus.txt \
  scripts/compare-losses.py scripts/torch_moe_layer.py scripts/gpu_report.py \
  scripts/gpu_train_step.py scripts/gpt_moe.py; do
  [ -e "$bundle/$f" ] || usage "the bundle lacks $f (rebuild it with scripts/gpu-bundle.sh)"
done
mkdir -p "$outdir" || usage "cannot create '$outdir'"
outdir=$(cd "$outdir" && pwd)
work=$(mktemp -d /tmp/flexmoe-gpu-check.XXXXXX)
start_all=$(date +%s)
# Everything below runs in one group whose output also goes to
# gpu-check.log; its exit status is the script's.
{

PYTHON=${PYTHON:-python3}
B=$bundle
MEMCHECK_FILTER=${GPU_CHECK_MEMCHECK_FILTER:--CudaHost.*:*Errors.*}
RACECHECK_FILTER=${GPU_CHECK_RACECHECK_FILTER:-*Moe*Test*:CudaDense.Softmax*:CudaDense.LayerNorm*:CudaDense.Attention*:CudaDense.ReduceSum*:CudaDense.CrossEntropy*:CudaDense.Embedding*}
# Tolerances of the training comparison (test/GPU/train-cuda.test uses the
# same and justifies them).
FP32_STEP1="--steps 1 --rtol 1e-5 --atol 1e-6"
FP32_ALL="--rtol 5e-4 --atol 1e-5"
BF16_STEP1="--steps 1 --rtol 1e-2 --atol 1e-3"
BF16_ALL="--rtol 3e-2 --atol 1e-3 --window 10 --window-rtol 2e-2"

# Single-process runs: no MPI launcher variables may leak in.
unset OMPI_COMM_WORLD_SIZE PMIX_RANK PMI_RANK PMI_SIZE MPI_LOCALNRANKS SLURM_PROCID

# The binaries' libraries: the bundle's, then the CUDA libraries of the
# Python's site-packages (NCCL may live only there), then the toolkit's.
# Only the bundled binaries get this path; Python keeps its own.
libroot=$(mktemp -d /tmp/flexmoe-gpu-libs.XXXXXX)
trap 'rm -rf "$work" "$libroot"' EXIT
tar -xzf "$B/lib.tar.gz" -C "$libroot" || usage "cannot unpack $B/lib.tar.gz"
libs="$libroot/lib"
if command -v "$PYTHON" >/dev/null 2>&1; then
  while read -r site; do
    for d in "$site"/nvidia/*/lib "$site"/nvidia/*/lib64; do
      [ -d "$d" ] && libs="$libs:$d"
    done
  done < <("$PYTHON" -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
fi
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && libs="$libs:$d"
done
export FLEXMOE_LD_LIBRARY_PATH=$libs
run_bin() { LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"; }

have_gpu=${GPU_CHECK_ASSUME_GPU:-0} # 1: run the GPU stages anyway (tests of this script)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
  have_gpu=1
fi
sanitizer=${GPU_CHECK_SANITIZER:-}
[ -n "$sanitizer" ] || sanitizer=$(command -v compute-sanitizer || { [ -x /usr/local/cuda/bin/compute-sanitizer ] && echo /usr/local/cuda/bin/compute-sanitizer; } || true)
have_torch=0
"$PYTHON" -c "import torch" >/dev/null 2>&1 && have_torch=1
has_device_flag=0
run_bin "$B/bin/flexmoe-run" --help 2>/dev/null | grep -q -- "--device" && has_device_flag=1

declare -a results=()
failures=0

pack() {
  {
    printf "flexmoe gpu-check: %s\n" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf "bundle: %s\n" "$(head -2 "$B/MANIFEST" 2>/dev/null | tr '\n' ' ')"
    printf "gpu: %s\n" "$( ((have_gpu)) && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1 || echo none)"
    printf "%-12s %-5s %8s  %s\n" stage result seconds note
    for r in "${results[@]}"; do printf "%s\n" "$r"; done
    printf "total %ss of a %ss budget; %d stage(s) failed\n" "$(($(date +%s) - start_all))" "$budget" "$failures"
  } >"$outdir/summary.txt"
  cp "$outdir/summary.txt" "$work/summary.txt"
  tar -czf "$outdir/gpu-check.tar.gz.tmp" -C "$work" . 2>/dev/null &&
    mv "$outdir/gpu-check.tar.gz.tmp" "$outdir/gpu-check.tar.gz"
}

record() { # stage result seconds note
  results+=("$(printf "%-12s %-5s %8s  %s" "$1" "$2" "$3" "$4")")
  [ "$2" = FAIL ] && failures=$((failures + 1))
  echo "=== $1: $2 ($3 s) $4"
  pack
}

wanted() {
  if [ -n "$only" ] && [[ ",$only," != *",$1,"* ]]; then return 1; fi
  if [ -n "$skip" ] && [[ ",$skip," == *",$1,"* ]]; then return 1; fi
  return 0
}

# stage NAME MAX_SECONDS NEEDS FUNCTION: NEEDS is a space-separated list of
# gpu, sanitizer, torch, device-flag. FUNCTION gets the timeout in seconds
# and writes $work/NAME.log; it prints "SKIP: why" or "FAIL: why" as its
# last line of stdout to say so, else it passes when it returns 0.
stage() {
  local name=$1 max=$2 needs=$3 fn=$4
  wanted "$name" || { record "$name" SKIP 0 "not asked for"; return; }
  for need in $needs; do
    case $need in
    gpu) ((have_gpu)) || { record "$name" SKIP 0 "no GPU (nvidia-smi lists none)"; return; } ;;
    sanitizer) [ -n "$sanitizer" ] || { record "$name" SKIP 0 "no compute-sanitizer"; return; } ;;
    torch) ((have_torch)) || { record "$name" SKIP 0 "$PYTHON cannot import torch"; return; } ;;
    device-flag) ((has_device_flag)) || { record "$name" SKIP 0 "flexmoe-run has no --device (the CUDA trainer is not in this build)"; return; } ;;
    esac
  done
  local left=$((budget - ($(date +%s) - start_all)))
  if [ "$left" -lt 15 ]; then
    record "$name" SKIP 0 "the ${budget}s budget is spent"
    return
  fi
  local limit=$((max < left ? max : left))
  echo "=== $name (at most ${limit}s)"
  local t0=$(date +%s) verdict rc
  # The function's own status, through a file: the pipeline's is tee's.
  { "$fn" "$limit" 2>&1; echo $? >"$work/.rc"; } | tee -a "$work/$name.log"
  rc=$(cat "$work/.rc")
  verdict=$(tail -1 "$work/$name.log")
  local secs=$(($(date +%s) - t0))
  case "$verdict" in
  SKIP:*) record "$name" SKIP "$secs" "${verdict#SKIP: }" ;;
  FAIL:*) record "$name" FAIL "$secs" "${verdict#FAIL: }" ;;
  *)
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
      record "$name" FAIL "$secs" "timed out after ${limit}s (partial results kept)"
    elif [ "$rc" -ne 0 ]; then
      record "$name" FAIL "$secs" "exit $rc: $(echo "$verdict" | cut -c1-120)"
    else
      record "$name" PASS "$secs" ""
    fi
    ;;
  esac
}

# --- the stages --------------------------------------------------------------

st_env() {
  echo "date: $(date -u)"
  echo "bundle: $B"
  cat "$B/MANIFEST" 2>/dev/null | head -4
  echo "LD path of the bundled binaries: $libs"
  if ((have_gpu)); then nvidia-smi; else echo "nvidia-smi: no GPU listed"; fi
  echo "python: $("$PYTHON" --version 2>&1); torch: $("$PYTHON" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())' 2>&1 | tail -1)"
  echo "nvcc: $( (nvcc --version || /usr/local/cuda/bin/nvcc --version) 2>/dev/null | tail -1)"
  echo "compute-sanitizer: ${sanitizer:-none}"
  local misses=0
  for b in "$B"/bin/*; do
    local deps
    deps=$(run_bin ldd "$b" 2>&1)
    echo "--- ldd $(basename "$b")"
    echo "$deps"
    if grep -Eq "not found|version .* not found" <<<"$deps"; then
      misses=$((misses + 1))
      echo "MISSING for $(basename "$b"): $(grep 'not found' <<<"$deps" | tr -s ' \t' ' ' | tr '\n' ';')"
    fi
  done
  ((misses == 0)) || { echo "FAIL: $misses binaries have ldd misses (see env.log)"; return 1; }
  echo "ldd: every bundled binary resolves"
}

st_gpu_tests() {
  run_bin timeout -k 10 "$1" "$B/bin/flexmoe-gpu-tests" --gtest_output="xml:$work/gpu-tests.xml" 2>&1 |
    tee "$work/gpu-tests.out"
  local rc=${PIPESTATUS[0]}
  ((rc == 124 || rc == 137)) && return $rc
  if grep -q "^\[  SKIPPED \]" "$work/gpu-tests.out"; then
    echo "FAIL: $(grep -c '^\[  SKIPPED \].*(' "$work/gpu-tests.out") test(s) skipped on a GPU machine (see gpu-tests.log)"
    return 1
  fi
  ((rc == 0)) || echo "FAIL: flexmoe-gpu-tests exit $rc: $(grep -c '^\[  FAILED  \].*(' "$work/gpu-tests.out") test(s) failed (see gpu-tests.log)"
  return $rc
}

st_nccl() {
  run_bin timeout -k 10 "$1" "$B/bin/flexmoe-nccl-test" 2>&1 | tee "$work/nccl.out"
  local rc=${PIPESTATUS[0]}
  ((rc == 0)) || return $rc
  grep -q "rank 0: NCCL matches" "$work/nccl.out" ||
    { echo "FAIL: no 'rank 0: NCCL matches' line"; return 1; }
}

train_run() { # name timeout flexmoe-run flags...
  local name=$1 limit=$2
  shift 2
  echo "--- flexmoe-run ($name): $*"
  run_bin timeout -k 10 "$limit" "$B/bin/flexmoe-run" "$B/programs/gpt-moe-tiny.fmoe" \
    --data "$B/data/corpus.txt" --steps 50 --eval-every 50 --eval-batches 2 \
    --seed 0 --progress never --log-every 10 --metrics "$work/train-$name.csv" "$@"
}

st_train() {
  local each=$(($1 / 3 - 5)) rc=0
  ((each >= 10)) || each=10
  train_run cpu "$each" --device cpu || { echo "FAIL: the cpu run failed"; return 1; }
  train_run cuda-fp32 "$each" --device cuda --precision fp32 --deterministic || rc=1
  train_run cuda-bf16 "$each" --device cuda --precision bf16 --deterministic || rc=1
  local cmp="$PYTHON $B/scripts/compare-losses.py $work/train-cpu.csv"
  local verdict=""
  for check in "cuda-fp32:$FP32_STEP1" "cuda-fp32:$FP32_ALL" "cuda-bf16:$BF16_STEP1" "cuda-bf16:$BF16_ALL"; do
    local run=${check%%:*} flags=${check#*:}
    echo "--- compare cpu vs $run ($flags)"
    if [ ! -f "$work/train-$run.csv" ]; then
      verdict="$verdict $run: no metrics;"
      continue
    fi
    # shellcheck disable=SC2086
    $cmp "$work/train-$run.csv" $flags || verdict="$verdict $run ($flags) differs;"
  done
  if [ -n "$verdict" ] || ((rc)); then
    echo "FAIL:${verdict:- a cuda run failed}"
    return 1
  fi
}

st_memcheck() {
  echo "filter: $MEMCHECK_FILTER"
  timeout -k 10 "$1" env LD_LIBRARY_PATH="$libs" "$sanitizer" --tool memcheck --leak-check no \
    --error-exitcode 86 --print-limit 50 "$B/bin/flexmoe-gpu-tests" --gtest_filter="$MEMCHECK_FILTER" --gtest_brief=1
  local rc=$?
  ((rc == 86)) && { echo "FAIL: memcheck found errors (see memcheck.log)"; return 1; }
  return $rc
}

st_racecheck() {
  echo "filter: $RACECHECK_FILTER"
  timeout -k 10 "$1" env LD_LIBRARY_PATH="$libs" "$sanitizer" --tool racecheck --racecheck-report hazard \
    --error-exitcode 86 --print-limit 50 "$B/bin/flexmoe-gpu-tests" --gtest_filter="$RACECHECK_FILTER" --gtest_brief=1
  local rc=$?
  ((rc == 86)) && { echo "FAIL: racecheck found hazards (see racecheck.log)"; return 1; }
  return $rc
}

st_moe_layer() {
  run_bin timeout -k 10 "$1" "$B/bin/gpu_moe_layer" --tokens 16384 --d-model 1024,2048,4096 \
    --experts 8,16,64 --precision fp32,bf16 --warmup 1 --iters 5 --max-seconds 4 \
    --jsonl "$work/moe-layer.jsonl" --csv "$work/moe-layer.csv"
}

st_torch_layer() {
  local t0=$(date +%s)
  PYTHONUNBUFFERED=1 timeout -k 10 60 "$PYTHON" "$B/scripts/torch_moe_layer.py" --self-check --device cuda || {
    echo "FAIL: the grouped path's self-check failed"
    return 1
  }
  local left=$(($1 - ($(date +%s) - t0)))
  ((left >= 10)) || left=10
  PYTHONUNBUFFERED=1 timeout -k 10 "$left" "$PYTHON" "$B/scripts/torch_moe_layer.py" --device cuda --tokens 16384 \
    --d-model 1024,2048,4096 --experts 8,16,64 --precision fp32,bf16 --warmup 1 --iters 5 \
    --jsonl "$work/torch-layer.jsonl"
}

st_report() {
  [ -s "$work/moe-layer.jsonl" ] || { echo "SKIP: no flexmoe measurement (moe-layer did not run)"; return 0; }
  local torch_rows=()
  [ -s "$work/torch-layer.jsonl" ] && torch_rows=("$work/torch-layer.jsonl")
  "$PYTHON" "$B/scripts/gpu_report.py" "$work/moe-layer.jsonl" "${torch_rows[@]}" \
    --title "MoE layer forward + backward, $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo GPU), $(date -u +%Y-%m-%d)" \
    --out "$outdir/report.md"
  local rc=$?
  [ -f "$outdir/report.md" ] && cp "$outdir/report.md" "$work/report.md"
  return $rc
}

st_train_step() {
  local flexmoe=()
  ((has_device_flag)) && flexmoe=(--flexmoe-run "$B/bin/flexmoe-run" --program "$B/programs/gpt-moe-small.fmoe" --data "$B/data/corpus.txt")
  PYTHONUNBUFFERED=1 timeout -k 10 "$1" "$PYTHON" "$B/scripts/gpu_train_step.py" "${flexmoe[@]}" \
    --preset gpt-moe-small --steps 20 --warmup 5 --work-dir "$work" --jsonl "$work/train-step.jsonl" \
    --markdown "$outdir/report.md" --timeout $(($1 / 3))
  local rc=$?
  cp "$outdir/report.md" "$work/report.md" 2>/dev/null
  return $rc
}

echo "flexmoe gpu-check: bundle $B, output $outdir, budget ${budget}s, gpu $have_gpu, torch $have_torch, sanitizer ${sanitizer:-none}, flexmoe-run --device $has_device_flag"
stage env 60 "" st_env
stage gpu-tests 90 "gpu" st_gpu_tests
stage nccl 45 "gpu" st_nccl
stage train 90 "gpu device-flag" st_train
stage memcheck 120 "gpu sanitizer" st_memcheck
stage racecheck 60 "gpu sanitizer" st_racecheck
stage moe-layer 120 "gpu" st_moe_layer
stage torch-layer 120 "gpu torch" st_torch_layer
stage report 20 "" st_report
stage train-step 90 "gpu torch" st_train_step

echo
cat "$outdir/summary.txt"
[ -f "$outdir/report.md" ] && { echo; cat "$outdir/report.md"; }
((failures == 0)) || exit 1
exit 0
} 2>&1 | tee "$outdir/gpu-check.log"
exit "${PIPESTATUS[0]}"
