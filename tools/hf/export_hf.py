"""Exports a moe-spec checkpoint as a Hugging Face model directory that transformers loads with no
custom code: AutoModelForCausalLM.from_pretrained(OUT) and AutoTokenizer.from_pretrained(OUT).

Usage (in the venv of tools/setup_hf.sh):
  tools/hf/venv/bin/python tools/hf/export_hf.py CHECKPOINT OUT [--arch qwen2_moe|mixtral]
      [--max-shard-size 5GB]

CHECKPOINT is a checkpoint directory (checkpoints/step_XXXXXXXX) or a run directory (its newest
checkpoint). OUT receives config.json, generation_config.json, model.safetensors (or shards
model-0000i-of-0000n.safetensors with model.safetensors.index.json above --max-shard-size), the
tokenizer (tokenizer.json, tokenizer_config.json, special_tokens_map.json, and the sentencepiece
tokenizer.model it was converted from) and README.md, a model card.

The mapping (docs/hf.md) is exact, not approximate:
  * qwen2_moe represents every moe-spec model: norm_topk_prob as configured; dense first layers
    through mlp_only_layers and intermediate_size; zero attention biases; without shared experts a
    shared expert whose weights are zero (its output is exactly 0); DeepSeekMoE's ungated shared
    experts as one shared expert of the summed width with a zero shared_expert_gate
    (sigmoid(0) = 0.5) and its down_proj doubled: both factors are powers of two, so
    0.5 * (h @ (2 W)^T) == h @ W^T in floating point.
  * mixtral only for the models it fits exactly: norm_topk_prob, no shared experts, no dense layers.
A model neither class represents (capacity-limited routing, a non-zero aux-loss-free balancing
bias, head_dim != d_model / n_heads) is an error naming the key, exit code 2.
"""
import argparse
import json
import os
import re
import shutil
import sys
import tempfile

import numpy as np
import yaml
from safetensors.numpy import load_file, save_file

TRANSFORMERS_VERSION = "4.44.2"
# moe-spec starts every sequence with eos (</s>, id 2; documents are separated by it, SPEC §1):
# so the exported tokenizer's bos is </s> too, prepended when add_special_tokens=True (the
# transformers default, and what lm-evaluation-harness uses for contexts), so that transformers
# sees what moeeval scores. sentencepiece's <s> (id 1) is never used.
TOKENIZER_SPECIALS = {"unk_token": "<unk>", "bos_token": "</s>", "eos_token": "</s>"}


class UsageError(Exception):
    """Bad input: reported on stderr with exit code 2."""


def find_checkpoint(path):
    """A checkpoint directory, or the newest checkpoints/step_* of a run directory."""
    if not os.path.isdir(path):
        raise UsageError(f"{path}: no such directory")
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return path
    ckdir = os.path.join(path, "checkpoints")
    steps = sorted(d for d in os.listdir(ckdir) if d.startswith("step_")) if os.path.isdir(ckdir) else []
    if not steps:
        raise UsageError(f"{path}: neither a checkpoint (no model.safetensors) nor a run directory "
                         "(no checkpoints/step_*)")
    return os.path.join(ckdir, steps[-1])


def load_checkpoint(ckpt):
    for name in ("config.yaml", "model.safetensors", "tokenizer.model"):
        if not os.path.exists(os.path.join(ckpt, name)):
            raise UsageError(f"{ckpt}: missing {name}")
    with open(os.path.join(ckpt, "config.yaml")) as f:
        config = yaml.safe_load(f)
    tensors = load_file(os.path.join(ckpt, "model.safetensors"))
    state = {}
    state_path = os.path.join(ckpt, "trainer_state.json")
    if os.path.exists(state_path):
        with open(state_path) as f:
            state = json.load(f)
    return config, tensors, state


def head_dim(m):
    return m["head_dim"] if m["head_dim"] > 0 else m["d_model"] // m["n_heads"]


def check_representable(m, tensors, arch):
    """Raises UsageError for a model the target class cannot represent exactly."""
    if float(m["capacity_factor"]) != 0:
        raise UsageError(f"model.capacity_factor = {m['capacity_factor']}: capacity-limited routing "
                         "drops tokens, which neither qwen2_moe nor mixtral does (export needs a "
                         "dropless model, capacity_factor: 0)")
    if head_dim(m) * m["n_heads"] != m["d_model"]:
        raise UsageError(f"model.head_dim = {m['head_dim']}: transformers {TRANSFORMERS_VERSION}'s "
                         f"{arch} fixes head_dim = d_model / n_heads = {m['d_model'] // m['n_heads']}")
    for name, t in tensors.items():
        if name.endswith("e_score_correction_bias") and np.any(t != 0):
            raise UsageError(f"{name}: a non-zero aux-loss-free balancing bias changes the top-k "
                             f"choice, which {arch} cannot express")
    if arch == "mixtral":
        why = []
        if not m["norm_topk_prob"]:
            why.append("model.norm_topk_prob is false (mixtral always normalises the top-k gates)")
        if m["n_shared_experts"] > 0:
            why.append(f"model.n_shared_experts = {m['n_shared_experts']} (mixtral has no shared "
                       "experts)")
        if m["dense_layers"] > 0:
            why.append(f"model.dense_layers = {m['dense_layers']} (mixtral has no dense layers)")
        if why:
            raise UsageError("mixtral cannot represent this model exactly: " + "; ".join(why) +
                             ". Export it with --arch qwen2_moe, which represents every variant")


def common_config(m, loss, vocab):
    return {
        "vocab_size": vocab, "hidden_size": m["d_model"], "num_hidden_layers": m["n_layers"],
        "num_attention_heads": m["n_heads"], "num_key_value_heads": m["n_kv_heads"],
        "hidden_act": "silu", "max_position_embeddings": m["max_seq_len"],
        "initializer_range": float(m["init_std"]), "rms_norm_eps": float(m["norm_eps"]), "use_cache": True,
        "tie_word_embeddings": bool(m["tie_embeddings"]), "rope_theta": float(m["rope_theta"]),
        "attention_dropout": 0.0, "num_experts_per_tok": m["top_k"],
        "output_router_logits": False, "router_aux_loss_coef": float(loss.get("lb_coef", 0.0)),
        "bos_token_id": 2, "eos_token_id": 2, "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
    }


def qwen2_moe(m, loss, tensors, vocab):
    """config.json and the tensors of Qwen2MoeForCausalLM."""
    d, n_layers, f = m["d_model"], m["n_layers"], m["expert_ffn_dim"]
    S = m["n_shared_experts"]
    fs = m["shared_expert_ffn_dim"] if m["shared_expert_ffn_dim"] > 0 else f
    shared_width = S * fs if S > 0 else f
    cfg = {"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe"}
    cfg.update(common_config(m, loss, vocab))
    cfg.update({
        "intermediate_size": m["ffn_dim"], "moe_intermediate_size": f,
        "shared_expert_intermediate_size": shared_width, "num_experts": m["n_experts"],
        "decoder_sparse_step": 1, "norm_topk_prob": bool(m["norm_topk_prob"]),
        "mlp_only_layers": list(range(m["dense_layers"])), "use_sliding_window": False,
        "sliding_window": None, "max_window_layers": n_layers,
    })
    out = {}
    for name, t in tensors.items():
        if name.endswith("e_score_correction_bias"):
            continue  # all zero (checked): the plain softmax top-k
        g = re.match(r"model\.layers\.(\d+)\.mlp\.shared_experts\.(\w+)\.weight$", name)
        if g:
            w = t * np.float32(2.0) if g.group(2) == "down_proj" else t
            out[f"model.layers.{g.group(1)}.mlp.shared_expert.{g.group(2)}.weight"] = w
            continue
        out[name] = t
    hd = head_dim(m)
    for i in range(n_layers):
        p = f"model.layers.{i}."
        out[p + "self_attn.q_proj.bias"] = np.zeros(m["n_heads"] * hd, np.float32)
        out[p + "self_attn.k_proj.bias"] = np.zeros(m["n_kv_heads"] * hd, np.float32)
        out[p + "self_attn.v_proj.bias"] = np.zeros(m["n_kv_heads"] * hd, np.float32)
        if i < m["dense_layers"]:
            continue
        out[p + "mlp.shared_expert_gate.weight"] = np.zeros((1, d), np.float32)
        if S == 0:  # a shared expert that contributes exactly 0
            for proj, shape in (("gate_proj", (f, d)), ("up_proj", (f, d)), ("down_proj", (d, f))):
                out[p + f"mlp.shared_expert.{proj}.weight"] = np.zeros(shape, np.float32)
    return cfg, out


def mixtral(m, loss, tensors, vocab):
    cfg = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral"}
    cfg.update(common_config(m, loss, vocab))
    cfg.update({"intermediate_size": m["expert_ffn_dim"], "num_local_experts": m["n_experts"],
                "sliding_window": None, "router_jitter_noise": 0.0})
    rename = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}
    out = {}
    for name, t in tensors.items():
        if name.endswith("e_score_correction_bias"):
            continue
        g = re.match(r"(model\.layers\.\d+\.)mlp\.experts\.(\d+)\.(\w+)\.weight$", name)
        if g:
            out[f"{g.group(1)}block_sparse_moe.experts.{g.group(2)}.{rename[g.group(3)]}.weight"] = t
            continue
        g = re.match(r"(model\.layers\.\d+\.)mlp\.gate\.weight$", name)
        if g:
            out[f"{g.group(1)}block_sparse_moe.gate.weight"] = t
            continue
        out[name] = t
    return cfg, out


def parse_size(text):
    g = re.fullmatch(r"(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?", text.strip())
    if not g:
        raise UsageError(f"--max-shard-size {text!r}: expected a number with an optional unit "
                         "(B, KB, MB, GB, KiB, MiB, GiB)")
    units = {None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20,
             "GiB": 2**30}
    return int(g.group(1)) * units[g.group(2)]


def write_weights(out_dir, tensors, max_shard_bytes):
    """model.safetensors, or shards in name order with model.safetensors.index.json (as
    transformers' save_pretrained writes them) when the total exceeds max_shard_bytes."""
    names = sorted(tensors)
    total = sum(tensors[n].nbytes for n in names)
    meta = {"format": "pt"}
    if total <= max_shard_bytes:
        save_file({n: np.ascontiguousarray(tensors[n]) for n in names},
                  os.path.join(out_dir, "model.safetensors"), metadata=meta)
        return ["model.safetensors"]
    shards, cur, size = [], [], 0
    for n in names:
        if cur and size + tensors[n].nbytes > max_shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append(n)
        size += tensors[n].nbytes
    shards.append(cur)
    weight_map, files = {}, []
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: np.ascontiguousarray(tensors[n]) for n in shard},
                  os.path.join(out_dir, fname), metadata=meta)
        weight_map.update({n: fname for n in shard})
        files.append(fname)
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return files


def build_tokenizer(sp_model_path, max_len):
    """A tokenizers BPE with the sentencepiece model's vocabulary and its merges ordered by piece
    score (sentencepiece BPE applies the best-scoring merge first), byte fallback, and
    sentencepiece's whitespace marker (as transformers' own SpmConverter builds it). moe-spec's sentencepiece settings (lib/data/tokenizer.h) are
    identity normalisation, no dummy prefix, split digits, byte fallback: so no normaliser beyond
    ' ' -> U+2581 and no prefix. With add_special_tokens=False the ids are Tokenizer::encode's;
    with add_special_tokens=True (the default) </s> comes first, as in every sequence moe-spec
    trains on or scores."""
    from sentencepiece import SentencePieceProcessor
    from tokenizers import Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import generate_merges
    from transformers.convert_slow_tokenizer import import_protobuf

    pb2 = import_protobuf()
    proto = pb2.ModelProto()
    with open(sp_model_path, "rb") as f:
        proto.ParseFromString(f.read())
    t, n = proto.trainer_spec, proto.normalizer_spec
    problems = []
    if t.model_type != pb2.TrainerSpec.BPE:
        problems.append("model_type is not bpe")
    if not t.byte_fallback:
        problems.append("byte_fallback is off")
    if n.add_dummy_prefix:
        problems.append("add_dummy_prefix is on")
    if n.remove_extra_whitespaces:
        problems.append("remove_extra_whitespaces is on")
    if n.name != "identity" or len(n.precompiled_charsmap) > 0:
        problems.append(f"normalization is {n.name!r}, not identity")
    if t.treat_whitespace_as_suffix:
        problems.append("treat_whitespace_as_suffix is on")
    if (t.unk_id, t.bos_id, t.eos_id) != (0, 1, 2):
        problems.append(f"unk/bos/eos ids are {t.unk_id}/{t.bos_id}/{t.eos_id}, not 0/1/2")
    if problems:
        raise UsageError(f"{sp_model_path}: not a moe-spec tokenizer ({'; '.join(problems)}); the "
                         "export reproduces moe-spec's sentencepiece settings only")
    sp = SentencePieceProcessor(model_file=sp_model_path)
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in range(sp.get_piece_size())
              if sp.is_control(i) is False and sp.is_unknown(i) is False and sp.is_byte(i) is False}
    merges = generate_merges(vocab, scores)
    tok = Tokenizer(BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.post_processor = processors.TemplateProcessing(
        single="</s> $A", pair="</s> $A $B", special_tokens=[("</s>", 2)])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    # split_special_tokens: text such as wikitext's literal "<unk>" is encoded as characters, as
    # sentencepiece encodes it, never as the special token.
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_len,
                                   clean_up_tokenization_spaces=False, split_special_tokens=True,
                                   **TOKENIZER_SPECIALS)
    return fast


def model_card(config, state, arch, ckpt):
    m, loss, data = config["model"], config.get("loss", {}), config.get("data", {})
    losses = loss.get("losses", [])
    coefs = ", ".join(f"{name} {loss.get(name + '_coef')}" for name in losses)
    train = data.get("train", [])
    lines = [
        "---", "library_name: transformers", "tags: [moe, moe-spec]", "---", "",
        f"# moe-spec {m['arch']} MoE ({arch})", "",
        "Exported from a moe-spec checkpoint by tools/hf/export_hf.py. It loads with "
        "`AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`, no custom code.",
        "",
        f"- architecture: {m['arch']}, {m['n_layers']} layers, d_model {m['d_model']}, "
        f"{m['n_heads']} heads ({m['n_kv_heads']} key/value), {m['n_experts']} routed experts "
        f"(top-{m['top_k']}, width {m['expert_ffn_dim']}), {m['n_shared_experts']} shared experts, "
        f"{m['dense_layers']} dense first layers, norm_topk_prob {m['norm_topk_prob']}",
        f"- losses: {', '.join(losses) or 'none'} (coefficients: {coefs or '-'}); balancing "
        f"{loss.get('balance', 'aux')}. sp and cp are the intra-layer specialization and "
        "cross-layer coupling losses of arXiv 2602.14159, lb the load-balancing loss, z the router "
        "z-loss.",
        f"- training data: {', '.join(str(x) for x in train) or 'not recorded'}",
        f"- steps: {state.get('step', 'not recorded')}, seed {config.get('train', {}).get('seed')}",
        f"- source checkpoint: {os.path.basename(os.path.normpath(ckpt))}",
        "", "moe-spec starts every sequence with `</s>` (id 2), its document separator: the "
        "tokenizer's bos is `</s>` and `add_special_tokens=True` (the default) prepends it. The "
        "sentencepiece model it was converted from is `tokenizer.model`.", "",
    ]
    return "\n".join(lines)


def export(ckpt_arg, out, arch, max_shard_bytes):
    ckpt = find_checkpoint(ckpt_arg)
    config, tensors, state = load_checkpoint(ckpt)
    m = config["model"]
    vocab = tensors["model.embed_tokens.weight"].shape[0]
    check_representable(m, tensors, arch)
    tok = build_tokenizer(os.path.join(ckpt, "tokenizer.model"), m["max_seq_len"])
    if len(tok) != vocab:
        raise UsageError(f"{ckpt}: tokenizer has {len(tok)} pieces, embeddings {vocab} rows")
    cfg, out_tensors = (qwen2_moe if arch == "qwen2_moe" else mixtral)(
        m, config.get("loss", {}), tensors, vocab)
    parent = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        with open(os.path.join(tmp, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": 2, "eos_token_id": 2,
                       "transformers_version": TRANSFORMERS_VERSION}, f, indent=2)
        write_weights(tmp, out_tensors, max_shard_bytes)
        tok.save_pretrained(tmp)
        shutil.copyfile(os.path.join(ckpt, "tokenizer.model"), os.path.join(tmp, "tokenizer.model"))
        with open(os.path.join(tmp, "README.md"), "w") as f:
            f.write(model_card(config, state, arch, ckpt))
        if os.path.exists(out):
            if not os.path.isdir(out) or os.listdir(out):
                raise UsageError(f"{out}: exists and is not an empty directory")
            os.rmdir(out)
        os.rename(tmp, out)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
    return ckpt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--arch", choices=["qwen2_moe", "mixtral"], default="qwen2_moe")
    ap.add_argument("--max-shard-size", default="5GB")
    args = ap.parse_args(argv)
    try:
        ckpt = export(args.checkpoint, args.out, args.arch, parse_size(args.max_shard_size))
    except UsageError as e:
        print(f"export_hf: error: {e}", file=sys.stderr)
        return 2
    print(f"export_hf: {ckpt} -> {args.out} ({args.arch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
