#!/usr/bin/env python3
"""Joins the JSON lines of benchmarks/gpu_moe_layer (flexmoe) and
benchmarks/torch_moe_layer.py (PyTorch) into the markdown table of
docs/PERFORMANCE.md.

  gpu_report.py flexmoe.jsonl torch.jsonl [--out report.md] [--title T]

One row per (precision, d_model, hidden, experts) that flexmoe measured:
  flexmoe ms        the layer's forward + backward (median)
  eager ms, grouped ms   the same layer in PyTorch (expert loop; grouped GEMM)
  flexmoe/eager, flexmoe/grouped   time ratios: below 1 means flexmoe is faster
  expert TFLOP/s    flexmoe's forward expert GEMMs (4*N*D*H FLOPs, N = T*k)
  dense TFLOP/s     nn.matmul of the expert GEMM's shape on the same device
                    and precision; for bf16 also the raw cuBLASLt bf16 GEMM
  expert/dense      expert TFLOP/s over the best dense TFLOP/s of the row
A missing or skipped measurement shows as "-" (skips are listed below the
table with their reasons). Exit 2 if a file cannot be read or holds no rows.
"""

import argparse
import json
import sys


def load(path):
    rows = []
    try:
        with open(path) as f:
            for n, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise SystemExit(f"gpu_report: error: {path}:{n}: not "
                                     f"JSON ({e.msg})")
    except OSError as e:
        print(f"gpu_report: error: cannot read {path}: {e.strerror}",
              file=sys.stderr)
        sys.exit(2)
    return rows


def key(row, experts=True):
    k = (row.get("precision"), row.get("tokens"), row.get("d_model"),
         row.get("hidden"))
    return k + (row.get("experts"),) if experts else k


def fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("flexmoe")
    ap.add_argument("torch", nargs="?")
    ap.add_argument("--out", help="also write the markdown here")
    ap.add_argument("--title", default="MoE layer, forward + backward")
    args = ap.parse_args(argv)

    rows = load(args.flexmoe) + (load(args.torch) if args.torch else [])
    ok = [r for r in rows if r.get("status") == "ok"]
    skipped = [r for r in rows if r.get("status") in ("skip", "error")]
    by = {}
    for r in ok:
        dense = r["impl"] in ("flexmoe-matmul", "cublaslt-bf16",
                              "torch-matmul")
        by[(r["impl"],) + key(r, experts=not dense)] = r

    def get(impl, k, field, dense=False):
        r = by.get((impl,) + (k[:4] if dense else k))
        return None if r is None else r.get(field)

    configs = sorted({key(r) for r in ok if r["impl"] == "flexmoe"},
                     key=lambda k: (k[0] != "fp32", k[1], k[2], k[4]))
    lines = [f"### {args.title}", "",
             "| precision | tokens | d_model | hidden | experts | flexmoe ms "
             "| torch eager ms | torch grouped ms | flexmoe/eager "
             "| flexmoe/grouped | expert TFLOP/s | torch grouped expert "
             "TFLOP/s | dense TFLOP/s (flexmoe matmul) | dense TFLOP/s "
             "(cuBLASLt bf16) | expert/dense |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"
             "|---:|---:|---:|"]
    for k in configs:
        flex = get("flexmoe", k, "layer_ms")
        eager = get("torch-eager", k, "layer_ms")
        grouped = get("torch-grouped", k, "layer_ms")
        expert = get("flexmoe", k, "expert_tflops")
        dense_dev = get("flexmoe-matmul", k, "tflops", dense=True)
        dense_raw = (get("cublaslt-bf16", k, "tflops", dense=True)
                     if k[0] == "bf16" else None)
        best_dense = max([v for v in (dense_dev, dense_raw) if v is not None],
                         default=None)
        lines.append(
            f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[4]} | {fmt(flex)} "
            f"| {fmt(eager)} | {fmt(grouped)} | {fmt(ratio(flex, eager))} "
            f"| {fmt(ratio(flex, grouped))} | {fmt(expert, 1)} "
            f"| {fmt(get('torch-grouped', k, 'expert_tflops'), 1)} "
            f"| {fmt(dense_dev, 1)} | {fmt(dense_raw, 1)} "
            f"| {fmt(ratio(expert, best_dense))} |")
    if not configs:
        lines.append("| (no flexmoe measurement) |" + " |" * 14)
    torch_dense = sorted(r for r in by if r[0] == "torch-matmul")
    if torch_dense:
        lines += ["", "torch dense matmul at the expert GEMM's shape "
                  "([T*k, D] x [D, H]): " + ", ".join(
                      f"{k[1]} D={k[3]}: {by[k]['tflops']:.1f} TFLOP/s"
                      for k in torch_dense)]
    if skipped:
        lines += ["", "Not measured:"]
        for r in skipped:
            lines.append(f"- {r.get('impl')} {r.get('precision', '')} "
                         f"d_model={r.get('d_model', '-')} "
                         f"experts={r.get('experts', '-')}: "
                         f"{r.get('status')}: {r.get('reason', '')}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if not ok:
        print("gpu_report: no measured row in the input", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
