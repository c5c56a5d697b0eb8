#!/usr/bin/python3
"""Cross-checks flexmoe's training step against the PyTorch reference.

For each program (world size 1): runs flexmoe-grad-dump (N steps on seeded
random batches) from flexmoe's initial parameters and, by default, also from
"wide" ones (weights x10, noisy LayerNorm and biases: activations leave the
near-linear regime of a fresh model), and compares with gpt_moe.GPTMoE:

1. at flexmoe's own parameters before each step (the same point), torch in
   float64 (the reference) and float32: the loss, the routing (copies kept
   and dropped per expert, exactly) and every parameter's gradient;
2. flexmoe's parameters after each update against torch.optim.AdamW (float64)
   fed flexmoe's own gradients: the optimizer alone (half an fp32 ulp of
   storage rounding per step allowed);
3. the trajectories: torch trained by itself from the same start on the same
   batches: the loss and every parameter's accumulated update (a looser
   end-to-end check; README.md says why).

Error of a tensor a against the reference b:

    err = ||a - b|| / max(||b||, floor)

floor is 1e-6 x the norm of the whole model's reference gradient (for
gradients) or of the whole parameter update (for updates). A tensor whose
reference gradient is below that floor has a zero gradient in exact
arithmetic (the attention key bias: softmax ignores a per-query shift of the
scores); its gradient error is measured against the whole model's gradient
norm, and its trajectory is not compared (AdamW turns rounding noise into
lr-sized steps; check 2 still covers it). torch-fp32's errors are printed
beside flexmoe's as the yardstick of fp32 rounding. Exits non-zero naming
every tensor above its tolerance.

    crosscheck.py --dump-tool build/bin/flexmoe-grad-dump prog.fmoe [...]
"""

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import numpy as np
    import torch
except ImportError as e:  # the lit test reports UNSUPPORTED before this
    print(f"crosscheck: UNSUPPORTED: {sys.executable} cannot import numpy "
          f"and torch ({e})")
    sys.exit(2)

import gpt_moe  # noqa: E402

DEFAULT_TOL = 1e-4         # gradients, at flexmoe's parameters
DEFAULT_UPDATE_TOL = 1e-4  # AdamW on flexmoe's gradients, beyond fp32 storage
DEFAULT_LOSS_TOL = 1e-6    # the loss, at flexmoe's parameters
DEFAULT_TRAJ_TOL = 1e-2    # independent trajectories (AdamW's eps, README)
DEFAULT_TRAJ_LOSS_TOL = 1e-5
# ... or this many times torch-fp32's own drift, whichever is larger.
TRAJ_FP32_FACTOR = 10.0
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
    opt = gpt_moe.make_optimizer(model, cfg.adamw, breaks)
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


def eval_at(cfg, params, batch, dtype, args):
    """Loss, gradients and routing of the reference at `params`."""
    torch.set_num_threads(args.threads)
    model = gpt_moe.GPTMoE(cfg, args.breaks).to(dtype)
    model.load_flexmoe_params(params)
    tokens, labels = batch
    loss = model(torch.from_numpy(tokens), torch.from_numpy(labels))
    loss.backward()
    grads = {n: p.grad.detach().double().numpy().copy()
             for n, p in model.named_parameters()}
    routing = {b.moe_spec["name"]: (b.moe.last_kept.numpy().copy(),
                                    b.moe.last_dropped)
               for b in model.blocks if b.moe_spec is not None}
    return float(loss.detach()), grads, routing


def run_adamw_on(cfg, params0, grads_per_step, breaks=()):
    """torch AdamW (float64) fed flexmoe's own gradients: isolates the
    optimizer from the gradients. Returns the parameters after each step."""
    model = gpt_moe.GPTMoE(cfg).double()
    model.load_flexmoe_params(params0)
    opt = gpt_moe.make_optimizer(model, cfg.adamw, breaks)
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
        self.adamw = 0.0
        self.traj = self.traj32 = 0.0
        self.null = False

    @staticmethod
    def worse(old, new):
        return new if (math.isnan(new) or new > old) else old


def run_dump(args, program, dump, init_params=None):
    """Runs flexmoe-grad-dump into `dump`; returns None or an error line."""
    shutil.rmtree(dump, ignore_errors=True)
    cmd = [args.dump_tool, program, "--out", dump, "--steps",
           str(args.steps), "--seed", str(args.seed)]
    if init_params:
        cmd += ["--init-params", init_params]
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(args.dump_threads)
    # Spinning OpenMP workers crawl on a shared, loaded machine.
    env.setdefault("OMP_WAIT_POLICY", "passive")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env)
    if proc.returncode != 0:
        return (f"flexmoe-grad-dump failed (exit {proc.returncode}): "
                f"{proc.stderr.strip()}")
    return None


def wide_params(params0, gain, seed):
    """flexmoe's initial parameters rescaled to the O(1) activations of a
    trained model: every [.., in, out] weight to std gain/sqrt(in) (the
    embeddings to std 0.2), LayerNorm gammas 1 + 0.1 N(0,1), betas and biases
    0.1 N(0,1). At flexmoe's own init (std 0.02) pre-activations are ~0.1,
    where e.g. tanh and erf GELU agree to 1e-7, and routing margins are
    tiny; here they are not."""
    rng = np.random.RandomState(seed)
    out = {}
    for name, p in params0.items():
        p = np.asarray(p, np.float32)
        if np.all(p == 1.0):                  # LayerNorm gamma
            q = 1.0 + 0.1 * rng.standard_normal(p.shape)
        elif np.all(p == 0.0):                # beta, biases
            q = 0.1 * rng.standard_normal(p.shape)
        else:                                 # normal-init weights
            std = float(np.std(p))
            target = 0.2 if name in ("wte", "wpe") else \
                gain / math.sqrt(p.shape[-2])
            q = p * (target / std)
        out[name] = q.astype(np.float32)
    return out


def check_program(args, program, workdir, init):
    label = f"{os.path.basename(program)} [{init} init]"
    dump = os.path.join(workdir, os.path.basename(program) + "." + init)
    init_file = None
    if init == "wide":
        error = run_dump(args, program, dump)
        if error:
            print(f"crosscheck: {label}: {error}")
            return [f"{label}: {error}"]
        init_file = dump + ".params.safetensors"
        gpt_moe.write_safetensors(init_file, wide_params(
            gpt_moe.read_safetensors(
                os.path.join(dump, "params0.safetensors")),
            args.wide_gain, args.seed))
    error = run_dump(args, program, dump, init_file)
    if error:
        print(f"crosscheck: {label}: {error}")
        return [f"{label}: {error}"]

    cfg = gpt_moe.Config.load(os.path.join(dump, "config.json"))
    params0 = gpt_moe.read_safetensors(
        os.path.join(dump, "params0.safetensors"))
    steps = [gpt_moe.read_safetensors(
        os.path.join(dump, f"step{s}.safetensors"))
             for s in range(1, args.steps + 1)]
    names = [p["name"] for p in cfg.raw["params"]]
    batches = [(st["tokens"], st["labels"]) for st in steps]

    # The same point: the reference evaluated at flexmoe's parameters before
    # each step (params0, then flexmoe's own updates).
    before = [params0] + [{n: st["param." + n] for n in names}
                          for st in steps[:-1]]
    at64 = [eval_at(cfg, before[i], batches[i], torch.float64, args)
            for i in range(len(steps))]
    at32 = [eval_at(cfg, before[i], batches[i], torch.float32, args)
            for i in range(len(steps))]
    forced = run_adamw_on(cfg, params0,
                          [{n: st["grad." + n] for n in names}
                           for st in steps],
                          args.breaks)
    # The trajectories: torch trained by itself from params0.
    traj = run_torch(cfg, params0, batches, torch.float64, args.threads,
                     args.breaks)
    traj32 = run_torch(cfg, params0, batches, torch.float32, args.threads,
                       args.breaks)

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
          f"{'err':>8}  {'err fp32':>8}  {'trajectory':>13}  {'err':>8}")
    for s, st in enumerate(steps, start=1):
        l64, g64, route = at64[s - 1]
        l32, g32, _ = at32[s - 1]
        lt, _, at, _ = traj[s - 1]
        _, _, at32_, _ = traj32[s - 1]
        af = forced[s - 1]
        flex_loss = float(st["loss"])
        el, el32 = abs(flex_loss - l64) / abs(l64), abs(l32 - l64) / abs(l64)
        elt = abs(flex_loss - lt) / abs(lt)
        print(f"   {s:>4}  {flex_loss:13.7f}  {l64:13.7f}  {el:8.1e}  "
              f"{el32:8.1e}  {lt:13.7f}  {elt:8.1e}")
        if not el <= args.loss_tol:
            fail(f"step {s}: loss", el, args.loss_tol)
        lt32 = traj32[s - 1][0]
        tol = max(args.traj_loss_tol,
                  TRAJ_FP32_FACTOR * abs(lt32 - lt) / abs(lt))
        if not elt <= tol:
            fail(f"step {s}: loss of the trajectories", elt, tol)
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
        ufloor = FLOOR_FACTOR * math.sqrt(sum(norm(at[n] - p0[n]) ** 2
                                              for n in names))
        for n in names:
            r = rows[n]
            # A tensor whose exact gradient is zero (the attention key bias:
            # softmax ignores a per-query shift of the scores) has only
            # rounding noise for a gradient: its error is measured against
            # the whole model's gradient norm instead of its own.
            null = norm(g64[n]) <= gfloor
            floor = gfloor / FLOOR_FACTOR if null else gfloor
            eg = rel(st["grad." + n], g64[n], floor)
            r.grad = Row.worse(r.grad, eg)
            r.grad32 = Row.worse(r.grad32, rel(g32[n], g64[n], floor))
            if not eg <= args.tol:
                fail(f"step {s}: gradient of '{n}'", eg, args.tol)
            flex_upd = np.asarray(st["param." + n], np.float64) - p0[n]
            # Parameters are stored in fp32: each step rounds them by up to
            # half an ulp, which the fp64 reference does not; that much is
            # allowed before the update's relative error counts.
            rounding = 0.5 * s * norm(np.spacing(np.abs(af[n]).astype(
                np.float32)))
            ea = max(0.0, norm(flex_upd - (af[n] - p0[n])) - rounding) / max(
                norm(af[n] - p0[n]), ufloor)
            r.adamw = Row.worse(r.adamw, ea)
            if not ea <= args.update_tol:
                fail(f"step {s}: '{n}' after AdamW on flexmoe's gradients",
                     ea, args.update_tol)
            # AdamW turns the noise of a null tensor into lr-sized steps in
            # random directions: its trajectory is not compared.
            r.null = r.null or null
            if not r.null:
                et = rel(flex_upd, at[n] - p0[n], ufloor)
                r.traj = Row.worse(r.traj, et)
                r.traj32 = Row.worse(r.traj32, rel(at32_[n] - p0[n],
                                                   at[n] - p0[n], ufloor))
                # Trajectories part by chaotic amplification of rounding
                # (AdamW's eps): torch-fp32's own drift measures it.
                e32 = rel(at32_[n] - p0[n], at[n] - p0[n], ufloor)
                tol = max(args.traj_tol, TRAJ_FP32_FACTOR * e32)
                if not et <= tol:
                    fail(f"step {s}: '{n}' on the trajectories", et, tol)

    print(f"   worst relative error over the steps (tolerances: gradient "
          f"{args.tol:g}, adamw {args.update_tol:g}, trajectory "
          f"max({args.traj_tol:g}, {TRAJ_FP32_FACTOR:g} x fp32's)):")
    print(f"   {'parameter':<22} {'grad':>9} {'grad fp32':>9}  {'adamw':>9}  "
          f"{'trajectory':>10} {'traj fp32':>9}")
    for n in names:
        r = rows[n]
        traj_cols = ("zero-grad".rjust(10) + " " + "-".rjust(9)) if r.null \
            else f"{r.traj:10.2e} {r.traj32:9.2e}"
        bad = (not r.grad <= args.tol) or not r.adamw <= args.update_tol \
            or (not r.null and not r.traj <= max(
                args.traj_tol, TRAJ_FP32_FACTOR * r.traj32))
        print(f"   {n:<22} {r.grad:9.2e} {r.grad32:9.2e}  {r.adamw:9.2e}  "
              f"{traj_cols}{'  FAIL' if bad else ''}")
    if not args.keep:
        shutil.rmtree(dump, ignore_errors=True)
        if init_file:
            os.remove(init_file)
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("programs", nargs="+",
                    help=".fmoe programs (world size 1)")
    ap.add_argument("--dump-tool", required=True,
                    help="path of flexmoe-grad-dump")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=DEFAULT_TOL,
                    help="gradient tolerance")
    ap.add_argument("--update-tol", type=float, default=DEFAULT_UPDATE_TOL,
                    help="tolerance of the updates against torch's AdamW fed "
                         "flexmoe's gradients")
    ap.add_argument("--loss-tol", type=float, default=DEFAULT_LOSS_TOL)
    ap.add_argument("--traj-tol", type=float, default=DEFAULT_TRAJ_TOL,
                    help="tolerance of the independent trajectories' "
                         "parameter updates")
    ap.add_argument("--traj-loss-tol", type=float,
                    default=DEFAULT_TRAJ_LOSS_TOL)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads for the reference")
    ap.add_argument("--dump-threads", type=int, default=2,
                    help="OMP_NUM_THREADS of flexmoe-grad-dump (2: the "
                         "kernels' parallel paths run)")
    ap.add_argument("--workdir", help="where dumps go (default: a temp dir)")
    ap.add_argument("--init", action="append", choices=["flexmoe", "wide"],
                    help="start from flexmoe's initial parameters, from "
                         "wide ones (weights of std gain/sqrt(fan_in), "
                         "noisy LayerNorm and biases), or both (the "
                         "default)")
    ap.add_argument("--wide-gain", type=float, default=1.0,
                    help="the wide start's weights have std gain/sqrt(fan_in)")
    ap.add_argument("--keep", action="store_true", help="keep the dumps")
    ap.add_argument("--break", dest="breaks", action="append", default=[],
                    choices=gpt_moe.GPTMoE.BREAKS,
                    help="make the reference deliberately wrong (top-k "
                         "weights not renormalised, GShard's choice-major "
                         "drop order, erf GELU in the dense FFN, AdamW "
                         "without weight decay): the check must then fail")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error("--steps must be at least 1")
    # A bare name is looked up on PATH (lit puts the build's tools there).
    if os.sep not in args.dump_tool and shutil.which(args.dump_tool):
        args.dump_tool = shutil.which(args.dump_tool)
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
            for init in args.init or ["flexmoe", "wide"]:
                failures += check_program(args, p, workdir, init)
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        print(f"crosscheck: FAILED: {len(failures)} tensor(s) above the "
              f"tolerance:")
        for f in failures:
            print("  " + f)
        return 1
    print(f"crosscheck: PASSED: {len(args.programs)} program(s) x "
          f"{len(args.init or ['flexmoe', 'wide'])} start point(s), "
          f"{args.steps} step(s) each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
