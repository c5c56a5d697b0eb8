"""Checks a flexmoe-run decision log and routing trace (docs/scheduling.md).

  check-placement-logs.py DECISIONS.jsonl TRACE.jsonl --steps N --layers L
      --ranks W --experts E

Every decision line must carry the documented fields; the trace must have
its header and one record per step and layer, each with W x E non-negative
counts whose per-rank sums are equal (every rank routes the same number of
token copies). Exits 1 with the first problem.
"""
import argparse
import json
import sys

DECISION_FIELDS = [
    "step", "layer", "policy", "reason", "observed_balance",
    "replicas_before", "replicas_after", "placement_after",
    "predicted_before_ms", "predicted_after_ms", "predicted_balance_before",
    "predicted_balance_after", "predicted_terms_after_ms", "migration_bytes",
    "migration_ms", "replicas_added", "replicas_removed",
    "measured_before_ms", "measured_after_ms", "measured_steps"
]


def fail(message):
    sys.exit(message)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("decisions")
    parser.add_argument("trace")
    for flag in ("--steps", "--layers", "--ranks", "--experts"):
        parser.add_argument(flag, type=int, required=True)
    args = parser.parse_args()

    with open(args.decisions) as f:
        decisions = [json.loads(line) for line in f if line.strip()]
    if not decisions:
        fail(f"{args.decisions}: no decision")
    for i, decision in enumerate(decisions):
        missing = [k for k in DECISION_FIELDS if k not in decision]
        if missing:
            fail(f"{args.decisions}: line {i + 1} lacks {missing}")
        if len(decision["replicas_after"]) != args.experts:
            fail(f"{args.decisions}: line {i + 1}: replicas_after has "
                 f"{len(decision['replicas_after'])} entries")
    print(f"decisions: {len(decisions)} re-plan(s), every field present")

    with open(args.trace) as f:
        lines = [json.loads(line) for line in f]
    header, records = lines[0], lines[1:]
    if header.get("format") != "flexmoe-routing-trace" or \
            header.get("world_size") != args.ranks or \
            len(header.get("layers", [])) != args.layers:
        fail(f"{args.trace}: unexpected header {header}")
    if len(records) != args.steps * args.layers:
        fail(f"{args.trace}: {len(records)} records for {args.steps} steps "
             f"x {args.layers} layers")
    per_rank = None
    for record in records:
        counts = record["counts"]
        if len(counts) != args.ranks * args.experts or min(counts) < 0:
            fail(f"{args.trace}: step {record['step']}: bad counts {counts}")
        sums = {sum(counts[r * args.experts:(r + 1) * args.experts])
                for r in range(args.ranks)}
        if len(sums) != 1:
            fail(f"{args.trace}: step {record['step']}: ranks route "
                 f"different numbers of copies {sums}")
        per_rank = sums.pop()
    steps = sorted({r["step"] for r in records})
    if steps != list(range(1, args.steps + 1)):
        fail(f"{args.trace}: steps {steps[:3]}... are not 1..{args.steps}")
    print(f"trace: {args.steps} steps x {args.layers} layer(s), {args.ranks} "
          f"ranks x {args.experts} experts, {per_rank} token copies per rank "
          f"and step: ok")


if __name__ == "__main__":
    main()
