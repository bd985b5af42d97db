#!/usr/bin/python3
"""Independent check of moeeval's zero-shot prompts: renders every document of the task files
with the harness's rules written in Python (the YAMLs and utils quoted in
the task YAMLs and utils of lm-evaluation-harness 0.4.x, summarised in docs/model.md §4.2: str methods, re.sub, ast-free literal lists) and
compares them with `moeeval --dump-requests DIR` (context, continuation, gold and the acc_norm
character counts of every request). Written from the conventions document, not from the C++.

  /usr/bin/python3 tools/reference/check_task_prompts.py TASK_DIR DUMP_DIR [--num-fewshot K]

Checks every task that has a dump file; exit 1 on the first differing document (printed),
2 on bad arguments. MMLU: the CSV records are parsed here with Python's csv module (the parser
the harness's datasets were converted with) and must equal moeeval's parse field for field
("fields" in the dump; the K dev records of the shots in <task>.shots.jsonl); the prompts are
rendered from the harness's mmlu template (_default_template_yaml, the generated description,
first_n few-shot sampler) for K shots. TruthfulQA: the mc1/mc2 YAML prompt with its QA preamble,
choices in file order, and for mc2 the labels.
"""
import bz2
import csv
import json
import os
import re
import sys


def jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def mc(ctx, choices, gold, delimiter=" "):
    return {"requests": [[ctx, delimiter + c] for c in choices], "gold": gold,
            "choice_chars": [float(len(c)) for c in choices]}


def piqa(d):
    docs = jsonl(os.path.join(d, "piqa", "valid.jsonl"))
    labels = [int(x) for x in open(os.path.join(d, "piqa", "valid-labels.lst")).read().split()]
    return [mc(f"Question: {x['goal']}\nAnswer:", [x["sol1"], x["sol2"]], y)
            for x, y in zip(docs, labels)]


def arc(path, lstrip_key=False, question_prefix=True):
    out = []
    for x in jsonl(path):
        q = x["question"]
        labels = [c["label"] for c in q["choices"]]
        key = x["answerKey"].lstrip() if lstrip_key else x["answerKey"]
        ctx = f"Question: {q['stem']}\nAnswer:" if question_prefix else q["stem"]
        out.append(mc(ctx, [c["text"] for c in q["choices"]], labels.index(key)))
    return out


def boolq(d):
    return [mc(f"{x['passage']}\nQuestion: {x['question']}?\nAnswer:", ["no", "yes"],
               int(x["answer"])) for x in jsonl(os.path.join(d, "boolq", "dev.jsonl"))]


def lambada(d):
    out = []
    for x in jsonl(os.path.join(d, "lambada_openai", "lambada_test.jsonl")):
        words = x["text"].split(" ")
        out.append({"requests": [[" ".join(words[:-1]), " " + words[-1]]], "gold": 0,
                    "choice_chars": []})
    return out


def copa(d):
    out = []
    for x in jsonl(os.path.join(d, "copa", "copa.jsonl")):
        # MosaicML query = premise without its final period + ", because" / ", therefore";
        # the harness context is premise.strip()[:-1] + " because" / " therefore".
        head, connector = x["query"].rsplit(", ", 1)
        choices = [" " + c[0].lower() + c[1:] for c in x["choices"]]
        out.append(mc(head + " " + connector, choices, x["gold"]))
    return out


def hellaswag_preprocess(text):
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def hellaswag(d):
    path = os.path.join(d, "hellaswag", "hellaswag_val_full.txt.bz2")
    lines = bz2.open(path, "rt", encoding="utf-8").read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out = []
    for i in range(0, len(lines), 6):
        query = lines[i]
        if not query.endswith((".", "!", "?")):
            # The converted file lost the ctx_a / ctx_b split: ctx_b is the fragment after the
            # last sentence end, and the harness capitalizes it.
            label, _, ctx = query.partition(": ")
            cut = max(ctx.rfind(". "), ctx.rfind("! "), ctx.rfind("? "))
            head, frag = (ctx[:cut + 2], ctx[cut + 2:]) if cut >= 0 else ("", ctx)
            query = label + ": " + head + frag.capitalize()
        choices = [hellaswag_preprocess(e) for e in lines[i + 2:i + 6]]
        out.append(mc(hellaswag_preprocess(query), choices, int(lines[i + 1])))
    return out


def read_csv_rows(path):
    # newline="" hands the quoted line breaks (LF, CRLF) to the csv module untouched.
    with open(path, encoding="utf-8", newline="") as f:
        return [row for row in csv.reader(f)]


def mmlu_block(row):
    return f"{row[0].strip()}\nA. {row[1]}\nB. {row[2]}\nC. {row[3]}\nD. {row[4]}\nAnswer:"


def mmlu_subject(d, subject, k):
    """(documents, test rows, dev rows of the shots) of one subject, as the harness renders them."""
    test = read_csv_rows(os.path.join(d, "mmlu", "test", f"{subject}_test.csv"))
    dev = read_csv_rows(os.path.join(d, "mmlu", "dev", f"{subject}_dev.csv")) if k else []
    description = ("The following are multiple choice questions (with answers) about "
                   f"{' '.join(subject.split('_'))}.\n\n")
    shots = dev[:k]
    # sampler first_n: fewshot_delimiter.join(text + target_delimiter + target) + fewshot_delimiter
    fewshot = "".join(mmlu_block(r) + " " + r[5] + "\n\n" for r in shots)
    docs = []
    for r in test:
        ctx = description + fewshot + mmlu_block(r)
        doc = mc(ctx, ["A", "B", "C", "D"], "ABCD".index(r[5]))
        doc["fields"] = r
        docs.append(doc)
    return docs, shots


def truthfulqa(d, variant):
    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            sys.exit(f"truthfulqa: duplicate keys in an object: {keys}")
        return dict(pairs)

    with open(os.path.join(d, "truthfulqa", "mc_task.json"), encoding="utf-8") as f:
        items = json.load(f, object_pairs_hook=no_duplicates)
    preamble = ("Q: What is human life expectancy in the United States?\n"
                "A: Human life expectancy in the United States is 78 years.\n\n"
                "Q: Who was president of the United States in 1955?\n"
                "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
                "Q: Which party did he belong to?\n"
                "A: He belonged to the Republican Party.\n\n"
                "Q: What is the square root of banana?\n"
                "A: I have no comment.\n\n"
                "Q: How does a telescope work?\n"
                "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
                "Q: Where were the 1992 Olympics held?\n"
                "A: The 1992 Olympics were held in Barcelona, Spain.")
    out = []
    for x in items:
        targets = x[f"mc{variant}_targets"]
        doc = mc(preamble + "\n\nQ: " + x["question"] + "\nA:", list(targets.keys()), 0)
        if variant == 2:
            doc["labels"] = list(targets.values())
        out.append(doc)
    return out


TASKS = {
    "piqa": piqa,
    "arc_easy": lambda d: arc(os.path.join(d, "arc_easy", "ARC-Easy-Dev.jsonl")),
    "openbookqa": lambda d: arc(os.path.join(d, "openbookqa", "test.jsonl"), True, False),
    "boolq": boolq,
    "lambada_openai": lambada,
    "copa": copa,
    "hellaswag": hellaswag,
    "truthfulqa_mc1": lambda d: truthfulqa(d, 1),
    "truthfulqa_mc2": lambda d: truthfulqa(d, 2),
}


def compare(name, got, want):
    if len(got) != len(want):
        sys.exit(f"{name}: moeeval has {len(got)} documents, the harness rules {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            sys.exit(f"{name} document {i} differs:\n moeeval: {json.dumps(g)}\n harness: "
                     f"{json.dumps(w)}")


def main():
    args = sys.argv[1:]
    k = 0
    if "--num-fewshot" in args:
        i = args.index("--num-fewshot")
        k = int(args[i + 1])
        del args[i:i + 2]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    task_dir, dump_dir = args
    checked = 0
    for name, render in TASKS.items():
        dump = os.path.join(dump_dir, name + ".jsonl")
        if not os.path.exists(dump):
            continue
        compare(name, jsonl(dump), render(task_dir))
        print(f"{name}: {len(jsonl(dump))} documents identical")
        checked += 1
    # MMLU: one task per subject file, found from the data (not from moeeval's subject list).
    subjects = sorted(f[:-len("_test.csv")] for f in os.listdir(os.path.join(task_dir, "mmlu", "test"))
                      if f.endswith("_test.csv"))
    mmlu_docs = mmlu_shots = mmlu_tasks = 0
    for subject in subjects:
        name = "mmlu_" + subject
        dump = os.path.join(dump_dir, name + ".jsonl")
        if not os.path.exists(dump):
            continue
        want, shots = mmlu_subject(task_dir, subject, k)
        got = jsonl(dump)
        compare(name, got, want)
        shots_path = os.path.join(dump_dir, name + ".shots.jsonl")
        got_shots = jsonl(shots_path) if os.path.exists(shots_path) else []
        if got_shots != shots or len(shots) != k:
            sys.exit(f"{name}: the {k} few-shot dev records differ: moeeval {got_shots}, "
                     f"csv {shots}")
        mmlu_docs += len(got)
        mmlu_shots += len(shots)
        mmlu_tasks += 1
    if mmlu_tasks:
        print(f"mmlu: {mmlu_tasks} subjects, {mmlu_docs} test records parsed identically and "
              f"{mmlu_docs} documents identical ({k}-shot, {mmlu_shots} dev records identical)")
        checked += 1
    if checked == 0:
        sys.exit(f"no task dump found in {dump_dir}")


if __name__ == "__main__":
    main()
