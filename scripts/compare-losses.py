#!/usr/bin/env python3
"""Compares the loss columns of two flexmoe-run --metrics CSV files step by
step.

  compare-losses.py REFERENCE.csv CANDIDATE.csv [--rtol R] [--atol A]
                    [--column loss] [--kind train] [--steps N]
                    [--window W --window-rtol R]

Every step present in the reference must be in the candidate (and the other
way round) with |candidate - reference| <= atol + rtol * |reference|; a
NaN or infinity on either side is a mismatch. With --window, the mean of the
last W steps must also agree within --window-rtol (a check of where the
runs end up, for a loose per-step tolerance). Prints the worst steps and a
one-line verdict.

Exit status: 0 the losses agree, 1 they do not, 2 a file is missing,
unreadable or has no such column/rows (nothing compared).
"""

import argparse
import csv
import math
import sys


class InputError(Exception):
    pass


def read_losses(path, column, kind):
    """{step: value} of the rows of `kind` (the last row of a step wins, as
    after a resume)."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None:
                raise InputError(f"{path}: empty file, no CSV header")
            for needed in ("step", column):
                if needed not in reader.fieldnames:
                    raise InputError(
                        f"{path}: no '{needed}' column (columns: "
                        f"{', '.join(reader.fieldnames)})")
            values = {}
            for line, row in enumerate(reader, start=2):
                if "kind" in row and row["kind"] != kind:
                    continue
                try:
                    step = int(row["step"])
                except (TypeError, ValueError):
                    raise InputError(f"{path}:{line}: step '{row['step']}' "
                                     f"is not an integer")
                text = (row[column] or "").strip()
                try:
                    values[step] = float(text)
                except ValueError:
                    raise InputError(f"{path}:{line}: {column} '{text}' is "
                                     f"not a number")
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}")
    if not values:
        raise InputError(f"{path}: no '{kind}' rows")
    return values


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("reference")
    ap.add_argument("candidate")
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--atol", type=float, default=1e-6)
    ap.add_argument("--column", default="loss")
    ap.add_argument("--kind", default="train",
                    help="rows of this kind (train or eval; default train)")
    ap.add_argument("--steps", type=int, default=0,
                    help="compare only steps <= N (default all)")
    ap.add_argument("--window", type=int, default=0,
                    help="also compare the mean of the last W steps")
    ap.add_argument("--window-rtol", type=float, default=0.01)
    ap.add_argument("--show", type=int, default=5,
                    help="how many of the worst steps to print")
    args = ap.parse_args(argv)
    if min(args.rtol, args.atol, args.window_rtol) < 0 or args.window < 0:
        ap.error("tolerances and --window must not be negative")

    try:
        ref = read_losses(args.reference, args.column, args.kind)
        cand = read_losses(args.candidate, args.column, args.kind)
    except InputError as e:
        print(f"compare-losses: error: {e}", file=sys.stderr)
        return 2
    if args.steps:
        ref = {s: v for s, v in ref.items() if s <= args.steps}
        cand = {s: v for s, v in cand.items() if s <= args.steps}

    problems = []
    only_ref = sorted(set(ref) - set(cand))
    only_cand = sorted(set(cand) - set(ref))
    if only_ref:
        problems.append(f"{len(only_ref)} step(s) missing from "
                        f"{args.candidate} (first {only_ref[0]})")
    if only_cand:
        problems.append(f"{len(only_cand)} step(s) missing from "
                        f"{args.reference} (first {only_cand[0]})")
    steps = sorted(set(ref) & set(cand))
    if not steps:
        print(f"compare-losses: error: no step in common", file=sys.stderr)
        return 2

    rows = []  # (excess over the tolerance, step, ref, cand, diff, allowed)
    for s in steps:
        r, c = ref[s], cand[s]
        diff = abs(c - r)
        allowed = args.atol + args.rtol * abs(r)
        finite = math.isfinite(r) and math.isfinite(c)
        excess = diff - allowed if finite else math.inf
        rows.append((excess, s, r, c, diff, allowed))
    bad = [row for row in rows if not row[0] <= 0]
    if bad:
        problems.append(f"{len(bad)} of {len(steps)} step(s) outside "
                        f"atol {args.atol:g} + rtol {args.rtol:g}*|ref|")

    window_note = ""
    if args.window:
        tail = steps[-args.window:]
        mean_r = sum(ref[s] for s in tail) / len(tail)
        mean_c = sum(cand[s] for s in tail) / len(tail)
        rel = abs(mean_c - mean_r) / max(abs(mean_r), 1e-30)
        window_note = (f"; mean of the last {len(tail)} steps {mean_r:.6f} vs "
                       f"{mean_c:.6f} (relative {rel:.2e}, allowed "
                       f"{args.window_rtol:g})")
        if not rel <= args.window_rtol:
            problems.append(f"the mean of the last {len(tail)} steps differs "
                            f"by {rel:.2e} relative (> {args.window_rtol:g})")

    # Non-finite values first, then the largest differences.
    worst = sorted(rows, key=lambda row: (math.isfinite(row[4]),
                                          -row[4] if math.isfinite(row[4])
                                          else 0))[:args.show]
    print(f"compare-losses: {args.column} of {args.reference} (reference) vs "
          f"{args.candidate}, {len(steps)} step(s) {steps[0]}..{steps[-1]}")
    print(f"  {'step':>6} {'reference':>12} {'candidate':>12} {'|diff|':>10} "
          f"{'allowed':>10}")
    for excess, s, r, c, diff, allowed in worst:
        flag = "  MISMATCH" if not excess <= 0 else ""
        print(f"  {s:>6} {r:>12.6f} {c:>12.6f} {diff:>10.3e} "
              f"{allowed:>10.3e}{flag}")
    max_diff = max(row[4] for row in rows)
    if problems:
        print(f"compare-losses: MISMATCH: {'; '.join(problems)}{window_note}")
        return 1
    print(f"compare-losses: OK: {len(steps)} step(s) agree, largest |diff| "
          f"{max_diff:.3e}{window_note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
