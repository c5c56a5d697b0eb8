#!/usr/bin/python3
"""CPU training-step time: flexmoe against PyTorch, same model, batch, threads.

For every preset, in the same run and alternating (flexmoe round, PyTorch
round, flexmoe round, ...), each side runs warm-up steps and then timed steps;
the table gives the median and interquartile range of the timed steps and the
ratio flexmoe / PyTorch of the medians. Alternating rounds spread the noise of
a shared machine over both sides instead of onto whichever ran second.

flexmoe's steps run in test/tools/flexmoe-step-test --time (wall time of
Executor::step per step, nothing else); PyTorch's in this process
(zero_grad + forward + backward + AdamW step). Both use --threads threads:
flexmoe through OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, PyTorch through
torch.set_num_threads.

The PyTorch model is test/pytorch/gpt_moe.py, the exact twin of the model
flexmoe compiles (one source of truth; --torch-model picks another file with
the same functions).

Run with Debian's python (the one with torch):
  /usr/bin/python3 benchmarks/cpu_step_time.py --build build-runtime \\
      --compiler /work/main/build/bin/flexmoe-compile
Writes benchmarks/results/cpu_step_time.csv (appends) and prints the table.
"""

import argparse
import csv
import datetime
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fail(message):
    print(f"cpu_step_time: {message}", file=sys.stderr)
    sys.exit(1)


def load_torch_model(override):
    """test/pytorch/gpt_moe.py, or the file --torch-model names."""
    path = override or os.path.join(ROOT, "test", "pytorch", "gpt_moe.py")
    if not os.path.exists(path):
        fail(f"no PyTorch model at {path}")
    path = os.path.abspath(path)
    spec = importlib.util.spec_from_file_location("bench_gpt_moe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("config_from_preset", "GPTMoE", "make_optimizer",
                 "train_step"):
        if not hasattr(module, name):
            fail(f"{path} has no {name}")
    return module, os.path.relpath(path, ROOT)


def make_torch_trainer(module, preset, seed):
    """A callable running one training step on a fixed random batch."""
    import torch
    cfg = module.config_from_preset(preset)
    torch.manual_seed(seed)
    model = module.GPTMoE(cfg)
    opt = module.make_optimizer(model, cfg.adamw)
    shape = (cfg.batch_size, cfg.seq_len)
    tokens = torch.randint(0, cfg.vocab_size, shape)
    labels = torch.randint(0, cfg.vocab_size, shape)
    return lambda: module.train_step(model, opt, tokens, labels)


def quartiles(values):
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2]


def compile_program(compiler, preset, out_dir):
    path = os.path.join(out_dir, f"{preset}.fmoe")
    proc = subprocess.run([compiler, "--model", preset, "--world-size", "1",
                           "-o", path], capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"compiling {preset} failed:\n{proc.stderr.strip()}")
    return path


def flexmoe_round(step_test, program, warmup, steps, env):
    """Per-step wall times (seconds) of the timed steps of one process."""
    proc = subprocess.run([step_test, program, "--steps",
                           str(warmup + steps), "--time"],
                          capture_output=True, text=True, env=env)
    times = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["step"] and "time_ms" in parts:
            times.append(float(parts[parts.index("time_ms") + 1]) / 1e3)
    if proc.returncode != 0 or len(times) != warmup + steps:
        fail(f"flexmoe-step-test on {program} failed (exit "
             f"{proc.returncode}):\n{proc.stderr.strip()}")
    return times[warmup:]


def torch_round(step, warmup, steps):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def machine_description():
    model, cores = platform.processor() or "unknown", os.cpu_count()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return model, cores


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build-runtime"),
                        help="build folder holding bin/flexmoe-step-test")
    parser.add_argument("--compiler",
                        default="/work/main/build/bin/flexmoe-compile",
                        help="flexmoe-compile, to make the .fmoe programs")
    parser.add_argument("--presets", default="gpt-moe-tiny,gpt-moe-small")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds per side and preset")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps at the start of every round")
    parser.add_argument("--steps", type=int, default=5,
                        help="timed steps per round")
    parser.add_argument("--torch-model", default="",
                        help="the PyTorch model file (default: "
                        "test/pytorch/gpt_moe.py)")
    parser.add_argument("--settle", type=float, default=0.5,
                        help="seconds to pause before each round, so that "
                        "the other side's idle threads (OpenBLAS workers "
                        "spin for a while after their last GEMM) are asleep")
    parser.add_argument("--csv", default=os.path.join(
        ROOT, "benchmarks", "results", "cpu_step_time.csv"))
    parser.add_argument("--note", default="",
                        help="free text recorded with the results "
                        "(e.g. 'shared machine, load 6')")
    args = parser.parse_args()
    if args.threads < 1 or args.rounds < 1 or args.steps < 2 or \
            args.warmup < 0 or args.settle < 0:
        fail("--threads, --rounds must be >= 1, --steps >= 2, --warmup and "
             "--settle >= 0")

    step_test = os.path.join(args.build, "bin", "flexmoe-step-test")
    if not os.access(step_test, os.X_OK):
        fail(f"{step_test} not found; build it with "
             f"ninja -C {args.build} flexmoe-step-test")
    if not os.access(args.compiler, os.X_OK):
        fail(f"flexmoe-compile not found at {args.compiler} (--compiler)")

    import torch
    torch.set_num_threads(args.threads)
    module, torch_source = load_torch_model(args.torch_model)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads))

    presets = [p for p in args.presets.split(",") if p]
    results = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        programs = {p: compile_program(args.compiler, p, tmp) for p in presets}
        for preset in presets:
            torch_step = make_torch_trainer(module, preset, seed=0)
            flex, ref = [], []
            for r in range(args.rounds):
                time.sleep(args.settle)
                flex += flexmoe_round(step_test, programs[preset],
                                      args.warmup, args.steps, env)
                time.sleep(args.settle)
                ref += torch_round(torch_step, args.warmup, args.steps)
                print(f"  {preset} round {r + 1}/{args.rounds}: flexmoe "
                      f"{statistics.median(flex) * 1e3:.1f} ms, pytorch "
                      f"{statistics.median(ref) * 1e3:.1f} ms (medians so "
                      f"far)", file=sys.stderr, flush=True)
            results.append((preset, flex, ref))
    load_after = os.getloadavg()[0]

    model, cores = machine_description()
    now = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC")
    print(f"\nCPU training step, world size 1, {args.threads} thread(s); "
          f"{args.rounds} rounds x ({args.warmup} warm-up + {args.steps} "
          f"timed) steps per side, alternating")
    print(f"{now}; {model}, {cores} cores; load average {load_before:.1f} "
          f"before, {load_after:.1f} after; torch {torch.__version__} "
          f"({torch_source})")
    header = (f"{'preset':<15} {'flexmoe ms':>11} {'IQR':>15} "
              f"{'pytorch ms':>11} {'IQR':>15} {'flexmoe/pytorch':>16}")
    print(header)
    print("-" * len(header))
    rows = []
    for preset, flex, ref in results:
        fq, rq = quartiles(flex), quartiles(ref)
        ratio = fq[1] / rq[1]
        print(f"{preset:<15} {fq[1] * 1e3:>11.1f} "
              f"{fq[0] * 1e3:>7.1f}-{fq[2] * 1e3:<7.1f} "
              f"{rq[1] * 1e3:>11.1f} {rq[0] * 1e3:>7.1f}-{rq[2] * 1e3:<7.1f} "
              f"{ratio:>16.2f}")
        rows.append(dict(date=now, machine=model, cores=cores,
                         threads=args.threads, preset=preset,
                         rounds=args.rounds, warmup=args.warmup,
                         settle_s=args.settle,
                         steps=args.steps,
                         flexmoe_median_ms=f"{fq[1] * 1e3:.2f}",
                         flexmoe_q1_ms=f"{fq[0] * 1e3:.2f}",
                         flexmoe_q3_ms=f"{fq[2] * 1e3:.2f}",
                         pytorch_median_ms=f"{rq[1] * 1e3:.2f}",
                         pytorch_q1_ms=f"{rq[0] * 1e3:.2f}",
                         pytorch_q3_ms=f"{rq[2] * 1e3:.2f}",
                         ratio=f"{ratio:.3f}", torch=torch.__version__,
                         torch_model=torch_source,
                         load_before=f"{load_before:.2f}",
                         load_after=f"{load_after:.2f}", note=args.note))

    os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
    fields = list(rows[0].keys())
    old_rows = []
    if os.path.exists(args.csv):
        with open(args.csv, newline="") as f:
            reader = csv.DictReader(f)
            old_fields = reader.fieldnames or []
            old_rows = list(reader)
        # Columns added since older runs: keep every row, blanks where a
        # run did not record a column.
        fields = old_fields + [k for k in fields if k not in old_fields]
    tmp_csv = args.csv + ".tmp"
    with open(tmp_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(old_rows + rows)
    os.replace(tmp_csv, args.csv)
    print(f"\nappended to {os.path.relpath(args.csv, os.getcwd())}")


if __name__ == "__main__":
    main()
