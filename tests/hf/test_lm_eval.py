"""lm-evaluation-harness (pinned 0.4.12) on the exported model gives the same acc and acc_norm as
moeeval, on the same items, item by item (moeeval --log-samples against the harness's
--log_samples) and in total, for every task whose files data/zeroshot ships: piqa, arc_easy,
openbookqa, boolq, copa, hellaswag, lambada_openai, mmlu (per subject) and truthfulqa_mc1 / mc2.
The harness runs its own task definitions (included from its installed task YAMLs: prompt,
choices, target, metrics, process_docs / process_results), pointed at the repository's data files
through `dataset_path: json` (no hub): hc_lm_eval_tasks.py rewrites the local files into the
schema of the hub dataset each task expects. Besides acc / acc_norm, every item's prompt
(context and continuations, the harness's `arguments`) and gold must be the same, and the
log-likelihoods may differ by float rounding only.

Environment (the defaults are what ctest runs; docs/eval.md records a run over every item):
  MOE_LM_EVAL_LIMIT  items per task (the first N of each; mmlu: per subject). Default 60; 0 = all.
  MOE_LM_EVAL_TASKS  comma list of the tasks above (default: all of them).
  MOE_LM_EVAL_MMLU   comma list of mmlu subjects (default: five, with long and short contexts);
                     "all" = the 57 of the harness's default mmlu.
  MOE_LM_EVAL_FEWSHOT  K > 0: mmlu only, K-shot from its dev split (moeeval --num-fewshot K,
                     lm_eval --num_fewshot K). Default 0.
The command is printed (docs/hf.md has it)."""
import json
import math
import os
import subprocess
import sys

import hc_lm_eval_tasks as tasks
import hf_common as hc

env = hc.Env(sys.argv, "lm-eval")
LIMIT = int(os.environ.get("MOE_LM_EVAL_LIMIT", "60"))
limit = ["--limit", str(LIMIT)] if LIMIT > 0 else []
names = os.environ.get("MOE_LM_EVAL_TASKS", ",".join(tasks.CONVERTERS)).split(",")
mmlu = os.environ.get("MOE_LM_EVAL_MMLU", "abstract_algebra,high_school_european_history,"
                      "professional_law,us_foreign_policy,world_religions")
mmlu = tasks.MMLU_SUBJECTS if mmlu == "all" else mmlu.split(",")
FEWSHOT = int(os.environ.get("MOE_LM_EVAL_FEWSHOT", "0"))
assert FEWSHOT == 0 or names == ["mmlu"], "MOE_LM_EVAL_FEWSHOT needs MOE_LM_EVAL_TASKS=mmlu"
fewshot = ["--num-fewshot", str(FEWSHOT)] if FEWSHOT else []
MC2_TOL = 1e-5  # mc2's acc is a probability mass (a float), not a 0/1 prediction
# Log-likelihoods: relative to |ll|. The harness's batched forward (batch 16, right-padded, f32)
# moves an ll by up to 8e-5 of itself against its own --batch_size 1 value (hellaswag doc 7519:
# -348.984 batched, -348.9556 alone; moeeval -348.9556; docs/hf.md), so the bound is 2e-4.
LL_REL_TOL = 2e-4

# max_seq_len 2048: the harness cannot score a continuation longer than the model's context (it
# asserts), where moeeval splits it into windows; 2048 tokens hold every continuation shipped.
ckpt = hc.train_tiny(env, "vanilla", steps=30, model_extra={"max_seq_len": 2048})
out = env.path("hf")
hc.run([sys.executable, os.path.join(env.src, "tools", "hf", "export_hf.py"), ckpt, out])

task_dir = env.path("tasks")
local = tasks.write_local_tasks(os.path.join(env.src, "data", "zeroshot"), task_dir, names,
                                mmlu_subjects=mmlu)

# moeeval
moeeval_cmd = [os.path.join(env.build, "apps", "moeeval"), "--checkpoint", ckpt, "--tasks",
               ",".join(t.moeeval_name for t in local), "--task-dir",
               os.path.join(env.src, "data", "zeroshot"), *limit, *fewshot, "--threads", "1",
               "--out", env.path("moeeval.json"), "--log-samples", env.path("moeeval_samples")]
print("$", " ".join(moeeval_cmd), flush=True)
hc.run(moeeval_cmd)
with open(env.path("moeeval.json")) as f:
    ours = json.load(f)["results"]

# the harness, on local files
cmd = [os.path.join(os.path.dirname(sys.executable), "lm_eval"), "--model", "hf", "--model_args",
       f"pretrained={out},dtype=float32", "--tasks", ",".join(t.local_name for t in local),
       "--include_path", task_dir, *limit, *(["--num_fewshot", str(FEWSHOT)] if FEWSHOT else []),
       "--device", "cpu", "--batch_size", "16",
       "--output_path", env.path("lm_eval_out"), "--log_samples"]
print("$", " ".join(cmd), flush=True)
r = subprocess.run(cmd, capture_output=True, text=True)
assert r.returncode == 0, r.stderr[-4000:]
res_files = [os.path.join(dp, f) for dp, _, fs in os.walk(env.path("lm_eval_out")) for f in fs
             if f.startswith("results") and f.endswith(".json")]
assert len(res_files) == 1, res_files
with open(res_files[0]) as f:
    res = json.load(f)
theirs, n_samples = res["results"], res["n-samples"]


def harness_samples(task):
    files = [os.path.join(dp, f) for dp, _, fs in os.walk(env.path("lm_eval_out")) for f in fs
             if f.startswith(f"samples_{task}_")]
    assert len(files) == 1, files
    with open(files[0]) as f:
        return sorted((json.loads(line) for line in f), key=lambda x: x["doc_id"])


def harness_requests(t):
    """[(context, continuation)] of one harness sample, in choice order."""
    args = t["arguments"]
    if isinstance(args, dict):  # {"gen_args_0": {"arg_0": ctx, "arg_1": cont}, ...}
        args = [args[k] for k in sorted(args, key=lambda k: int(k.rsplit("_", 1)[1]))]
        return [(a["arg_0"], a["arg_1"]) for a in args]
    return [tuple(a) for a in args]


def harness_resps(t):
    """[(log-likelihood, is_greedy)] per choice (the harness logs both as strings)."""
    resps = t["filtered_resps"]
    if resps and not isinstance(resps[0], list):  # loglikelihood task: one [ll, greedy]
        resps = [resps]
    return [(float(x[0]), str(x[1]) == "True") for x in resps]


bad, rows = [], []
pooled = {}  # mmlu over the subjects run: [items, moeeval correct, harness correct]
for t in local:
    name = t.moeeval_name
    with open(env.path("moeeval_samples", f"samples_{name}.jsonl")) as f:
        mine = [json.loads(line) for line in f]
    theirs_items = harness_samples(t.local_name)
    assert [m["doc_id"] for m in mine] == [x["doc_id"] for x in theirs_items], name
    metrics = [k for k in ("acc", "acc_norm") if k in theirs_items[0]]
    differ, max_ll, max_rel, prompt_differ, max_mass, greedy_differ = 0, 0.0, 0.0, 0, 0.0, 0
    for m, x in zip(mine, theirs_items):
        doc = f"{name} doc {m['doc_id']}"
        reqs = harness_requests(x)
        if [(m["prompt"], c) for c in m["choices"]] != reqs:
            prompt_differ += 1
            if prompt_differ <= 3:
                print(f"{doc}: requests differ: moeeval {m['prompt']!r} {m['choices']!r}; "
                      f"harness {reqs!r}")
        lls = [ll for ll, _ in harness_resps(x)]
        if [g for _, g in harness_resps(x)] != [bool(a[1]) for a in m["filtered_resps"]]:
            greedy_differ += 1
        ours_ll = [a[0] for a in m["filtered_resps"]]
        assert len(ours_ll) == len(lls), doc
        max_ll = max(max_ll, max(abs(a - b) for a, b in zip(ours_ll, lls)))
        max_rel = max(max_rel, max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(ours_ll, lls)))
        if isinstance(x["target"], str) and not x["target"].isdigit():  # copa, lambada
            if t.moeeval_name != "lambada_openai":
                assert [c for _, c in reqs].index(" " + x["target"]) == m["target"], doc
        else:
            assert int(x["target"]) == m["target"], doc
        same = True
        for k in metrics:
            if name == "truthfulqa_mc2":
                max_mass = max(max_mass, abs(m[k] - x[k]))
                same &= abs(m[k] - x[k]) <= MC2_TOL
            else:
                same &= m[k] == x[k]
        if not same:
            differ += 1
            if differ <= 10:
                print(f"{doc}: moeeval {m['filtered_resps']} "
                      f"{ {k: m[k] for k in metrics} }; harness {lls} "
                      f"{ {k: x[k] for k in metrics} }")
    a, b = ours[name], theirs[t.local_name]
    n = n_samples[t.local_name]["effective"]
    assert a["sample_len"] == n == len(mine), (name, a["sample_len"], n, len(mine))
    row = {"task": name, "differ": differ, "items": n, "max_ll": max_ll, "max_rel_ll": max_rel,
           "prompts_differ": prompt_differ, "greedy_differ": greedy_differ}
    if "perplexity,none" in b:  # lambada_openai: exp(-mean ll) on both sides
        row["perplexity"] = (a["perplexity,none"], b["perplexity,none"])
        if abs(a["perplexity,none"] / b["perplexity,none"] - 1) > 1e-6:
            bad.append(f"{name} perplexity: moeeval {a['perplexity,none']} vs harness "
                       f"{b['perplexity,none']}")
    if name == "truthfulqa_mc2":
        row["max_mass_diff"] = max_mass
    for k in metrics:
        row[k] = (a[f"{k},none"], b[f"{k},none"])
        tol = MC2_TOL if name == "truthfulqa_mc2" else 1e-12
        if abs(a[f"{k},none"] - b[f"{k},none"]) > tol:
            bad.append(f"{name} {k}: moeeval {a[f'{k},none']} vs harness {b[f'{k},none']}")
    if name.startswith("mmlu_"):
        p = pooled.setdefault("mmlu", [0, 0.0, 0.0])
        p[0] += n
        p[1] += sum(m["acc"] for m in mine)
        p[2] += sum(x["acc"] for x in theirs_items)
    rows.append(row)
    print(f"{name}: {n} items, {differ} differ, {prompt_differ} prompts differ, "
          f"{greedy_differ} is_greedy differ, max |ll diff| "
          f"{max_ll:.2e} ({max_rel:.1e} of |ll|); "
          + "; ".join(f"{k} moeeval {row[k][0]:.4f} harness {row[k][1]:.4f}" for k in metrics),
          flush=True)
    if differ:
        bad.append(f"{name}: {differ} of {n} items differ")
    if greedy_differ:
        bad.append(f"{name}: {greedy_differ} of {n} items have different is_greedy flags")
    if prompt_differ:
        bad.append(f"{name}: {prompt_differ} of {n} items have different requests")
    if not max_rel <= LL_REL_TOL or math.isnan(max_rel):
        bad.append(f"{name}: log-likelihoods differ by {max_rel} of |ll| > {LL_REL_TOL}")
for k, (n, c_ours, c_theirs) in pooled.items():
    print(f"{k} ({len(mmlu)} subjects, question-weighted): {n} items, acc moeeval "
          f"{c_ours / n:.4f} harness {c_theirs / n:.4f}")
    if c_ours != c_theirs:
        bad.append(f"{k}: pooled acc differs")
with open(env.path("agreement.json"), "w") as f:
    json.dump(rows, f, indent=1)
print("agreement:", json.dumps(rows))
assert not bad, bad
env.done()
