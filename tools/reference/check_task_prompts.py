#!/usr/bin/python3
"""Independent check of moeeval's zero-shot prompts: renders every document of the task files
with the harness's rules written in Python (the YAMLs and utils quoted in
the task YAMLs and utils of lm-evaluation-harness 0.4.x, summarised in docs/model.md §4.2: str methods, re.sub, ast-free literal lists) and
compares them with `moeeval --dump-requests DIR` (context, continuation, gold and the acc_norm
character counts of every request). Written from the conventions document, not from the C++.

  /usr/bin/python3 tools/reference/check_task_prompts.py TASK_DIR DUMP_DIR

Checks every task that has a dump file; exit 1 on the first differing document (printed),
2 on bad arguments.
"""
import bz2
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


TASKS = {
    "piqa": piqa,
    "arc_easy": lambda d: arc(os.path.join(d, "arc_easy", "ARC-Easy-Dev.jsonl")),
    "openbookqa": lambda d: arc(os.path.join(d, "openbookqa", "test.jsonl"), True, False),
    "boolq": boolq,
    "lambada_openai": lambada,
    "copa": copa,
    "hellaswag": hellaswag,
}


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    task_dir, dump_dir = sys.argv[1], sys.argv[2]
    checked = 0
    for name, render in TASKS.items():
        dump = os.path.join(dump_dir, name + ".jsonl")
        if not os.path.exists(dump):
            continue
        got, want = jsonl(dump), render(task_dir)
        if len(got) != len(want):
            sys.exit(f"{name}: moeeval has {len(got)} documents, the harness rules {len(want)}")
        for i, (g, w) in enumerate(zip(got, want)):
            if g["requests"] != w["requests"] or g["gold"] != w["gold"] or \
                    g["choice_chars"] != w["choice_chars"]:
                sys.exit(f"{name} document {i} differs:\n moeeval: {json.dumps(g)}\n harness: "
                         f"{json.dumps(w)}")
        print(f"{name}: {len(got)} documents identical")
        checked += 1
    if checked == 0:
        sys.exit(f"no task dump found in {dump_dir}")


if __name__ == "__main__":
    main()
