"""A PyTorch reference of the GPT-MoE that flexmoe compiles.

Every detail follows models/lib/GPTMoE.cpp, docs/IR.md and the CPU kernels
(runtime/backends/cpu/kernels):

* pre-LN blocks: x += attn(ln1(x)); x += ffn(ln2(x)); then lnf and an untied,
  bias-free lm_head. Learned positional embeddings (wpe) added to wte[tokens].
* LayerNorm: biased variance, epsilon inside the square root (1e-5).
* Linear weights are [in, out]: y = x @ W + b.
* Attention: heads are contiguous column blocks of D, scores scaled by
  1/sqrt(head_dim), causal (query i sees keys j <= i), optional window
  (0 <= i - j < w, or |i - j| < w when not causal).
* GELU: the tanh approximation (nn.gelu's default) unless the config says
  "none"; expert FFNs use the layer's activation ("gelu" = tanh GELU, "relu").
* MoE block (every block with (i + 1) % moe_every == 0, taken from the config):
  probs = softmax(x @ gate); the top_k experts by descending probability, ties
  to the lower id; combine weights = their probabilities, renormalised to sum
  to one only when top_k > 1.
  aux = coef * E * sum_e f_e * P_e, f_e = copies routed to e / (T * k) (all
  copies, dropped ones included, not differentiated), P_e = mean_t probs[t, e].
  Capacity C > 0: copies are visited in (token, choice) order and an expert
  keeps its first C; a dropped copy contributes nothing and the remaining
  weights are not renormalised.
  Expert e: act(x @ w1[e] + b1[e]) @ w2[e] + b2[e].
* loss = mean cross-entropy over labels != ignore_index + sum of aux losses.

Parameter names and shapes equal the program's nn.param names, so a
safetensors file written by flexmoe loads with strict checking.
"""

import json
import math
import struct

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


class Config:
    """The model config, read from the JSON flexmoe-grad-dump writes."""

    def __init__(self, d):
        self.raw = d
        self.vocab_size = int(d["vocab_size"])
        self.seq_len = int(d["seq_len"])
        self.batch_size = int(d["batch_size"])
        self.d_model = int(d["d_model"])
        self.num_heads = int(d["num_heads"])
        self.causal = bool(d.get("causal", True))
        self.window = int(d.get("window", 0))
        self.num_layers = int(d["num_layers"])
        self.ffn_hidden = int(d["ffn_hidden"]) if d.get("ffn_hidden") else 0
        self.layer_norm_epsilon = float(d.get("layer_norm_epsilon", 1e-5))
        self.gelu_approximate = d.get("gelu_approximate", "tanh")
        self.ignore_index = int(d.get("ignore_index", -100))
        self.dropout = float(d.get("dropout", 0.0))
        # block index -> MoE layer description
        self.moe = {int(m["block"]): m for m in d["moe_layers"]}
        self.adamw = d.get("adamw", {})
        if self.dropout != 0.0:
            raise ValueError(
                "the reference has no dropout (flexmoe's masks come from its "
                "own RNG stream): compile with --dropout 0")
        if self.gelu_approximate not in ("tanh", "none"):
            raise ValueError(f"unknown gelu approximation "
                             f"'{self.gelu_approximate}'")
        for m in self.moe.values():
            if m.get("activation", "gelu") not in ("gelu", "relu"):
                raise ValueError(f"unknown expert activation "
                                 f"'{m['activation']}' in layer {m['name']}")

    @staticmethod
    def load(path):
        with open(path) as f:
            return Config(json.load(f))


# ---------------------------------------------------------------------------
# safetensors (numpy only; the format: u64 LE header size, JSON header, data)
# ---------------------------------------------------------------------------

_DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32,
           "I64": np.int64}


def read_safetensors(path):
    """Returns {name: numpy array} (metadata skipped)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise ValueError(f"{path}: header size {n} exceeds the file")
    header = json.loads(blob[8:8 + n])
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor '{name}' has unsupported dtype "
                             f"{info['dtype']}")
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data[begin:end], dtype=dtype)
        out[name] = arr.reshape(info["shape"]).copy()
    return out


def write_safetensors(path, tensors):
    """Writes {name: numpy array} (float32/float64/int32/int64)."""
    rev = {np.dtype(v): k for k, v in _DTYPES.items()}
    header, chunks, offset = {}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        raw = arr.tobytes()
        header[name] = {"dtype": rev[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


class LayerNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(d))
        self.beta = nn.Parameter(torch.zeros(d))

    def forward(self, x, eps):
        return F.layer_norm(x, (x.shape[-1],), self.gamma, self.beta, eps)


class Linear(nn.Module):
    """y = x @ weight + bias with weight [in, out] (flexmoe's layout)."""

    def __init__(self, n_in, n_out, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None

    def forward(self, x):
        y = x @ self.weight
        return y + self.bias if self.bias is not None else y


class Attention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.q, self.k, self.v, self.o = (Linear(d, d) for _ in range(4))


class MLP(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.fc1 = Linear(d, hidden)
        self.fc2 = Linear(hidden, d)


class MoE(nn.Module):
    def __init__(self, d, num_experts, hidden):
        super().__init__()
        e = num_experts
        self.gate = nn.Parameter(torch.empty(d, e))
        self.w1 = nn.Parameter(torch.empty(e, d, hidden))
        self.b1 = nn.Parameter(torch.zeros(e, hidden))
        self.w2 = nn.Parameter(torch.empty(e, hidden, d))
        self.b2 = nn.Parameter(torch.zeros(e, d))


class Block(nn.Module):
    def __init__(self, cfg, index):
        super().__init__()
        d = cfg.d_model
        self.ln1 = LayerNorm(d)
        self.attn = Attention(d)
        self.ln2 = LayerNorm(d)
        self.moe_spec = cfg.moe.get(index)
        if self.moe_spec is not None:
            self.moe = MoE(d, int(self.moe_spec["num_experts"]),
                           int(self.moe_spec["expert_hidden"]))
        else:
            if cfg.ffn_hidden <= 0:
                raise ValueError(f"block {index} is dense but the config has "
                                 f"no ffn_hidden")
            self.mlp = MLP(d, cfg.ffn_hidden)


def gelu(x, approximate):
    return F.gelu(x, approximate=approximate)


def attention(q, k, v, num_heads, causal, window):
    b, s, d = q.shape
    hd = d // num_heads

    def heads(t):
        return t.view(b, s, num_heads, hd).transpose(1, 2)

    scores = heads(q) @ heads(k).transpose(-1, -2) * (1.0 / math.sqrt(hd))
    i = torch.arange(s, device=q.device).view(s, 1)
    j = torch.arange(s, device=q.device).view(1, s)
    visible = torch.ones(s, s, dtype=torch.bool, device=q.device)
    if causal:
        visible &= j <= i
    if window > 0:
        visible &= (i - j < window) if causal else ((i - j).abs() < window)
    scores = scores.masked_fill(~visible, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ heads(v)
    return out.transpose(1, 2).reshape(b, s, d)


def top_k_lowest_id(probs, k):
    """Top-k ids by descending probability, ties to the lower id."""
    # A stable descending sort keeps equal values in ascending id order.
    _, order = torch.sort(probs.detach(), dim=-1, descending=True, stable=True)
    return order[:, :k]


def moe_layer(x, moe, spec, breaks=frozenset()):
    """Returns (y [T, D], aux loss) for x [T, D]. No per-token Python loops:
    copies are sorted by expert (stable in (token, choice) order), gathered,
    run through each expert as one GEMM pair and scattered back with
    index_add."""
    t, d = x.shape
    e = int(spec["num_experts"])
    k = int(spec["top_k"])
    capacity = int(spec.get("capacity", 0))
    coef = float(spec["aux_loss_coef"])
    act = spec.get("activation", "gelu")

    probs = torch.softmax(x @ moe.gate, dim=-1)
    ids = top_k_lowest_id(probs, k)                       # [T, k]
    weights = probs.gather(1, ids)                        # [T, k]
    if k > 1 and "no-renormalize" not in breaks:
        weights = weights / weights.sum(dim=-1, keepdim=True)

    flat = ids.reshape(-1)                                # (token, choice)
    copies = torch.bincount(flat, minlength=e)
    f = copies.to(probs.dtype) / float(t * k)
    aux = coef * e * (f * probs.mean(dim=0)).sum()

    order = torch.sort(flat, stable=True).indices         # grouped by expert
    if capacity > 0:
        # Rank of each copy among its expert's copies, in (token, choice)
        # order: the first `capacity` are kept.
        rank = torch.empty_like(flat)
        starts = torch.cumsum(copies, 0) - copies
        visit = order
        if "choice-priority" in breaks:
            # GShard's rule (all first choices before second ones): not
            # flexmoe's.
            visit = torch.sort(flat * k + torch.arange(flat.numel()) % k,
                               stable=True).indices
        rank[visit] = torch.arange(flat.numel()) - starts[flat[visit]]
        keep = rank[order] < capacity
        order = order[keep]
        counts = torch.clamp(copies, max=capacity)
    else:
        counts = copies
    # Routing statistics of the last forward pass (for the cross-check).
    moe.last_kept = counts.detach().clone()
    moe.last_dropped = int(flat.numel() - int(counts.sum()))
    token = order // k
    routed = x[token]
    w_flat = weights.reshape(-1)[order]
    outs = []
    for g, rows in enumerate(torch.split(routed, counts.tolist())):
        if rows.shape[0] == 0:
            continue
        h = rows @ moe.w1[g] + moe.b1[g]
        h = gelu(h, "tanh") if act == "gelu" else torch.relu(h)
        outs.append(h @ moe.w2[g] + moe.b2[g])
    if outs:
        out = torch.cat(outs) * w_flat.unsqueeze(1)
        y = torch.zeros_like(x).index_add(0, token, out)
    else:
        y = torch.zeros_like(x)
    return y, aux


class GPTMoE(nn.Module):
    # Deliberately wrong details, to show that the cross-check can fail.
    # ("adamw-no-decay" is the optimizer's: see make_optimizer.)
    BREAKS = ("no-renormalize", "choice-priority", "gelu-erf",
              "adamw-no-decay")

    def __init__(self, cfg, breaks=()):
        super().__init__()
        self.cfg = cfg
        unknown = set(breaks) - set(self.BREAKS)
        if unknown:
            raise ValueError(f"unknown breaks {sorted(unknown)}")
        self.breaks = frozenset(breaks)
        d = cfg.d_model
        self.wte = nn.Parameter(torch.empty(cfg.vocab_size, d))
        self.wpe = nn.Parameter(torch.empty(cfg.seq_len, d))
        self.blocks = []
        for i in range(cfg.num_layers):
            block = Block(cfg, i)
            # h0, h1, ...: the program's parameter names.
            self.add_module(f"h{i}", block)
            self.blocks.append(block)
        self.lnf = LayerNorm(d)
        self.lm_head = Linear(d, cfg.vocab_size, bias=False)
        for spec in cfg.moe.values():
            if int(spec["top_k"]) > int(spec["num_experts"]):
                raise ValueError(f"layer {spec['name']}: top_k exceeds the "
                                 f"expert count")
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator=None):
        """GPT-2 init as GPTMoE.cpp writes it (other random draws than
        flexmoe's: load its weights for a bit-level comparison)."""
        resid = 0.02 / math.sqrt(2.0 * self.cfg.num_layers)
        for name, p in self.named_parameters():
            leaf = name.split(".")[-1]
            if leaf in ("gamma",):
                p.fill_(1.0)
            elif leaf in ("beta", "bias", "b1", "b2"):
                p.zero_()
            else:
                std = resid if (name.endswith("attn.o.weight") or
                                name.endswith("mlp.fc2.weight") or
                                name.endswith("moe.w2")) else 0.02
                p.normal_(0.0, std, generator=generator)

    def forward(self, tokens, labels=None, return_parts=False):
        cfg = self.cfg
        b, s = tokens.shape
        eps = cfg.layer_norm_epsilon
        x = self.wte[tokens.long()] + self.wpe
        aux_losses = []
        for block in self.blocks:
            h = block.ln1(x, eps)
            a = attention(block.attn.q(h), block.attn.k(h), block.attn.v(h),
                          cfg.num_heads, cfg.causal, cfg.window)
            x = x + block.attn.o(a)
            h = block.ln2(x, eps)
            if block.moe_spec is not None:
                y, aux = moe_layer(h.reshape(b * s, -1), block.moe,
                                   block.moe_spec, self.breaks)
                y = y.view(b, s, -1)
                aux_losses.append(aux)
            else:
                approx = ("none" if "gelu-erf" in self.breaks
                          else cfg.gelu_approximate)
                y = block.mlp.fc2(gelu(block.mlp.fc1(h), approx))
            x = x + y
        logits = self.lm_head(self.lnf(x, eps))
        if labels is None:
            return logits
        ce = F.cross_entropy(logits.reshape(b * s, -1),
                             labels.reshape(-1).long(),
                             ignore_index=cfg.ignore_index)
        loss = ce
        for aux in aux_losses:
            loss = loss + aux
        if return_parts:
            return loss, ce, aux_losses
        return loss

    # -- weights ------------------------------------------------------------

    @torch.no_grad()
    def load_flexmoe_params(self, tensors):
        """Copies {name: array} into the parameters; names and shapes must
        match exactly (no missing, no extra)."""
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(tensors))
        extra = sorted(set(tensors) - set(own))
        if missing or extra:
            raise ValueError(f"parameter names differ from the model: "
                             f"missing {missing}, unexpected {extra}")
        for name, p in own.items():
            src = tensors[name]
            if tuple(src.shape) != tuple(p.shape):
                raise ValueError(f"parameter '{name}': shape "
                                 f"{list(src.shape)} in the file, "
                                 f"{list(p.shape)} in the model")
            p.copy_(torch.from_numpy(np.asarray(src)).to(p.dtype))


def make_optimizer(model, adamw, breaks=()):
    """torch AdamW with flexmoe's hyper-parameters (weight decay on every
    parameter, as the program applies nn.adamw to all of them)."""
    if "adamw-no-decay" in breaks:
        adamw = dict(adamw, weight_decay=0.0)
    return torch.optim.AdamW(
        model.parameters(), lr=float(adamw.get("lr", 1e-3)),
        betas=(float(adamw.get("beta1", 0.9)),
               float(adamw.get("beta2", 0.999))),
        eps=float(adamw.get("epsilon", 1e-8)),
        weight_decay=float(adamw.get("weight_decay", 0.01)))


def train_step(model, opt, tokens, labels):
    """One step: forward, backward, AdamW. Returns the loss as a float."""
    opt.zero_grad(set_to_none=False)
    loss = model(tokens, labels)
    loss.backward()
    opt.step()
    return float(loss.detach())


def config_from_preset(name="gpt-moe-tiny", **overrides):
    """A config without a dump (for benchmarks): the presets of GPTMoE.cpp."""
    presets = {
        "gpt-moe-tiny": (2, 64, 4, 4, 256, 128, 256, 32, 8),
        "gpt-moe-small": (4, 256, 4, 8, 1024, 512, 256, 128, 16),
        "gpt-moe-125m": (12, 768, 12, 16, 3072, 3072, 50304, 1024, 8),
    }
    if name not in presets:
        raise ValueError(f"unknown preset '{name}'; valid: {sorted(presets)}")
    layers, d, heads, e, ffn, eh, vocab, seq, batch = presets[name]
    o = dict(layers=layers, d_model=d, heads=heads, experts=e, ffn_hidden=ffn,
             expert_hidden=eh, vocab=vocab, seq=seq, batch=batch, top_k=2,
             moe_every=2, capacity_factor=0.0, aux_loss_coef=0.01)
    o.update(overrides)
    t = o["batch"] * o["seq"]
    moe = []
    for i in range(o["layers"]):
        if (i + 1) % o["moe_every"] != 0:
            continue
        cf = o["capacity_factor"]
        cap = math.ceil(cf * t * o["top_k"] / o["experts"]) if cf > 0 else 0
        moe.append({"name": f"moe{i}", "block": i,
                    "num_experts": o["experts"], "top_k": o["top_k"],
                    "expert_hidden": o["expert_hidden"], "capacity": cap,
                    "aux_loss_coef": o["aux_loss_coef"], "activation": "gelu"})
    return Config({"vocab_size": o["vocab"], "seq_len": o["seq"],
                   "batch_size": o["batch"], "d_model": o["d_model"],
                   "num_heads": o["heads"], "num_layers": o["layers"],
                   "ffn_hidden": o["ffn_hidden"], "moe_layers": moe})


def _bench(argv=None):
    """python3 gpt_moe.py --preset gpt-moe-small --threads 2 --steps 5:
    times train_step on random batches (ms per step, tokens per second)."""
    import argparse
    import time
    ap = argparse.ArgumentParser(description=_bench.__doc__)
    ap.add_argument("--preset", default="gpt-moe-tiny")
    ap.add_argument("--config", help="a flexmoe-grad-dump config.json "
                                     "instead of a preset")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--capacity-factor", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = (Config.load(args.config) if args.config else
           config_from_preset(args.preset,
                              capacity_factor=args.capacity_factor))
    model = GPTMoE(cfg)
    opt = make_optimizer(model, cfg.adamw)
    shape = (cfg.batch_size, cfg.seq_len)
    batches = [(torch.randint(0, cfg.vocab_size, shape, dtype=torch.int32),
                torch.randint(0, cfg.vocab_size, shape, dtype=torch.int32))
               for _ in range(args.warmup + args.steps)]
    for tokens, labels in batches[:args.warmup]:
        train_step(model, opt, tokens, labels)
    start = time.perf_counter()
    for tokens, labels in batches[args.warmup:]:
        loss = train_step(model, opt, tokens, labels)
    elapsed = (time.perf_counter() - start) / max(args.steps, 1)
    print(f"{args.config or args.preset}: {args.threads} thread(s), "
          f"{elapsed * 1e3:.1f} ms/step, "
          f"{cfg.batch_size * cfg.seq_len / elapsed:.0f} tokens/s, "
          f"last loss {loss:.4f}")


if __name__ == "__main__":
    _bench()
