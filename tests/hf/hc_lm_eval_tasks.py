"""lm-evaluation-harness task definitions over the repository's zero-shot files (no hub).

Each task YAML includes the harness's own definition of the task (its prompt, choices, target and
metrics) and replaces only where the documents come from: `dataset_path: json` over a file
rewritten into the schema of the hub dataset the harness expects. Splits other than the one we
ship are switched off, so the harness scores the shipped split (arc_easy: the Dev file; the
harness's default is the test split, which data/zeroshot does not hold)."""
import json
import os

import lm_eval

HARNESS_TASKS = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")


def _piqa(src, dst):
    with open(os.path.join(src, "piqa", "valid.jsonl")) as f:
        docs = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(src, "piqa", "valid-labels.lst")) as f:
        labels = [int(x) for x in f.read().split()]
    assert len(docs) == len(labels)
    with open(dst, "w") as f:
        for d, y in zip(docs, labels):
            f.write(json.dumps({"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"],
                                "label": y}) + "\n")
    return os.path.join(HARNESS_TASKS, "piqa", "piqa.yaml")


def _arc_easy(src, dst):
    with open(os.path.join(src, "arc_easy", "ARC-Easy-Dev.jsonl")) as f:
        docs = [json.loads(line) for line in f if line.strip()]
    with open(dst, "w") as f:
        for d in docs:
            q = d["question"]
            f.write(json.dumps({"id": d["id"], "question": q["stem"],
                                "choices": {"text": [c["text"] for c in q["choices"]],
                                            "label": [c["label"] for c in q["choices"]]},
                                "answerKey": d["answerKey"]}) + "\n")
    return os.path.join(HARNESS_TASKS, "arc", "arc_easy.yaml")


CONVERTERS = {"piqa": _piqa, "arc_easy": _arc_easy}


def write_local_tasks(zeroshot_dir, out_dir, names):
    """Writes OUT/<name>_local.yaml and OUT/<name>.jsonl; returns {name: local task name}."""
    os.makedirs(out_dir, exist_ok=True)
    out = {}
    for name in names:
        data = os.path.join(out_dir, f"{name}.jsonl")
        harness_yaml = CONVERTERS[name](zeroshot_dir, data)
        local = f"{name}_local"
        with open(os.path.join(out_dir, f"{local}.yaml"), "w") as f:
            f.write(f"include: {harness_yaml}\n"
                    f"task: {local}\n"
                    "tag: []\n"
                    "dataset_path: json\n"
                    "dataset_name: null\n"
                    f"dataset_kwargs:\n  data_files:\n    validation: {data}\n"
                    "training_split: null\n"
                    "validation_split: validation\n"
                    "test_split: null\n")
        out[name] = local
    return out
