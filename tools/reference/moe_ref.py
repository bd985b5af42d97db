"""Independent PyTorch reference of the moe-spec model (docs/model.md §1) and its losses (docs/model.md §2).

Written from the specification (now docs/model.md) alone, not from the C++ code, so that the golden fixtures it produces
(tools/reference/make_fixtures.py) check the C++ model against the math rather than against itself.

The model is functional: parameters live in a dict {Hugging Face name: tensor} and forward() takes
that dict, so a test can swap any single tensor (gradcheck) and the optimizer can update them in
place. Any floating dtype works: the fixtures are computed in float64 (the exact math), the
benchmark peer (train_torch.py) runs float32.

Decisions the specification leaves to the implementation, made explicit here:
  * N = batch * seq is the token count of every routing statistic (lb's f and P, z, sp, cp all
    average over all N positions, including positions whose target is -1: routing does not
    depend on targets). L_lm averages over the positions whose target is >= 0 only (0 if none).
  * GQA: key/value head j serves query heads j*r .. j*r+r-1, r = n_heads / n_kv_heads (HF
    repeat_kv). RoPE: inv_freq_i = theta^(-2i/hd), i < hd/2, angle = position * inv_freq (positions
    0..seq-1 in each sequence), rotate_half pairs dimension i with i + hd/2 (HF Llama).
  * Top-k: a stable descending sort of (s + b), so equal scores keep the lower expert index first.
    The bias b never receives a gradient and is never used outside the choice of A.
  * lb's f counts the chosen (token, slot) pairs (the choice made with the bias); f is a constant
    in the backward pass, P = mean_t s_t is differentiated. The top-k sets are constants everywhere.
  * sp: cos(z_e, z_v) = <z_e, z_v> / (max(|z_e|, 1e-12) * max(|z_v|, 1e-12)) over ordered pairs
    e != v of one token's routed slots; shared experts are excluded.
  * The losses listed in loss.losses enter the total; balance: bias only adds the bias tensor and
    its update (see optim_ref.update_balance_bias), it does not remove lb from the total.
"""
import math

import torch
import torch.nn.functional as F

# Defaults and key names of lib/config/config.h (ModelConfig, LossConfig): the C++ side reads the
# same YAML keys, so a config written here loads there unchanged.
MODEL_DEFAULTS = {
    "arch": "vanilla", "vocab_size": 0, "d_model": 128, "n_layers": 4, "n_heads": 4,
    "n_kv_heads": 2, "head_dim": 0, "ffn_dim": 512, "n_experts": 8, "top_k": 2,
    "expert_ffn_dim": 256, "n_shared_experts": 0, "shared_expert_ffn_dim": 0, "dense_layers": 0,
    "norm_topk_prob": False, "tie_embeddings": True, "rope_theta": 10000.0, "norm_eps": 1e-6,
    "max_seq_len": 128, "init_std": 0.02, "capacity_factor": 0.0,
}
LOSS_DEFAULTS = {
    "losses": ["lb"], "lb_coef": 1e-2, "z_coef": 1e-3, "sp_coef": 2e-3, "cp_coef": 1e-3,
    "balance": "aux", "bias_gamma": 1e-3,
}
LOSS_NAMES = ("lb", "z", "sp", "cp")
COEF_KEY = {"lb": "lb_coef", "z": "z_coef", "sp": "sp_coef", "cp": "cp_coef"}


def resolve(section, defaults, given, where):
    """Fills defaults and rejects unknown keys (the same keys the C++ config accepts)."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(defaults)}")
    out = dict(defaults)
    out.update(given)
    return out


def model_config(given):
    cfg = resolve("model", MODEL_DEFAULTS, given, "model")
    if cfg["vocab_size"] <= 0:
        raise ValueError("model.vocab_size must be > 0 for the reference (no tokenizer here)")
    if cfg["n_heads"] % cfg["n_kv_heads"] != 0:
        raise ValueError("model.n_heads must be a multiple of model.n_kv_heads")
    if cfg["top_k"] > cfg["n_experts"]:
        raise ValueError("model.top_k must be <= model.n_experts")
    if cfg["capacity_factor"] != 0.0:
        raise ValueError("the reference is dropless: model.capacity_factor must be 0")
    if cfg["arch"] == "vanilla" and cfg["n_shared_experts"] != 0:
        raise ValueError("model.arch vanilla needs n_shared_experts = 0")
    if cfg["arch"] == "deepseek" and cfg["n_shared_experts"] < 1:
        raise ValueError("model.arch deepseek needs n_shared_experts >= 1")
    return cfg


def loss_config(given):
    cfg = resolve("loss", LOSS_DEFAULTS, given, "loss")
    if cfg["losses"] is None:
        cfg["losses"] = []
    elif isinstance(cfg["losses"], str):  # "lb,sp,cp", as the C++ config also accepts
        cfg["losses"] = [x.strip() for x in cfg["losses"].split(",") if x.strip()]
    for name in cfg["losses"]:
        if name not in LOSS_NAMES:
            raise ValueError(f"loss.losses: unknown loss '{name}', expected one of {LOSS_NAMES}")
    if cfg["balance"] not in ("aux", "bias"):
        raise ValueError("loss.balance must be aux or bias")
    return cfg


def head_dim(cfg):
    return cfg["head_dim"] if cfg["head_dim"] > 0 else cfg["d_model"] // cfg["n_heads"]


def shared_width(cfg):
    fs = cfg["shared_expert_ffn_dim"] if cfg["shared_expert_ffn_dim"] > 0 else cfg["expert_ffn_dim"]
    return cfg["n_shared_experts"] * fs


def is_moe_layer(cfg, layer):
    return layer >= cfg["dense_layers"]


def bias_name(layer):
    return f"model.layers.{layer}.mlp.gate.e_score_correction_bias"


def parameter_shapes(cfg, balance="aux"):
    """[(HF name, shape)] in a fixed order (docs/model.md §5.3's table)."""
    d, V, hd = cfg["d_model"], cfg["vocab_size"], head_dim(cfg)
    H, KV, E, f = cfg["n_heads"], cfg["n_kv_heads"], cfg["n_experts"], cfg["expert_ffn_dim"]
    shapes = [("model.embed_tokens.weight", (V, d))]
    for i in range(cfg["n_layers"]):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (d,)),
                   (p + "self_attn.q_proj.weight", (H * hd, d)),
                   (p + "self_attn.k_proj.weight", (KV * hd, d)),
                   (p + "self_attn.v_proj.weight", (KV * hd, d)),
                   (p + "self_attn.o_proj.weight", (d, H * hd)),
                   (p + "post_attention_layernorm.weight", (d,))]
        if not is_moe_layer(cfg, i):
            F_ = cfg["ffn_dim"]
            shapes += [(p + "mlp.gate_proj.weight", (F_, d)), (p + "mlp.up_proj.weight", (F_, d)),
                       (p + "mlp.down_proj.weight", (d, F_))]
            continue
        shapes.append((p + "mlp.gate.weight", (E, d)))
        if balance == "bias":
            shapes.append((bias_name(i), (E,)))
        for e in range(E):
            q = p + f"mlp.experts.{e}."
            shapes += [(q + "gate_proj.weight", (f, d)), (q + "up_proj.weight", (f, d)),
                       (q + "down_proj.weight", (d, f))]
        if cfg["n_shared_experts"] > 0:
            w = shared_width(cfg)
            q = p + "mlp.shared_experts."
            shapes += [(q + "gate_proj.weight", (w, d)), (q + "up_proj.weight", (w, d)),
                       (q + "down_proj.weight", (d, w))]
    shapes.append(("model.norm.weight", (d,)))
    if not cfg["tie_embeddings"]:
        shapes.append(("lm_head.weight", (V, d)))
    return shapes


def is_trainable(name):
    return not name.endswith("e_score_correction_bias")


def is_decayed(name):
    """AdamW weight decay applies to matrices only, never to norm gains (or the bias)."""
    return is_trainable(name) and not name.endswith("norm.weight")


def init_parameters(cfg, balance, generator, dtype=torch.float32):
    """Normal(0, init_std) matrices, output projections (o_proj, down_proj) scaled by
    1/sqrt(2 * n_layers), ones for norm gains, zero bias."""
    params = {}
    out_scale = 1.0 / math.sqrt(2.0 * cfg["n_layers"])
    for name, shape in parameter_shapes(cfg, balance):
        if name.endswith("norm.weight"):
            t = torch.ones(shape, dtype=dtype)
        elif name.endswith("e_score_correction_bias"):
            t = torch.zeros(shape, dtype=dtype)
        else:
            std = cfg["init_std"] * (out_scale if name.endswith(("o_proj.weight", "down_proj.weight"))
                                     else 1.0)
            t = torch.randn(shape, generator=generator, dtype=torch.float64).mul_(std).to(dtype)
        params[name] = t
    return params


# ----------------------------------------------------------------------------- building blocks

def rms_norm(u, gain, eps):
    return u / torch.sqrt(u.pow(2).mean(-1, keepdim=True) + eps) * gain


def rope_cos_sin(seq, hd, theta, dtype):
    inv_freq = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    angles = torch.outer(torch.arange(seq, dtype=torch.float64), inv_freq)
    emb = torch.cat([angles, angles], dim=-1)  # [seq, hd]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x, cos, sin):  # x: [B, heads, T, hd]
    return x * cos + rotate_half(x) * sin


def attention(a, P, prefix, cfg, cos, sin):
    B, T, _ = a.shape
    H, KV, hd = cfg["n_heads"], cfg["n_kv_heads"], head_dim(cfg)
    q = (a @ P[prefix + "q_proj.weight"].t()).view(B, T, H, hd).transpose(1, 2)
    k = (a @ P[prefix + "k_proj.weight"].t()).view(B, T, KV, hd).transpose(1, 2)
    v = (a @ P[prefix + "v_proj.weight"].t()).view(B, T, KV, hd).transpose(1, 2)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    rep = H // KV
    k = k.repeat_interleave(rep, dim=1)  # kv head j -> query heads j*rep .. j*rep+rep-1
    v = v.repeat_interleave(rep, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(causal, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v  # [B, H, T, hd]
    return out.transpose(1, 2).reshape(B, T, H * hd) @ P[prefix + "o_proj.weight"].t()


def swiglu_hidden(x, w_gate, w_up):
    """z = SiLU(x W_gate^T) * (x W_up^T): the intermediate activation R_sp is defined on."""
    return F.silu(x @ w_gate.t()) * (x @ w_up.t())


def topk_lower_index_first(scores, k):
    """Indices of the k largest scores per row; equal scores keep the lower index first."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    return order[:, :k]


def moe_block(m, P, prefix, cfg, bias, want_sp):
    """m: [N, d]. Returns the block output and the routing record of this layer."""
    N = m.shape[0]
    E, k = cfg["n_experts"], cfg["top_k"]
    logits = m @ P[prefix + "gate.weight"].t()  # router logits [N, E] (>= fp32)
    probs = torch.softmax(logits, dim=-1)
    choice = probs.detach() + (bias.detach() if bias is not None else 0)
    topk = topk_lower_index_first(choice, k)  # constant in backward
    sorted_choice = torch.sort(choice, dim=-1, descending=True).values
    margin = (sorted_choice[:, k - 1] - sorted_choice[:, k]).min().item() if k < E else math.inf
    chosen_probs = probs.gather(1, topk)  # [N, k]
    gates = chosen_probs / chosen_probs.sum(-1, keepdim=True) if cfg["norm_topk_prob"] else chosen_probs

    out = torch.zeros_like(m)
    flat_expert = topk.reshape(-1)  # pair p = (token p // k, slot p % k)
    pair_token = torch.arange(N).repeat_interleave(k)
    flat_gates = gates.reshape(-1)
    hidden_pairs = m.new_zeros(N * k, cfg["expert_ffn_dim"]) if want_sp else None
    for e in range(E):
        pairs = (flat_expert == e).nonzero(as_tuple=True)[0]
        if pairs.numel() == 0:
            continue
        q = prefix + f"experts.{e}."
        tokens = pair_token[pairs]
        z = swiglu_hidden(m[tokens], P[q + "gate_proj.weight"], P[q + "up_proj.weight"])
        y = (z @ P[q + "down_proj.weight"].t()) * flat_gates[pairs].unsqueeze(1)
        out = out.index_add(0, tokens, y)
        if want_sp:
            hidden_pairs = hidden_pairs.index_copy(0, pairs, z)
    if cfg["n_shared_experts"] > 0:
        q = prefix + "shared_experts."
        out = out + swiglu_hidden(m, P[q + "gate_proj.weight"], P[q + "up_proj.weight"]) \
            @ P[q + "down_proj.weight"].t()

    load = torch.bincount(flat_expert, minlength=E)  # (token, slot) pairs per expert
    f_frac = load.to(m.dtype) / (k * N)
    record = {
        "logits": logits, "probs": probs, "topk": topk, "load": load, "margin": margin,
        "lb": E * (f_frac * probs.mean(0)).sum(),
        "z": torch.logsumexp(logits, dim=-1).pow(2).mean(),
        "topk_mass": chosen_probs.sum(-1),  # m_t = sum_{e in A_t} s_t(e), never renormalized
    }
    if want_sp:
        record["sp"] = sp_term(hidden_pairs.view(N, k, -1))
    return out, record


def sp_term(hidden):
    """(1/N) sum_t sum_{e != v} cos^2(z_e, z_v) for hidden [N, k, f]."""
    N, k, _ = hidden.shape
    if k < 2:
        return hidden.new_zeros(())
    unit = hidden / hidden.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = unit @ unit.transpose(1, 2)  # [N, k, k]
    off_diagonal = 1.0 - torch.eye(k, dtype=hidden.dtype)
    return (cos.pow(2) * off_diagonal).sum() / N


def dense_ffn(m, P, prefix):
    return swiglu_hidden(m, P[prefix + "gate_proj.weight"], P[prefix + "up_proj.weight"]) \
        @ P[prefix + "down_proj.weight"].t()


# ----------------------------------------------------------------------------- forward + losses

def forward(P, cfg, loss_cfg, input_ids, targets, compute_sp=None):
    """input_ids, targets: int64 [B, T] (targets -1 = ignored). compute_sp: also compute sp when
    it is not among the enabled losses (default: only when enabled).

    Returns a dict: logits [B*T, V]; lm, lb, z, sp, cp and total as 0-dim tensors (lb, z, sp, cp
    summed over MoE layers, unscaled; total with the coefficients of the enabled losses);
    routing: one record per MoE layer (depth order) with probs, topk, load, margin."""
    B, T = input_ids.shape
    dtype = P["model.embed_tokens.weight"].dtype
    eps = cfg["norm_eps"]
    cos, sin = rope_cos_sin(T, head_dim(cfg), cfg["rope_theta"], dtype)
    want_sp = ("sp" in loss_cfg["losses"]) if compute_sp is None else compute_sp
    h = P["model.embed_tokens.weight"][input_ids]  # [B, T, d]
    routing = []
    for i in range(cfg["n_layers"]):
        p = f"model.layers.{i}."
        a = rms_norm(h, P[p + "input_layernorm.weight"], eps)
        h = h + attention(a, P, p + "self_attn.", cfg, cos, sin)
        m = rms_norm(h, P[p + "post_attention_layernorm.weight"], eps).reshape(B * T, -1)
        if is_moe_layer(cfg, i):
            y, rec = moe_block(m, P, p + "mlp.", cfg, P.get(bias_name(i)), want_sp)
            rec["layer"] = i
            routing.append(rec)
        else:
            y = dense_ffn(m, P, p + "mlp.")
        h = h + y.view(B, T, -1)
    final = rms_norm(h, P["model.norm.weight"], eps).reshape(B * T, -1)
    w_out = P["model.embed_tokens.weight"] if cfg["tie_embeddings"] else P["lm_head.weight"]
    logits = final @ w_out.t()

    flat_targets = targets.reshape(-1)
    zero = logits.new_zeros(())
    if (flat_targets >= 0).any():
        lm = F.cross_entropy(logits, flat_targets, ignore_index=-1, reduction="mean")
    else:
        lm = zero
    N = B * T
    losses = {
        "lm": lm,
        "lb": sum((r["lb"] for r in routing), zero),
        "z": sum((r["z"] for r in routing), zero),
        "sp": sum((r["sp"] for r in routing if "sp" in r), zero),
        "cp": -sum(((a["topk_mass"] * b["topk_mass"]).sum() for a, b in zip(routing, routing[1:])),
                   zero) / N,
    }
    total = losses["lm"]
    for name in loss_cfg["losses"]:
        total = total + loss_cfg[COEF_KEY[name]] * losses[name]
    losses["total"] = total
    return {"logits": logits, "routing": routing, **losses}
