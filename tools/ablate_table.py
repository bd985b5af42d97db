#!/usr/bin/python3
"""The ablation table of tools/ablate.sh, shaped like the paper's ablation table (arXiv 2602.14159):
one row per (architecture, loss set), mean ± sample std over seeds of

  val ppl    exp(sum NLL / tokens) over every --ppl text of the run's eval.json
  bpb        sum NLL / (ln 2 * bytes) over the same texts
  0-shot     the mean acc over the zero-shot tasks, and the mean of acc_norm (acc where a task
             has no acc_norm); "-" when no task was run
  entropy    routing entropy H (nats), token-weighted over the routing texts, mean over layers
  overlap    mean cos^2 of co-activated experts' intermediate activations
  path acc   next-layer top-1 expert prediction accuracy (argmax of the pathway row)
  x-dev PA   fraction of token-to-expert hops crossing devices under path-aware placement
  x-dev RR   the same under round-robin placement (P and traces: infer.json, moeinfer)
  pf hits    expert-cache hit rate with pathway prefetch at C = E / 2 (LRU hits: "lru hits")

plus, for reference, the paper's Medium (1.1B) validation perplexity of the same cell.

  /usr/bin/python3 tools/ablate_table.py OUT_DIR [--json FILE]

Reads OUT_DIR/<arch>/<cell>/seed<N>/eval.json (moeeval --out) and, when present, infer.json
beside it (tools/ablate.sh with moeinfer built; "-" without). Exit status 2 when none is found
or one is malformed.
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
COLUMNS = [("val_ppl", "val ppl", 3), ("bpb", "bpb", 4), ("ood_ppl", "OOD ppl", 3),
           ("ood_bpb", "OOD bpb", 4), ("zs_acc", "0-shot acc", 4),
           ("zs_acc_norm", "0-shot acc_norm", 4), ("entropy", "entropy", 4),
           ("overlap", "overlap", 4), ("path_acc", "path acc", 4),
           ("xdev_pa", "x-dev PA", 3), ("xdev_rr", "x-dev RR", 3), ("pf_hits", "pf hits", 3),
           ("lru_hits", "lru hits", 3)]


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
        "overlap": weighted(routing, "overlap") if routing else None,
        "path_acc": weighted(routing, "pathway_top1_accuracy") if routing else None,
        "step": ev["moeeval"].get("step"),
    }


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def cell(mean, std, digits):
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


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
        groups.setdefault((arch, name), []).append(run_metrics(path, args.ood))

    def order(key):
        arch, name = key
        return (arch, CELL_ORDER.index(name) if name in CELL_ORDER else len(CELL_ORDER), name)

    header = ["arch", "loss", "seeds"] + [c[1] for c in COLUMNS] + ["paper ppl (1.1B)"]
    rows, summary = [], []
    for key in sorted(groups, key=order):
        arch, name = key
        runs = groups[key]
        row = [arch, CELL_NAME.get(name, name), str(len(runs))]
        agg = {"arch": arch, "cell": name, "seeds": len(runs)}
        for field, _, digits in COLUMNS:
            m, s = mean_std([r[field] for r in runs])
            row.append(cell(m, s, digits))
            agg[field] = {"mean": m, "std": s}
        paper = PAPER_PPL.get(key)
        row.append(f"{paper:.2f}" if paper else "-")
        rows.append(row)
        summary.append(agg)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 1) + ("-" if i < 3 else ":") for i, w in enumerate(widths)) + "|")
    for r in rows:
        print("| " + " | ".join(v.ljust(w) if i < 3 else v.rjust(w)
                                for i, (v, w) in enumerate(zip(r, widths))) + " |")
    print("\nmean ± sample std over seeds; ppl/bpb on the evaluation texts; entropy in nats; "
          "overlap = mean cos^2 of co-activated experts; path acc = next-layer top-1 expert "
          "prediction accuracy; x-dev = held-out token-to-expert hops crossing devices under "
          "path-aware (PA) / round-robin (RR) placement; pf/lru hits = expert-cache hit rate with "
          "pathway prefetch / LRU alone (infer.json). Paper column: arXiv 2602.14159, Medium 1.1B, 30B C4 tokens "
          "(not comparable in scale; shows the expected ordering).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
