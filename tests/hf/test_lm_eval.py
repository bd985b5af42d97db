"""lm-evaluation-harness (pinned 0.4.12) on the exported model gives the same acc and acc_norm as
moeeval, on the same items. The harness runs its own task definitions (included from its
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
        "--threads", "1", "--out", env.path("moeeval.json")])
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

bad = []
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
assert not bad, bad
env.done()
