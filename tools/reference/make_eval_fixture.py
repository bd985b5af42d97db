#!/usr/bin/env python3
"""Per-request log-likelihoods of the PyTorch reference (moe_ref.py) on the vanilla fixture's
initial weights, for tests/test_eval_model_scores.cpp: moeeval's batched scorer must reproduce
them within float32 tolerance.

Each request is a token sequence whose last n_targets tokens are scored given everything before
them (the form lib/eval/token_requests.h produces: [eos] + context + continuation, left-truncated
to max_seq_len + 1 tokens). The reference scores each request ALONE (batch 1, exactly its own
length), in float64 from the float32 weights, so batching, padding and prefix sharing on the C++
side are all checked against an unbatched computation.

Usage: /usr/bin/python3 tools/reference/make_eval_fixture.py   (writes tests/data/fixtures/eval_vanilla.json)
       /usr/bin/python3 tools/reference/make_eval_fixture.py --check
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import moe_ref  # noqa: E402
import safetensors_io  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(ROOT, "tests", "data", "fixtures")
EOS = 2

# (tokens, n_targets). The vanilla fixture has vocab 64 and max_seq_len 8, so at most 9 tokens.
# Requests 0-2: three choices after one context (multiple choice); 3 and 4: one-token
# continuations of the same context (one input, two targets: the harness's logits_cache case);
# 5: a full-length (truncated) window; 6: a 1-token input; 7: input of request 0 extended
# (request 0's input is its prefix, so moeeval serves both from one row).
REQUESTS = [
    ([EOS, 5, 9, 13, 7], 1),
    ([EOS, 5, 9, 13, 7, 8], 2),
    ([EOS, 5, 9, 13, 20, 21, 22], 3),
    ([EOS, 30, 31, 32, 33, 40], 1),
    ([EOS, 30, 31, 32, 33, 41], 1),
    ([17, 3, 44, 45, 46, 47, 48, 49, 50], 4),
    ([EOS, 63], 1),
    ([EOS, 5, 9, 13, 7, 60, 61, 62], 4),
]


def score(P, cfg, loss_cfg, tokens, n_targets):
    ids = torch.tensor([tokens[:-1]], dtype=torch.int64)
    out = moe_ref.forward(P, cfg, loss_cfg, ids, torch.full_like(ids, -1))
    logp = F.log_softmax(out["logits"], dim=-1)  # [T, V], float64
    n = len(tokens) - 1
    ll, greedy = 0.0, True
    for p in range(n - n_targets, n):
        target = tokens[p + 1]
        ll += float(logp[p, target])
        greedy = greedy and int(torch.argmax(logp[p])) == target
    return ll, greedy


def build():
    spec = json.load(open(os.path.join(FIXTURES, "vanilla.json")))
    cfg = moe_ref.model_config(spec["config"]["model"])
    loss_cfg = moe_ref.loss_config(spec["config"]["loss"])
    stored, _ = safetensors_io.load(os.path.join(FIXTURES, "vanilla.safetensors"))
    names = {n for n, _ in moe_ref.parameter_shapes(cfg, loss_cfg.get("balance", "aux"))}
    P = {k: torch.from_numpy(v.copy()).to(torch.float64) for k, v in stored.items() if k in names}
    requests = []
    for tokens, n_targets in REQUESTS:
        assert len(tokens) <= cfg["max_seq_len"] + 1
        ll, greedy = score(P, cfg, loss_cfg, tokens, n_targets)
        requests.append({"tokens": tokens, "n_targets": n_targets, "ll": ll, "greedy": greedy})
    return {
        "weights": "tests/data/fixtures/vanilla.safetensors",
        "notes": "ll = sum of log_softmax over the scored tokens, float64 math from the float32 "
                 "weights, each request scored alone (batch 1, its own length); greedy = every "
                 "scored token is the argmax. Written by tools/reference/make_eval_fixture.py.",
        "tolerance_ll": 2e-5,
        "requests": requests,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="compare with the committed file")
    args = ap.parse_args()
    path = os.path.join(FIXTURES, "eval_vanilla.json")
    data = build()
    if args.check:
        old = json.load(open(path))
        for a, b in zip(old["requests"], data["requests"]):
            if a["tokens"] != b["tokens"] or abs(a["ll"] - b["ll"]) > 1e-9 or a["greedy"] != b["greedy"]:
                sys.exit(f"eval fixture differs: {a} vs {b}")
        print("eval fixture reproduces")
        return
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
