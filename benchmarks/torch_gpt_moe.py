"""A PyTorch GPT-MoE for timing against flexmoe (benchmarks only).

The same model as models/lib/GPTMoE.cpp builds: token + position embeddings,
pre-LayerNorm blocks (causal multi-head attention with biased q/k/v/o
projections; a dense GELU FFN, or in every moe_every-th block a top-2 MoE with
softmax gating, renormalised top-k weights, dropless routing and a Switch-style
load-balancing loss), a final LayerNorm, an unbiased lm_head, cross entropy,
and AdamW over every parameter. GELU is the tanh approximation, as in the
flexmoe kernels. The MoE runs index/gather based: tokens are sorted by expert,
each expert multiplies its contiguous rows, and index_add_ scatters back.

When test/pytorch/gpt_moe.py (the exact twin) exists, cpu_step_time.py uses it
instead; this file only stands in until then.
"""

import math

import torch
import torch.nn.functional as F

PRESETS = {
    # layers, d_model, heads, experts, ffn_hidden, expert_hidden, vocab, seq, batch
    "gpt-moe-tiny": dict(layers=2, d_model=64, heads=4, experts=4,
                         ffn_hidden=256, expert_hidden=128, vocab=256,
                         seq=32, batch=8),
    "gpt-moe-small": dict(layers=4, d_model=256, heads=4, experts=8,
                          ffn_hidden=1024, expert_hidden=512, vocab=256,
                          seq=128, batch=16),
}
TOP_K = 2
MOE_EVERY = 2
AUX_LOSS_COEF = 0.01


def _normal(shape, std):
    return torch.nn.Parameter(torch.randn(*shape) * std)


class Attention(torch.nn.Module):
    def __init__(self, d, heads, residual_std):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.o = torch.nn.Linear(d, d)
        torch.nn.init.normal_(self.qkv.weight, std=0.02)
        torch.nn.init.zeros_(self.qkv.bias)
        torch.nn.init.normal_(self.o.weight, std=residual_std)
        torch.nn.init.zeros_(self.o.bias)

    def forward(self, x, mask):
        b, s, d = x.shape
        hd = d // self.heads
        q, k, v = self.qkv(x).split(d, dim=-1)
        q = q.view(b, s, self.heads, hd).transpose(1, 2)
        k = k.view(b, s, self.heads, hd).transpose(1, 2)
        v = v.view(b, s, self.heads, hd).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
        scores = scores.masked_fill(mask, float("-inf"))
        a = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.o(a.transpose(1, 2).reshape(b, s, d))


class DenseFFN(torch.nn.Module):
    def __init__(self, d, hidden, residual_std):
        super().__init__()
        self.fc1 = torch.nn.Linear(d, hidden)
        self.fc2 = torch.nn.Linear(hidden, d)
        torch.nn.init.normal_(self.fc1.weight, std=0.02)
        torch.nn.init.zeros_(self.fc1.bias)
        torch.nn.init.normal_(self.fc2.weight, std=residual_std)
        torch.nn.init.zeros_(self.fc2.bias)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class MoeFFN(torch.nn.Module):
    def __init__(self, d, experts, hidden, residual_std):
        super().__init__()
        self.experts = experts
        self.gate = _normal((d, experts), 0.02)
        self.w1 = _normal((experts, d, hidden), 0.02)
        self.b1 = torch.nn.Parameter(torch.zeros(experts, hidden))
        self.w2 = _normal((experts, hidden, d), residual_std)
        self.b2 = torch.nn.Parameter(torch.zeros(experts, d))

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        tokens = x.shape[0]
        probs = torch.softmax(x @ self.gate, dim=-1)
        top_p, top_e = probs.topk(TOP_K, dim=-1)
        top_p = top_p / top_p.sum(dim=-1, keepdim=True)
        flat_e = top_e.reshape(-1)
        order = torch.argsort(flat_e, stable=True)
        counts = torch.bincount(flat_e, minlength=self.experts).tolist()
        token_of = order // TOP_K
        routed = x.index_select(0, token_of)
        outs = []
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            rows = routed[start:start + n]
            h = F.gelu(torch.addmm(self.b1[e], rows, self.w1[e]),
                       approximate="tanh")
            outs.append(torch.addmm(self.b2[e], h, self.w2[e]))
            start += n
        y_routed = torch.cat(outs) * top_p.reshape(-1)[order].unsqueeze(1)
        y = torch.zeros_like(x).index_add_(0, token_of, y_routed)
        # Switch load balancing: E * sum_e f_e * mean_t probs[t, e].
        fraction = torch.tensor(counts, dtype=x.dtype) / (tokens * TOP_K)
        aux = AUX_LOSS_COEF * self.experts * (fraction * probs.mean(0)).sum()
        return y.reshape(shape), aux


class Block(torch.nn.Module):
    def __init__(self, cfg, moe):
        super().__init__()
        d = cfg["d_model"]
        residual_std = 0.02 / math.sqrt(2.0 * cfg["layers"])
        self.ln1 = torch.nn.LayerNorm(d, eps=1e-5)
        self.attn = Attention(d, cfg["heads"], residual_std)
        self.ln2 = torch.nn.LayerNorm(d, eps=1e-5)
        self.moe = moe
        if moe:
            self.ffn = MoeFFN(d, cfg["experts"], cfg["expert_hidden"],
                              residual_std)
        else:
            self.ffn = DenseFFN(d, cfg["ffn_hidden"], residual_std)

    def forward(self, x, mask):
        x = x + self.attn(self.ln1(x), mask)
        if self.moe:
            y, aux = self.ffn(self.ln2(x))
        else:
            y, aux = self.ffn(self.ln2(x)), None
        return x + y, aux


class GPTMoE(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["d_model"]
        self.wte = _normal((cfg["vocab"], d), 0.02)
        self.wpe = _normal((cfg["seq"], d), 0.02)
        self.blocks = torch.nn.ModuleList(
            Block(cfg, (i + 1) % MOE_EVERY == 0) for i in range(cfg["layers"]))
        self.lnf = torch.nn.LayerNorm(d, eps=1e-5)
        self.lm_head = _normal((d, cfg["vocab"]), 0.02)
        seq = cfg["seq"]
        self.register_buffer(
            "mask", torch.ones(seq, seq, dtype=torch.bool).triu(1))

    def forward(self, tokens, labels):
        x = self.wte[tokens] + self.wpe
        loss_aux = []
        for block in self.blocks:
            x, aux = block(x, self.mask)
            if aux is not None:
                loss_aux.append(aux)
        logits = self.lnf(x) @ self.lm_head
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                               labels.reshape(-1), ignore_index=-100)
        for aux in loss_aux:
            loss = loss + aux
        return loss


class Trainer:
    """One model, one fixed batch, AdamW (flexmoe's defaults: lr 1e-3,
    weight decay 0.01 on every parameter)."""

    def __init__(self, preset, seed=0):
        cfg = PRESETS[preset]
        torch.manual_seed(seed)
        self.model = GPTMoE(cfg)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3,
                                     betas=(0.9, 0.999), eps=1e-8,
                                     weight_decay=0.01)
        shape = (cfg["batch"], cfg["seq"])
        self.tokens = torch.randint(0, cfg["vocab"], shape)
        self.labels = torch.randint(0, cfg["vocab"], shape)

    def step(self):
        self.opt.zero_grad(set_to_none=True)
        loss = self.model(self.tokens, self.labels)
        loss.backward()
        self.opt.step()
        return float(loss)
