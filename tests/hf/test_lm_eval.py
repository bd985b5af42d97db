"""lm-evaluation-harness (pinned 0.4.12) on the exported model gives the same acc and acc_norm as
moeeval, on the same items, item by item (moeeval --log-samples against the harness's
--log_samples) and in total. The harness runs its own task definitions (included from its
installed task YAMLs: prompt, choices, target, metrics), pointed at the repository's data files
through `dataset_path: json` (no hub): the local files are rewritten into the schema of the hub
dataset each task expects (piqa: labels joined from valid-labels.lst; arc_easy: question.stem and
question.choices flattened as in allenai/ai2_arc). The command is printed (docs/hf.md has it)."""
import json
import os
import subprocess
import sys

import hc_lm_eval_tasks as tasks  # noqa: F401  (the local-data task definitions)
import hf_common as hc

env = hc.Env(sys.argv, "lm-eval")
LIMIT = int(os.environ.get("MOE_LM_EVAL_LIMIT", "0"))  # 0: every item of the shipped files
limit = ["--limit", str(LIMIT)] if LIMIT > 0 else []
names = ("piqa", "arc_easy")

# max_seq_len 2048: the harness cannot score a continuation longer than the model's context (it
# asserts), where moeeval splits it into windows; 2048 tokens hold every piqa / arc_easy item.
ckpt = hc.train_tiny(env, "vanilla", steps=30, model_extra={"max_seq_len": 2048})
out = env.path("hf")
hc.run([sys.executable, os.path.join(env.src, "tools", "hf", "export_hf.py"), ckpt, out])

# moeeval
hc.run([os.path.join(env.build, "apps", "moeeval"), "--checkpoint", ckpt, "--tasks",
        ",".join(names), "--task-dir", os.path.join(env.src, "data", "zeroshot"), *limit,
        "--threads", "1", "--out", env.path("moeeval.json"), "--log-samples",
        env.path("moeeval_samples")])
with open(env.path("moeeval.json")) as f:
    ours = json.load(f)["results"]

# the harness, on local files
task_dir = env.path("tasks")
local = tasks.write_local_tasks(os.path.join(env.src, "data", "zeroshot"), task_dir, names)
cmd = [os.path.join(os.path.dirname(sys.executable), "lm_eval"), "--model", "hf", "--model_args",
       f"pretrained={out},dtype=float32", "--tasks", ",".join(local.values()), "--include_path",
       task_dir, *limit, "--device", "cpu", "--batch_size", "16",
       "--output_path", env.path("lm_eval_out"), "--log_samples"]
print("$", " ".join(cmd))
r = subprocess.run(cmd, capture_output=True, text=True)
assert r.returncode == 0, r.stderr[-4000:]
res_files = [os.path.join(dp, f) for dp, _, fs in os.walk(env.path("lm_eval_out")) for f in fs
             if f.startswith("results") and f.endswith(".json")]
assert len(res_files) == 1, res_files
with open(res_files[0]) as f:
    theirs = json.load(f)["results"]

def harness_samples(task):
    files = [os.path.join(dp, f) for dp, _, fs in os.walk(env.path("lm_eval_out")) for f in fs
             if f.startswith(f"samples_{task}_")]
    assert len(files) == 1, files
    with open(files[0]) as f:
        return sorted((json.loads(line) for line in f), key=lambda x: x["doc_id"])


bad = []
agreement = {}
for name in names:
    # item by item: moeeval --log-samples against the harness's --log_samples
    with open(env.path("moeeval_samples", f"samples_{name}.jsonl")) as f:
        mine = [json.loads(line) for line in f]
    theirs_items = harness_samples(local[name])
    assert [m["doc_id"] for m in mine] == [t["doc_id"] for t in theirs_items]
    differ, max_ll = 0, 0.0
    for m, t in zip(mine, theirs_items):
        lls = [float(x[0]) for x in t["filtered_resps"]]
        max_ll = max(max_ll, max(abs(a[0] - b) for a, b in zip(m["filtered_resps"], lls)))
        assert int(t["target"]) == m["target"], (name, m["doc_id"])
        if m["acc"] != t["acc"] or m["acc_norm"] != t["acc_norm"]:
            differ += 1
            print(f"{name} doc {m['doc_id']}: moeeval {m['filtered_resps']} acc {m['acc']} "
                  f"acc_norm {m['acc_norm']}; harness {lls} acc {t['acc']} acc_norm {t['acc_norm']}")
    agreement[name] = f"{differ} / {len(mine)}"
    print(f"{name}: items that differ {differ} / {len(mine)}; max |ll difference| {max_ll:.2e}")
    if differ:
        bad.append(f"{name}: {differ} items differ")
for name in names:
    a, b = ours[name], theirs[local[name]]
    n_ours, n_theirs = a["sample_len"], json.load(open(res_files[0]))["n-samples"][local[name]]
    assert n_ours == n_theirs["effective"], (n_ours, n_theirs)
    line = (f"{name}: {n_ours} items; moeeval acc {a['acc,none']:.4f} acc_norm "
            f"{a['acc_norm,none']:.4f}; lm-eval acc {b['acc,none']:.4f} acc_norm "
            f"{b['acc_norm,none']:.4f}")
    print(line)
    for metric in ("acc,none", "acc_norm,none"):
        if abs(a[metric] - b[metric]) > 1e-12:
            bad.append(f"{name} {metric}: {a[metric]} vs {b[metric]}")
print("agreement (items that differ / items):", json.dumps(agreement))
assert not bad, bad
env.done()
