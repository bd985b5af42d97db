#!/usr/bin/env python3
"""transformers' generate() timed the way `moeinfer --bench` times its own decoding.

    tools/hf/venv/bin/python tools/hf/bench_generate.py HF_DIR -p 32,96 -n 32 -b 1,4 -r 3 \
        --threads 2 [-o md|json]

For each (p, n, b): b random prompts of p token ids (uniform over [3, vocab), as moeinfer draws
them; a new draw per repetition, fixed seed), one greedy generate() call with max_new_tokens n+1
and end-of-sequence disabled, so that the model runs the same passes as moeinfer's: one prefill
of b x p tokens, then n decode passes of b tokens each (p + n positions in the KV cache). A
StoppingCriteria callback takes the time after every pass: TTFT = time to the first generated
token (prefill, its logits, the first argmax), prefill tok/s = b*p / TTFT, decode tok/s =
b*n / (time of the n later passes). These include generate()'s own per-step work (input
preparation, logits processors, the cache update): what a user of generate() pays. Repetition 0
is an untimed warm-up (a prefill and two decode passes of the same shape); the figure is the
median over the timed repetitions.
"""
import argparse
import json
import platform
import statistics
import sys
import time


def ints(s):
    return [int(x) for x in s.split(",") if x]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("-p", type=ints, default=[32, 96], help="prompt lengths")
    ap.add_argument("-n", type=ints, default=[32], help="generation lengths")
    ap.add_argument("-b", type=ints, default=[1, 4], help="batch sizes")
    ap.add_argument("-r", type=int, default=3, help="timed repetitions (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("-o", choices=["md", "json"], default="md")
    a = ap.parse_args()
    if a.r < 1:
        ap.error("-r must be >= 1")

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig, StoppingCriteria

    torch.set_num_threads(a.threads)
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, torch_dtype=torch.float32)
    model.eval()
    cfg = model.config
    vocab, max_pos = cfg.vocab_size, cfg.max_position_embeddings
    gen_cfg = GenerationConfig(do_sample=False, num_beams=1, eos_token_id=None,
                               pad_token_id=cfg.eos_token_id, use_cache=True)

    class Stamps(StoppingCriteria):
        def __init__(self):
            self.t = []

        def __call__(self, input_ids, scores, **kw):
            self.t.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    gen = torch.Generator().manual_seed(a.seed)
    rows = []
    for b in a.b:
        for p in a.p:
            for n in a.n:
                if p + n > max_pos:
                    sys.exit(f"bench_generate: p + n = {p + n} > max_position_embeddings {max_pos}")
                pre, ttft, dec = [], [], []
                for rep in range(a.r + 1):
                    ids = torch.randint(min(3, vocab - 1), vocab, (b, p), generator=gen)
                    stamps = Stamps()
                    new = n + 1 if rep > 0 else min(n + 1, 3)  # the warm-up: prefill + 2 steps
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        out = model.generate(ids, attention_mask=torch.ones_like(ids),
                                             generation_config=gen_cfg, max_new_tokens=new,
                                             stopping_criteria=[stamps])
                    assert out.shape == (b, p + new), out.shape
                    assert len(stamps.t) == new, len(stamps.t)
                    if rep == 0:
                        continue
                    first = stamps.t[0] - t0
                    ttft.append(first * 1e3)
                    pre.append(b * p / first)
                    dec.append(b * n / (stamps.t[-1] - stamps.t[0]))
                    print(f"bench_generate: p={p} n={n} b={b} rep {rep}/{a.r}: TTFT "
                          f"{first * 1e3:.1f} ms, decode {dec[-1]:.1f} tok/s", file=sys.stderr)
                rows.append({"p": p, "n": n, "b": b, "reps": a.r,
                             "prefill_tok_s": statistics.median(pre),
                             "ttft_ms": statistics.median(ttft),
                             "decode_tok_s": statistics.median(dec),
                             "prefill_tok_s_all": pre, "ttft_ms_all": ttft,
                             "decode_tok_s_all": dec})
    meta = {"peer": "transformers generate()", "transformers": transformers.__version__,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "attn_implementation": getattr(cfg, "_attn_implementation", "?"),
            "model_type": cfg.model_type, "python": platform.python_version()}
    if a.o == "json":
        print(json.dumps({"meta": meta, "results": rows}))
        return
    print(f"transformers {meta['transformers']}, torch {meta['torch']}, {meta['threads']} threads, "
          f"attention {meta['attn_implementation']}, median of {a.r}")
    print()
    print("| p | n | b | prefill tok/s | TTFT ms | decode tok/s |")
    print("|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['p']} | {r['n']} | {r['b']} | {r['prefill_tok_s']:.0f} | {r['ttft_ms']:.2f} | "
              f"{r['decode_tok_s']:.0f} |")


if __name__ == "__main__":
    main()
