#!/usr/bin/env bash
# tools/ablate_table.py on a constructed sweep directory whose answer is known (no training): the
# mean ± sample std over seeds, the token-weighted routing averages, the split of in-domain and
# --ood perplexity, the median step time from metrics.jsonl, and the paired differences to L_lb
# within each seed with their t-test mark; then malformed input exits 2 naming the file.
# Usage: ablate_table_known.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
BUILD_DIR="$(cd "${1:?usage: ablate_table_known.sh BUILD_DIR SOURCE_DIR}" && pwd)"
SOURCE_DIR="$(cd "${2:?usage: ablate_table_known.sh BUILD_DIR SOURCE_DIR}" && pwd)"
WORK="$BUILD_DIR/tmp/ablate_table_known-$$"
rm -rf "$WORK"; mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

/usr/bin/python3 - "$SOURCE_DIR/tools/ablate_table.py" "$WORK" <<'EOF'
import json, math, os, subprocess, sys
table, work = sys.argv[1], sys.argv[2]
sweep = os.path.join(work, "sweep")


def write_run(arch, cell, seed, ppl, ood_ppl, entropy_a, entropy_b, acc, ms, path_acc):
    run = os.path.join(sweep, arch, cell, f"seed{seed}")
    os.makedirs(run)
    # In-domain text split over two files (their NLLs add up); the OOD text in a subfolder.
    tokens = 1000
    nll = tokens * math.log(ppl)
    perplexity = {
        "data/in_a.txt": {"nll_sum": 0.25 * nll, "tokens": 250, "bytes": 1000},
        "data/in_b.txt": {"nll_sum": 0.75 * nll, "tokens": 750, "bytes": 3000},
        "data/ood/speech.txt": {"nll_sum": 500 * math.log(ood_ppl), "tokens": 500, "bytes": 2500},
    }
    # Routing on two texts, 100 and 300 tokens: token-weighted mean = (a + 3 b) / 4.
    routing = {
        "data/in_a.txt": {"n_tokens": 100, "average": {
            "entropy": entropy_a, "topk_mass": 0.5, "overlap": 0.01,
            "pathway_top1_accuracy": path_acc, "pathway_row_entropy": 1.0}},
        "data/in_b.txt": {"n_tokens": 300, "average": {
            "entropy": entropy_b, "topk_mass": 0.3, "overlap": 0.01,
            "pathway_top1_accuracy": path_acc, "pathway_row_entropy": 2.0}},
    }
    ev = {"perplexity": perplexity, "routing": routing,
          "moeeval": {"step": 10, "zero_shot_average": {"acc": acc, "acc_norm_or_acc": acc + 0.01}}}
    json.dump(ev, open(os.path.join(run, "eval.json"), "w"))
    # Three logged intervals of 1024 tokens per step: ms, ms and an outlier 10 * ms (median: ms).
    with open(os.path.join(run, "metrics.jsonl"), "w") as f:
        for step, t in ((20, ms), (40, ms), (60, 10 * ms)):
            f.write(json.dumps({"type": "train", "step": step, "tokens": 1024 * step,
                                "tok_per_s": 1024 / (t / 1000.0)}) + "\n")
        f.write(json.dumps({"type": "valid", "step": 60, "val_loss": 4.0}) + "\n")


# lb: ppl 10, 12, 14 (mean 12, std 2). lb+sp+cp: 9, 11.5, 13: paired d = -1, -0.5, -1
# (mean -0.8333, std 0.2887, t = -5.0 beyond t_{0.975,2} = 4.303: significant).
# Entropy (weighted (a + 3b)/4): lb 1.0, 1.2, 1.4; lb+sp+cp 1.1, 1.0, 1.6: d = +0.1, -0.2, +0.2
# (mean +0.0333, std 0.2082: not significant). Step time 50 ms vs 55 ms: +10 % every seed.
# OOD ppl: lb 100 every seed, lb+sp+cp 90: d = -10 (std 0: significant).
# path acc: d = +0.05, +0.04, +0.06 (mean +0.05, std 0.01, t = 8.66: significant).
for seed, (p, e, a, pa) in enumerate([(10, 1.0, 0.30, 0.50), (12, 1.2, 0.32, 0.52),
                                      (14, 1.4, 0.34, 0.54)], 1):
    write_run("vanilla", "lb", seed, p, 100, e, e, a, 50.0, pa)
for seed, (p, e, a, pa) in enumerate([(9, 1.1, 0.30, 0.55), (11.5, 1.0, 0.32, 0.56),
                                      (13, 1.6, 0.34, 0.60)], 1):
    # entropy_a = e - 0.3, entropy_b = e + 0.1: weighted (a + 3 b) / 4 = e.
    write_run("vanilla", "lb+sp+cp", seed, p, 90, e - 0.3, e + 0.1, a, 55.0, pa)
# A seed with no L_lb partner: in the mean ± std of its cell, not in the paired differences.
write_run("vanilla", "lb+sp+cp", 4, 20, 90, 1.0, 1.0, 0.3, 55.0, 0.5)

out = subprocess.run([sys.executable, table, sweep, "--ood", "data/ood/*",
                      "--json", os.path.join(work, "table.json")],
                     capture_output=True, text=True)
assert out.returncode == 0, out.stderr
text = out.stdout
print(text)
summary = {a["cell"]: a for a in json.load(open(os.path.join(work, "table.json")))}
lb, sc = summary["lb"], summary["lb+sp+cp"]


def close(x, y, tol=1e-9):
    assert x is not None and abs(x - y) <= tol * max(1.0, abs(y)), (x, y)


close(lb["val_ppl"]["mean"], 12.0); close(lb["val_ppl"]["std"], 2.0)
close(lb["bpb"]["mean"], (1000 * (math.log(10) + math.log(12) + math.log(14)) / 3) /
      (math.log(2) * 4000))
close(lb["ood_ppl"]["mean"], 100.0); close(lb["ood_ppl"]["std"], 0.0)
close(lb["ood_bpb"]["mean"], 500 * math.log(100) / (math.log(2) * 2500))
close(lb["entropy"]["mean"], 1.2); close(lb["entropy"]["std"], 0.2)
close(lb["topk_mass"]["mean"], 0.35)            # (0.5 + 3 * 0.3) / 4
close(lb["path_row_h"]["mean"], 1.75)           # (1 + 3 * 2) / 4
close(lb["step_ms"]["mean"], 50.0)              # median, not the 500 ms outlier
close(lb["zs_acc"]["mean"], 0.32); close(lb["zs_acc_norm"]["mean"], 0.33)
assert sc["seeds"] == 4 and lb["seeds"] == 3
close(sc["val_ppl"]["mean"], (9 + 11.5 + 13 + 20) / 4)
assert "paired_vs_lb" not in lb
d = sc["paired_vs_lb"]
assert d["val_ppl"]["n"] == 3, d["val_ppl"]
close(d["val_ppl"]["mean"], -2.5 / 3); close(d["val_ppl"]["std"], math.sqrt(1 / 12))
close(d["val_ppl"]["t"], -5.0); assert d["val_ppl"]["significant"] is True
close(d["entropy"]["mean"], 0.1 / 3); close(d["entropy"]["std"], math.sqrt(0.13 / 3))
assert d["entropy"]["significant"] is False
close(d["step_ms"]["mean"], 10.0); close(d["step_ms"]["std"], 0.0, 1e-9)
assert d["step_ms"]["significant"] is True
close(d["ood_ppl"]["mean"], -10.0); assert d["ood_ppl"]["significant"] is True
close(d["path_acc"]["mean"], 0.05); close(d["path_acc"]["std"], 0.01)
close(d["path_acc"]["t"], 0.05 / (0.01 / math.sqrt(3)), 1e-6)
assert d["path_acc"]["significant"] is True
close(d["zs_acc"]["mean"], 0.0); assert d["zs_acc"]["significant"] is False
# The printed tables carry the same numbers.
for needle in ("| vanilla | L_lb       | 3     |", "12.000 ± 2.000", "100.000 ± 0.000",
               "-0.833 ± 0.289*", "+0.0333 ± 0.2082 ", "+10.0 ± 0.0*", "+0.0500 ± 0.0100*",
               "-10.000 ± 0.000*", "Δ step ms %", "Δ OOD ppl", "12.50"):
    assert needle in text, (needle, text)
assert "x-dev PA" not in text   # no infer.json anywhere: no inference table

# Malformed input: exit 2 with the file named.
bad = os.path.join(sweep, "vanilla", "lb+cp", "seed1")
os.makedirs(bad)
open(os.path.join(bad, "eval.json"), "w").write("{not json")
out = subprocess.run([sys.executable, table, sweep], capture_output=True, text=True)
assert out.returncode == 2 and "lb+cp/seed1/eval.json" in out.stderr, (out.returncode, out.stderr)
os.remove(os.path.join(bad, "eval.json"))
json.dump({"perplexity": {}}, open(os.path.join(bad, "eval.json"), "w"))
out = subprocess.run([sys.executable, table, sweep], capture_output=True, text=True)
assert out.returncode == 2 and "no 'routing' section" in out.stderr, out.stderr
out = subprocess.run([sys.executable, table, os.path.join(work, "empty")], capture_output=True,
                     text=True)
assert out.returncode == 2 and "no " in out.stderr, out.stderr

# tools/plot.py --coef-sweep on the same runs: lb+sp+cp seeds 1-3 as the point lambda_sp = 2e-2,
# the sweep's own seeds only (1, 2) at the centre and in the L_lb line.
try:
    import matplotlib  # noqa: F401
except ImportError:
    print("ablate_table_known: matplotlib missing, --coef-sweep check not run", file=sys.stderr)
    sys.exit(0)
os.remove(os.path.join(bad, "eval.json"))
coef = os.path.join(work, "gridB", "sp_2e-2", "vanilla", "lb+sp+cp")
os.makedirs(coef)
for seed in (1, 2):
    os.symlink(os.path.join(sweep, "vanilla", "lb+sp+cp", f"seed{seed}"),
               os.path.join(coef, f"seed{seed}"))
plot = os.path.join(os.path.dirname(table), "plot.py")
out = subprocess.run([sys.executable, plot, "--coef-sweep", os.path.join(work, "gridB"),
                      "--coef-center", sweep, "--ood", "data/ood/*", "--out",
                      os.path.join(work, "plots")], capture_output=True, text=True)
assert out.returncode == 0, out.stderr
print(out.stdout)
assert os.path.getsize(os.path.join(work, "plots", "coef_sweep.png")) > 0
# lambda_sp = 0.02: seeds 1, 2 of lb+sp+cp: ppl 9, 11.5 -> 10.250 ± 1.768; the centre (2e-3)
# also holds lb+sp+cp (seeds 1, 2 only); L_lb seeds 1, 2: 10, 12 -> 11.000 ± 1.414.
for needle in ("| λ_sp | 0.02 | 2 | 10.250 ± 1.768 | 90.000 ± 0.000 |",
               "| λ_sp | 0.002 | 2 | 10.250 ± 1.768 |", "| λ_cp | 0.001 | 2 | 10.250 ± 1.768 |",
               "| (L_lb) | - | 2 | 11.000 ± 1.414 | 100.000 ± 0.000 |"):
    assert needle in out.stdout, (needle, out.stdout)
EOF
echo "ablate_table_known: OK"
