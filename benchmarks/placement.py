#!/usr/bin/env python3
"""Step time of the placement policies against static placement (issue 5).

For every scenario of --scenarios (a routing skew, or "real": the routing the
model learns by itself), trains the same program under mpirun with each
policy of --policies, all in one invocation and interleaved (policy order
rotates every repetition), so that the ratios compare runs on the same
machine under the same load. Every run is dropless and starts from the same
seed, so the policies train the same model (dynamic-placement.test checks
that); only where the experts sit differs. The "real" scenario uses the
program compiled with the default load-balancing loss (--aux-loss-coef
0.01), as one would train; the synthetic skews use one compiled without it,
so that the router does not fight the skew.

Per run it reads the metrics file: the mean step time over the steps after
--warmup (the placement loop's own time, migrations included, counts in each
step's time) and the mean balance ratio. The table gives, per scenario, the
median over the repetitions and the speed-up of each policy over static
(static time / policy time). Rows are appended to
benchmarks/results/placement.csv with the date, the machine, the load
average before and after, and the git commit.

  python3 benchmarks/placement.py --run build/bin/flexmoe-run \\
      --compiler build/bin/flexmoe-compile --ranks 2

Each rank runs with OMP_NUM_THREADS=1.
"""

import argparse
import csv
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scaling import first_line, machine, mpirun_command, run  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIELDS = [
    "date", "machine", "cores", "load_before", "load_after", "git", "model",
    "ranks", "experts", "slots", "global_batch", "scenario", "policy",
    "repetitions", "timed_steps", "mean_step_ms", "balance", "replans",
    "speedup_vs_static"
]
SCENARIOS = {
    "real": [],
    "hotspot": ["--routing-skew", "hotspot:3"],
    "zipf": ["--routing-skew", "zipf:0.2"],
    "rotating": ["--routing-skew", "hotspot:3", "--skew-period", "25"],
}


def fail(message):
    print(f"placement: {message}", file=sys.stderr)
    sys.exit(1)


def read_metrics(path, warmup):
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "train"]
    timed = [r for r in rows if int(r["step"]) > warmup]
    if not timed:
        fail(f"{path}: no step after the {warmup} warm-up steps")
    ms = statistics.mean(float(r["step_ms"]) for r in timed)
    balances = [
        statistics.mean(float(v) for k, v in r.items()
                        if k.startswith("balance.")) for r in timed
    ]
    return ms, statistics.mean(balances), len(timed)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=os.path.join(ROOT, "build", "bin",
                                                      "flexmoe-run"))
    parser.add_argument("--compiler",
                        default=os.path.join(ROOT, "build", "bin",
                                             "flexmoe-compile"))
    parser.add_argument("--mpirun", default="mpirun")
    parser.add_argument("--model", default="gpt-moe-small")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--slots", type=int, default=0,
                        help="slots per rank (default 2 x experts / ranks)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32,
                        help="global batch in sequences")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--scenarios", default="real,hotspot,zipf,rotating")
    parser.add_argument("--policies", default="static,shadow,flexmoe")
    parser.add_argument("--extra", default="",
                        help="more flexmoe-run flags, space-separated")
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--csv", default=os.path.join(
        ROOT, "benchmarks", "results", "placement.csv"))
    args = parser.parse_args()

    scenarios = args.scenarios.split(",")
    for s in scenarios:
        if s not in SCENARIOS:
            fail(f"unknown scenario '{s}'; known: {', '.join(SCENARIOS)}")
    policies = args.policies.split(",")
    if "static" not in policies:
        fail("--policies must include static: it is the reference")
    for tool in (args.run, args.compiler):
        if not os.path.exists(tool):
            fail(f"{tool} does not exist (build first, or pass --run and "
                 f"--compiler)")
    if shutil.which(args.mpirun) is None:
        fail(f"{args.mpirun} not found")
    slots = args.slots or max(1, 2 * args.experts // args.ranks)

    load_before = os.getloadavg()[0]
    tmp = tempfile.mkdtemp(prefix="flexmoe-placement-")
    try:
        programs = {}
        for aux in ("0.01", "0"):
            programs[aux] = os.path.join(tmp, f"program-aux{aux}.fmoe")
            run([
                args.compiler, "--model", args.model, "--world-size",
                str(args.ranks), "--experts", str(args.experts),
                "--slots-per-device", str(slots), "--layers",
                str(args.layers), "--seq-len", str(args.seq_len), "--batch",
                str(args.batch), "--aux-loss-coef", aux, "-o", programs[aux]
            ], 300, "compiling")
        results = {}  # (scenario, policy) -> [(ms, balance, steps, replans)]
        for repetition in range(args.repetitions):
            for scenario in scenarios:
                # Rotate the order so no policy always runs first.
                shift = repetition % len(policies)
                for policy in policies[shift:] + policies[:shift]:
                    metrics = os.path.join(
                        tmp, f"{scenario}-{policy}-{repetition}.csv")
                    stdout = run(
                        mpirun_command(args.mpirun, args.ranks) + [
                            args.run,
                            programs["0.01" if scenario == "real" else "0"],
                            "--steps", str(args.steps),
                            "--eval-fraction", "0", "--progress", "never",
                            "--log-every", str(args.steps), "--metrics",
                            metrics, "--placement-policy", policy
                        ] + SCENARIOS[scenario] + args.extra.split(),
                        args.timeout, f"{scenario} under {policy}")
                    replans = 0
                    for line in stdout.splitlines():
                        if line.startswith(f"  placement "):
                            replans += int(line.split(": ")[1].split()[0])
                    ms, balance, steps = read_metrics(metrics, args.warmup)
                    results.setdefault((scenario, policy), []).append(
                        (ms, balance, steps, replans))
                    print(f"  {scenario:9s} {policy:8s} rep {repetition}: "
                          f"{ms:8.1f} ms/step, balance {balance:.2f}, "
                          f"{replans} re-plan(s)", file=sys.stderr)
        load_after = os.getloadavg()[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    date = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC")
    git = first_line(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    rows = []
    print(f"\n{args.model} ({args.layers} layers, seq {args.seq_len}, "
          f"{args.experts} experts, {slots} slots/rank), {args.ranks} ranks, "
          f"global batch {args.batch}; mean step time after {args.warmup} "
          f"warm-up steps, median of {args.repetitions} run(s)\n")
    print("| scenario | policy | ms/step | balance | re-plans | speed-up vs "
          "static |")
    print("|---|---|---|---|---|---|")
    for scenario in scenarios:
        static_ms = statistics.median(
            r[0] for r in results[(scenario, "static")])
        for policy in policies:
            runs = results[(scenario, policy)]
            ms = statistics.median(r[0] for r in runs)
            balance = statistics.median(r[1] for r in runs)
            replans = statistics.median(r[3] for r in runs)
            speedup = static_ms / ms
            print(f"| {scenario} | {policy} | {ms:.1f} | {balance:.2f} | "
                  f"{replans:g} | {speedup:.2f}x |")
            rows.append({
                "date": date, "machine": machine(),
                "cores": os.cpu_count(), "load_before": f"{load_before:.2f}",
                "load_after": f"{load_after:.2f}", "git": git,
                "model": args.model, "ranks": args.ranks,
                "experts": args.experts, "slots": slots,
                "global_batch": args.batch, "scenario": scenario,
                "policy": policy, "repetitions": args.repetitions,
                "timed_steps": runs[0][2], "mean_step_ms": f"{ms:.2f}",
                "balance": f"{balance:.3f}", "replans": f"{replans:g}",
                "speedup_vs_static": f"{speedup:.3f}"
            })
    os.makedirs(os.path.dirname(args.csv), exist_ok=True)
    new = not os.path.exists(args.csv)
    with open(args.csv, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
    print(f"\nappended {len(rows)} row(s) to {args.csv}")


if __name__ == "__main__":
    main()
