"""Compares the training losses of flexmoe-run metrics files (CSV) step by
step, and summarises the balance ratio of each, for the dynamic placement
tests.

  compare-metrics.py REF.csv OTHER.csv [...] --tolerance 1e-4
      every OTHER's loss at every step within the relative tolerance of REF's
  compare-metrics.py --balance RUN.csv --first N --last N
      the mean balance ratio (over the MoE layers) of the first and last N
      steps; with --above X, exits 1 unless that mean of the last N steps
      exceeds X; with --every-below X, unless each of the last N steps is
      under X

Exits 1 with the first differing step, or a file with another set of steps.
"""
import argparse
import csv
import sys


def read(path):
    with open(path, newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["kind"] == "train"]
    if not rows:
        sys.exit(f"{path}: no training rows")
    return rows


def balance(row):
    values = [float(v) for k, v in row.items() if k.startswith("balance.")]
    return sum(values) / len(values)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--balance", action="store_true")
    parser.add_argument("--first", type=int, default=5)
    parser.add_argument("--last", type=int, default=10)
    parser.add_argument("--above", type=float)
    parser.add_argument("--every-below", type=float)
    args = parser.parse_args()

    if args.balance:
        for path in args.files:
            rows = read(path)
            first = [balance(r) for r in rows[: args.first]]
            last = [balance(r) for r in rows[-args.last :]]
            mean_last = sum(last) / len(last)
            print(f"{path}: balance first {args.first} steps "
                  f"{sum(first) / len(first):.3f}, last {args.last} steps "
                  f"{mean_last:.3f}")
            if args.above is not None and not mean_last > args.above:
                sys.exit(f"{path}: the mean balance ratio of the last "
                         f"{args.last} steps, {mean_last:.3f}, is not above "
                         f"{args.above}")
            if args.every_below is not None:
                for row in rows[-args.last:]:
                    if not balance(row) < args.every_below:
                        sys.exit(f"{path}: step {row['step']}: balance "
                                 f"ratio {balance(row):.3f} is not below "
                                 f"{args.every_below}")
        return

    reference = read(args.files[0])
    for path in args.files[1:]:
        other = read(path)
        if [r["step"] for r in other] != [r["step"] for r in reference]:
            sys.exit(f"{path}: steps differ from {args.files[0]}'s")
        worst = 0.0
        for a, b in zip(reference, other):
            x, y = float(a["loss"]), float(b["loss"])
            difference = abs(x - y) / max(abs(x), 1e-12)
            worst = max(worst, difference)
            if difference > args.tolerance:
                sys.exit(f"{path}: step {a['step']}: loss {y} differs from "
                         f"{x} by {difference:.2e} (relative), over "
                         f"{args.tolerance}")
        print(f"{path}: {len(other)} steps, worst relative loss difference "
              f"{worst:.2e}: ok")


if __name__ == "__main__":
    main()
