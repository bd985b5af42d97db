#!/usr/bin/python3
"""The ablation table of tools/ablate.sh, shaped like the paper's ablation table (arXiv 2602.14159):
one row per (architecture, loss set), mean ± sample std over seeds of

  val ppl    exp(sum NLL / tokens) over the run's --ppl texts that are not --ood
  bpb        sum NLL / (ln 2 * bytes) over the same texts
  OOD ppl    the same two over the --ood texts ("-" without --ood)
  0-shot     the mean acc over the zero-shot tasks, and the mean of acc_norm (acc where a task
             has no acc_norm); "-" when no task was run
  entropy    routing entropy H (nats), token-weighted over the routing texts, mean over layers
  top-k mass the router probability mass on the chosen top-k experts (same weighting)
  overlap    mean cos^2 of co-activated experts' intermediate activations
  path acc   next-layer top-1 expert prediction accuracy (argmax of the pathway row)
  P(v|e) row H  mean entropy (nats) of the rows of the next-layer pathway matrix P(v|e)
  step ms    median training step time (ms) from the run's metrics.jsonl (tokens per step /
             tok_per_s of each logged interval); "-" without metrics.jsonl
  x-dev PA   fraction of token-to-expert hops crossing devices under path-aware placement
  x-dev RR   the same under round-robin placement (P and traces: infer.json, moeinfer)
  pf hits    expert-cache hit rate with pathway prefetch at C = E / 2 (LRU hits: "lru hits")

plus, for reference, the paper's Medium (1.1B) validation perplexity of the same cell; then the
paired differences to L_lb: for every cell and seed that both have, d = metric(cell, seed) -
metric(lb, seed) (the step time as a relative overhead, 100 * (t_cell / t_lb - 1) %), reported as
mean ± sample std of d over the seeds; a "*" marks a mean that a two-sided paired t-test puts
away from 0 at the 5% level (|mean| / (std / sqrt(n)) > t_{0.975, n-1}; n >= 2).

  /usr/bin/python3 tools/ablate_table.py OUT_DIR [--ood TEXT ...] [--json FILE]

Reads OUT_DIR/<arch>/<cell>/seed<N>/eval.json (moeeval --out) and, when present, infer.json and
metrics.jsonl beside it (tools/ablate.sh with moeinfer built; "-" without). Exit status 2 when
none is found or one is malformed.
"""
import argparse
import fnmatch
import glob
import json
import math
import os
import sys

CELL_ORDER = ["lb", "lb+z", "lb+sp", "lb+cp", "lb+sp+cp", "lb+z+sp+cp"]
CELL_NAME = {"lb": "L_lb", "lb+z": "L_lb,z", "lb+sp": "L_lb,sp", "lb+cp": "L_lb,cp",
             "lb+sp+cp": "L_lb,sp,cp", "lb+z+sp+cp": "L_lb,z,sp,cp"}
# Paper, Medium (1.1B), validation perplexity, as the paper reports it.
PAPER_PPL = {("vanilla", "lb"): 12.50, ("vanilla", "lb+sp"): 12.44, ("vanilla", "lb+cp"): 12.33,
             ("vanilla", "lb+sp+cp"): 12.27, ("vanilla", "lb+z+sp+cp"): 12.17,
             ("deepseek", "lb"): 12.33, ("deepseek", "lb+sp"): 12.29, ("deepseek", "lb+cp"): 12.22,
             ("deepseek", "lb+sp+cp"): 12.16, ("deepseek", "lb+z"): 12.07,
             ("deepseek", "lb+z+sp+cp"): 11.99}
# (field, header, digits); one list per printed table.
QUALITY = [("val_ppl", "val ppl", 3), ("bpb", "bpb", 4), ("ood_ppl", "OOD ppl", 3),
           ("ood_bpb", "OOD bpb", 4), ("zs_acc", "0-shot acc", 4),
           ("zs_acc_norm", "0-shot acc_norm", 4), ("suite", "paper suite", 4)]
ROUTING = [("entropy", "entropy", 4), ("topk_mass", "top-k mass", 4), ("overlap", "overlap", 4),
           ("path_acc", "path acc", 4), ("path_row_h", "P(v|e) row H", 4),
           ("step_ms", "step ms", 1)]
INFER = [("xdev_pa", "x-dev PA", 3), ("xdev_rr", "x-dev RR", 3), ("pf_hits", "pf hits", 3),
         ("lru_hits", "lru hits", 3)]
COLUMNS = QUALITY + ROUTING + INFER
# Two-sided 95% critical values of Student's t, degrees of freedom 1..30 (beyond: 1.96).
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
       2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
       2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def fail(msg):
    print(f"ablate_table.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


def weighted(entries, key, weight="n_tokens"):
    num = den = 0.0
    for e in entries:
        v = e["average"].get(key)
        if v is None:
            return None
        num += v * e[weight]
        den += e[weight]
    return num / den if den > 0 else None


def is_ood(text, patterns):
    return any(fnmatch.fnmatchcase(text, p) for p in patterns)


def run_metrics(path, ood=()):
    try:
        with open(path) as f:
            ev = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        fail(f"{path}: {e}")
    if "checkpoints" in ev:
        ev = ev["checkpoints"][-1]
    for section in ("perplexity", "routing", "moeeval"):
        if section not in ev:
            fail(f"{path}: no '{section}' section (expected a moeeval --out file)")
    ppl = [p for t, p in ev["perplexity"].items() if not is_ood(t, ood)]
    ood_ppl = [p for t, p in ev["perplexity"].items() if is_ood(t, ood)]
    tokens = sum(p["tokens"] for p in ppl)
    nbytes = sum(p["bytes"] for p in ppl)
    nll = sum(p["nll_sum"] for p in ppl)
    ood_tokens = sum(p["tokens"] for p in ood_ppl)
    ood_bytes = sum(p["bytes"] for p in ood_ppl)
    ood_nll = sum(p["nll_sum"] for p in ood_ppl)
    routing = list(ev["routing"].values())
    zs = ev["moeeval"].get("zero_shot_average", {})
    infer = {}
    infer_path = os.path.join(os.path.dirname(path), "infer.json")
    if os.path.isfile(infer_path):
        try:
            with open(infer_path) as f:
                infer = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            fail(f"{infer_path}: {e}")
    return {
        "xdev_pa": infer.get("cross_fraction_path_aware"),
        "xdev_rr": infer.get("cross_fraction_round_robin"),
        "pf_hits": infer.get("prefetch_hit_rate"),
        "lru_hits": infer.get("lru_hit_rate"),
        "val_ppl": math.exp(nll / tokens) if tokens else None,
        "bpb": nll / (math.log(2) * nbytes) if nbytes else None,
        "ood_ppl": math.exp(ood_nll / ood_tokens) if ood_tokens else None,
        "ood_bpb": ood_nll / (math.log(2) * ood_bytes) if ood_bytes else None,
        "zs_acc": zs.get("acc"),
        "zs_acc_norm": zs.get("acc_norm_or_acc"),
        "entropy": weighted(routing, "entropy") if routing else None,
        "topk_mass": weighted(routing, "topk_mass") if routing else None,
        "overlap": weighted(routing, "overlap") if routing else None,
        "path_acc": weighted(routing, "pathway_top1_accuracy") if routing else None,
        "path_row_h": weighted(routing, "pathway_row_entropy") if routing else None,
        "step": ev["moeeval"].get("step"),
        # moeeval --suite paper: the mean of the paper's six tasks (those present).
        "suite": ev["moeeval"].get("paper_suite", {}).get("average"),
    }


def step_ms(metrics_path):
    """Median training step time (ms) over the logged intervals of a metrics.jsonl."""
    if not os.path.isfile(metrics_path):
        return None
    times = []
    try:
        with open(metrics_path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                rec = json.loads(line)
                if rec.get("type") != "train" or not rec.get("tok_per_s") or not rec.get("step"):
                    continue
                times.append(1000.0 * rec["tokens"] / rec["step"] / rec["tok_per_s"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        fail(f"{metrics_path}: {e}")
    if not times:
        return None
    times.sort()
    mid = len(times) // 2
    return times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def paired(lb_runs, cell_runs, field):
    """Paired differences cell - lb over the seeds both have (the step time: relative, in %)."""
    diffs = []
    for seed, run in sorted(cell_runs.items()):
        base = lb_runs.get(seed)
        if base is None or run[field] is None or base[field] is None:
            continue
        if field == "step_ms":
            diffs.append(100.0 * (run[field] / base[field] - 1.0))
        else:
            diffs.append(run[field] - base[field])
    m, s = mean_std(diffs)
    out = {"mean": m, "std": s, "n": len(diffs), "t": None, "significant": None}
    if len(diffs) >= 2:
        crit = T95[len(diffs) - 2] if len(diffs) - 1 <= len(T95) else 1.96
        if s > 0:
            out["t"] = m / (s / math.sqrt(len(diffs)))
            out["significant"] = abs(out["t"]) > crit
        else:
            out["significant"] = abs(m) > 1e-12
    return out


def cell(mean, std, digits, mark=""):
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}") + mark


def signed_cell(d, digits):
    if d["mean"] is None:
        return "-"
    text = f"{d['mean']:+.{digits}f}" + ("" if d["std"] is None else f" ± {d['std']:.{digits}f}")
    return text + ("*" if d["significant"] else "")


def print_table(header, rows, n_left):
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 1) + ("-" if i < n_left else ":")
                         for i, w in enumerate(widths)) + "|")
    for r in rows:
        print("| " + " | ".join(v.ljust(w) if i < n_left else v.rjust(w)
                                for i, (v, w) in enumerate(zip(r, widths))) + " |")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--json", help="also write the aggregated numbers here")
    ap.add_argument("--ood", nargs="+", default=[], metavar="TEXT",
                    help="perplexity texts (paths as in eval.json, or fnmatch patterns) that are "
                         "out-of-domain: reported as OOD ppl/bpb, not in val ppl/bpb")
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.out_dir, "*", "*", "seed*", "eval.json")))
    if not files:
        fail(f"no {args.out_dir}/<arch>/<cell>/seed<N>/eval.json found (run tools/ablate.sh first)")
    groups = {}
    for path in files:
        seed_dir = os.path.dirname(path)
        cell_dir = os.path.dirname(seed_dir)
        arch = os.path.basename(os.path.dirname(cell_dir))
        name = os.path.basename(cell_dir)
        seed = os.path.basename(seed_dir)[4:]
        run = run_metrics(path, args.ood)
        run["step_ms"] = step_ms(os.path.join(seed_dir, "metrics.jsonl"))
        groups.setdefault((arch, name), {})[seed] = run

    def order(key):
        arch, name = key
        return (arch, CELL_ORDER.index(name) if name in CELL_ORDER else len(CELL_ORDER), name)

    keys = sorted(groups, key=order)
    have_infer = any(r[f] is not None for runs in groups.values() for r in runs.values()
                     for f, _, _ in INFER)
    # Columns no run has (e.g. the paper suite without --suite paper) are left out.
    have = {f for runs in groups.values() for r in runs.values() for f, _, _ in COLUMNS
            if r[f] is not None}
    quality = [c for c in QUALITY if c[0] in have or c[0] in ("val_ppl", "bpb")]
    tables = [quality, ROUTING] + ([INFER] if have_infer else [])
    summary = []
    for key in keys:
        arch, name = key
        runs = groups[key]
        agg = {"arch": arch, "cell": name, "seeds": len(runs), "seed_list": sorted(runs)}
        for field, _, _ in COLUMNS:
            agg[field] = dict(zip(("mean", "std"), mean_std([r[field] for r in runs.values()])))
            agg[field]["per_seed"] = {seed: r[field] for seed, r in sorted(runs.items())}
        agg["paper_ppl"] = PAPER_PPL.get(key)
        if name != "lb" and (arch, "lb") in groups:
            agg["paired_vs_lb"] = {f: paired(groups[(arch, "lb")], runs, f) for f, _, _ in COLUMNS}
        summary.append(agg)

    print("Mean ± sample std over seeds.\n")
    for columns in tables:
        header = ["arch", "loss", "seeds"] + [c[1] for c in columns]
        if columns is quality:
            header.append("paper ppl (1.1B)")
        rows = []
        for agg in summary:
            row = [agg["arch"], CELL_NAME.get(agg["cell"], agg["cell"]), str(agg["seeds"])]
            row += [cell(agg[f]["mean"], agg[f]["std"], d) for f, _, d in columns]
            if columns is quality:
                row.append(f"{agg['paper_ppl']:.2f}" if agg["paper_ppl"] else "-")
            rows.append(row)
        print_table(header, rows, 3)
    paired_rows = [a for a in summary if "paired_vs_lb" in a]
    if paired_rows:
        print("Paired differences to L_lb within each seed (cell - L_lb), mean ± sample std over "
              "the seeds; step ms as the relative overhead in %; * = paired t-test, p < 0.05.\n")
        for columns in tables:
            header = ["arch", "loss", "pairs"] + ["Δ " + c[1] + (" %" if c[0] == "step_ms" else "")
                                                  for c in columns]
            rows = []
            for agg in paired_rows:
                d = agg["paired_vs_lb"]
                row = [agg["arch"], CELL_NAME.get(agg["cell"], agg["cell"]),
                       str(max(v["n"] for v in d.values()))]
                row += [signed_cell(d[f], 1 if f == "step_ms" else digits)
                        for f, _, digits in columns]
                rows.append(row)
            print_table(header, rows, 3)
    print("ppl/bpb on the evaluation texts (OOD: the --ood texts); entropy in nats; "
          "overlap = mean cos^2 of co-activated experts; path acc = next-layer top-1 expert "
          "prediction accuracy; P(v|e) row H = mean row entropy of the pathway matrix; step ms = "
          "median training step time; x-dev = held-out token-to-expert hops crossing devices under "
          "path-aware (PA) / round-robin (RR) placement; pf/lru hits = expert-cache hit rate with "
          "pathway prefetch / LRU alone (infer.json). Paper column: arXiv 2602.14159, Medium 1.1B, "
          "30B C4 tokens (not comparable in scale; shows the expected ordering).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
