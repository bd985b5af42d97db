"""Shared helpers of the Hugging Face interop tests (run by run_py_test.sh in tools/hf/venv)."""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from safetensors.numpy import load_file, save_file

FORTUNES = "/usr/share/games/fortunes"


class Env:
    def __init__(self, argv, tag):
        self.build, self.src = os.path.abspath(argv[1]), os.path.abspath(argv[2])
        self.moetrain = os.path.join(self.build, "apps", "moetrain")
        self.dump = os.path.join(self.build, "tests", "moe_hf_dump")
        self.work = os.path.join(self.build, "tmp", f"hf-{tag}-{os.getpid()}")
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        self.t0 = time.time()

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    def done(self):
        print(f"PASS ({time.time() - self.t0:.1f} s)")
        if not os.environ.get("KEEP_WORK"):
            shutil.rmtree(self.work, ignore_errors=True)


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"FAIL: {' '.join(cmd)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


TINY_MODELS = {
    # vanilla top-2 of 4 experts, one dense first layer, un-normalised gates
    "vanilla": {"arch": "vanilla", "dense_layers": 1, "n_layers": 3, "norm_topk_prob": False},
    # DeepSeekMoE: 2 shared experts of width 16, fine-grained routed experts, normalised gates
    "deepseek": {"arch": "deepseek", "n_experts": 8, "top_k": 3, "expert_ffn_dim": 16,
                 "n_shared_experts": 2, "shared_expert_ffn_dim": 16, "norm_topk_prob": True},
    # fits Mixtral exactly: normalised top-k, no shared experts, no dense layers, untied head
    "mixtral_fit": {"arch": "vanilla", "norm_topk_prob": True, "tie_embeddings": False},
}


def train_tiny(env, name, steps=6, cache=None, losses="lb,z,sp,cp", model_extra=None):
    """Trains a tiny model on three fortunes files; returns its newest checkpoint directory."""
    model = {"d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "n_experts": 4,
             "top_k": 2, "expert_ffn_dim": 32, "ffn_dim": 64, "max_seq_len": 32}
    model.update(TINY_MODELS[name])
    model.update(model_extra or {})
    out = env.path("runs", name)
    cfg = {
        "model": model,
        "loss": {"losses": losses.split(",")},
        "data": {"train": [f"{FORTUNES}/{f}" for f in ("computers", "people", "science")],
                 "valid": [f"{FORTUNES}/wisdom"], "tokenizer_vocab_size": 512,
                 "tokenizer_train_bytes": 300000, "cache_dir": cache or env.path("cache")},
        "train": {"device": "cpu", "threads": 1, "batch_size": 4, "seq_len": 32,
                  "max_steps": steps, "lr": 1e-2, "warmup_steps": 2},
        "run": {"out_dir": out, "log_every": 1, "eval_every": 100, "eval_batches": 2,
                "save_every": steps, "keep_last": 1},
    }
    path = env.path(f"{name}.yaml")
    with open(path, "w") as f:
        json.dump(cfg, f)  # JSON is YAML
    run([env.moetrain, "--config", path])
    ck = os.path.join(out, "checkpoints")
    return os.path.join(ck, sorted(os.listdir(ck))[-1])


def moe_logits(env, ckpt, ids):
    """The C++ model's logits [B, T, V] and {layer: top-k [B*T, k]} for input ids [B, T]."""
    inp, outp = env.path("ids.safetensors"), env.path("logits.safetensors")
    save_file({"input_ids": np.ascontiguousarray(ids, dtype=np.int32)}, inp)
    run([env.dump, "logits", ckpt, inp, outp])
    t = load_file(outp)
    topk = {int(k.split(".")[1]): v for k, v in t.items() if k.startswith("topk.")}
    return t["logits"], topk


def hf_logits(model_dir, ids):
    """transformers' logits and {layer: top-k} (from output_router_logits) for input ids."""
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor(ids, dtype=torch.long), output_router_logits=True)
    k = model.config.num_experts_per_tok
    topk = []
    for logits in out.router_logits:
        probs = torch.softmax(logits.float(), dim=-1)
        topk.append(torch.topk(probs, k, dim=-1).indices.numpy())
    return out.logits.numpy(), topk, model


def compare(name, ours, theirs, our_topk, their_topk, tol=1e-4):
    """Asserts max |logit difference| <= tol and identical top-k expert sets per MoE layer."""
    diff = float(np.max(np.abs(ours.astype(np.float64) - theirs.astype(np.float64))))
    print(f"{name}: max |logits(moe-spec) - logits(transformers)| = {diff:.3g} "
          f"(tolerance {tol:g}, logits span {float(ours.min()):.2f}..{float(ours.max()):.2f})")
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    assert diff <= tol, f"{name}: logits differ by {diff} > {tol}"
    layers = sorted(our_topk)
    assert len(layers) == len(their_topk), (layers, len(their_topk))
    for layer, theirs_k in zip(layers, their_topk):
        a = np.sort(our_topk[layer], axis=1)
        b = np.sort(theirs_k, axis=1)
        assert np.array_equal(a, b), f"{name}: layer {layer} top-k experts differ"
    print(f"{name}: top-k experts agree on {len(layers)} MoE layers x {ours.shape[0] * ours.shape[1]}"
          " tokens")
    return diff
