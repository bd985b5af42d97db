#!/usr/bin/python3
"""The sweep plots of tools/plot.py (--sweep, --coef-sweep): see tools/plot.py's help."""
import glob
import math
import os
import re

import matplotlib.pyplot as plt

import ablate_table
from plot import fail, load_results, read_metrics, slug

CELL_LABEL = {"lb": "L_lb", "lb+sp": "L_lb,sp", "lb+cp": "L_lb,cp", "lb+sp+cp": "L_lb,sp,cp",
              "lb+z": "L_lb,z", "lb+z+sp+cp": "L_lb,z,sp,cp"}
CELL_ORDER = ["lb", "lb+z", "lb+sp", "lb+cp", "lb+sp+cp", "lb+z+sp+cp"]


def sweep_runs(root):
    """{arch: {cell: {seed: run_dir}}} of a tools/ablate.sh output directory."""
    runs = {}
    for arch in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        if not os.path.isdir(os.path.join(root, arch)):
            continue
        for cell in os.listdir(os.path.join(root, arch)):
            cell_dir = os.path.join(root, arch, cell)
            if not os.path.isdir(cell_dir):
                continue
            for seed in os.listdir(cell_dir):
                if re.fullmatch(r"seed\d+", seed):
                    runs.setdefault(arch, {}).setdefault(cell, {})[int(seed[4:])] = \
                        os.path.join(cell_dir, seed)
    if not runs:
        fail(f"{root}: no <arch>/<cell>/seed<N>/ run directories (a tools/ablate.sh --out folder)")
    return runs


def ordered_cells(cells):
    return sorted(cells, key=lambda c: (CELL_ORDER.index(c) if c in CELL_ORDER else 99, c))


def seed_curves(seed_dirs, extract):
    """Mean, min and max over seeds of extract(metrics) on the steps every seed has."""
    curves = []
    for d in seed_dirs:
        path = os.path.join(d, "metrics.jsonl")
        if os.path.isfile(path):
            curves.append(dict(extract(*read_metrics(path))))
    if not curves:
        return [], [], [], []
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    mean = [sum(c[s] for c in curves) / len(curves) for s in steps]
    return steps, mean, [min(c[s] for c in curves) for s in steps], \
        [max(c[s] for c in curves) for s in steps]


def paired_diff_curve(lb_dirs, cell_dirs, extract):
    """Mean over the seeds both cells have of extract(cell) - extract(lb), per common step."""
    diffs = []
    for seed in sorted(set(lb_dirs) & set(cell_dirs)):
        paths = [os.path.join(d[seed], "metrics.jsonl") for d in (lb_dirs, cell_dirs)]
        if not all(os.path.isfile(x) for x in paths):
            continue
        base, other = (dict(extract(*read_metrics(x))) for x in paths)
        diffs.append({st: other[st] - base[st] for st in set(base) & set(other)})
    if not diffs:
        return [], [], 0
    steps = sorted(set.intersection(*(set(d) for d in diffs)))
    return steps, [sum(d[st] for d in diffs) / len(diffs) for st in steps], len(diffs)


def plot_sweep_curves(runs, extract, ylabel, title, out_path):
    """Row 1: the curves (mean over seeds, min-max band); row 2: the paired difference to L_lb."""
    archs = sorted(runs)
    fig, axes = plt.subplots(2, len(archs), figsize=(5.2 * len(archs), 6.4), squeeze=False,
                             constrained_layout=True, gridspec_kw={"height_ratios": [3, 2]})
    for col, arch in enumerate(archs):
        ax, dax = axes[0][col], axes[1][col]
        for cell in ordered_cells(runs[arch]):
            seeds = runs[arch][cell]
            steps, mean, lo, hi = seed_curves(seeds.values(), extract)
            if not steps:
                continue
            line, = ax.plot(steps, mean, label=f"{CELL_LABEL.get(cell, cell)} ({len(seeds)} seeds)",
                            linewidth=1.4)
            if len(seeds) > 1:
                ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15)
            if cell != "lb" and "lb" in runs[arch]:
                dsteps, dmean, n = paired_diff_curve(runs[arch]["lb"], seeds, extract)
                if dsteps:
                    dax.plot(dsteps, dmean, color=line.get_color(), linewidth=1.4,
                             label=f"{CELL_LABEL.get(cell, cell)} − L_lb ({n} pairs)")
        ax.set_title(arch, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        dax.axhline(0.0, color="black", linewidth=0.8)
        dax.set_xlabel("step")
        dax.set_ylabel("paired difference to L_lb")
        dax.grid(alpha=0.3)
        if dax.lines[1:]:
            dax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path


def valid_curve(train, valid):
    return [(r["step"], r["val_loss"]) for r in valid if r.get("val_loss") is not None]


def entropy_curve(train, valid):
    out = []
    for r in train:
        layers = [x["entropy"] for x in r.get("routing", []) if x.get("entropy") is not None]
        if layers:
            out.append((r["step"], sum(layers) / len(layers)))
    return out


def first_checkpoint(path):
    checkpoints = load_results(path)
    return checkpoints[-1]


def pick_text(routing, text, path):
    if not routing:
        fail(f"{path}: no routing results")
    if text is None:
        return sorted(routing)[0]
    for key in routing:
        if key == text or os.path.basename(key) == text:
            return key
    fail(f"{path}: no routing results for text '{text}' (has {', '.join(sorted(routing))})")


def plot_sweep_pathways(arch, cells, pair, text, out_path):
    """cells: [(label, eval.json path)]; one heatmap each for the pair-th MoE-layer pair."""
    fig, axes = plt.subplots(1, len(cells), figsize=(4.6 * len(cells) + 1.0, 4.4), squeeze=False,
                             constrained_layout=True)
    loaded = []
    for label, path in cells:
        routing = first_checkpoint(path)["routing"]
        key = pick_text(routing, text, path)
        pairs = routing[key].get("pathways", [])
        if pair >= len(pairs) or "conditional" not in pairs[pair]:
            fail(f"{path}: no pathway matrix for pair {pair} (has {len(pairs)} pairs)")
        p = pairs[pair]
        loaded.append((label, key, p, [[0.0 if v is None else v for v in row]
                                       for row in p["conditional"]]))
    # One colour scale for the panels, up to the largest probability of either (with many
    # experts no probability comes near 1, and a 0-1 scale would hide the structure).
    vmax = max(max(max(row) for row in m) for _, _, _, m in loaded) or 1.0
    image = None
    for ax, (label, key, p, matrix) in zip(axes[0], loaded):
        image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto",
                          interpolation="nearest")
        ax.set_title(f"{label}: layer {p['layer_from']} → {p['layer_to']}\n"
                     f"row H {p['row_entropy'] or 0:.3f}, top-1 acc {p['top1_accuracy'] or 0:.3f}",
                     fontsize=9)
        ax.set_xlabel(f"expert at layer {p['layer_to']}")
        ax.set_ylabel(f"expert at layer {p['layer_from']}")
    fig.suptitle(f"P(next-layer expert | expert), {arch}, on {os.path.basename(key)}", fontsize=10)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="P(v | e)")
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def mean_load(seed_dirs):
    """Per layer: (mean, min, max over seeds) of the token-weighted load fraction per expert."""
    per_seed = []
    for d in seed_dirs:
        path = os.path.join(d, "eval.json")
        if not os.path.isfile(path):
            continue
        routing = first_checkpoint(path)["routing"]
        layers = None
        total = 0
        for r in routing.values():
            w = r.get("n_tokens", 0)
            total += w
            loads = [[(v or 0.0) * w for v in layer["load_fraction"]] for layer in r["layers"]]
            layers = loads if layers is None else [[a + b for a, b in zip(x, y)]
                                                   for x, y in zip(layers, loads)]
        if layers is not None and total > 0:
            per_seed.append([[v / total for v in layer] for layer in layers])
    if not per_seed:
        return None
    out = []
    for li in range(len(per_seed[0])):
        vals = list(zip(*(s[li] for s in per_seed)))
        out.append(([sum(v) / len(v) for v in vals], [min(v) for v in vals],
                    [max(v) for v in vals]))
    return out


def plot_sweep_load(arch, cells, out_path):
    """cells: [(label, [seed dirs])]: grouped bars per expert, one panel per MoE layer."""
    loads = [(label, mean_load(dirs)) for label, dirs in cells]
    loads = [(label, l) for label, l in loads if l]
    if not loads:
        return None
    n_layers = len(loads[0][1])
    cols = min(n_layers, 4)
    rows = math.ceil(n_layers / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.0 * rows + 0.6), squeeze=False,
                             constrained_layout=True)
    width = 0.8 / len(loads)
    for li in range(n_layers):
        ax = axes[li // cols][li % cols]
        for ci, (label, layers) in enumerate(loads):
            mean, lo, hi = layers[li]
            xs = [e - 0.4 + width * (ci + 0.5) for e in range(len(mean))]
            ax.bar(xs, mean, width=width, label=label,
                   yerr=[[m - a for m, a in zip(mean, lo)], [b - m for m, b in zip(mean, hi)]],
                   error_kw={"linewidth": 0.6})
        ax.axhline(1.0 / len(loads[0][1][li][0]), color="black", linestyle="--", linewidth=0.8)
        ax.set_title(f"MoE layer {li}", fontsize=9)
        ax.set_xlabel("expert")
        ax.set_ylabel("load fraction")
    axes[0][0].legend(fontsize=8)
    for j in range(n_layers, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(f"expert load per MoE layer, {arch} (mean over seeds; bars: min-max; "
                 "dashed: uniform)", fontsize=10)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def plot_sweep(root, out_dir, pair, seed, text):
    runs = sweep_runs(root)
    written = [
        plot_sweep_curves(runs, valid_curve, "validation loss (nats/token)",
                          "validation loss (moetrain's periodic validation), mean over seeds, "
                          "band: min-max", os.path.join(out_dir, "sweep_valid.png")),
        plot_sweep_curves(runs, entropy_curve, "routing entropy (nats)",
                          "routing entropy on training batches (mean over MoE layers), mean over "
                          "seeds, band: min-max", os.path.join(out_dir, "sweep_entropy.png")),
    ]
    for arch in sorted(runs):
        have = [c for c in ("lb", "lb+sp+cp") if c in runs[arch]]
        if len(have) < 2:
            continue
        seeds = sorted(set(runs[arch]["lb"]) & set(runs[arch]["lb+sp+cp"]))
        s = seed if seed is not None else (seeds[0] if seeds else None)
        if s is not None and all(os.path.isfile(os.path.join(runs[arch][c][s], "eval.json"))
                                 for c in have if s in runs[arch][c]):
            written.append(plot_sweep_pathways(
                arch, [(f"{CELL_LABEL[c]} (seed {s})", os.path.join(runs[arch][c][s], "eval.json"))
                       for c in have], pair, text,
                os.path.join(out_dir, f"sweep_pathways_{slug(arch)}.png")))
        written.append(plot_sweep_load(
            arch, [(CELL_LABEL[c], list(runs[arch][c].values())) for c in have],
            os.path.join(out_dir, f"sweep_load_{slug(arch)}.png")))
    return written


def plot_coef_sweep(root, center, center_values, ood, out_path):
    points = {"sp": {}, "cp": {}}
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        m = re.fullmatch(r"(sp|cp)_([0-9.]+(?:e-?[0-9]+)?)", name)
        if not m:
            continue
        for eval_path in sorted(glob.glob(os.path.join(root, name, "*", "*", "seed*",
                                                       "eval.json"))):
            seed = int(os.path.basename(os.path.dirname(eval_path))[4:])
            points[m.group(1)].setdefault(float(m.group(2)), {})[seed] = \
                ablate_table.run_metrics(eval_path, ood)
    baseline = {}
    if center:
        sp0, cp0 = center_values
        for cell, target in (("lb+sp+cp", "center"), ("lb", "baseline")):
            for eval_path in sorted(glob.glob(os.path.join(center, "vanilla", cell, "seed*",
                                                           "eval.json"))):
                seed = int(os.path.basename(os.path.dirname(eval_path))[4:])
                run = ablate_table.run_metrics(eval_path, ood)
                if target == "center":
                    points["sp"].setdefault(sp0, {})[seed] = run
                    points["cp"].setdefault(cp0, {})[seed] = run
                else:
                    baseline[seed] = run
    if not points["sp"] and not points["cp"]:
        fail(f"{root}: no <sp|cp>_<value>/<arch>/<cell>/seed<N>/eval.json")
    # Only the seeds the sweep ran: the centre and baseline may have more (Grid A has 3).
    sweep_seeds = {s for key in ("sp", "cp") for v, runs in points[key].items()
                   if not center or v not in center_values for s in runs}
    metrics = [("val_ppl", "validation perplexity"), ("ood_ppl", "OOD perplexity"),
               ("path_acc", "pathway top-1 accuracy")]
    fig, axes = plt.subplots(len(metrics), 2, figsize=(10, 3.0 * len(metrics) + 0.6),
                             squeeze=False, constrained_layout=True)
    rows = []
    for col, key in enumerate(("sp", "cp")):
        values = sorted(points[key])
        for row, (field, label) in enumerate(metrics):
            ax = axes[row][col]
            means = []
            for v in values:
                seeds = {s: r for s, r in points[key][v].items() if not sweep_seeds or s in sweep_seeds}
                ys = [r[field] for r in seeds.values() if r[field] is not None]
                ax.scatter([v] * len(ys), ys, s=12, color="tab:blue", alpha=0.6)
                means.append(sum(ys) / len(ys) if ys else float("nan"))
            ax.plot(values, means, color="tab:blue", marker="o", label="L_lb,sp,cp (mean)")
            base = [r[field] for s, r in baseline.items()
                    if r[field] is not None and (not sweep_seeds or s in sweep_seeds)]
            if base:
                ax.axhline(sum(base) / len(base), color="tab:red", linestyle="--",
                           label="L_lb (mean)")
            ax.set_xscale("log")
            ax.set_xlabel(f"λ_{key}" + (f" (λ_{'cp' if key == 'sp' else 'sp'} = "
                                        f"{center_values[1 if key == 'sp' else 0]:g})"
                                        if center else ""))
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.legend(fontsize=8)
        for v in values:
            seeds = {s: r for s, r in points[key][v].items() if not sweep_seeds or s in sweep_seeds}
            base = {str(s): r for s, r in baseline.items()}
            mine = {str(s): r for s, r in seeds.items()}
            rows.append((key, v, len(seeds)) + tuple(
                ablate_table.mean_std([r[f] for r in seeds.values()]) for f, _ in metrics) +
                tuple(ablate_table.paired(base, mine, f) for f in ("val_ppl", "path_acc")))
    fig.suptitle("coefficient sweep (vanilla, L_lb,sp,cp): one coefficient moved, the other kept",
                 fontsize=10)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    print("| moved | value | seeds | val ppl | OOD ppl | path acc | Δ val ppl vs L_lb | "
          "Δ path acc vs L_lb |")
    print("|-------|------:|------:|--------:|--------:|---------:|------------------:|"
          "-------------------:|")
    for key, v, n, (pm, ps), (om, os_), (am, as_), dp, da in rows:
        print(f"| λ_{key} | {v:g} | {n} | {ablate_table.cell(pm, ps, 3)} | "
              f"{ablate_table.cell(om, os_, 3)} | {ablate_table.cell(am, as_, 4)} | "
              f"{ablate_table.signed_cell(dp, 3)} | {ablate_table.signed_cell(da, 4)} |")
    if baseline:
        seeds = {s: r for s, r in baseline.items() if not sweep_seeds or s in sweep_seeds}
        b = [ablate_table.mean_std([r[f] for r in seeds.values()]) for f, _ in metrics]
        print(f"| (L_lb) | - | {len(seeds)} | {ablate_table.cell(*b[0], 3)} | "
              f"{ablate_table.cell(*b[1], 3)} | {ablate_table.cell(*b[2], 4)} |")
    return out_path


