#!/usr/bin/env python3
"""The PyTorch peers of benchmarks/gpu_moe_layer.cpp: one MoE layer's
forward + backward (softmax gate, top-k, Switch aux loss, GELU experts,
weighted combine; no capacity), timed the same way over the same grid.

impl rows (JSON lines, the schema of gpu_moe_layer; benchmarks/gpu_report.py
joins them):
  torch-eager    a loop over the experts, as DeepSpeed-MoE's reference
                 implementation does (gather the expert's tokens, two
                 matmuls, scatter-add the weighted rows); fp32, or bf16
                 under torch.autocast
  torch-grouped  tokens sorted by expert and torch._grouped_mm for the
                 expert GEMMs (skipped, with the reason, where this torch
                 has no _grouped_mm or it refuses the precision/device)
  torch-matmul   a dense [T*k, D] x [D, H] matmul: the FLOPs of one expert
                 GEMM (2*N*D*H), in fp32 or bf16

  python3 benchmarks/torch_moe_layer.py --device cuda --jsonl torch.jsonl
  python3 benchmarks/torch_moe_layer.py --device cpu --tokens 64 \\
      --d-model 32 --experts 4 --iters 3          # a smoke test on the CPU

Timing: CUDA events around the region (median of --iters after --warmup);
on the CPU a host clock. Inputs are seeded, never zero.
"""

import argparse
import json
import math
import statistics
import sys
import time


def parse_ints(text):
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of integers")
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"'{text}': positive integers needed")
    return values


def parse_precisions(text):
    values = [v for v in text.split(",") if v]
    bad = [v for v in values if v not in ("fp32", "bf16")]
    if not values or bad:
        raise argparse.ArgumentTypeError(
            f"'{text}': precisions are fp32 and bf16")
    return values


def arguments(argv):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cuda",
                    help="cuda, cuda:N or cpu (default cuda)")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--d-model", type=parse_ints, default=[1024, 2048, 4096])
    ap.add_argument("--experts", type=parse_ints, default=[8, 16, 64])
    ap.add_argument("--hidden-mult", type=int, default=4)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--precision", type=parse_precisions,
                    default=["fp32", "bf16"])
    ap.add_argument("--impl", default="eager,grouped,matmul",
                    help="which of eager,grouped,matmul to run")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jsonl", help="also write the rows here")
    ap.add_argument("--self-check", action="store_true",
                    help="check the grouped path against the eager one on "
                         "a small layer (a loop stands in for "
                         "torch._grouped_mm where it is missing) and exit")
    args = ap.parse_args(argv)
    impls = [v for v in args.impl.split(",") if v]
    unknown = [v for v in impls if v not in ("eager", "grouped", "matmul")]
    if unknown or not impls:
        ap.error(f"--impl: unknown {unknown}; valid: eager,grouped,matmul")
    args.impl = impls
    if args.tokens <= 0 or args.hidden_mult <= 0 or args.top_k <= 0:
        ap.error("--tokens, --hidden-mult and --top-k must be positive")
    if any(args.top_k > e for e in args.experts):
        ap.error(f"--top-k {args.top_k} exceeds an --experts value")
    if args.iters <= 0 or args.warmup < 0:
        ap.error("--iters must be positive and --warmup not negative")
    return args


class Timer:
    """Median milliseconds of fn(): CUDA events on a GPU, else a host
    clock."""

    def __init__(self, torch, device, warmup, iters):
        self.torch, self.device = torch, device
        self.warmup, self.iters = warmup, iters

    def median_ms(self, fn):
        torch = self.torch
        for _ in range(self.warmup):
            fn()
        times = []
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            for _ in range(self.iters):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
        else:
            for _ in range(self.iters):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def random_values(torch, shape, generator, scale, device):
    """Seeded values in +-[0.1, 1] * scale (never zero), as the C++ side."""
    magnitude = torch.rand(shape, generator=generator) * 0.9 + 0.1
    sign = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0)
    return (magnitude * sign * scale).to(device)


class Layer:
    """The parameters and inputs of one configuration."""

    def __init__(self, torch, device, tokens, d, hidden, experts, top_k,
                 seed):
        g = torch.Generator().manual_seed(seed)
        rv = lambda shape, scale: random_values(torch, shape, g, scale, device)
        self.torch, self.top_k, self.experts = torch, top_k, experts
        self.x = rv((tokens, d), 1.0).requires_grad_()
        self.wg = rv((d, experts), 1 / math.sqrt(d)).requires_grad_()
        self.w1 = rv((experts, d, hidden), 1 / math.sqrt(d)).requires_grad_()
        self.b1 = rv((experts, hidden), 0.1).requires_grad_()
        self.w2 = rv((experts, hidden, d), 1 / math.sqrt(hidden)) \
            .requires_grad_()
        self.b2 = rv((experts, d), 0.1).requires_grad_()
        self.dy = rv((tokens, d), 1.0)
        self.params = [self.x, self.wg, self.w1, self.b1, self.w2, self.b2]

    def gate(self):
        """probs, top-k ids, combine weights, aux loss (flexmoe's moe.gate
        and moe.aux_loss: weights renormalised when k > 1)."""
        torch = self.torch
        probs = torch.softmax((self.x @ self.wg).float(), dim=-1)
        weights, ids = probs.topk(self.top_k, dim=-1)
        if self.top_k > 1:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        with torch.no_grad():
            routed = torch.bincount(ids.reshape(-1), minlength=self.experts)
            fraction = routed.float() / ids.numel()
        aux = 0.01 * self.experts * (fraction * probs.mean(dim=0)).sum()
        return ids, weights, aux

    def token_of_copy(self, ids):
        t = ids.shape[0]
        return self.torch.arange(t, device=ids.device) \
            .repeat_interleave(self.top_k)

    def eager(self):
        """DeepSpeed-MoE's reference style: a Python loop over experts."""
        torch = self.torch
        ids, weights, aux = self.gate()
        flat_ids, flat_w = ids.reshape(-1), weights.reshape(-1)
        tok = self.token_of_copy(ids)
        y = torch.zeros_like(self.x)
        for e in range(self.experts):
            sel = (flat_ids == e).nonzero(as_tuple=True)[0]
            if sel.numel() == 0:
                continue
            rows = tok[sel]
            h = torch.nn.functional.gelu(
                self.x[rows] @ self.w1[e] + self.b1[e], approximate="tanh")
            out = h @ self.w2[e] + self.b2[e]
            y = y.index_add(0, rows, (out * flat_w[sel, None]).to(y.dtype))
        return y, aux

    def grouped(self, grouped_mm, dtype):
        """Tokens sorted by expert, the expert GEMMs as grouped GEMMs."""
        torch = self.torch
        ids, weights, aux = self.gate()
        flat_ids, flat_w = ids.reshape(-1), weights.reshape(-1)
        order = torch.argsort(flat_ids, stable=True)
        sorted_ids = flat_ids[order]
        rows = self.token_of_copy(ids)[order]
        offs = torch.cumsum(torch.bincount(flat_ids, minlength=self.experts),
                            0).to(torch.int32)
        h = grouped_mm(self.x[rows].to(dtype), self.w1.to(dtype), offs)
        h = torch.nn.functional.gelu(h.float() + self.b1[sorted_ids],
                                     approximate="tanh")
        out = grouped_mm(h.to(dtype), self.w2.to(dtype), offs)
        out = out.float() + self.b2[sorted_ids]
        y = torch.zeros_like(self.x).index_add(0, rows, out * flat_w[order, None])
        return y, aux

    def backward(self, y, aux):
        for p in self.params:
            p.grad = None
        self.torch.autograd.backward([y, aux],
                                     [self.dy, self.torch.ones_like(aux)])


def find_grouped_mm(torch, device, dtype):
    """A callable (a [M,K], b [G,K,N], offs [G] int32) -> [M,N] built on
    torch._grouped_mm, or (None, reason). Probes forward and backward on
    uneven groups (an empty one included); tries b as given and b with a
    column-major inner layout, which some kernels require."""
    fn = getattr(torch, "_grouped_mm", None)
    if fn is None:
        return None, f"torch {torch.__version__} has no torch._grouped_mm"
    g = torch.Generator().manual_seed(7)
    a = (torch.rand((48, 32), generator=g) + 0.1).to(device, dtype)
    b = (torch.rand((3, 32, 16), generator=g) + 0.1).to(device, dtype)
    offs = torch.tensor([16, 16, 48], dtype=torch.int32, device=device)
    reference = torch.cat([a[:16].float() @ b[0].float(),
                           a[16:].float() @ b[2].float()])
    variants = [
        ("row-major b", lambda a, b, offs: fn(a, b, offs=offs)),
        ("column-major b",
         lambda a, b, offs: fn(a, b.transpose(-2, -1).contiguous()
                               .transpose(-2, -1), offs=offs)),
    ]
    errors = []
    for name, call in variants:
        try:
            a_ = a.clone().requires_grad_()
            b_ = b.clone().requires_grad_()
            out = call(a_, b_, offs)
            out.float().sum().backward()
            err = (out.float() - reference).abs().max().item()
            if not err <= 0.05 * reference.abs().max().item():
                errors.append(f"{name}: wrong result (max error {err:.3g})")
                continue
            return call, None
        except Exception as e:  # noqa: BLE001 - any refusal means "skip"
            errors.append(f"{name}: {str(e).splitlines()[0][:160]}")
    return None, "torch._grouped_mm refused: " + "; ".join(errors)


def reference_grouped_mm(a, b, offs):
    """torch._grouped_mm's meaning, as a loop: rows offs[g-1]:offs[g] of a
    times b[g]."""
    outs, begin = [], 0
    for g, end in enumerate(offs.tolist()):
        outs.append(a[begin:end] @ b[g])
        begin = end
    return a.new_empty((0, b.shape[-1])) if not outs else \
        __import__("torch").cat(outs)


def self_check(torch, device):
    """The grouped path computes the eager path's output and gradients."""
    layer = Layer(torch, device, 40, 16, 24, 5, 2, seed=3)
    found, reason = find_grouped_mm(torch, device, torch.float32)
    grouped_mm = found or reference_grouped_mm
    results = []
    for run in (layer.eager, lambda: layer.grouped(grouped_mm,
                                                   torch.float32)):
        y, aux = run()
        layer.backward(y, aux)
        results.append([y.detach().clone()] +
                       [p.grad.clone() for p in layer.params])
    names = ["y", "dx", "dwg", "dw1", "db1", "dw2", "db2"]
    worst = max(((a - b).abs().max().item() /
                 max(a.abs().max().item(), 1e-30), n)
                for a, b, n in zip(results[0], results[1], names))
    using = "torch._grouped_mm" if found else f"a loop ({reason})"
    if not worst[0] < 1e-4:
        print(f"torch_moe_layer: self-check FAILED: grouped ({using}) and "
              f"eager differ, worst {worst[1]} relative error {worst[0]:.3g}")
        return 1
    print(f"torch_moe_layer: self-check passed: grouped ({using}) == eager, "
          f"worst relative difference {worst[0]:.2g} ({worst[1]})")
    return 0


def base_row(impl, precision, tokens, d, hidden, experts, top_k):
    return {"bench": "moe_layer", "impl": impl, "precision": precision,
            "tokens": tokens, "d_model": d, "hidden": hidden,
            "experts": experts, "top_k": top_k}


def main(argv=None):
    args = arguments(argv)
    try:
        import torch
    except ImportError as e:
        print(f"torch_moe_layer: cannot import torch ({e}); SKIP")
        return 0
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        print(f"torch_moe_layer: --device {args.device}: {e}",
              file=sys.stderr)
        return 2
    out = open(args.jsonl, "w") if args.jsonl else None

    def emit(row):
        if out:
            out.write(json.dumps(row) + "\n")
            out.flush()
        keys = ("impl", "precision", "d_model", "hidden", "experts")
        head = f"{row.get('impl', '-'):<14}" + " ".join(
            f"{row.get(k, '-')!s:>7}" for k in keys[1:])
        if row["status"] != "ok":
            print(f"{head}  {row['status']}: {row.get('reason', '')}",
                  flush=True)
        elif "layer_ms" in row:
            extra = ""
            if "experts_fwd_ms" in row:
                extra = (f"  experts fwd {row['experts_fwd_ms']:9.3f} ms "
                         f"{row['expert_tflops']:7.1f} TFLOP/s")
            print(f"{head}  layer {row['layer_ms']:9.3f} ms  fwd "
                  f"{row['fwd_ms']:9.3f} ms{extra}", flush=True)
        else:
            print(f"{head}  gemm {row['gemm_ms']:9.3f} ms "
                  f"{row['tflops']:7.1f} TFLOP/s", flush=True)

    if device.type == "cuda" and not torch.cuda.is_available():
        print("torch_moe_layer: no CUDA device\nSKIP torch_moe_layer")
        if args.self_check:
            return 0
        emit({"bench": "moe_layer", "impl": "torch-eager", "status": "skip",
              "reason": "no CUDA device"})
        return 0
    if args.self_check:
        return self_check(torch, device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else "cpu")
    print(f"torch_moe_layer: torch {torch.__version__} on {name}, "
          f"{args.tokens} tokens, top-{args.top_k}, median of {args.iters}")
    timer = Timer(torch, device, args.warmup, args.iters)
    oom = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)
    failures = 0
    for precision in args.precision:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) \
            if precision == "bf16" else None
        grouped_mm, grouped_reason = (None, "not asked for")
        if "grouped" in args.impl:
            grouped_mm, grouped_reason = find_grouped_mm(torch, device, dtype)
        for d in args.d_model:
            hidden = args.hidden_mult * d
            n = args.tokens * args.top_k
            if "matmul" in args.impl:
                row = base_row("torch-matmul", precision, args.tokens, d,
                               hidden, 0, args.top_k)
                try:
                    a = torch.rand((n, d), device=device).add_(0.1).to(dtype)
                    b = torch.rand((d, hidden), device=device).add_(0.1) \
                        .to(dtype)
                    ms = timer.median_ms(lambda: a @ b)
                    row.update(status="ok", gemm_ms=ms,
                               tflops=2.0 * n * d * hidden / ms / 1e9)
                    del a, b
                except oom as e:
                    row.update(status="skip", reason=f"out of memory: {e}")
                emit(row)
            for e in args.experts:
                # fp32 parameters, their gradients, bf16 copies of the
                # weights under autocast, activations: skip what cannot fit.
                weights = 2 * e * d * hidden * 4
                need = 2.6 * weights + 12 * n * hidden
                free = (torch.cuda.mem_get_info(device)[0]
                        if device.type == "cuda" else float("inf"))
                layer = None
                for impl in ("eager", "grouped"):
                    if impl not in args.impl:
                        continue
                    row = base_row(f"torch-{impl}", precision, args.tokens, d,
                                   hidden, e, args.top_k)
                    if impl == "grouped" and grouped_mm is None:
                        row.update(status="skip", reason=grouped_reason)
                        emit(row)
                        continue
                    if need > 0.92 * free:
                        row.update(status="skip",
                                   reason=f"needs about {need / 2**30:.1f} GiB,"
                                          f" {free / 2**30:.1f} GiB free")
                        emit(row)
                        continue
                    try:
                        if layer is None:
                            layer = Layer(torch, device, args.tokens, d,
                                          hidden, e, args.top_k, args.seed)
                        if impl == "eager":
                            forward = layer.eager
                        else:
                            forward = (lambda: layer.grouped(grouped_mm,
                                                             dtype))

                        def fwd():
                            if autocast:
                                with autocast():
                                    return forward()
                            return forward()

                        def step():
                            y, aux = fwd()
                            layer.backward(y, aux)

                        def fwd_only():
                            with torch.no_grad():
                                fwd()

                        row.update(layer_ms=timer.median_ms(step),
                                   fwd_ms=timer.median_ms(fwd_only))
                        if impl == "grouped":
                            ms = timer.median_ms(
                                lambda: expert_gemms(torch, layer, grouped_mm,
                                                     dtype))
                            row.update(experts_fwd_ms=ms,
                                       expert_tflops=4.0 * n * d * hidden
                                       / ms / 1e9)
                        y, _ = fwd()
                        if not bool(torch.isfinite(y).all()):
                            raise FloatingPointError(
                                "a non-finite value in the layer's output")
                        row["status"] = "ok"
                    except oom as err:
                        row.update(status="skip",
                                   reason=f"out of memory: "
                                          f"{str(err).splitlines()[0]}")
                    except Exception as err:  # noqa: BLE001 - one row fails
                        row.update(status="error", reason=f"{type(err).__name__}"
                                   f": {str(err).splitlines()[0][:300]}")
                        failures += 1
                    emit(row)
                del layer
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    if out:
        out.close()
    if failures:
        print(f"torch_moe_layer: {failures} configuration(s) failed",
              file=sys.stderr)
    return 1 if failures else 0


def expert_gemms(torch, layer, grouped_mm, dtype):
    """The forward expert GEMMs alone (rows already sorted by expert), for
    the expert-GEMM TFLOP/s of the grouped path."""
    with torch.no_grad():
        if not hasattr(layer, "_sorted"):
            ids, _, _ = layer.gate()
            flat = ids.reshape(-1)
            order = torch.argsort(flat, stable=True)
            rows = layer.token_of_copy(ids)[order]
            offs = torch.cumsum(torch.bincount(flat, minlength=layer.experts),
                                0).to(torch.int32)
            layer._sorted = (layer.x[rows].to(dtype), layer.w1.to(dtype),
                             layer.w2.to(dtype), offs)
        xs, w1, w2, offs = layer._sorted
        h = grouped_mm(xs, w1, offs)
        return grouped_mm(torch.nn.functional.gelu(h, approximate="tanh"),
                          w2, offs)


if __name__ == "__main__":
    sys.exit(main())
