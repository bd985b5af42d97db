#!/usr/bin/python3
"""Writes the golden fixtures tests/data/fixtures/{vanilla,deepseek}.{safetensors,json}.

Each fixture is one tiny model, one batch, and what the model of docs/model.md §1-2 must produce on it:
logits, the loss terms, the gradient of the total loss, and the parameters after 3 AdamW steps on
that batch (with the balancing-bias update when balance = bias).

Everything is computed in float64 from the float32-rounded initial weights and then stored rounded
to float32, so the stored numbers are the exact math, not one float32 evaluation order. The same
pipeline is also run in float32; its distance to the float64 result is recorded ("fp32_observed")
and the recommended comparison tolerances are derived from it ("tolerances").

Top-k choices are discontinuous, so a seed is accepted only if, in every forward pass, the k-th
and (k+1)-th routing scores differ by at least MIN_MARGIN (far above float32 noise); the float32
run must then pick exactly the same experts, which is asserted.

Usage: /usr/bin/python3 tools/reference/make_fixtures.py [--out DIR] [--check]
  --check: recompute and compare with the committed files instead of writing them.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_ref  # noqa: E402
import optim_ref  # noqa: E402
import safetensors_io  # noqa: E402

MIN_MARGIN = 2e-4
N_STEPS = 3
BATCH, SEQ = 2, 8
IGNORED_POSITIONS = [(0, 3), (1, 6)]  # targets set to -1

FIXTURES = {
    "vanilla": {
        "model": {"arch": "vanilla", "vocab_size": 64, "d_model": 16, "n_layers": 2, "n_heads": 4,
                  "n_kv_heads": 2, "n_experts": 4, "top_k": 2, "expert_ffn_dim": 24,
                  "tie_embeddings": True, "norm_topk_prob": False, "max_seq_len": SEQ,
                  "init_std": 0.3},
        "loss": {"losses": ["lb", "z", "sp", "cp"], "lb_coef": 0.1, "z_coef": 0.01,
                 "sp_coef": 0.1, "cp_coef": 0.2, "balance": "aux"},
        "adamw": {"lr": 1e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
                  "grad_clip": 1.0},
        "initial_bias_std": 0.0,
        "seed": 100,
    },
    "deepseek": {
        "model": {"arch": "deepseek", "vocab_size": 40, "d_model": 16, "n_layers": 3,
                  "n_heads": 4, "n_kv_heads": 2, "head_dim": 6, "ffn_dim": 24, "n_experts": 8,
                  "top_k": 3, "expert_ffn_dim": 8, "n_shared_experts": 1,
                  "shared_expert_ffn_dim": 12, "dense_layers": 1, "norm_topk_prob": True,
                  "tie_embeddings": False, "max_seq_len": SEQ, "init_std": 0.3},
        "loss": {"losses": ["lb", "z", "sp", "cp"], "lb_coef": 0.1, "z_coef": 0.01,
                 "sp_coef": 0.1, "cp_coef": 0.2, "balance": "bias", "bias_gamma": 0.01},
        "adamw": {"lr": 1e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
                  "grad_clip": 0.0},
        "initial_bias_std": 0.03,
        "seed": 202,
    },
}

NOTES = (
    "Computed in float64 (torch, tools/reference/moe_ref.py) from the float32-rounded initial "
    "weights, stored rounded to float32. N = batch*seq positions; lb/z/sp/cp average over all N "
    "positions (routing ignores targets), lm over the positions with target >= 0. "
    "grad.* = d(total)/d(param) with every loss in config.loss.losses and its coefficient, before "
    "clipping (tied embeddings: one gradient under model.embed_tokens.weight). "
    "step3.* = parameters after 3 optimizer steps on the same batch, constant lr (no warmup, no "
    "schedule). Each step: forward+backward; clip: norm = global L2 norm over all trainable "
    "gradients, if grad_clip > 0 and norm > grad_clip every gradient is multiplied by "
    "grad_clip/(norm+1e-6); AdamW exactly as torch.optim.AdamW: p *= 1-lr*wd (not for names "
    "ending in norm.weight, never for the bias), m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, "
    "p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps); then, with balance = bias, per MoE "
    "layer b_e += bias_gamma * sign(mean_e(load) - load_e) with load = (token, slot) pairs of that "
    "step's forward. The bias is not trainable (no grad.* entry) but step3.* holds it after 3 "
    "updates. losses_per_step[i] = loss terms of the forward pass of step i (before its update); "
    "losses_after_steps = forward with the step3 parameters. expected.topk.<layer> (I32 [N,k], "
    "slots in descending score order) and expected.probs.<layer> (F32 [N,E]) are the routing of "
    "the step-0 forward. steps[i] records grad_norm, clip_coef, loads and the smallest top-k "
    "score margin of step i.")


def to_f32_exact(t):
    """Rounds to float32 and back, so float64 math starts from the values the file stores."""
    return t.to(torch.float32).to(torch.float64)


def make_inputs(cfg, seed):
    gen = torch.Generator().manual_seed(seed + 7)
    tokens = torch.randint(0, cfg["vocab_size"], (BATCH, SEQ + 1), generator=gen)
    inputs, targets = tokens[:, :SEQ].clone(), tokens[:, 1:].clone()
    for b, t in IGNORED_POSITIONS:
        targets[b, t] = -1
    return inputs, targets


def make_initial_params(spec, cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    params = moe_ref.init_parameters(cfg, spec["loss"].get("balance", "aux"), gen, torch.float64)
    params = {n: to_f32_exact(t) for n, t in params.items()}
    for name in params:
        if name.endswith("e_score_correction_bias"):
            bias = torch.randn(params[name].shape, generator=gen, dtype=torch.float64)
            params[name] = to_f32_exact(bias * spec["initial_bias_std"])
    return params


def loss_dict(out):
    return {k: float(out[k]) for k in ("lm", "lb", "z", "sp", "cp", "total")}


def trainable(params):
    return {n: t for n, t in params.items() if moe_ref.is_trainable(n)}


def run_pipeline(spec, init_params, inputs, targets, dtype):
    """Forward/backward at step 0, then N_STEPS optimizer steps. Returns every recorded value."""
    cfg, loss_cfg = moe_ref.model_config(spec["model"]), moe_ref.loss_config(spec["loss"])
    opt_cfg = spec["adamw"]
    params = {n: t.to(dtype).clone().requires_grad_(moe_ref.is_trainable(n))
              for n, t in init_params.items()}
    opt = optim_ref.AdamW(opt_cfg["lr"], opt_cfg["beta1"], opt_cfg["beta2"], opt_cfg["eps"],
                          opt_cfg["weight_decay"])
    result = {"losses_per_step": [], "steps": []}
    for step in range(N_STEPS):
        out = moe_ref.forward(params, cfg, loss_cfg, inputs, targets)
        names = list(trainable(params))
        grads = gradients(out["total"], params, names)
        if step == 0:
            result["logits"] = out["logits"].detach().clone()
            result["grads"] = {n: g.clone() for n, g in grads.items()}
            result["routing"] = [(r["layer"], r["topk"].clone(), r["probs"].detach().clone())
                                 for r in out["routing"]]
            result["grad_share"] = grad_shares(params, cfg, loss_cfg, inputs, targets, names)
            result["bias_changes_choice"] = bias_changes_choice(out["routing"])
        result["losses_per_step"].append(loss_dict(out))
        norm, coef = optim_ref.clip_by_global_norm(grads, opt_cfg["grad_clip"])
        opt.step(params, grads)
        if loss_cfg["balance"] == "bias":
            optim_ref.update_balance_bias(params, out["routing"], loss_cfg["bias_gamma"])
        result["steps"].append({
            "grad_norm": norm, "clip_coef": coef,
            "loads": {str(r["layer"]): r["load"].tolist() for r in out["routing"]},
            "min_topk_margin": min(r["margin"] for r in out["routing"]),
            "topk": [r["topk"].clone() for r in out["routing"]]})
    out = moe_ref.forward(params, cfg, loss_cfg, inputs, targets)
    result["losses_after_steps"] = loss_dict(out)
    result["final_margin"] = min(r["margin"] for r in out["routing"])
    result["params3"] = {n: t.detach().clone() for n, t in params.items()}
    return result


def gradients(value, params, names):
    """d value / d params[n]; exact zeros for tensors the forward did not use (idle experts)."""
    gs = torch.autograd.grad(value, [params[n] for n in names], allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(params[n])) for n, g in zip(names, gs)}


def grad_shares(params, cfg, loss_cfg, inputs, targets, names):
    """|grad of coef*term| / |grad of total| per enabled term: shows each term is visible."""
    out = moe_ref.forward(params, cfg, loss_cfg, inputs, targets)
    wrt = [params[n] for n in names]

    def norm_of(value):
        gs = torch.autograd.grad(value, wrt, retain_graph=True, allow_unused=True)
        return float(torch.sqrt(sum((g.pow(2).sum() for g in gs if g is not None),
                                    torch.zeros((), dtype=torch.float64))))
    total = norm_of(out["total"])
    shares = {"lm": norm_of(out["lm"]) / total}
    for name in loss_cfg["losses"]:
        shares[name] = norm_of(loss_cfg[moe_ref.COEF_KEY[name]] * out[name]) / total
    return shares


def bias_changes_choice(routing):
    """How many tokens' top-k sets differ from the top-k of s alone (bias exercised?)."""
    changed = 0
    for r in routing:
        plain = moe_ref.topk_lower_index_first(r["probs"].detach(), r["topk"].shape[1])
        changed += int((plain.sort(-1).values != r["topk"].sort(-1).values).any(-1).sum())
    return changed


def accept(res):
    margins = [s["min_topk_margin"] for s in res["steps"]] + [res["final_margin"]]
    return min(margins) >= MIN_MARGIN, min(margins)


def max_err(a, b):
    """Max abs difference, and the same relative to max |b| (the float64 value)."""
    a, b = a.double(), b.double()
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    scale = float(b.abs().max()) if b.numel() else 0.0
    return diff, diff / scale if scale > 0 else 0.0


def fp32_errors(ref, low):
    for r_step, l_step in zip(ref["steps"], low["steps"]):
        for a, b in zip(r_step["topk"], l_step["topk"]):
            assert torch.equal(a, b), "float32 run chose different experts: raise MIN_MARGIN"
    errs = {"logits_abs": max_err(low["logits"], ref["logits"])[0]}
    errs["losses_rel"] = max(abs(l[k] - r[k]) / max(abs(r[k]), 1e-30)
                             for r, l in zip(ref["losses_per_step"], low["losses_per_step"])
                             for k in r)
    errs["grad_rel_to_tensor_max"] = max(max_err(low["grads"][n], ref["grads"][n])[1]
                                         for n in ref["grads"])
    errs["grad_abs"] = max(max_err(low["grads"][n], ref["grads"][n])[0] for n in ref["grads"])
    errs["step3_abs"] = max(max_err(low["params3"][n], ref["params3"][n])[0]
                            for n in ref["params3"])
    return errs


def tolerances(errs):
    """Recommended fp32 tolerances: 20x what an honest float32 evaluation missed, with floors."""
    return {
        "logits_atol": max(20 * errs["logits_abs"], 1e-5),
        "losses_rtol": max(20 * errs["losses_rel"], 1e-5),
        "grad_atol": max(20 * errs["grad_abs"], 1e-6),
        "grad_rtol_of_tensor_max": max(20 * errs["grad_rel_to_tensor_max"], 1e-4),
        "step3_atol": max(20 * errs["step3_abs"], 1e-5),
        "how": "|got - want| <= atol elementwise (grads: <= grad_atol + grad_rtol_of_tensor_max "
               "* max|want| of that tensor; losses: relative). Derived as 20x the largest "
               "difference between a float32 run of this same pipeline and the float64 values, "
               "with floors; see fp32_observed.",
    }


def build(name, spec):
    cfg = moe_ref.model_config(spec["model"])
    seed = spec["seed"]
    for attempt in range(200):
        inputs, targets = make_inputs(cfg, seed)
        init = make_initial_params(spec, cfg, seed)
        ref = run_pipeline(spec, init, inputs, targets, torch.float64)
        ok, margin = accept(ref)
        if ok and (spec["loss"].get("balance") != "bias" or ref["bias_changes_choice"] > 0):
            break
        seed += 1
    else:
        raise RuntimeError(f"{name}: no seed with top-k margin >= {MIN_MARGIN}")
    low = run_pipeline(spec, init, inputs, targets, torch.float32)
    errs = fp32_errors(ref, low)

    tensors = {n: t.float().numpy() for n, t in init.items()}
    tensors["input_ids"] = inputs.numpy().astype(np.int32)
    tensors["targets"] = targets.numpy().astype(np.int32)
    tensors["expected.logits"] = ref["logits"].float().numpy()
    for layer, topk, probs in ref["routing"]:
        tensors[f"expected.topk.{layer}"] = topk.numpy().astype(np.int32)
        tensors[f"expected.probs.{layer}"] = probs.float().numpy()
    for n, g in ref["grads"].items():
        tensors["grad." + n] = g.float().numpy()
    for n, t in ref["params3"].items():
        tensors["step3." + n] = t.float().numpy()

    meta = {
        "config": {"model": moe_ref.model_config(spec["model"]),
                   "loss": moe_ref.loss_config(spec["loss"])},
        "batch": {"batch": BATCH, "seq": SEQ},
        "adamw": dict(spec["adamw"], schedule="constant", warmup_steps=0, steps=N_STEPS),
        "losses_step0": ref["losses_per_step"][0],
        "losses_per_step": ref["losses_per_step"],
        "losses_after_steps": ref["losses_after_steps"],
        "steps": [{k: v for k, v in s.items() if k != "topk"} for s in ref["steps"]],
        "grad_share_of_total": ref["grad_share"],
        "bias_changed_topk_tokens_step0": ref["bias_changes_choice"],
        "seed": seed,
        "min_topk_margin": accept(ref)[1],
        "fp32_observed": errs,
        "tolerances": tolerances(errs),
        "notes": NOTES,
    }
    return tensors, meta


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.normpath(os.path.join(here, "..", "..", "tests", "data", "fixtures"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=default_out)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one fixed reduction order
    os.makedirs(args.out, exist_ok=True)
    status = 0
    for name, spec in FIXTURES.items():
        tensors, meta = build(name, spec)
        st_path = os.path.join(args.out, name + ".safetensors")
        js_path = os.path.join(args.out, name + ".json")
        if args.check:
            status |= check_against(st_path, js_path, tensors, meta)
            continue
        safetensors_io.save(st_path, tensors)
        with open(js_path, "w") as out:
            json.dump(meta, out, indent=1)
            out.write("\n")
        print(f"{name}: {st_path} ({os.path.getsize(st_path)} bytes), seed {meta['seed']}, "
              f"losses {meta['losses_step0']}, margin {meta['min_topk_margin']:.3g}")
    return status


def same_tensor(a, b):
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind != "f" or a.size == 0:
        return np.array_equal(a, b)
    scale = float(np.abs(b).max())
    return float(np.abs(a.astype(np.float64) - b).max()) <= 1e-6 * max(scale, 1e-30)


def check_against(st_path, js_path, tensors, meta):
    """Committed fixture == freshly computed one: integer tensors exactly, float tensors to 1e-6
    of each tensor's largest value (float64 kernels on another CPU may round differently in the
    last bit, which can move a float32 value by one ulp), JSON losses to 1e-12."""
    stored, _ = safetensors_io.load(st_path)
    bad = [n for n in tensors if n not in stored or not same_tensor(stored[n], tensors[n])]
    bad += [n for n in stored if n not in tensors]
    with open(js_path) as src:
        old = json.load(src)
    fresh = json.loads(json.dumps(meta))
    for key in ("losses_step0", "losses_after_steps"):
        for k, v in fresh[key].items():
            if abs(old[key][k] - v) > 1e-12 * max(1.0, abs(v)):
                bad.append(f"{key}.{k}")
    if old["config"] != fresh["config"]:
        bad.append("config")
    print(f"{st_path}: {'OK' if not bad else 'MISMATCH ' + ', '.join(bad[:10])}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
