"""Export -> transformers -> the same logits (within 1e-4, f32) and the same top-k experts as the
C++ model, for tiny trained vanilla (with a dense first layer), DeepSeekMoE (shared experts) and a
Mixtral-shaped model, as qwen2_moe and, where exact, mixtral; a sharded export loads the same; the
tokenizer and the model card load; a model mixtral cannot represent is a clear error (exit 2)."""
import json
import os
import subprocess
import sys

import numpy as np

import hf_common as hc

env = hc.Env(sys.argv, "export")
export_py = os.path.join(env.src, "tools", "hf", "export_hf.py")


def export(ckpt, out, *extra):
    return subprocess.run([sys.executable, export_py, ckpt, out, *extra], capture_output=True,
                          text=True)


def ids_from_text(tok):
    with open(os.path.join(hc.FORTUNES, "wisdom"), encoding="utf-8") as f:
        text = f.read()[:4000]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    rows = [[2] + ids[:31], [2] + ids[31:62]]  # moe-spec starts a sequence with eos (id 2)
    return np.array(rows, dtype=np.int64)


from transformers import AutoTokenizer  # noqa: E402

results = {}
cache = env.path("cache")
for name in ("vanilla", "deepseek", "mixtral_fit"):
    ckpt = hc.train_tiny(env, name, cache=cache)
    archs = ["qwen2_moe", "mixtral"] if name == "mixtral_fit" else ["qwen2_moe"]
    for arch in archs:
        out = env.path("hf", f"{name}-{arch}")
        r = export(ckpt, out, "--arch", arch)
        assert r.returncode == 0, r.stderr
        for f in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                  "tokenizer_config.json", "special_tokens_map.json", "README.md"):
            assert os.path.exists(os.path.join(out, f)), f"{out}: no {f}"
        tok = AutoTokenizer.from_pretrained(out)
        ids = ids_from_text(tok)
        ours, our_topk = hc.moe_logits(env, ckpt, ids)
        theirs, their_topk, model = hc.hf_logits(out, ids)
        assert type(model).__name__ == {"qwen2_moe": "Qwen2MoeForCausalLM",
                                        "mixtral": "MixtralForCausalLM"}[arch]
        results[f"{name}/{arch}"] = hc.compare(f"{name} as {arch}", ours, theirs, our_topk,
                                               their_topk)
        with open(os.path.join(out, "README.md")) as f:
            card = f.read()
        assert "lb, z, sp, cp" in card and "fortunes/computers" in card, card

# Sharded: 3 shards or more under a 100 kB limit, with an index, and the same logits.
ckpt = os.path.join(env.path("runs", "deepseek", "checkpoints"),
                    sorted(os.listdir(env.path("runs", "deepseek", "checkpoints")))[-1])
out = env.path("hf", "deepseek-sharded")
r = export(ckpt, out, "--max-shard-size", "100KB")
assert r.returncode == 0, r.stderr
with open(os.path.join(out, "model.safetensors.index.json")) as f:
    index = json.load(f)
shards = sorted(set(index["weight_map"].values()))
assert len(shards) >= 3 and not os.path.exists(os.path.join(out, "model.safetensors")), shards
tok = AutoTokenizer.from_pretrained(out)
ids = ids_from_text(tok)
ours, our_topk = hc.moe_logits(env, ckpt, ids)
theirs, their_topk, _ = hc.hf_logits(out, ids)
results["deepseek/sharded"] = hc.compare(f"deepseek sharded ({len(shards)} files)", ours, theirs,
                                         our_topk, their_topk)

# Bad input: mixtral cannot represent the vanilla model (un-normalised gates, a dense layer) nor
# DeepSeekMoE (shared experts); a missing directory; an existing non-empty output.
for name, needle in (("vanilla", "norm_topk_prob"), ("deepseek", "n_shared_experts")):
    ck = env.path("runs", name)
    r = export(ck, env.path("hf", f"{name}-bad"), "--arch", "mixtral")
    assert r.returncode == 2 and needle in r.stderr, (r.returncode, r.stderr)
    assert not os.path.exists(env.path("hf", f"{name}-bad"))
    print(f"mixtral export of {name}: exit 2: {r.stderr.strip()}")
r = export(env.path("nope"), env.path("hf", "x"))
assert r.returncode == 2 and "no such directory" in r.stderr, r.stderr
r = export(ckpt, env.path("hf", "deepseek-sharded"))
assert r.returncode == 2 and "not an empty directory" in r.stderr, r.stderr

print("max differences:", json.dumps(results))
env.done()
