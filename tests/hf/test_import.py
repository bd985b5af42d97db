"""moetrain --init-from HF_DIR:
  * tiny random Mixtral and Qwen2-MoE models that transformers creates here (no hub), one with a
    shared expert (zero gate) and dense first layers: the imported moe-spec checkpoint gives the
    same logits (1e-4) and top-k experts in the C++ model as in transformers;
  * our own exports (vanilla, DeepSeekMoE): import -> export gives byte-identical tensors;
  * continued training works with lb,sp,cp and loss falls from the imported start;
  * bad input exits 2 with a message naming the problem: an unsupported class, MLA, a non-zero
    shared-expert gate, attention biases, sliding windows, a missing file, a config that
    disagrees with the tensors."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch
from safetensors.numpy import load_file

import hf_common as hc

env = hc.Env(sys.argv, "import")
export_py = os.path.join(env.src, "tools", "hf", "export_hf.py")
cache = env.path("cache")
results = {}


def base_config(name, steps, extra_model=None):
    """A run config for moetrain that trains on fortunes with the cache of the test."""
    cfg = {
        "model": {"max_seq_len": 32, **(extra_model or {})},
        "loss": {"losses": ["lb", "sp", "cp"]},
        "data": {"train": [f"{hc.FORTUNES}/{f}" for f in ("computers", "people", "science")],
                 "valid": [f"{hc.FORTUNES}/wisdom"], "cache_dir": cache},
        "train": {"threads": 1, "batch_size": 4, "seq_len": 32, "max_steps": steps,
                  "lr": 1e-2, "warmup_steps": 1},
        "run": {"out_dir": env.path("runs", name), "log_every": 1, "eval_every": 100,
                "eval_batches": 2, "save_every": steps, "keep_last": 1},
    }
    path = env.path(f"{name}.yaml")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def init_from(name, hf_dir, steps=1, tokenizer=None, expect=0):
    cmd = [env.moetrain, "--config", base_config(name, steps), "--init-from", hf_dir]
    if tokenizer:
        cmd += ["--set", f"data.tokenizer={tokenizer}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if expect:
        assert r.returncode == expect, (r.returncode, r.stderr[-2000:])
        return r.stderr
    assert r.returncode == 0, r.stderr[-3000:]
    ck = env.path("runs", name, "checkpoints")
    return os.path.join(ck, sorted(os.listdir(ck))[-1]), r.stderr


def losses_of(run):
    with open(env.path("runs", run, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r["loss"] for r in rows if "loss" in r and "step" in r and "lr" in r]


# A moe-spec tokenizer (vocabulary 512) that the random models share: trained by a 1-step run.
tok_ckpt = hc.train_tiny(env, "vanilla", steps=1, cache=cache)
sp_model = os.path.join(tok_ckpt, "tokenizer.model")
V = 512


def random_ids():
    g = np.random.default_rng(7)
    return np.concatenate([np.full((2, 1), 2), g.integers(3, V, size=(2, 23))], axis=1)


# ---- random transformers models: import, then the same logits in moe-spec ---------------------
from transformers import MixtralConfig, MixtralForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM  # noqa: E402

torch.manual_seed(0)
models = {
    "mixtral": MixtralForCausalLM(MixtralConfig(
        vocab_size=V, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
        max_position_embeddings=64, sliding_window=None, rope_theta=1e6, rms_norm_eps=1e-5,
        tie_word_embeddings=False)),
    "qwen2_moe": Qwen2MoeForCausalLM(Qwen2MoeConfig(
        vocab_size=V, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
        shared_expert_intermediate_size=40, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, num_experts=6, num_experts_per_tok=2, norm_topk_prob=False,
        mlp_only_layers=[0], max_position_embeddings=64, tie_word_embeddings=True,
        rms_norm_eps=1e-6)),
}
# Qwen2-MoE as moe-spec can hold it: zero attention biases and shared-expert gates; non-trivial
# norm gains everywhere so that a swapped norm would show.
with torch.no_grad():
    for name, p in models["qwen2_moe"].named_parameters():
        if name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias", "shared_expert_gate.weight")):
            p.zero_()
    for m in models.values():
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
for name, m in models.items():
    d = env.path("hf", f"random-{name}")
    m.save_pretrained(d, safe_serialization=True)
    # the weights moetrain --init-from starts from, untrained (moe_hf_dump import calls the same
    # read_hf_checkpoint / apply_hf_config / load_hf_weights), evaluated by the C++ model
    ckpt = env.path("imported", name)
    hc.run([env.dump, "import", d, sp_model, ckpt])
    ids = random_ids()
    ours, our_topk = hc.moe_logits(env, ckpt, ids)
    theirs, their_topk, _ = hc.hf_logits(d, ids)
    results[f"random {name}"] = hc.compare(f"random {name} imported", ours, theirs, our_topk,
                                           their_topk)
    # and moetrain starts a run from it
    init_from(f"train-{name}", d, steps=3, tokenizer=sp_model)
    assert len(losses_of(f"train-{name}")) == 3

# ---- our exports: import -> export is byte-identical; continued training -----------------------
for name in ("vanilla", "deepseek"):
    ckpt = tok_ckpt if name == "vanilla" else hc.train_tiny(env, name, steps=2, cache=cache)
    exp1 = env.path("hf", f"{name}-1")
    hc.run([sys.executable, export_py, ckpt, exp1])
    run = f"continue-{name}"
    ck2, log = init_from(run, exp1, steps=12)
    exp2 = env.path("hf", f"{name}-2")
    # round trip of the import itself (the continued run's checkpoint is after training)
    imported = env.path("imported", name)
    hc.run([env.dump, "import", exp1, os.path.join(exp1, "tokenizer.model"), imported])
    hc.run([sys.executable, export_py, imported, exp2])
    a, b = load_file(os.path.join(exp1, "model.safetensors")), load_file(
        os.path.join(exp2, "model.safetensors"))
    assert sorted(a) == sorted(b), set(a) ^ set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), f"{name}: {k} differs"
    with open(os.path.join(exp1, "config.json")) as f1, open(os.path.join(exp2, "config.json")) as f2:
        c1, c2 = json.load(f1), json.load(f2)
    for key in ("max_position_embeddings", "initializer_range", "router_aux_loss_coef"):
        c1.pop(key), c2.pop(key)  # run settings, not architecture: the importing run's own
    assert c1 == c2, (c1, c2)
    print(f"{name}: import -> export: {len(a)} tensors byte-identical, config.json the same "
          "architecture")
    losses = losses_of(run)
    assert len(losses) == 12 and all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < losses[0], losses
    print(f"{name}: continued training with lb,sp,cp from the import: loss {losses[0]:.3f} -> "
          f"{losses[-1]:.3f}")
    cont = env.path("hf", f"{name}-continued")
    hc.run([sys.executable, export_py, ck2, cont])
    ids = random_ids()
    ours, our_topk = hc.moe_logits(env, ck2, ids)
    theirs, their_topk, _ = hc.hf_logits(cont, ids)
    results[f"continued {name}"] = hc.compare(f"{name} continued and exported again", ours, theirs,
                                              our_topk, their_topk)

# ---- bad input: exit 2, naming the problem -------------------------------------------------------
good = env.path("hf", "random-qwen2_moe")


def variant(tag, edit_config=None, edit_tensors=None, drop=None):
    d = env.path("bad", tag)
    shutil.copytree(good, d)
    if edit_config:
        with open(os.path.join(d, "config.json")) as f:
            c = json.load(f)
        edit_config(c)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(c, f)
    if edit_tensors:
        from safetensors.numpy import save_file
        t = load_file(os.path.join(d, "model.safetensors"))
        edit_tensors(t)
        save_file(t, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    if drop:
        os.remove(os.path.join(d, drop))
    return d


def set_(t, name, value):
    t[name] = np.full_like(t[name], value)


cases = [
    ("class", variant("class", lambda c: c.update(model_type="llama")), "not supported"),
    ("mla", variant("mla", lambda c: c.update(model_type="deepseek_v2")), "MLA"),
    ("qk-norm", variant("qknorm", lambda c: c.update(model_type="qwen3_moe")), "QK-norm"),
    ("sliding", variant("sliding", lambda c: c.update(use_sliding_window=True)), "sliding window"),
    ("gate", variant("gate", edit_tensors=lambda t: set_(
        t, "model.layers.1.mlp.shared_expert_gate.weight", 0.1)), "shared_expert_gate"),
    ("bias", variant("bias", edit_tensors=lambda t: set_(
        t, "model.layers.0.self_attn.k_proj.bias", 0.1)), "attention bias"),
    ("no-config", variant("noconfig", drop="config.json"), "missing config.json"),
    ("no-weights", variant("noweights", drop="model.safetensors"), "no model.safetensors"),
    ("disagree", variant("disagree", lambda c: c.update(num_experts=8)), "config.json implies"),
    ("layers", variant("layers", lambda c: c.update(num_hidden_layers=2)), "num_hidden_layers"),
    ("no-dir", env.path("bad", "nothing"), "no such directory"),
    ("json-type", variant("jsontype", lambda c: c.update(hidden_act=3)), "unexpected value"),
    ("rope-scaling", variant("ropescaling", lambda c: c.update(
        rope_scaling={"type": "linear", "factor": 2.0})), "rope_scaling"),
    ("dense-order", variant("denseorder", lambda c: c.update(mlp_only_layers=[1])),
     "mlp_only_layers"),
]
for tag, d, needle in cases:
    err = init_from(f"bad-{tag}", d, tokenizer=sp_model, expect=2)
    assert needle in err, (tag, err[-1500:])
    line = [x for x in err.splitlines() if "error" in x][-1]
    print(f"bad input {tag}: exit 2: {line.split('error: ', 1)[-1][:160]}")
err = init_from("bad-tok", good, expect=2)
assert "tokenizer.model" in err, err[-1500:]

print("max differences:", json.dumps(results))
env.done()
