#!/usr/bin/python3
"""The PyTorch benchmark peer of moetrain: trains the same model (tools/reference/moe_ref.py,
float32) from a moetrain YAML config on random (or given) tokens and reports tokens per second.

It reads the model.*, loss.* and train.* keys (the names of lib/config/config.h; data.* and run.*
are ignored except data.tokenizer_vocab_size, used when model.vocab_size is 0) and runs, per step,
train.grad_accum micro-batches of train.batch_size x train.seq_len tokens: forward with the enabled
losses, backward, global-norm clipping, torch.optim.AdamW (no decay on norm gains), the lr
schedule (linear warmup, then cosine/linear/constant to lr * min_lr_ratio) and, with
balance: bias, the bias update. The timed region of a step is all of that; tokens/s is the median
over the steps after --warmup steps.

Last line of stdout, machine-readable:
  {"impl": "torch", "tokens_per_s": ..., "threads": ..., ...}

Usage: /usr/bin/python3 tools/reference/train_torch.py --config FILE [--set a.b=value ...]
           [--threads T] [--steps N] [--warmup W] [--tokens FILE.npy|FILE.bin (int32)]
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_ref  # noqa: E402
import optim_ref  # noqa: E402

TRAIN_DEFAULTS = {
    "device": "cpu", "dtype": "fp32", "seed": 1234, "batch_size": 8, "seq_len": 128,
    "grad_accum": 1, "max_steps": 1000, "lr": 3e-3, "min_lr_ratio": 0.1, "warmup_steps": 100,
    "schedule": "cosine", "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8,
    "grad_clip": 1.0, "threads": 0, "recompute": False,
}


def parse_value(text):
    return yaml.safe_load(text)


def load_config(path, overrides):
    with open(path) as src:
        raw = yaml.safe_load(src) or {}
    for assignment in overrides:
        if "=" not in assignment or "." not in assignment.split("=", 1)[0]:
            raise SystemExit(f"--set {assignment}: expected section.key=value")
        key, value = assignment.split("=", 1)
        section, name = key.split(".", 1)
        raw.setdefault(section, {})[name] = parse_value(value)
    model = dict(raw.get("model") or {})
    if int(model.get("vocab_size", 0)) <= 0:
        model["vocab_size"] = int((raw.get("data") or {}).get("tokenizer_vocab_size", 4096))
    cfg = moe_ref.model_config(model)
    loss_cfg = moe_ref.loss_config(raw.get("loss"))
    train = moe_ref.resolve("train", TRAIN_DEFAULTS, raw.get("train"), f"{path}: train")
    if train["device"] != "cpu" or train["dtype"] != "fp32":
        raise SystemExit("train_torch.py is the CPU fp32 peer: train.device must be cpu, "
                         "train.dtype fp32")
    return cfg, loss_cfg, train


def lr_at(step, train):
    """Linear warmup to lr, then cosine/linear/constant decay to lr * min_lr_ratio."""
    lr, warm, total = train["lr"], train["warmup_steps"], max(train["max_steps"], 1)
    if step < warm:
        return lr * (step + 1) / warm
    if train["schedule"] == "constant":
        return lr
    progress = min(1.0, (step - warm) / max(1, total - warm))
    floor = lr * train["min_lr_ratio"]
    if train["schedule"] == "linear":
        return lr - (lr - floor) * progress
    return floor + 0.5 * (lr - floor) * (1 + math.cos(math.pi * progress))


class TokenSource:
    """Random tokens from a seeded generator, or windows of a given int32 token file."""

    def __init__(self, vocab, seed, path=None):
        self.vocab, self.gen = vocab, torch.Generator().manual_seed(seed)
        self.stream = None
        if path:
            arr = np.load(path) if path.endswith(".npy") else np.fromfile(path, dtype="<i4")
            self.stream = torch.from_numpy(arr.astype(np.int64).reshape(-1))
            if int(self.stream.max()) >= vocab or int(self.stream.min()) < 0:
                raise SystemExit(f"{path}: token ids outside [0, {vocab})")

    def batch(self, b, t):
        if self.stream is None:
            seq = torch.randint(0, self.vocab, (b, t + 1), generator=self.gen)
        else:
            if self.stream.numel() < t + 1:
                raise SystemExit(f"token file shorter than one sequence ({t + 1} tokens)")
            starts = torch.randint(0, self.stream.numel() - t, (b,), generator=self.gen)
            seq = torch.stack([self.stream[s:s + t + 1] for s in starts.tolist()])
        return seq[:, :t], seq[:, 1:]


def make_optimizer(params, train):
    decay = [p for n, p in params.items() if moe_ref.is_decayed(n)]
    no_decay = [p for n, p in params.items() if moe_ref.is_trainable(n) and not moe_ref.is_decayed(n)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": train["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=train["lr"], betas=(train["beta1"], train["beta2"]), eps=train["eps"])


def train_step(step, params, trainable, opt, cfg, loss_cfg, train, data):
    lr = lr_at(step, train)
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    routings = []
    for _ in range(train["grad_accum"]):
        inputs, targets = data.batch(train["batch_size"], train["seq_len"])
        out = moe_ref.forward(params, cfg, loss_cfg, inputs, targets)
        (out["total"] / train["grad_accum"]).backward()
        routings.append(out["routing"])
    if train["grad_clip"] > 0:
        torch.nn.utils.clip_grad_norm_(trainable, train["grad_clip"])
    opt.step()
    if loss_cfg["balance"] == "bias":
        merged = [dict(r, load=sum(rs[i]["load"] for rs in routings))
                  for i, r in enumerate(routings[0])]
        optim_ref.update_balance_bias(params, merged, loss_cfg["bias_gamma"])
    return float(out["total"]), float(out["lm"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: train.threads, "
                    "else all cores)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3, help="steps left out of the median")
    ap.add_argument("--tokens", help="int32 token file (.npy or raw little-endian .bin)")
    args = ap.parse_args()
    if args.steps <= args.warmup:
        raise SystemExit("--steps must exceed --warmup")

    cfg, loss_cfg, train = load_config(args.config, args.overrides)
    threads = args.threads or train["threads"] or os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(train["seed"])
    gen = torch.Generator().manual_seed(train["seed"])
    params = moe_ref.init_parameters(cfg, loss_cfg["balance"], gen, torch.float32)
    for name, p in params.items():
        p.requires_grad_(moe_ref.is_trainable(name))
    trainable = [p for n, p in params.items() if moe_ref.is_trainable(n)]
    opt = make_optimizer(params, train)
    data = TokenSource(cfg["vocab_size"], train["seed"] + 1, args.tokens)
    tokens_per_step = train["batch_size"] * train["seq_len"] * train["grad_accum"]

    load_before = os.getloadavg()[0]
    if load_before > (os.cpu_count() or 1):
        print(f"warning: load average {load_before:.1f} exceeds the {os.cpu_count()} cores: "
              "timings are contended (OpenMP spin-waiting makes that much worse)", file=sys.stderr)
    rates, cpu_times, loss = [], [], None
    for step in range(args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        loss, lm = train_step(step, params, trainable, opt, cfg, loss_cfg, train, data)
        elapsed = time.perf_counter() - start
        cpu_times.append(time.process_time() - cpu_start)
        rates.append(tokens_per_step / elapsed)
        print(f"step {step} loss {loss:.4f} lm {lm:.4f} {elapsed * 1e3:.1f} ms "
              f"{rates[-1]:.0f} tok/s", file=sys.stderr)
    n_params = sum(p.numel() for p in trainable)
    print(json.dumps({
        "impl": "torch", "tokens_per_s": statistics.median(rates[args.warmup:]),
        "threads": threads, "steps": args.steps, "warmup": args.warmup,
        "tokens_per_step": tokens_per_step, "params": n_params, "losses": loss_cfg["losses"],
        "cpu_s_per_step": statistics.median(cpu_times[args.warmup:]),
        "loadavg_1m_before": load_before, "loadavg_1m_after": os.getloadavg()[0],
        "final_loss": loss, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
