#!/usr/bin/env python3
"""Training step time and all-to-all bandwidth against the rank count.

Strong scaling: the same global batch trained with flexmoe-run under mpirun
at every rank count of --ranks (a program compiled for each world size).
Weak scaling (unless --weak-batch-per-rank 0): the global batch grows with the
ranks. Each run logs every step ("... | 18.3k tok/s | 14.0 ms | ..."); the
first --warmup steps are dropped, and the table gives the median step time,
the median logged tokens/s and the speed-up against the smallest rank count
(strong: t1 / tP; weak: throughput P / throughput 1).

Then benchmarks/mpi_alltoall (built with the runtime) at every rank count of
--alltoall-ranks: MpiCommunicator::allToAllV against plain MPI_Alltoallv.

Every row of benchmarks/results/scaling.csv (appended) records the date, the
machine (lscpu), the load average before and after the whole run, and the
versions (git commit, Open MPI, compiler). The markdown tables go to stdout.

  python3 benchmarks/scaling.py --build build-runtime \\
      --run /work/main/build/bin/flexmoe-run \\
      --compiler /work/main/build/bin/flexmoe-compile

Each rank runs with OMP_NUM_THREADS=1; on a machine with fewer cores than
ranks, mpirun oversubscribes (--oversubscribe --bind-to none).
"""

import argparse
import csv
import datetime
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP_RE = re.compile(
    r"^step (\d+)/\d+ \|.*\| ([0-9.]+)([kMG]?) tok/s \| ([0-9.]+) ms")
SCALE = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9}
FIELDS = [
    "date", "machine", "cores", "load_before", "load_after", "git", "mpi",
    "cxx", "kind", "model", "mode", "ranks", "global_batch", "timed_steps",
    "median_ms", "tok_s", "speedup", "row_bytes", "bytes_per_rank",
    "flexmoe_us", "flexmoe_busbw_GBps", "mpi_us", "mpi_busbw_GBps",
    "overhead_pct", "note"
]


def fail(message):
    print(f"scaling: {message}", file=sys.stderr)
    sys.exit(1)


def ints(text, flag):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        fail(f"{flag}: '{text}' is not a comma-separated list of integers")
    if not values or any(v <= 0 for v in values):
        fail(f"{flag}: every value must be positive, got '{text}'")
    return values


def first_line(command):
    try:
        out = subprocess.run(command, capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def machine():
    """lscpu's model name, or the platform's processor."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True,
                             timeout=30).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "unknown"


def mpirun_command(mpirun, ranks):
    return [
        mpirun, "-np", str(ranks), "--oversubscribe", "--bind-to", "none",
        "-x", "OMP_NUM_THREADS=1", "-x", "OPENBLAS_NUM_THREADS=1"
    ]


def mpi_env():
    env = dict(os.environ)
    # Containers often run as root; Open MPI refuses that without these.
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env["OMP_NUM_THREADS"] = "1"
    return env


def run(command, timeout, what):
    try:
        out = subprocess.run(command, capture_output=True, text=True,
                             timeout=timeout, env=mpi_env())
    except subprocess.TimeoutExpired:
        fail(f"{what} took more than {timeout} s: {' '.join(command)}")
    except OSError as error:
        fail(f"{what}: cannot run {command[0]}: {error}")
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-8:])
        fail(f"{what} failed (exit {out.returncode}): {' '.join(command)}\n"
             f"{tail}")
    return out.stdout


def compile_program(args, tmp, ranks, batch):
    path = os.path.join(tmp, f"{args.model}-w{ranks}-b{batch}.fmoe")
    if not os.path.exists(path):
        run([
            args.compiler, "--model", args.model, "--world-size",
            str(ranks), "--batch", str(batch), "-o", path
        ], 120, f"compiling {args.model} for {ranks} rank(s)")
    return path


def train(args, tmp, data, ranks, batch):
    """(median step ms, median tok/s, timed steps) of one flexmoe-run."""
    program = compile_program(args, tmp, ranks, batch)
    stdout = run(
        mpirun_command(args.mpirun, ranks) + [
            args.run, program, "--data", data, "--steps",
            str(args.steps), "--log-every", "1", "--eval-fraction", "0",
            "--progress", "never"
        ], args.timeout, f"training at {ranks} rank(s), batch {batch}")
    ms, tok = [], []
    for line in stdout.splitlines():
        match = STEP_RE.match(line)
        if match and int(match.group(1)) > args.warmup:
            tok.append(float(match.group(2)) * SCALE[match.group(3)])
            ms.append(float(match.group(4)))
    expected = args.steps - args.warmup
    if len(ms) != expected:
        fail(f"training at {ranks} rank(s): parsed {len(ms)} timed step "
             f"lines, expected {expected}; is the log format still "
             f"'... | N tok/s | T ms | ...'?")
    return statistics.median(ms), statistics.median(tok), len(ms)


def alltoall(args, ranks):
    """The rows of mpi_alltoall --csv at `ranks` ranks, as dicts."""
    stdout = run(
        mpirun_command(args.mpirun, ranks) + [
            args.alltoall, "--csv", "--iters",
            str(args.alltoall_iters), "--row-bytes", args.row_bytes,
            "--bytes", args.bytes
        ], args.timeout, f"mpi_alltoall at {ranks} ranks")
    rows = list(csv.DictReader(stdout.strip().splitlines()))
    if not rows:
        fail(f"mpi_alltoall at {ranks} ranks printed no rows")
    return rows


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.path.join(ROOT, "build-runtime"),
                        help="runtime build holding bin/mpi_alltoall")
    parser.add_argument("--run", help="flexmoe-run (default BUILD/bin)")
    parser.add_argument("--compiler", required=True,
                        help="flexmoe-compile, to compile each world size")
    parser.add_argument("--mpirun", default="mpirun")
    parser.add_argument("--model", default="gpt-moe-tiny")
    parser.add_argument("--ranks", default="1,2,4")
    parser.add_argument("--batch", type=int, default=32,
                        help="global batch of the strong-scaling runs")
    parser.add_argument("--weak-batch-per-rank", type=int, default=8,
                        help="per-rank batch of the weak-scaling runs "
                        "(0: none)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5,
                        help="leading steps left out of the medians")
    parser.add_argument("--data", help="text corpus (default: docs/*.md)")
    parser.add_argument("--alltoall-ranks", default="2,4")
    parser.add_argument("--alltoall-iters", type=int, default=20)
    parser.add_argument("--row-bytes", default="256,4096")
    parser.add_argument("--bytes", default="65536,1048576,16777216")
    parser.add_argument("--timeout", type=int, default=120,
                        help="seconds one mpirun may take")
    parser.add_argument("--out", default=os.path.join(
        ROOT, "benchmarks", "results", "scaling.csv"))
    parser.add_argument("--note", default="")
    args = parser.parse_args()

    ranks = ints(args.ranks, "--ranks")
    a2a_ranks = ints(args.alltoall_ranks, "--alltoall-ranks")
    ints(args.row_bytes, "--row-bytes")
    ints(args.bytes, "--bytes")
    if args.steps <= args.warmup:
        fail(f"--steps {args.steps} leaves no step after --warmup "
             f"{args.warmup}")
    if args.batch <= 0 or args.weak_batch_per_rank < 0:
        fail("--batch must be positive and --weak-batch-per-rank >= 0")
    for p in ranks:
        if args.batch % p:
            fail(f"--batch {args.batch} is not divisible by {p} ranks")
    args.run = args.run or os.path.join(args.build, "bin", "flexmoe-run")
    args.alltoall = os.path.join(args.build, "bin", "mpi_alltoall")
    for tool in (args.run, args.compiler, args.alltoall):
        if not os.access(tool, os.X_OK):
            fail(f"no executable at {tool} (build it, or pass its path)")
    if not shutil.which(args.mpirun):
        fail(f"'{args.mpirun}' is not on PATH")

    common = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "cores": os.cpu_count(),
        "load_before": f"{os.getloadavg()[0]:.2f}",
        "git": first_line(["git", "-C", ROOT, "rev-parse", "--short",
                           "HEAD"]),
        "mpi": first_line([args.mpirun, "--version"]),
        "cxx": first_line(["c++", "--version"]),
        "model": args.model,
        "note": args.note,
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="flexmoe-scaling-") as tmp:
        data = args.data
        if not data:
            data = os.path.join(tmp, "corpus.txt")
            with open(data, "w", encoding="utf-8") as corpus:
                for path in sorted(glob.glob(os.path.join(ROOT, "docs",
                                                          "*.md"))):
                    with open(path, encoding="utf-8") as doc:
                        corpus.write(doc.read())
        modes = [("strong", lambda p: args.batch)]
        if args.weak_batch_per_rank:
            modes.append(("weak", lambda p: args.weak_batch_per_rank * p))
        for mode, batch_of in modes:
            base = None
            for p in ranks:
                batch = batch_of(p)
                ms, tok, timed = train(args, tmp, data, p, batch)
                if base is None:
                    base = (ms, tok)
                speedup = base[0] / ms if mode == "strong" else tok / base[1]
                rows.append(dict(common, kind="step", mode=mode, ranks=p,
                                 global_batch=batch, timed_steps=timed,
                                 median_ms=f"{ms:.1f}", tok_s=f"{tok:.0f}",
                                 speedup=f"{speedup:.2f}"))
                print(f"  {mode} {p} rank(s), batch {batch}: {ms:.1f} ms, "
                      f"{tok:.0f} tok/s", file=sys.stderr)
        for p in a2a_ranks:
            for r in alltoall(args, p):
                rows.append(dict(
                    common, kind="alltoall", mode="uniform", ranks=p,
                    timed_steps=r["iters"], row_bytes=r["row_bytes"],
                    bytes_per_rank=r["bytes_per_rank"],
                    flexmoe_us=r["flexmoe_median_us"],
                    flexmoe_busbw_GBps=r["flexmoe_busbw_GBps"],
                    mpi_us=r["mpi_median_us"],
                    mpi_busbw_GBps=r["mpi_busbw_GBps"],
                    overhead_pct=r["overhead_pct"]))
            print(f"  mpi_alltoall at {p} ranks done", file=sys.stderr)
    load_after = f"{os.getloadavg()[0]:.2f}"
    for row in rows:
        row["load_after"] = load_after

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    new = not os.path.exists(args.out)
    with open(args.out, "a", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)

    print(f"{common['date']}, {common['machine']}, {common['cores']} cores, "
          f"load {common['load_before']} -> {load_after}, git {common['git']}"
          f", {common['mpi']}")
    print("\n| mode | ranks | global batch | median step ms | tok/s | "
          "speed-up |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["kind"] == "step":
            print(f"| {r['mode']} | {r['ranks']} | {r['global_batch']} | "
                  f"{r['median_ms']} | {r['tok_s']} | {r['speedup']} |")
    print("\n| ranks | row B | bytes per rank | allToAllV us | busbw GB/s | "
          "MPI_Alltoallv us | busbw GB/s | overhead |\n"
          "|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["kind"] == "alltoall":
            print(f"| {r['ranks']} | {r['row_bytes']} | "
                  f"{r['bytes_per_rank']} | {r['flexmoe_us']} | "
                  f"{r['flexmoe_busbw_GBps']} | {r['mpi_us']} | "
                  f"{r['mpi_busbw_GBps']} | {r['overhead_pct']}% |")
    print(f"\nappended {len(rows)} rows to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
