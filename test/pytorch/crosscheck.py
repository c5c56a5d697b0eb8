#!/usr/bin/python3
"""Cross-checks flexmoe's training step against the PyTorch reference.

For each program: runs flexmoe-grad-dump (N steps on seeded random batches),
loads flexmoe's initial parameters into gpt_moe.GPTMoE in float64 (the
reference) and in float32, trains both with torch.optim.AdamW on the same
batches, and compares flexmoe and torch-fp32 against torch-fp64:

* the loss of every step,
* every parameter's gradient at every step,
* every parameter after every step's AdamW update.

Error of a tensor a against the reference b:

    err = ||a - b|| / max(||b||, floor)

floor is 1e-6 x the norm of the whole model's reference gradient (for
gradients) or of the parameter update (for parameters): it only matters for
tensors whose exact value is zero, e.g. the attention key bias, whose
gradient is zero because softmax ignores a per-query shift of the scores.
Exits non-zero naming every tensor above the tolerance (README.md says why
1e-4).

    crosscheck.py --dump-tool build/bin/flexmoe-grad-dump prog.fmoe [...]
"""

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import torch
except ImportError as e:  # the lit test turns this into UNSUPPORTED
    print(f"crosscheck: UNSUPPORTED: PyTorch is not importable ({e})")
    sys.exit(2)

import gpt_moe  # noqa: E402

DEFAULT_TOL = 1e-4         # gradients
DEFAULT_UPDATE_TOL = 1e-3  # parameter updates (fp32 storage, see README)
DEFAULT_LOSS_TOL = 1e-5
# Errors whose floor-relative size is below this are exact zeros in all three.
FLOOR_FACTOR = 1e-6


def norm(x):
    return float(np.linalg.norm(np.asarray(x, dtype=np.float64).ravel()))


def rel(a, b, floor):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return norm(a - b) / max(norm(b), floor)


def run_torch(cfg, params0, batches, dtype, threads, breaks=()):
    """Trains the reference from params0 on `batches`; returns, per step,
    (loss, {name: grad}, {name: param after the update}) as float64."""
    torch.set_num_threads(threads)
    model = gpt_moe.GPTMoE(cfg, breaks).to(dtype)
    model.load_flexmoe_params(params0)
    opt = gpt_moe.make_optimizer(model, cfg.adamw)
    out = []
    for tokens, labels in batches:
        opt.zero_grad(set_to_none=False)
        loss = model(torch.from_numpy(tokens), torch.from_numpy(labels))
        loss.backward()
        grads = {n: p.grad.detach().double().numpy().copy()
                 for n, p in model.named_parameters()}
        opt.step()
        after = {n: p.detach().double().numpy().copy()
                 for n, p in model.named_parameters()}
        routing = {b.moe_spec["name"]: (b.moe.last_kept.numpy().copy(),
                                        b.moe.last_dropped)
                   for b in model.blocks if b.moe_spec is not None}
        out.append((float(loss.detach()), grads, after, routing))
    return out


def run_adamw_on(cfg, params0, grads_per_step):
    """torch AdamW (float64) fed flexmoe's own gradients: isolates the
    optimizer from the gradients. Returns the parameters after each step."""
    model = gpt_moe.GPTMoE(cfg).double()
    model.load_flexmoe_params(params0)
    opt = gpt_moe.make_optimizer(model, cfg.adamw)
    params = dict(model.named_parameters())
    out = []
    for grads in grads_per_step:
        for n, p in params.items():
            p.grad = torch.from_numpy(np.asarray(grads[n], np.float64))
        opt.step()
        out.append({n: p.detach().numpy().copy() for n, p in params.items()})
    return out


class Row:
    """The worst errors of one tensor over all steps."""

    def __init__(self):
        self.grad = self.grad32 = 0.0
        self.upd = self.upd32 = 0.0
        self.adamw = 0.0
        self.null = False

    @staticmethod
    def worse(old, new):
        return new if (math.isnan(new) or new > old) else old


def check_program(args, program, workdir):
    label = os.path.basename(program)
    dump = os.path.join(workdir, label + ".dump")
    shutil.rmtree(dump, ignore_errors=True)
    cmd = [args.dump_tool, program, "--out", dump, "--steps",
           str(args.steps), "--seed", str(args.seed)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    if proc.returncode != 0:
        print(f"crosscheck: {label}: flexmoe-grad-dump failed "
              f"(exit {proc.returncode}): {proc.stderr.strip()}")
        return [f"{label}: flexmoe-grad-dump failed: {proc.stderr.strip()}"]

    cfg = gpt_moe.Config.load(os.path.join(dump, "config.json"))
    params0 = gpt_moe.read_safetensors(os.path.join(dump, "params0.safetensors"))
    steps = [gpt_moe.read_safetensors(os.path.join(dump, f"step{s}.safetensors"))
             for s in range(1, args.steps + 1)]
    names = [p["name"] for p in cfg.raw["params"]]
    batches = [(st["tokens"], st["labels"]) for st in steps]

    ref = run_torch(cfg, params0, batches, torch.float64, args.threads,
                    args.breaks)
    f32 = run_torch(cfg, params0, batches, torch.float32, args.threads,
                    args.breaks)
    forced = run_adamw_on(cfg, params0,
                          [{n: st["grad." + n] for n in names} for st in steps])

    moe = "; ".join(f"{m['name']}: E={m['num_experts']} k={m['top_k']} "
                    f"capacity={m['capacity'] or 'dropless'}"
                    for m in cfg.moe.values())
    print(f"== {label}: {cfg.num_layers} layers, d={cfg.d_model}, "
          f"vocab={cfg.vocab_size}, batch {cfg.batch_size}x{cfg.seq_len}, "
          f"{moe}; {args.steps} steps")
    failures = []

    def fail(what, err, tol):
        failures.append(f"{label}: {what}: error {err:.3g} > {tol:g}")

    p0 = {n: np.asarray(params0[n], np.float64) for n in names}
    rows = {n: Row() for n in names}
    print(f"   {'step':>4}  {'flexmoe loss':>13}  {'torch-fp64':>13}  "
          f"{'torch-fp32':>13}  {'err flexmoe':>11}  {'err fp32':>9}")
    for s, (st, (l64, g64, a64, route), (l32, g32, a32, _), af) in enumerate(
            zip(steps, ref, f32, forced), start=1):
        flex_loss = float(st["loss"])
        el, el32 = abs(flex_loss - l64) / abs(l64), abs(l32 - l64) / abs(l64)
        print(f"   {s:>4}  {flex_loss:13.7f}  {l64:13.7f}  {l32:13.7f}  "
              f"{el:11.2e}  {el32:9.2e}")
        if not el <= args.loss_tol:
            fail(f"step {s}: loss", el, args.loss_tol)
        # Routing must agree exactly: the same top-k and the same drops.
        for layer, (kept, dropped) in route.items():
            fk = st[f"stats.{layer}.kept"]
            fd = int(st[f"stats.{layer}.dropped"])
            print(f"         {layer}: copies kept per expert {fk.tolist()}, "
                  f"dropped {fd} (torch: {kept.tolist()}, dropped {dropped})")
            if fk.tolist() != kept.tolist() or fd != dropped:
                failures.append(f"{label}: step {s}: layer {layer} routes "
                                f"differently (kept {fk.tolist()} dropped "
                                f"{fd}; torch kept {kept.tolist()} dropped "
                                f"{dropped})")
        gfloor = FLOOR_FACTOR * math.sqrt(sum(norm(g) ** 2
                                              for g in g64.values()))
        ufloor = FLOOR_FACTOR * math.sqrt(sum(norm(a64[n] - p0[n]) ** 2
                                              for n in names))
        for n in names:
            r = rows[n]
            eg = rel(st["grad." + n], g64[n], gfloor)
            r.grad = Row.worse(r.grad, eg)
            r.grad32 = Row.worse(r.grad32, rel(g32[n], g64[n], gfloor))
            if not eg <= args.tol:
                fail(f"step {s}: gradient of '{n}'", eg, args.tol)
            # A tensor whose exact gradient is zero (the key bias) gets
            # lr-sized AdamW steps from rounding noise: its trajectory is
            # checked only against AdamW fed flexmoe's own gradients.
            r.null = r.null or norm(g64[n]) <= gfloor
            flex_upd = np.asarray(st["param." + n], np.float64) - p0[n]
            if not r.null:
                eu = rel(flex_upd, a64[n] - p0[n], ufloor)
                r.upd = Row.worse(r.upd, eu)
                r.upd32 = Row.worse(r.upd32, rel(a32[n] - p0[n],
                                                 a64[n] - p0[n], ufloor))
                if not eu <= args.update_tol:
                    fail(f"step {s}: '{n}' after the update", eu,
                         args.update_tol)
            ea = rel(flex_upd, af[n] - p0[n], ufloor)
            r.adamw = Row.worse(r.adamw, ea)
            if not ea <= args.update_tol:
                fail(f"step {s}: '{n}' after AdamW on flexmoe's gradients",
                     ea, args.update_tol)

    print(f"   worst relative error over the steps against torch-fp64 "
          f"(tolerances: gradient {args.tol:g}, update {args.update_tol:g}):")
    print(f"   {'parameter':<22} {'grad':>9} {'grad fp32':>9}  {'update':>9} "
          f"{'upd fp32':>9}  {'adamw':>9}")
    for n in names:
        r = rows[n]
        upd = ("zero-grad".rjust(9) + " " + "-".rjust(9)) if r.null else \
            f"{r.upd:9.2e} {r.upd32:9.2e}"
        bad = (not r.grad <= args.tol) or (not r.null and
                                            not r.upd <= args.update_tol) \
            or not r.adamw <= args.update_tol
        print(f"   {n:<22} {r.grad:9.2e} {r.grad32:9.2e}  {upd}  "
              f"{r.adamw:9.2e}{'  FAIL' if bad else ''}")
    if not args.keep:
        shutil.rmtree(dump, ignore_errors=True)
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("programs", nargs="+", help=".fmoe programs (world size 1)")
    ap.add_argument("--dump-tool", required=True,
                    help="path of flexmoe-grad-dump")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=DEFAULT_TOL,
                    help="gradient tolerance")
    ap.add_argument("--update-tol", type=float, default=DEFAULT_UPDATE_TOL,
                    help="tolerance of the parameter updates")
    ap.add_argument("--loss-tol", type=float, default=DEFAULT_LOSS_TOL)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads for the reference")
    ap.add_argument("--workdir", help="where dumps go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the dumps")
    ap.add_argument("--break", dest="breaks", action="append", default=[],
                    choices=gpt_moe.GPTMoE.BREAKS,
                    help="make the reference deliberately wrong (top-k "
                         "weights not renormalised, GShard's choice-major "
                         "drop order, erf GELU in the dense FFN): the check "
                         "must then fail")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error("--steps must be at least 1")
    if not os.access(args.dump_tool, os.X_OK):
        ap.error(f"the dump tool '{args.dump_tool}' is not an executable")
    for p in args.programs:
        if not os.path.isfile(p):
            ap.error(f"no program file '{p}'")

    workdir = args.workdir or tempfile.mkdtemp(prefix="flexmoe-crosscheck-")
    os.makedirs(workdir, exist_ok=True)
    failures = []
    try:
        for p in args.programs:
            failures += check_program(args, p, workdir)
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        print(f"crosscheck: FAILED: {len(failures)} tensor(s) above the "
              f"tolerance:")
        for f in failures:
            print("  " + f)
        return 1
    print(f"crosscheck: PASSED: {len(args.programs)} program(s), "
          f"{args.steps} step(s) each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
