"""The exported tokenizer (AutoTokenizer, no custom code) gives exactly the ids of moe-spec's
Tokenizer::encode (the C++ sentencepiece tokenizer, through moe_hf_dump) on every text of every
shipped zero-shot file (each JSON string value, CSV cell or line) and on every corpus under
data/corpora (in paragraphs), and decodes them back to the same text. The tokenizer is a real
one: moetrain trains it (vocabulary 2048) on the repository's corpora."""
import bz2
import csv
import io
import json
import os
import sys
import time

import hf_common as hc

env = hc.Env(sys.argv, "tokenizer")
data = os.path.join(env.src, "data")


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def texts_of(path):
    """Every text a zero-shot reader can take from the file."""
    opener = bz2.open if path.endswith(".bz2") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        raw = f.read()
    name = path[:-4] if path.endswith(".bz2") else path
    if name.endswith(".jsonl"):
        for line in raw.splitlines():
            if line.strip():
                yield from strings(json.loads(line))
    elif name.endswith(".json"):
        yield from strings(json.loads(raw))
    elif name.endswith(".csv"):
        for row in csv.reader(io.StringIO(raw)):
            yield from row
    else:
        # hellaswag's .txt.bz2 is JSON lines too
        for line in raw.splitlines():
            try:
                yield from strings(json.loads(line))
            except ValueError:
                yield line


# A tokenizer trained by moetrain on the repository's corpora (the run itself is one step).
corpora = os.path.join(data, "corpora")
cfg = {
    "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "n_experts": 4,
              "top_k": 2, "expert_ffn_dim": 16, "max_seq_len": 32},
    "data": {"train": [os.path.join(corpora, "wikitext-2", "valid.txt"),
                       os.path.join(corpora, "tinyshakespeare", "input.txt"),
                       os.path.join(corpora, "state_union")],
             "tokenizer_vocab_size": 2048, "tokenizer_train_bytes": 1500000,
             "cache_dir": env.path("cache")},
    "train": {"threads": 1, "batch_size": 2, "seq_len": 32, "max_steps": 1, "warmup_steps": 0},
    "run": {"out_dir": env.path("run"), "eval_every": 100, "eval_batches": 1, "save_every": 1},
}
with open(env.path("tok.yaml"), "w") as f:
    json.dump(cfg, f)
t0 = time.time()
hc.run([env.moetrain, "--config", env.path("tok.yaml")])
ck = env.path("run", "checkpoints")
ckpt = os.path.join(ck, sorted(os.listdir(ck))[-1])
print(f"tokenizer trained by moetrain in {time.time() - t0:.1f} s")
hc.run([sys.executable, os.path.join(env.src, "tools", "hf", "export_hf.py"), ckpt, env.path("hf")])

from transformers import AutoTokenizer  # noqa: E402

tok = AutoTokenizer.from_pretrained(env.path("hf"))
assert type(tok).__name__ == "PreTrainedTokenizerFast", type(tok)
assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 2, 2)
# the default (add_special_tokens=True) starts with </s>, as moe-spec's sequences do
assert tok("Hello")["input_ids"] == [2] + tok("Hello", add_special_tokens=False)["input_ids"]

groups = {}
for root, _, files in sorted(os.walk(os.path.join(data, "zeroshot"))):
    for name in sorted(files):
        path = os.path.join(root, name)
        groups[os.path.relpath(path, data)] = [t for t in texts_of(path) if t]
for root, _, files in sorted(os.walk(corpora)):
    for name in sorted(files):
        path = os.path.join(root, name)
        if name.endswith((".tsv", "README")):
            continue
        with open(path, "rb") as f:
            raw = f.read().decode("utf-8", errors="surrogateescape")
        # bytes that are not UTF-8 are read as Latin-1 characters, as moe-spec's corpus reader
        # does (lib/data/corpus.cpp)
        raw = "".join(chr(ord(c) - 0xDC00) if 0xDC80 <= ord(c) <= 0xDCFF else c for c in raw)
        # paragraphs, each with its blank-line separator (newlines are tokens too)
        paras = [p + "\n\n" for p in raw.split("\n\n")]
        groups[os.path.relpath(path, data)] = [p for p in paras if p.strip()]

all_texts = [t for ts in groups.values() for t in ts]
with open(env.path("texts.jsonl"), "w", encoding="utf-8") as f:
    for t in all_texts:
        f.write(json.dumps(t) + "\n")
t0 = time.time()
hc.run([env.dump, "encode", os.path.join(ckpt, "tokenizer.model"), env.path("texts.jsonl"),
        env.path("ids.jsonl")])
t_cpp = time.time() - t0
with open(env.path("ids.jsonl")) as f:
    ours = [json.loads(line) for line in f]
assert len(ours) == len(all_texts)
t0 = time.time()
theirs = tok(all_texts, add_special_tokens=False)["input_ids"]
decoded = tok.batch_decode(theirs)
t_hf = time.time() - t0

bad, i, n_tokens = [], 0, 0
for group, ts in groups.items():
    differ = 0
    for t in ts:
        n_tokens += len(ours[i])
        if ours[i] != theirs[i]:
            differ += 1
            if len(bad) < 5:
                bad.append((group, t[:80], ours[i][:20], theirs[i][:20]))
        elif decoded[i] != t:
            differ += 1
            bad.append((group, t[:80], "decode", decoded[i][:80]))
        i += 1
    if differ:
        print(f"{group}: {differ} of {len(ts)} texts differ")
print(f"{len(groups)} files, {len(all_texts)} texts, {n_tokens} tokens, "
      f"{sum(len(t.encode()) for t in all_texts)} bytes; C++ encode {t_cpp:.1f} s, HF encode + decode {t_hf:.1f} s")
for b in bad:
    print("DIFFERS:", b)
assert not bad, "the exported tokenizer disagrees with moe-spec's"
print("every text: identical ids and decode(encode(x)) == x")
env.done()
