#!/usr/bin/env python3
"""A full GPT-MoE training step on one GPU: flexmoe-run --device cuda (fp32
and bf16) against the PyTorch model of test/pytorch/gpt_moe.py (same preset,
eager, bf16 autocast for the bf16 row), ms/step as the median over the timed
steps.

  gpu_train_step.py --flexmoe-run BIN --program gpt-moe-small.fmoe \\
      --preset gpt-moe-small [--steps 20] [--warmup 5] \\
      [--precision fp32,bf16] [--jsonl rows.jsonl] [--work-dir DIR]

flexmoe's time is the step_ms column of its --metrics CSV (the step's wall
time, written by flexmoe-run); PyTorch's is a host clock around
train_step(), which ends by reading the loss (a device synchronisation).
Both train on random-token batches of the preset's shape; the first
--warmup steps are not counted. $FLEXMOE_LD_LIBRARY_PATH, when set, is the
LD_LIBRARY_PATH given to flexmoe-run alone (scripts/gpu-check.sh sets it to
the bundle's libraries), so that the Python process keeps its own.

Exit status: 0 when every asked-for row was measured or skipped with a
reason (no GPU, no --device in flexmoe-run), 1 when a run failed, 2 on bad
arguments.
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time


def arguments(argv):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--flexmoe-run", help="the flexmoe-run binary "
                    "(leave out to time PyTorch only)")
    ap.add_argument("--program", help="the .fmoe program of --preset "
                    "(world size 1)")
    ap.add_argument("--data", help="flexmoe-run's --data (needed where its "
                    "built-in corpus is missing, as on a GPU machine)")
    ap.add_argument("--preset", default="gpt-moe-small")
    ap.add_argument("--steps", type=int, default=20,
                    help="timed steps (default 20)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--precision", default="fp32,bf16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--gpt-moe", help="path of gpt_moe.py (default: beside "
                    "this script, else test/pytorch/)")
    ap.add_argument("--work-dir", default=".",
                    help="where flexmoe-run's metrics CSVs go")
    ap.add_argument("--jsonl", help="also write the rows here")
    ap.add_argument("--markdown", help="append the rows to this file as a "
                    "markdown table")
    ap.add_argument("--timeout", type=float, default=300,
                    help="seconds one flexmoe-run may take")
    args = ap.parse_args(argv)
    args.precision = [p for p in args.precision.split(",") if p]
    if not args.precision or any(p not in ("fp32", "bf16")
                                 for p in args.precision):
        ap.error("--precision: fp32 and/or bf16")
    if args.steps <= 0 or args.warmup < 0:
        ap.error("--steps must be positive, --warmup not negative")
    if args.flexmoe_run and not args.program:
        ap.error("--flexmoe-run needs --program")
    return args


def import_gpt_moe(path):
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [path] if path else [
        os.path.join(here, "gpt_moe.py"),
        os.path.join(here, "..", "test", "pytorch", "gpt_moe.py")]
    for c in candidates:
        if c and os.path.isfile(c):
            sys.path.insert(0, os.path.dirname(os.path.abspath(c)))
            import gpt_moe  # noqa: E402
            return gpt_moe
    raise SystemExit(f"gpu_train_step: error: gpt_moe.py not found "
                     f"(looked at {', '.join(candidates)})")


def flexmoe_row(args, precision):
    row = {"bench": "train_step", "impl": "flexmoe", "preset": args.preset,
           "precision": precision, "device": args.device}
    env = dict(os.environ)
    if os.environ.get("FLEXMOE_LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = os.environ["FLEXMOE_LD_LIBRARY_PATH"]
    try:
        helptext = subprocess.run([args.flexmoe_run, "--help"], env=env,
                                  capture_output=True, text=True,
                                  timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        row.update(status="error", reason=f"cannot run {args.flexmoe_run}: "
                                          f"{e}")
        return row
    if "--device" not in helptext:
        row.update(status="skip", reason="this flexmoe-run has no --device "
                                         "option (CPU only)")
        return row
    total = args.warmup + args.steps
    metrics = os.path.join(args.work_dir,
                           f"train-step-{args.preset}-{precision}.csv")
    cmd = [args.flexmoe_run, args.program, "--device", args.device,
           "--precision", precision, "--steps", str(total),
           "--eval-every", str(total), "--eval-batches", "1",
           "--metrics", metrics, "--progress", "never"]
    if args.data:
        cmd += ["--data", args.data]
    try:
        run = subprocess.run(cmd, env=env, capture_output=True, text=True,
                             timeout=args.timeout)
    except subprocess.TimeoutExpired:
        row.update(status="error", reason=f"timed out after {args.timeout} s")
        return row
    if run.returncode != 0:
        tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
        row.update(status="error", reason=f"exit {run.returncode}: "
                                          f"{' | '.join(tail)}")
        return row
    with open(metrics, newline="") as f:
        times = [float(r["step_ms"]) for r in csv.DictReader(f)
                 if r["kind"] == "train" and int(r["step"]) > args.warmup]
    if not times:
        row.update(status="error", reason=f"{metrics} has no timed step")
        return row
    row.update(status="ok", ms_per_step=statistics.median(times),
               steps=len(times))
    return row


def torch_rows(args, gpt_moe, torch):
    rows = []
    device = torch.device(args.device)
    for precision in args.precision:
        row = {"bench": "train_step", "impl": "torch-eager",
               "preset": args.preset, "precision": precision,
               "device": args.device}
        rows.append(row)
        try:
            # gpt_moe.py makes its masks and indices with torch.arange and
            # friends, without a device: make them on the GPU.
            if hasattr(torch, "set_default_device"):
                torch.set_default_device(device)
            elif device.type != "cpu":
                raise RuntimeError(f"torch {torch.__version__} has no "
                                   f"set_default_device (torch >= 2.0)")
            torch.manual_seed(0)
            cfg = gpt_moe.config_from_preset(args.preset)
            model = gpt_moe.GPTMoE(cfg).to(device)
            opt = gpt_moe.make_optimizer(model, cfg.adamw)
            shape = (cfg.batch_size, cfg.seq_len)
            batches = [(torch.randint(0, cfg.vocab_size, shape,
                                      dtype=torch.int32, device=device),
                        torch.randint(0, cfg.vocab_size, shape,
                                      dtype=torch.int32, device=device))
                       for _ in range(args.warmup + args.steps)]
            times = []
            for i, (tokens, labels) in enumerate(batches):
                start = time.perf_counter()
                if precision == "bf16":
                    with torch.autocast(device.type, dtype=torch.bfloat16):
                        loss = gpt_moe.train_step(model, opt, tokens, labels)
                else:
                    loss = gpt_moe.train_step(model, opt, tokens, labels)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i >= args.warmup:
                    times.append((time.perf_counter() - start) * 1e3)
            if not loss == loss:
                raise FloatingPointError("the loss is NaN")
            row.update(status="ok", ms_per_step=statistics.median(times),
                       steps=len(times), last_loss=loss)
            del model, opt
        except Exception as e:  # noqa: BLE001 - one row fails, not the run
            row.update(status="error", reason=f"{type(e).__name__}: "
                       f"{str(e).splitlines()[0][:300] if str(e) else ''}")
        finally:
            if hasattr(torch, "set_default_device"):
                torch.set_default_device("cpu")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def main(argv=None):
    args = arguments(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    rows = []
    try:
        import torch
        have_torch = True
    except ImportError:
        have_torch = False
    gpu = have_torch and (args.device == "cpu" or torch.cuda.is_available())
    if not gpu:
        print("gpu_train_step: no CUDA device (or no torch); SKIP")
        rows.append({"bench": "train_step", "status": "skip",
                     "reason": "no CUDA device"})
    else:
        if args.flexmoe_run:
            for precision in args.precision:
                rows.append(flexmoe_row(args, precision))
        rows += torch_rows(args, import_gpt_moe(args.gpt_moe), torch)
        cfg = import_gpt_moe(args.gpt_moe).config_from_preset(args.preset)
        tokens = cfg.batch_size * cfg.seq_len
        for r in rows:
            if r.get("status") == "ok":
                r["tokens_per_s"] = tokens / (r["ms_per_step"] / 1e3)
    print(f"gpu_train_step: {args.preset} on {args.device}, median of "
          f"{args.steps} steps after {args.warmup}")
    print(f"  {'impl':<12} {'prec':<5} {'ms/step':>10} {'tokens/s':>12}")
    for r in rows:
        if r.get("status") == "ok":
            print(f"  {r['impl']:<12} {r['precision']:<5} "
                  f"{r['ms_per_step']:>10.2f} {r['tokens_per_s']:>12.0f}")
        else:
            print(f"  {r.get('impl', '-'):<12} {r.get('precision', '-'):<5} "
                  f"{r['status']}: {r.get('reason', '')}")
    if args.jsonl:
        with open(args.jsonl, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write(f"\n### Training step, {args.preset} on {args.device} "
                    f"(gpu_train_step.py, median of {args.steps} steps)\n\n"
                    "| impl | precision | ms/step | tokens/s |\n"
                    "|---|---|---:|---:|\n")
            for r in rows:
                if r.get("status") == "ok":
                    f.write(f"| {r['impl']} | {r['precision']} | "
                            f"{r['ms_per_step']:.2f} | "
                            f"{r['tokens_per_s']:.0f} |\n")
                else:
                    f.write(f"| {r.get('impl', '-')} | "
                            f"{r.get('precision', '-')} | {r['status']} | "
                            f"{r.get('reason', '')} |\n")
    return 1 if any(r.get("status") == "error" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
