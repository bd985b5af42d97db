#!/usr/bin/python3
"""PyTorch peer of moebench: the same model (docs/model.md §1) and losses (docs/model.md §2) written the way a
PyTorch user would, timed on the same GPU with the same shapes.

Idiomatic fast PyTorch: bf16 autocast with fp32 master weights, F.scaled_dot_product_attention
(flash attention) with GQA by repeat_interleave, fp32 router, a sort-based dispatch with one
matmul per expert (no per-token loop), fused AdamW and global-norm clipping. The presets mirror
apps/moebench.cpp exactly, and the FLOP count per token uses the same formula as the C++ model
(6 x active matmul parameters + attention), so tokens/s and MFU are directly comparable.

Usage: bench_torch.py --preset small|0.4b [--losses lb|lb,sp,cp] [--steps 20] [--json out.json]
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

PRESETS = {
    "tiny": dict(vocab=256, d=64, layers=2, heads=4, kv=2, experts=4, k=2, f=64, batch=2, seq=32),
    "small": dict(vocab=4096, d=256, layers=4, heads=4, kv=2, experts=8, k=2, f=512, batch=32,
                  seq=256),
    # configs/paper_0.4b_vanilla.yaml: untied LM head, micro-batch 16 x 1024
    "0.4b": dict(vocab=32000, d=1024, layers=12, heads=16, kv=4, experts=8, k=2, f=1024, batch=16,
                 seq=1024, untied=True),
}


def init_params(c, device):
    g = torch.Generator().manual_seed(1234)
    hd = c["d"] // c["heads"]

    def mat(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * 0.02 * scale).to(device).requires_grad_()

    out_scale = 1.0 / math.sqrt(2 * c["layers"])
    P = {"embed": mat(c["vocab"], c["d"]), "norm": torch.ones(c["d"], device=device,
                                                                requires_grad=True)}
    if c.get("untied"):
        P["lm_head"] = mat(c["vocab"], c["d"])
    for i in range(c["layers"]):
        P[f"{i}.n1"] = torch.ones(c["d"], device=device, requires_grad=True)
        P[f"{i}.n2"] = torch.ones(c["d"], device=device, requires_grad=True)
        P[f"{i}.q"] = mat(c["heads"] * hd, c["d"])
        P[f"{i}.k"] = mat(c["kv"] * hd, c["d"])
        P[f"{i}.v"] = mat(c["kv"] * hd, c["d"])
        P[f"{i}.o"] = mat(c["d"], c["heads"] * hd, scale=out_scale)
        P[f"{i}.router"] = mat(c["experts"], c["d"])
        P[f"{i}.wg"] = mat(c["experts"], c["f"], c["d"])
        P[f"{i}.wu"] = mat(c["experts"], c["f"], c["d"])
        P[f"{i}.wd"] = mat(c["experts"], c["d"], c["f"], scale=out_scale)
    return P


def rms(x, w, eps=1e-6):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w.to(x.dtype)


def rope(x, cos, sin):
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def causal_attention(q, k, v):
    """Flash attention where PyTorch has it (>= 2.0); the plain formula otherwise (only for the
    CPU self-test on old PyTorch, never a benchmark figure)."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    T = q.shape[-2]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1) @ v


def moe(m, P, i, c, want_sp):
    N, E, k = m.shape[0], c["experts"], c["k"]
    logits = m.float() @ P[f"{i}.router"].float().t()
    probs = torch.softmax(logits, dim=-1)
    topk = torch.sort(probs.detach(), dim=-1, descending=True, stable=True).indices[:, :k]
    chosen = probs.gather(1, topk)
    flat = topk.reshape(-1)
    order = torch.sort(flat, stable=True).indices  # stable: token order inside each expert
    counts = torch.bincount(flat, minlength=E)
    token_of_row = order // k
    xs = m[token_of_row]
    outs, zs = [], []
    for e, rows in enumerate(torch.split(torch.arange(order.numel(), device=m.device),
                                         counts.tolist())):
        xe = xs[rows]
        z = F.silu(xe @ P[f"{i}.wg"][e].t()) * (xe @ P[f"{i}.wu"][e].t())
        zs.append(z)
        outs.append(z @ P[f"{i}.wd"][e].t())
    y_rows = torch.cat(outs)
    gates = chosen.reshape(-1)[order].to(y_rows.dtype).unsqueeze(1)
    y = torch.zeros_like(m).index_add(0, token_of_row, y_rows * gates)
    load = counts.float() / (k * N)
    rec = {"lb": E * (load * probs.mean(0)).sum(), "mass": chosen.sum(-1)}
    if want_sp and k > 1:
        z_rows = torch.cat(zs).float()
        z_pairs = torch.empty_like(z_rows)
        z_pairs[order] = z_rows  # back to (token, slot) order
        unit = F.normalize(z_pairs.view(N, k, -1), dim=-1, eps=1e-12)
        cos = unit @ unit.transpose(1, 2)
        rec["sp"] = (cos.pow(2).sum() - cos.diagonal(dim1=1, dim2=2).pow(2).sum()) / N
    return y, rec


def forward(P, c, tokens, targets, losses, cos, sin):
    B, T = tokens.shape
    hd = c["d"] // c["heads"]
    h = P["embed"][tokens].to(torch.bfloat16)
    recs = []
    for i in range(c["layers"]):
        a = rms(h, P[f"{i}.n1"])
        q = (a @ P[f"{i}.q"].t()).view(B, T, c["heads"], hd).transpose(1, 2)
        kk = (a @ P[f"{i}.k"].t()).view(B, T, c["kv"], hd).transpose(1, 2)
        v = (a @ P[f"{i}.v"].t()).view(B, T, c["kv"], hd).transpose(1, 2)
        q, kk = rope(q, cos, sin), rope(kk, cos, sin)
        rep = c["heads"] // c["kv"]
        att = causal_attention(q, kk.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1))
        h = h + att.transpose(1, 2).reshape(B, T, -1) @ P[f"{i}.o"].t()
        y, rec = moe(rms(h, P[f"{i}.n2"]).reshape(B * T, -1), P, i, c, "sp" in losses)
        recs.append(rec)
        h = h + y.view(B, T, -1)
    logits = rms(h, P["norm"]).reshape(B * T, -1) @ P.get("lm_head", P["embed"]).t()
    total = F.cross_entropy(logits.float(), targets.reshape(-1))
    if "lb" in losses:
        total = total + 1e-2 * sum(r["lb"] for r in recs)
    if "sp" in losses:
        total = total + 2e-3 * sum(r.get("sp", 0.0) for r in recs)
    if "cp" in losses:
        cp = -sum((a["mass"] * b["mass"]).sum() for a, b in zip(recs, recs[1:])) / (B * T)
        total = total + 1e-3 * cp
    return total


def flops_per_token(c):
    hd = c["d"] // c["heads"]
    attn = c["d"] * hd * (2 * c["heads"] + 2 * c["kv"])
    experts = 3 * c["k"] * c["d"] * c["f"]
    active = c["layers"] * (attn + experts + c["experts"] * c["d"]) + c["vocab"] * c["d"]
    attn_scores = c["layers"] * 2 * c["heads"] * hd * c["seq"]  # causal: half of 4*T*hd per head
    return 6.0 * active + 6.0 * attn_scores


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--losses", default="lb")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--json")
    ap.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (self-test)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_torch.py: no CUDA device visible to PyTorch")
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    c = PRESETS[args.preset]
    losses = args.losses.split(",")
    P = init_params(c, dev)
    opt = torch.optim.AdamW(P.values(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            **({"fused": True} if cuda else {}))
    hd = c["d"] // c["heads"]
    inv = 1.0 / (10000.0 ** (torch.arange(0, hd // 2, device=dev).float() * 2 / hd))
    ang = torch.arange(c["seq"], device=dev).float()[:, None] * inv[None, :]
    cos = torch.cat((ang.cos(), ang.cos()), -1).to(torch.bfloat16)
    sin = torch.cat((ang.sin(), ang.sin()), -1).to(torch.bfloat16)
    g = torch.Generator().manual_seed(42)
    stream = torch.randint(0, c["vocab"], (c["batch"] * c["seq"] + 1,), generator=g).to(dev)
    tokens = stream[:-1].view(c["batch"], c["seq"])
    targets = stream[1:].view(c["batch"], c["seq"])

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = forward(P, c, tokens, targets, losses, cos, sin)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(P.values(), 1.0)
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    dt = (time.perf_counter() - t0) / args.steps
    tps = c["batch"] * c["seq"] / dt
    tflops = flops_per_token(c) * tps / 1e12
    report = {"framework": f"torch {torch.__version__}", "device": torch.cuda.get_device_name() if cuda else "cpu",
              "preset": args.preset, "losses": losses, "step_seconds": dt,
              "tokens_per_second": tps, "achieved_tflops": tflops,
              "mfu_vs_peak": tflops / args.peak_tflops, "final_loss": float(loss)}
    text = json.dumps(report, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
