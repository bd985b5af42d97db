"""lm-evaluation-harness task definitions over the repository's zero-shot files (no hub).

Each task YAML includes the harness's own definition of the task (its prompt, choices, target,
metrics, and process_docs / process_results / doc_to_* functions, which the harness imports from
the included YAML's own folder) and replaces only where the documents come from:
`dataset_path: json` over files rewritten into the schema of the hub dataset the harness expects.
The split the harness scores is the one moeeval scores by default (arc_easy: the Dev file, the
only one shipped; openbookqa: test; mmlu: test, with dev as its few-shot split); the others are
switched off.

What each rewrite does (the shipped files are not all in the hub's layout):
- piqa: labels joined from valid-labels.lst.
- arc_easy, openbookqa: question.stem and question.choices flattened as in allenai/ai2_arc and
  allenai/openbookqa (question_stem).
- boolq: the answer boolean becomes label 0/1 (aps/super_glue boolq).
- copa: the shipped file is MosaicML's (query = premise without its final period + ", because" /
  ", therefore", choices already first-letter-lowercased); it is turned back into SuperGLUE's
  premise / question / choice1 / choice2 / label, the premise given a final "." that the
  harness's doc_to_text drops again. Lower-casing the first letter twice is lower-casing it once.
- hellaswag: the shipped file is llama.cpp's 6-line conversion (activity_label + ": " + ctx,
  label, 4 endings) in which ctx_a and ctx_b were joined without the harness's ctx_b.capitalize().
  It is split back into activity_label / ctx_a / ctx_b where moeeval's reader splits it (ctx_b =
  the text after the last ". ", "! " or "? " when the context does not end a sentence, else
  empty); the harness's own utils.process_docs then capitalises ctx_b and preprocesses the query
  and the endings (raw, as shipped).
- lambada_openai: as shipped ({"text"}).
- mmlu: the CSV rows (read with Python's csv module) become hails/mmlu_no_train's question /
  subject / choices / answer (0..3); one local task per subject including the harness's
  mmlu_<subject>.yaml (its description line) and so its _default_template_yaml.
- truthfulqa_mc1 / mc2: the JSON's {answer: label} objects become choices / labels lists in file
  order (truthfulqa/truthful_qa multiple_choice); mc2 runs the harness's process_results_mc2."""
import bz2
import csv
import json
import os

import lm_eval

HARNESS_TASKS = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")

# The harness's default mmlu subjects (lm_eval/tasks/mmlu/default/mmlu_<subject>.yaml).
MMLU_SUBJECTS = sorted(f[len("mmlu_"):-len(".yaml")]
                       for f in os.listdir(os.path.join(HARNESS_TASKS, "mmlu", "default"))
                       if f.startswith("mmlu_") and f.endswith(".yaml"))


def _jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write(path, docs):
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    return path


class Local:
    """One local task: the harness YAML it includes, its data files and the split it scores."""

    def __init__(self, moeeval_name, harness_yaml, data_files, split):
        self.moeeval_name = moeeval_name
        self.harness_yaml = harness_yaml
        self.data_files = data_files  # {split name: path}
        self.split = split            # "validation" or "test": the one the harness scores
        self.local_name = moeeval_name + "_local"


def _piqa(src, out):
    docs = _jsonl(os.path.join(src, "piqa", "valid.jsonl"))
    with open(os.path.join(src, "piqa", "valid-labels.lst")) as f:
        labels = [int(x) for x in f.read().split()]
    assert len(docs) == len(labels)
    data = _write(os.path.join(out, "piqa.jsonl"),
                  [{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": y}
                   for d, y in zip(docs, labels)])
    return [Local("piqa", os.path.join(HARNESS_TASKS, "piqa", "piqa.yaml"),
                  {"validation": data}, "validation")]


def _arc_docs(path, stem_key):
    out = []
    for d in _jsonl(path):
        q = d["question"]
        doc = {"id": d["id"], stem_key: q["stem"],
               "choices": {"text": [c["text"] for c in q["choices"]],
                           "label": [c["label"] for c in q["choices"]]},
               "answerKey": d["answerKey"]}
        out.append(doc)
    return out


def _arc_easy(src, out):
    data = _write(os.path.join(out, "arc_easy.jsonl"),
                  _arc_docs(os.path.join(src, "arc_easy", "ARC-Easy-Dev.jsonl"), "question"))
    return [Local("arc_easy", os.path.join(HARNESS_TASKS, "arc", "arc_easy.yaml"),
                  {"validation": data}, "validation")]


def _openbookqa(src, out):
    data = _write(os.path.join(out, "openbookqa.jsonl"),
                  _arc_docs(os.path.join(src, "openbookqa", "test.jsonl"), "question_stem"))
    return [Local("openbookqa", os.path.join(HARNESS_TASKS, "openbookqa", "openbookqa.yaml"),
                  {"test": data}, "test")]


def _boolq(src, out):
    docs = []
    for i, d in enumerate(_jsonl(os.path.join(src, "boolq", "dev.jsonl"))):
        assert isinstance(d["answer"], bool), d
        docs.append({"question": d["question"], "passage": d["passage"], "idx": i,
                     "label": int(d["answer"])})
    data = _write(os.path.join(out, "boolq.jsonl"), docs)
    return [Local("boolq", os.path.join(HARNESS_TASKS, "super_glue", "boolq", "default.yaml"),
                  {"validation": data}, "validation")]


def _copa(src, out):
    docs = []
    for i, d in enumerate(_jsonl(os.path.join(src, "copa", "copa.jsonl"))):
        q = d["query"]
        if q.endswith(", because"):
            premise, question = q[:-len(", because")], "cause"
        else:
            assert q.endswith(", therefore"), q
            premise, question = q[:-len(", therefore")], "effect"
        assert len(d["choices"]) == 2, d
        docs.append({"premise": premise + ".", "question": question, "idx": i,
                     "choice1": d["choices"][0], "choice2": d["choices"][1],
                     "label": int(d["gold"])})
    data = _write(os.path.join(out, "copa.jsonl"), docs)
    return [Local("copa", os.path.join(HARNESS_TASKS, "super_glue", "copa", "default.yaml"),
                  {"validation": data}, "validation")]


def _ends_sentence(s):
    return s[-1:] in (".", "!", "?")


def _hellaswag(src, out):
    with bz2.open(os.path.join(src, "hellaswag", "hellaswag_val_full.txt.bz2"), "rt",
                  encoding="utf-8", newline="") as f:
        lines = [ln[:-1] if ln.endswith("\r") else ln for ln in f.read().split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    assert len(lines) % 6 == 0, len(lines)
    docs = []
    for i in range(0, len(lines), 6):
        query = lines[i]
        colon = query.index(": ")
        label, rest = query[:colon], query[colon + 2:]
        ctx_a, ctx_b = rest, ""
        if not _ends_sentence(query):
            frag = 0
            for stop in (". ", "! ", "? "):
                p = rest.rfind(stop)
                if p >= 0:
                    frag = max(frag, p + 2)
            ctx_a, ctx_b = rest[:max(frag - 1, 0)], rest[frag:]
        docs.append({"ind": i // 6, "activity_label": label, "ctx_a": ctx_a, "ctx_b": ctx_b,
                     "ctx": query[colon + 2:], "endings": lines[i + 2:i + 6],
                     "source_id": "", "split": "val", "split_type": "",
                     "label": lines[i + 1].strip()})
    data = _write(os.path.join(out, "hellaswag.jsonl"), docs)
    return [Local("hellaswag", os.path.join(HARNESS_TASKS, "hellaswag", "hellaswag.yaml"),
                  {"validation": data}, "validation")]


def _lambada(src, out):
    data = _write(os.path.join(out, "lambada_openai.jsonl"),
                  [{"text": d["text"]} for d in
                   _jsonl(os.path.join(src, "lambada_openai", "lambada_test.jsonl"))])
    return [Local("lambada_openai", os.path.join(HARNESS_TASKS, "lambada", "lambada_openai.yaml"),
                  {"test": data}, "test")]


def _mmlu_rows(path, subject):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    docs = []
    for r in rows:
        assert len(r) == 6 and r[5] in "ABCD", (path, r)
        docs.append({"question": r[0], "subject": subject, "choices": r[1:5],
                     "answer": "ABCD".index(r[5])})
    return docs


def mmlu_converter(subjects):
    def convert(src, out):
        locals_ = []
        for s in subjects:
            test = _write(os.path.join(out, f"mmlu_{s}_test.jsonl"),
                          _mmlu_rows(os.path.join(src, "mmlu", "test", f"{s}_test.csv"), s))
            dev = _write(os.path.join(out, f"mmlu_{s}_dev.jsonl"),
                         _mmlu_rows(os.path.join(src, "mmlu", "dev", f"{s}_dev.csv"), s))
            locals_.append(Local(f"mmlu_{s}",
                                 os.path.join(HARNESS_TASKS, "mmlu", "default", f"mmlu_{s}.yaml"),
                                 {"test": test, "dev": dev}, "test"))
        return locals_
    return convert


def _truthfulqa(src, out):
    with open(os.path.join(src, "truthfulqa", "mc_task.json"), encoding="utf-8") as f:
        items = json.load(f)  # dicts keep the file's key order
    docs = [{"question": d["question"],
             "mc1_targets": {"choices": list(d["mc1_targets"]),
                             "labels": list(d["mc1_targets"].values())},
             "mc2_targets": {"choices": list(d["mc2_targets"]),
                             "labels": list(d["mc2_targets"].values())}} for d in items]
    data = _write(os.path.join(out, "truthfulqa.jsonl"), docs)
    return [Local(f"truthfulqa_{mc}", os.path.join(HARNESS_TASKS, "truthfulqa",
                                                   f"truthfulqa_{mc}.yaml"),
                  {"validation": data}, "validation") for mc in ("mc1", "mc2")]


CONVERTERS = {"piqa": _piqa, "arc_easy": _arc_easy, "openbookqa": _openbookqa, "boolq": _boolq,
              "copa": _copa, "hellaswag": _hellaswag, "lambada_openai": _lambada,
              "mmlu": mmlu_converter(MMLU_SUBJECTS), "truthfulqa": _truthfulqa}


def write_local_tasks(zeroshot_dir, out_dir, names, mmlu_subjects=None):
    """Writes OUT/<task>_local.yaml and the rewritten data for each name of CONVERTERS (mmlu:
    the given subjects, default all 57; truthfulqa: mc1 and mc2). Returns [Local]."""
    os.makedirs(out_dir, exist_ok=True)
    out = []
    for name in names:
        conv = CONVERTERS[name]
        if name == "mmlu" and mmlu_subjects is not None:
            conv = mmlu_converter(mmlu_subjects)
        for t in conv(zeroshot_dir, out_dir):
            files = "".join(f"    {k}: {v}\n" for k, v in t.data_files.items())
            with open(os.path.join(out_dir, f"{t.local_name}.yaml"), "w") as f:
                f.write(f"include: {t.harness_yaml}\n"
                        f"task: {t.local_name}\n"
                        "tag: []\n"
                        "dataset_path: json\n"
                        "dataset_name: null\n"
                        f"dataset_kwargs:\n  data_files:\n{files}"
                        "training_split: null\n"
                        f"validation_split: {'validation' if t.split == 'validation' else 'null'}\n"
                        f"test_split: {'test' if t.split == 'test' else 'null'}\n")
            out.append(t)
    return out
