#!/usr/bin/python3
"""PNG plots of moeeval results and moetrain metrics (matplotlib, headless).

  /usr/bin/python3 tools/plot.py [--results results.json ...] [--metrics RUN/metrics.jsonl ...] --out DIR

From a results.json written by `moeeval --routing FILE --out results.json` (one checkpoint, or
several under "checkpoints"):
  pathways_<ckpt>_<text>.png   P(expert at the next MoE layer | expert at this layer), one heatmap
                               per adjacent MoE-layer pair (the paper's Figure 2), with each pair's
                               mean row entropy and top-1 prediction accuracy in the title
  load_<ckpt>_<text>.png       expert-load fraction per expert, one bar chart per MoE layer, with
                               the uniform load 1/E marked
From a run's metrics.jsonl (moetrain):
  curves_<run>.png             training curves of every loss term (total, lm, lb, z, sp, cp) and
                               the validation loss, against the step
From a tools/ablate.sh sweep directory (--sweep DIR: DIR/<arch>/<cell>/seed<N>/, eval.json and
metrics.jsonl), one panel per architecture, one line per cell, the mean over seeds with the
min-max band:
  sweep_valid.png              validation loss (moetrain's periodic validation) against the step
  sweep_entropy.png            routing entropy (training batches, mean over MoE layers) against
                               the step
  sweep_pathways_<arch>.png    P(v|e) of one adjacent MoE-layer pair (--pair I, the I-th pair,
                               default 0) for L_lb and L_lb,sp,cp side by side (seed --seed,
                               default the first; routing text --text, default the first)
  sweep_load_<arch>.png        expert load fraction per MoE layer, L_lb against L_lb,sp,cp (mean
                               over seeds and routing texts, token-weighted; min-max over seeds)
From a coefficient sweep (--coef-sweep DIR: DIR/<sp|cp>_<value>/<arch>/<cell>/seed<N>/, as
tools/replication.sh grid-b writes; --coef-center DIR2: the sweep holding the centre point and
the L_lb baseline, DIR2/<arch>/{lb,lb+sp+cp}/seed<N>/, with --coef-center-values SP,CP):
  coef_sweep.png               validation perplexity, OOD perplexity and pathway top-1 accuracy
                               against lambda_sp and against lambda_cp (log axis), per-seed points
                               and the mean, with the L_lb mean as a line; the numbers are also
                               printed as a markdown table
Exit status 2 with a message naming the file on unreadable or malformed input.
"""
import argparse
import glob
import json
import math
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # plot_sweep.py, ablate_table.py


def fail(msg):
    print(f"plot.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


def slug(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "x"


def checkpoint_label(ck):
    """run@step for .../RUN/checkpoints/step_X, else the directory name."""
    parts = os.path.normpath(ck.get("moeeval", {}).get("checkpoint", "model")).split(os.sep)
    if len(parts) >= 3 and parts[-2] == "checkpoints":
        return f"{parts[-3]}@{ck.get('moeeval', {}).get('step', 0)}"
    return parts[-1]


def load_results(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        fail(f"{path}: {e}")
    checkpoints = data["checkpoints"] if "checkpoints" in data else [data]
    for ck in checkpoints:
        if "routing" not in ck:
            fail(f"{path}: no 'routing' section (expected a moeeval results file)")
    return checkpoints


def plot_pathways(routing, title, out_path):
    pairs = routing.get("pathways", [])
    if not pairs:
        return None
    n = len(pairs)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 1.0, 4.0 * rows + 0.6),
                             squeeze=False, constrained_layout=True)
    image = None
    for i, p in enumerate(pairs):
        ax = axes[i // cols][i % cols]
        if "conditional" not in p:
            fail(f"{title}: pathway {p['layer_from']}->{p['layer_to']} has no matrix "
                 "(results written without pathway matrices)")
        matrix = [[0.0 if v is None else v for v in row] for row in p["conditional"]]
        image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto",
                          interpolation="nearest")
        ax.set_title(f"layer {p['layer_from']} → {p['layer_to']}\n"
                     f"row H {p['row_entropy'] or 0:.2f}, top-1 acc {p['top1_accuracy'] or 0:.2f}",
                     fontsize=9)
        ax.set_xlabel(f"expert at layer {p['layer_to']}")
        ax.set_ylabel(f"expert at layer {p['layer_from']}")
        experts_to, experts_from = p["experts_to"], p["experts_from"]
        if experts_to <= 16:
            ax.set_xticks(range(experts_to))
        if experts_from <= 16:
            ax.set_yticks(range(experts_from))
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(f"P(next-layer expert | expert): {title}", fontsize=11)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="P(v | e)")
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def plot_loads(routing, title, out_path):
    layers = routing.get("layers", [])
    if not layers:
        return None
    n = len(layers)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.0 * rows + 0.6), squeeze=False,
                             constrained_layout=True)
    for i, layer in enumerate(layers):
        ax = axes[i // cols][i % cols]
        load = [0.0 if v is None else v for v in layer["load_fraction"]]
        ax.bar(range(len(load)), load, color="tab:blue")
        ax.axhline(1.0 / len(load), color="tab:red", linestyle="--", linewidth=1, label="uniform")
        ax.set_title(f"layer {layer['layer']}: max/mean {layer['load_max_over_mean'] or 0:.2f}, "
                     f"cv {layer['load_cv'] or 0:.2f}", fontsize=9)
        ax.set_xlabel("expert")
        ax.set_ylabel("load fraction")
    axes[0][0].legend(fontsize=8)
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(f"expert load per MoE layer: {title}", fontsize=11)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def read_metrics(path):
    train, valid = [], []
    try:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    fail(f"{path}:{number}: not valid JSON ({e})")
                if rec.get("type") == "train":
                    train.append(rec)
                elif rec.get("type") == "valid":
                    valid.append(rec)
    except OSError as e:
        fail(f"{path}: {e}")
    if not train and not valid:
        fail(f"{path}: no train or valid records (expected moetrain's metrics.jsonl)")
    return train, valid


def plot_curves(path, out_path):
    train, valid = read_metrics(path)
    terms = [t for t in ("loss", "lm", "lb", "z", "sp", "cp")
             if any(abs(r.get(t, 0.0) or 0.0) > 0 for r in train)]
    panels = terms + (["val_loss"] if valid else [])
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows + 0.6), squeeze=False,
                             constrained_layout=True)
    for i, term in enumerate(panels):
        ax = axes[i // cols][i % cols]
        source = valid if term == "val_loss" else train
        ax.plot([r["step"] for r in source], [r[term] for r in source],
                marker="o" if term == "val_loss" else None, markersize=3)
        ax.set_title({"loss": "total loss", "lm": "L_lm", "lb": "L_lb (sum over layers)",
                      "z": "L_z", "sp": "R_sp", "cp": "R_cp", "val_loss": "validation loss"}[term],
                     fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for j in range(len(panels), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(f"training curves: {path}", fontsize=10)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", nargs="*", default=[], help="moeeval --out files")
    ap.add_argument("--metrics", nargs="*", default=[], help="moetrain metrics.jsonl files")
    ap.add_argument("--sweep", help="a tools/ablate.sh output folder")
    ap.add_argument("--pair", type=int, default=0, help="--sweep: the MoE-layer pair (index)")
    ap.add_argument("--seed", type=int, help="--sweep: the seed of the pathway heatmaps")
    ap.add_argument("--text", help="--sweep: the routing text of the pathway heatmaps")
    ap.add_argument("--coef-sweep", help="a tools/replication.sh grid-b folder (DIR/gridB)")
    ap.add_argument("--coef-center", help="the sweep holding the centre and L_lb (DIR/gridA)")
    ap.add_argument("--coef-center-values", default="2e-3,1e-3",
                    help="lambda_sp,lambda_cp of the centre (default 2e-3,1e-3)")
    ap.add_argument("--ood", nargs="+", default=[], help="--coef-sweep: OOD texts (as ablate_table.py)")
    ap.add_argument("--out", required=True, help="output folder for the PNGs")
    args = ap.parse_args()
    if not args.results and not args.metrics and not args.sweep and not args.coef_sweep:
        fail("give --results FILE, --metrics FILE, --sweep DIR and/or --coef-sweep DIR")
    os.makedirs(args.out, exist_ok=True)
    written = []
    if args.sweep or args.coef_sweep:
        from plot_sweep import plot_coef_sweep, plot_sweep
    if args.sweep:
        written += plot_sweep(args.sweep, args.out, args.pair, args.seed, args.text)
    if args.coef_sweep:
        try:
            center_values = tuple(float(v) for v in args.coef_center_values.split(","))
            assert len(center_values) == 2
        except (ValueError, AssertionError):
            fail(f"--coef-center-values expects SP,CP, got '{args.coef_center_values}'")
        written.append(plot_coef_sweep(args.coef_sweep, args.coef_center, center_values, args.ood,
                                       os.path.join(args.out, "coef_sweep.png")))
    for path in args.results:
        for ck in load_results(path):
            label = checkpoint_label(ck)
            if not ck["routing"]:
                print(f"plot.py: {path}: {label} has no routing results (run moeeval with "
                      "--routing FILE)", file=sys.stderr)
            for text, routing in ck["routing"].items():
                stem = f"{slug(label)}_{slug(os.path.basename(text))}"
                title = f"{label} on {os.path.basename(text)}"
                written.append(plot_pathways(routing, title,
                                             os.path.join(args.out, f"pathways_{stem}.png")))
                written.append(plot_loads(routing, title,
                                          os.path.join(args.out, f"load_{stem}.png")))
    for path in args.metrics:
        run = os.path.basename(os.path.dirname(os.path.abspath(path))) or "run"
        written.append(plot_curves(path, os.path.join(args.out, f"curves_{slug(run)}.png")))
    for w in written:
        if w:
            print(w)


if __name__ == "__main__":
    main()
