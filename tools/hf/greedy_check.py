#!/usr/bin/env python3
"""Greedy continuation of moeinfer against transformers' generate() on the exported model,
token for token.

    tools/hf/venv/bin/python tools/hf/greedy_check.py CHECKPOINT HF_DIR PROMPT_FILE \
        [--moeinfer build/apps/moeinfer] [--max-new-tokens 16] [--batch-size 1]

Runs `moeinfer --prompt-file PROMPT_FILE` (greedy, JSONL with prompt_ids and completion_ids),
tokenizes every prompt with the exported tokenizer (add_special_tokens=True: the leading `</s>`
that moe-spec starts every sequence with) and requires the same prompt ids, then greedy-decodes
each prompt alone with generate() and requires the same generated ids (generate() keeps the eos
that stops a row; moeinfer reports it as finish_reason "stop" and leaves it out). Prints one line
per prompt; exit 1 on the first difference, naming the prompt and the position.
"""
import argparse
import json
import os
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("hf_dir")
    ap.add_argument("prompt_file")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--moeinfer",
                    default=os.path.join(here, "..", "..", "build", "apps", "moeinfer"))
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=1, help="moeinfer's --batch-size")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()

    r = subprocess.run([a.moeinfer, "--checkpoint", a.checkpoint, "--prompt-file", a.prompt_file,
                        "--max-new-tokens", str(a.max_new_tokens), "--batch-size",
                        str(a.batch_size), "--threads", str(a.threads), "--log-level", "warn"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"greedy_check: moeinfer exited {r.returncode}: {r.stderr.strip()}")
    ours = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.hf_dir)
    model = AutoModelForCausalLM.from_pretrained(a.hf_dir, torch_dtype=torch.float32)
    model.eval()
    eos = model.config.eos_token_id
    max_pos = model.config.max_position_embeddings
    total = 0
    distinct = set()
    for i, o in enumerate(ours):
        ids = tok(o["prompt"], add_special_tokens=True)["input_ids"]
        if ids != o["prompt_ids"]:
            sys.exit(f"greedy_check: prompt {i} ({o['prompt']!r}): tokenizers differ:\n"
                     f"  moeinfer     {o['prompt_ids']}\n  transformers {ids}")
        # moeinfer stops once the cache holds max_seq_len tokens: the last generated token is
        # never fed back, so a full sequence is max_seq_len + 1 tokens long
        n = min(a.max_new_tokens, max_pos - len(ids) + 1)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                 dtype=torch.long), do_sample=False, num_beams=1,
                                 max_new_tokens=n, eos_token_id=eos, pad_token_id=eos,
                                 output_scores=True, return_dict_in_generate=True)
        theirs = out.sequences[0, len(ids):].tolist()
        stopped = bool(theirs) and theirs[-1] == eos
        if stopped:
            theirs = theirs[:-1]
        mine = o["completion_ids"]
        if mine != theirs or (o["finish_reason"] == "stop") != stopped:
            at = next((k for k, (x, y) in enumerate(zip(mine, theirs)) if x != y),
                      min(len(mine), len(theirs)))
            gap = ""
            if at < len(out.scores):  # a near-tie of the top two logits tells rounding from a bug
                top2 = torch.topk(out.scores[at][0].float(), 2).values
                gap = f" (transformers' top-2 logit gap there: {float(top2[0] - top2[1]):.3g})"
            sys.exit(f"greedy_check: prompt {i} ({o['prompt']!r}): continuations differ at "
                     f"generated token {at}{gap}:\n  moeinfer     {mine} ({o['finish_reason']})\n"
                     f"  transformers {theirs} ({'stop' if stopped else 'length'})")
        total += len(mine)
        distinct.update(mine)
        print(f"greedy_check: prompt {i}: {len(ids)} prompt tokens, {len(mine)} generated tokens "
              f"({o['finish_reason']}) identical: {o['completion']!r}")
    print(f"greedy_check: {len(ours)} prompts, {total} generated tokens ({len(distinct)} distinct "
          "ids), all identical")


if __name__ == "__main__":
    main()
