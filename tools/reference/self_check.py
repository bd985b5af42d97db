#!/usr/bin/python3
"""Checks that the PyTorch reference itself is right before anyone trusts its fixtures.

  * finite differences (torch.autograd.gradcheck, float64) of the total loss, every loss on,
    with respect to one tensor of each kind, on both fixture configs;
  * properties docs/model.md states: lb = 1 under uniform routing, top-k ties go to the lower index,
    sp = k(k-1) for identical experts and 0 for k = 1, cp = minus the summed joint top-k
    probabilities, causal attention, RoPE depends only on relative positions, GQA head mapping
    against an explicit per-head loop;
  * the hand-written AdamW and clipping against torch.optim.AdamW / clip_grad_norm_;
  * the safetensors writer round-trips, and the committed fixtures equal a fresh computation.

Exit status 0 when every check passes, 1 otherwise. Usage: /usr/bin/python3 self_check.py [--quick]
(--quick skips the comparison with the committed fixtures).
"""
import math
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures  # noqa: E402
import moe_ref  # noqa: E402
import optim_ref  # noqa: E402
import safetensors_io  # noqa: E402

FAILURES = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        FAILURES.append(what)


def fixture_setup(name):
    spec = make_fixtures.FIXTURES[name]
    cfg = moe_ref.model_config(spec["model"])
    loss_cfg = moe_ref.loss_config(spec["loss"])
    inputs, targets = make_fixtures.make_inputs(cfg, spec["seed"])
    params = make_fixtures.make_initial_params(spec, cfg, spec["seed"])
    return cfg, loss_cfg, params, inputs, targets


def check_gradients(name, tensors):
    cfg, loss_cfg, params, inputs, targets = fixture_setup(name)
    for tname in tensors:
        base = dict(params)

        def total_of(t, tname=tname, base=base):
            base[tname] = t
            return moe_ref.forward(base, cfg, loss_cfg, inputs, targets)["total"]

        x = params[tname].clone().requires_grad_(True)
        try:
            ok = torch.autograd.gradcheck(total_of, (x,), eps=1e-6, atol=1e-7, rtol=1e-5)
        except RuntimeError as err:  # gradcheck raises with the mismatch in the message
            print(err)
            ok = False
        check(ok, f"{name}: gradcheck of the total loss w.r.t. {tname}")


def uniform_routing_checks():
    cfg, loss_cfg, params, inputs, targets = fixture_setup("vanilla")
    for name in list(params):
        if name.endswith("mlp.gate.weight"):
            params[name] = torch.zeros_like(params[name])
    out = moe_ref.forward(params, cfg, loss_cfg, inputs, targets)
    n_moe = len(out["routing"])
    check(abs(float(out["lb"]) - n_moe) < 1e-12, f"lb = 1 per MoE layer under uniform routing "
                                                  f"(got {float(out['lb'])} for {n_moe} layers)")
    k = cfg["top_k"]
    first_k = all(bool((r["topk"] == torch.arange(k)).all()) for r in out["routing"])
    check(first_k, "equal scores: top-k picks experts 0..k-1 (ties toward the lower index)")
    E = cfg["n_experts"]
    check(abs(float(out["z"]) - n_moe * math.log(E) ** 2) < 1e-12, "z = log(E)^2 per layer at r = 0")
    check(abs(float(out["cp"]) + (n_moe - 1) * (k / E) ** 2) < 1e-12,
          "cp = -(k/E)^2 per adjacent pair under uniform routing")


def tie_checks():
    scores = torch.tensor([[0.1, 0.3, 0.3, 0.3, 0.0], [0.2, 0.2, 0.5, 0.2, 0.2]],
                          dtype=torch.float64)
    got = moe_ref.topk_lower_index_first(scores, 2)
    check(got.tolist() == [[1, 2], [2, 0]], f"top-k ties keep the lower index ({got.tolist()})")


def sp_checks():
    cfg, loss_cfg, params, inputs, targets = fixture_setup("vanilla")
    E, k = cfg["n_experts"], cfg["top_k"]
    for layer in range(cfg["n_layers"]):
        p = f"model.layers.{layer}.mlp.experts."
        for e in range(1, E):
            for w in ("gate_proj", "up_proj", "down_proj"):
                params[f"{p}{e}.{w}.weight"] = params[f"{p}0.{w}.weight"]
    out = moe_ref.forward(params, cfg, loss_cfg, inputs, targets)
    want = cfg["n_layers"] * k * (k - 1)
    check(abs(float(out["sp"]) - want) < 1e-9, f"sp = k(k-1) per layer for identical experts "
                                                f"(got {float(out['sp'])}, want {want})")
    cfg1 = dict(cfg, top_k=1)
    out = moe_ref.forward(params, cfg1, loss_cfg, inputs, targets)
    check(float(out["sp"]) == 0.0, "sp = 0 for top_k = 1")


def cp_check():
    cfg, loss_cfg, params, inputs, targets = fixture_setup("deepseek")
    out = moe_ref.forward(params, cfg, loss_cfg, inputs, targets)
    joint = 0.0
    routing = out["routing"]
    N = inputs.numel()
    for a, b in zip(routing, routing[1:]):
        for t in range(N):
            for e in a["topk"][t].tolist():
                for v in b["topk"][t].tolist():
                    joint += float(a["probs"][t, e] * b["probs"][t, v])
    check(abs(float(out["cp"]) + joint / N) < 1e-12, "cp = -(1/N) sum of joint top-k probabilities")


def lb_check():
    cfg, loss_cfg, params, inputs, targets = fixture_setup("deepseek")
    out = moe_ref.forward(params, cfg, loss_cfg, inputs, targets)
    E, k, N = cfg["n_experts"], cfg["top_k"], inputs.numel()
    want = 0.0
    for r in out["routing"]:
        for e in range(E):
            f = sum(int(x == e) for x in r["topk"].reshape(-1).tolist()) / (k * N)
            want += E * f * float(r["probs"][:, e].mean())
    check(abs(float(out["lb"]) - want) < 1e-12, "lb = sum_l E sum_e f_e P_e (explicit loops)")


def attention_checks():
    cfg, loss_cfg, params, inputs, targets = fixture_setup("deepseek")
    logits = moe_ref.forward(params, cfg, loss_cfg, inputs, targets)["logits"]
    changed = inputs.clone()
    changed[:, -1] = (changed[:, -1] + 1) % cfg["vocab_size"]
    logits2 = moe_ref.forward(params, cfg, loss_cfg, changed, targets)["logits"]
    T = inputs.shape[1]
    same = torch.equal(logits.view(2, T, -1)[:, :-1], logits2.view(2, T, -1)[:, :-1])
    check(same, "causal: changing the last token leaves earlier logits unchanged")

    hd = moe_ref.head_dim(cfg)
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(1, 1, 1, hd, generator=gen, dtype=torch.float64)
    k = torch.randn(1, 1, 1, hd, generator=gen, dtype=torch.float64)
    cos, sin = moe_ref.rope_cos_sin(12, hd, cfg["rope_theta"], torch.float64)

    def dot(i, j):
        return float((moe_ref.apply_rope(q, cos[i], sin[i]) * moe_ref.apply_rope(k, cos[j], sin[j])).sum())
    check(abs(dot(3, 1) - dot(9, 7)) < 1e-12 and abs(dot(3, 1) - dot(2, 1)) > 1e-6,
          "RoPE: q.k depends on the relative position only")

    # GQA against an explicit loop over query heads.
    B, T, d = 2, 5, cfg["d_model"]
    a = torch.randn(B, T, d, generator=gen, dtype=torch.float64)
    pre = "model.layers.0.self_attn."
    cos, sin = moe_ref.rope_cos_sin(T, hd, cfg["rope_theta"], torch.float64)
    got = moe_ref.attention(a, params, pre, cfg, cos, sin)
    H, KV = cfg["n_heads"], cfg["n_kv_heads"]
    heads = []
    for h in range(H):
        j = h // (H // KV)
        wq = params[pre + "q_proj.weight"][h * hd:(h + 1) * hd]
        wk = params[pre + "k_proj.weight"][j * hd:(j + 1) * hd]
        wv = params[pre + "v_proj.weight"][j * hd:(j + 1) * hd]
        out = torch.zeros(B, T, hd, dtype=torch.float64)
        for b in range(B):
            qh = moe_ref.apply_rope(a[b] @ wq.t(), cos, sin)
            kh = moe_ref.apply_rope(a[b] @ wk.t(), cos, sin)
            vh = a[b] @ wv.t()
            for t in range(T):
                w = torch.softmax((kh[:t + 1] @ qh[t]) / math.sqrt(hd), dim=0)
                out[b, t] = w @ vh[:t + 1]
        heads.append(out)
    want = torch.cat(heads, dim=-1) @ params[pre + "o_proj.weight"].t()
    check(torch.allclose(got, want, atol=1e-12), "GQA attention matches an explicit per-head loop")


def optimizer_checks():
    gen = torch.Generator().manual_seed(3)
    params = {"model.layers.0.input_layernorm.weight": torch.randn(5, generator=gen, dtype=torch.float64),
              "model.layers.0.self_attn.q_proj.weight": torch.randn(4, 5, generator=gen, dtype=torch.float64)}
    mine = {n: t.clone() for n, t in params.items()}
    theirs = {n: t.clone().requires_grad_(True) for n, t in params.items()}
    lr, b1, b2, eps, wd, clip = 1e-2, 0.9, 0.95, 1e-8, 0.1, 0.5
    opt = optim_ref.AdamW(lr, b1, b2, eps, wd)
    torch_opt = torch.optim.AdamW(
        [{"params": [theirs["model.layers.0.self_attn.q_proj.weight"]], "weight_decay": wd},
         {"params": [theirs["model.layers.0.input_layernorm.weight"]], "weight_decay": 0.0}],
        lr=lr, betas=(b1, b2), eps=eps)
    for step in range(4):
        grads = {n: torch.randn(t.shape, generator=gen, dtype=torch.float64) for n, t in params.items()}
        for n, g in grads.items():
            theirs[n].grad = g.clone()
        norm, coef = optim_ref.clip_by_global_norm(grads, clip)
        torch_norm = torch.nn.utils.clip_grad_norm_(list(theirs.values()), clip)
        check(abs(norm - float(torch_norm)) < 1e-12 and coef < 1, f"clip step {step}: same norm")
        opt.step(mine, grads)
        torch_opt.step()
    diff = max(float((mine[n] - theirs[n].detach()).abs().max()) for n in params)
    check(diff < 1e-14, f"AdamW matches torch.optim.AdamW with a no-decay group (diff {diff:.1e})")


def bias_update_check():
    params = {"model.layers.1.mlp.gate.e_score_correction_bias": torch.zeros(4, dtype=torch.float64)}
    rec = {"layer": 1, "load": torch.tensor([5, 3, 3, 1])}  # mean 3
    optim_ref.update_balance_bias(params, [rec], 0.5)
    got = params["model.layers.1.mlp.gate.e_score_correction_bias"].tolist()
    check(got == [-0.5, 0.0, 0.0, 0.5], f"bias update b += gamma*sign(mean - load) ({got})")


def safetensors_check():
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -1], np.int32),
              "c": np.zeros((0, 3), np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.safetensors")
        safetensors_io.save(path, arrays)
        back, _ = safetensors_io.load(path)
        with open(path, "rb") as src:
            n = int.from_bytes(src.read(8), "little")
    ok = all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in arrays.items())
    check(ok and n % 8 == 0, "safetensors round trip (F32, I32, empty), header padded to 8")


def train_torch_check():
    """The benchmark peer learns: 30 steps on one repeated token sequence lower the loss a lot."""
    import subprocess
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = os.path.join(tmp, "tiny.yaml")
        with open(cfg_path, "w") as out:
            out.write("model: {vocab_size: 32, d_model: 16, n_layers: 2, n_experts: 4, top_k: 2,\n"
                      "        expert_ffn_dim: 16, arch: deepseek, n_shared_experts: 1,\n"
                      "        dense_layers: 1, ffn_dim: 32}\n"
                      "loss: {losses: 'lb,z,sp,cp', balance: bias}\n"
                      "train: {batch_size: 2, seq_len: 16, grad_accum: 2, lr: 0.01,\n"
                      "        warmup_steps: 0, schedule: constant}\n")
        tokens = os.path.join(tmp, "tokens.npy")
        np.save(tokens, np.arange(17, dtype=np.int32) % 32)
        res = subprocess.run([sys.executable, os.path.join(here, "train_torch.py"), "--config",
                              cfg_path, "--threads", "1", "--steps", "30", "--warmup", "2",
                              "--tokens", tokens], capture_output=True, text=True)
    ok = res.returncode == 0
    if ok:
        import json
        report = json.loads(res.stdout.strip().splitlines()[-1])
        first = float(res.stderr.split("loss ")[1].split()[0])
        ok = report["impl"] == "torch" and report["tokens_per_s"] > 0 and \
            report["final_loss"] < 0.5 * first
        print(f"      train_torch: first loss {first:.3f}, last {report['final_loss']:.3f}")
    else:
        print(res.stderr[-2000:])
    check(ok, "train_torch.py runs (grad_accum, bias balance, given tokens) and learns")


def main():
    torch.set_num_threads(1)
    train_torch_check()
    tie_checks()
    uniform_routing_checks()
    sp_checks()
    cp_check()
    lb_check()
    attention_checks()
    optimizer_checks()
    bias_update_check()
    safetensors_check()
    check_gradients("vanilla", ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                                "model.layers.1.mlp.gate.weight",
                                "model.layers.0.mlp.experts.2.gate_proj.weight",
                                "model.layers.1.post_attention_layernorm.weight"])
    check_gradients("deepseek", ["model.layers.0.mlp.up_proj.weight",
                                 "model.layers.1.self_attn.k_proj.weight",
                                 "model.layers.2.mlp.gate.weight",
                                 "model.layers.1.mlp.experts.5.up_proj.weight",
                                 "model.layers.2.mlp.shared_experts.down_proj.weight",
                                 "lm_head.weight", "model.norm.weight"])
    if "--quick" not in sys.argv:
        sys.argv = [sys.argv[0], "--check"]
        check(make_fixtures.main() == 0, "committed fixtures equal a fresh computation")
    print(f"{len(FAILURES)} failure(s)" if FAILURES else "all reference self-checks passed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
