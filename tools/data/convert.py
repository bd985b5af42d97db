#!/usr/bin/python3
"""Converts downloaded upstream data files into the layouts moe-spec reads.

Standard library only. tools/fetch_data.sh downloads the files and calls this script; it can
also be run on files fetched by hand.

  convert.py tasks --src DOWNLOAD_DIR --out TASK_DIR [--only hellaswag,piqa,...] [--strict]
      Zero-shot task files, into the layout moeeval reads with --task-dir TASK_DIR
      (lib/eval/task_readers.h). DOWNLOAD_DIR/<task>/ holds the upstream files, named as
      published (SOURCES below). MMLU's CSVs are checked and copied byte for byte to
      TASK_DIR/mmlu/test/ and TASK_DIR/mmlu/dev/ (moeeval's mmlu reader renders the prompts).
      --strict: a document count other than the published split's is an error (fetch_data.sh
      passes it; the tests convert small files and do not).

  convert.py corpus --src FILE.json.gz [FILE ...] --out OUT.jsonl [--max-docs N]
      A C4 shard (gzipped JSON lines {"text", "timestamp", "url"}) into a JSONL corpus with one
      {"text": ...} per document, the form data.train / data.valid read (docs/data.md).

Every input is checked before anything is written (required fields and their types, labels in
range, one label per item); a problem exits 2 with the file, line and what was expected.
Outputs are written to a temporary name and renamed into place.
"""
import argparse
import csv
import gzip
import io
import json
import os
import sys
import tarfile
import zipfile

# Upstream files per task, as tools/fetch_data.sh saves them under DOWNLOAD_DIR/<task>/.
SOURCES = {
    "hellaswag": ["hellaswag_val.jsonl"],
    "piqa": ["valid.jsonl", "valid-labels.lst"],
    "arc": ["ARC-V1-Feb2018.zip"],
    "openbookqa": ["OpenBookQA-V1-Sep2018.zip"],
    "winogrande": ["winogrande_1.1.zip"],
    "boolq": ["BoolQ.zip", "or dev.jsonl (Google's release)"],
    "sciq": ["SciQ.zip"],
    "mmlu": ["data.tar", "or an extracted folder with test/<subject>_test.csv"],
    "lambada_openai": ["lambada_test.jsonl"],
    "copa": ["COPA.zip"],
}
# Documents in the split lm-evaluation-harness scores (--strict).
EXPECTED = {
    "hellaswag": 10042, "piqa": 1838, "arc_easy": 2376, "arc_challenge": 1172,
    "openbookqa": 500, "winogrande": 1267, "boolq": 3270, "sciq": 1000, "mmlu": 14042,
    "lambada_openai": 5153, "copa": 100,
}


class InputError(Exception):
    pass


def fail(msg):
    raise InputError(msg)


# ---- reading ---------------------------------------------------------------------------------

def parse_jsonl(data, where):
    """JSON objects of a JSON-lines byte string; blank lines allowed. Returns [(line, obj)]."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        fail(f"{where}: not UTF-8 (byte {e.start})")
    out = []
    for i, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            fail(f"{where}:{i}: not valid JSON ({e.msg})")
        if not isinstance(obj, dict):
            fail(f"{where}:{i}: expected a JSON object, found {type(obj).__name__}")
        out.append((i, obj))
    if not out:
        fail(f"{where}: no records")
    return out


def field(obj, key, kind, where):
    if key not in obj:
        fail(f"{where}: missing field '{key}'")
    value = obj[key]
    if kind is int and isinstance(value, bool):
        fail(f"{where}: field '{key}' should be an integer, found {json.dumps(value)}")
    if not isinstance(value, kind):
        fail(f"{where}: field '{key}' should be {kind.__name__}, found {json.dumps(value)[:60]}")
    return value


def read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        fail(f"{path}: cannot read ({e.strerror})")


def zip_member(zip_path, suffix):
    """Bytes of the one member of zip_path whose name ends with suffix (any top folder)."""
    try:
        with zipfile.ZipFile(zip_path) as z:
            names = [n for n in z.namelist()
                     if n.endswith(suffix) and "__MACOSX" not in n and not n.endswith("/")]
            if len(names) != 1:
                fail(f"{zip_path}: expected one member ending in '{suffix}', found {names or 'none'}")
            return names[0], z.read(names[0])
    except zipfile.BadZipFile as e:
        fail(f"{zip_path}: not a zip archive ({e})")


def find_source(src_dir, task, names):
    """The first of names that exists under src_dir/task (or, for a file, in src_dir itself)."""
    for name in names:
        p = os.path.join(src_dir, task, name)
        if os.path.exists(p):
            return p
        if os.path.isfile(os.path.join(src_dir, name)):
            return os.path.join(src_dir, name)
    fail(f"{task}: none of {names} found under {os.path.join(src_dir, task)} "
         f"(tools/fetch_data.sh downloads them)")


# ---- per-task checks and outputs -------------------------------------------------------------

def jsonl_bytes(records):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def check_arc_items(items, where):
    for line, x in items:
        at = f"{where}:{line}"
        q = field(x, "question", dict, at)
        field(q, "stem", str, at)
        choices = field(q, "choices", list, at)
        labels = [field(c, "label", str, at) for c in choices]
        for c in choices:
            field(c, "text", str, at)
        key = field(x, "answerKey", str, at)
        if key.strip() not in labels:
            fail(f"{at}: answerKey '{key}' is not one of the labels {labels}")


def convert_hellaswag(src):
    path = find_source(src, "hellaswag", SOURCES["hellaswag"])
    data = read_file(path)
    items = parse_jsonl(data, path)
    for line, x in items:
        at = f"{path}:{line}"
        for k in ("activity_label", "ctx_a", "ctx_b"):
            field(x, k, str, at)
        endings = field(x, "endings", list, at)
        if len(endings) != 4 or not all(isinstance(e, str) for e in endings):
            fail(f"{at}: 'endings' should be 4 strings")
        label = x.get("label")
        label = int(label) if isinstance(label, str) and label.isdigit() else label
        if not isinstance(label, int) or not 0 <= label <= 3:
            fail(f"{at}: 'label' should be 0..3, found {json.dumps(x.get('label'))}")
    return {"hellaswag": ("hellaswag/hellaswag_val.jsonl", data, len(items))}


def convert_piqa(src):
    jpath = find_source(src, "piqa", ["valid.jsonl"])
    lpath = find_source(src, "piqa", ["valid-labels.lst"])
    data, labels_data = read_file(jpath), read_file(lpath)
    items = parse_jsonl(data, jpath)
    for line, x in items:
        for k in ("goal", "sol1", "sol2"):
            field(x, k, str, f"{jpath}:{line}")
    labels = labels_data.decode("utf-8", "replace").split()
    if len(labels) != len(items):
        fail(f"{lpath}: {len(labels)} labels for the {len(items)} items of {jpath}")
    for i, y in enumerate(labels, 1):
        if y not in ("0", "1"):
            fail(f"{lpath}:{i}: label '{y}' (expected 0 or 1)")
    return {"piqa": ("piqa/valid.jsonl", data, len(items)),
            "piqa labels": ("piqa/valid-labels.lst", labels_data, len(labels))}


def convert_arc(src):
    path = find_source(src, "arc", SOURCES["arc"])
    out = {}
    for task, stem in (("arc_easy", "ARC-Easy"), ("arc_challenge", "ARC-Challenge")):
        member, data = zip_member(path, f"{stem}/{stem}-Test.jsonl")
        items = parse_jsonl(data, f"{path}:{member}")
        check_arc_items(items, f"{path}:{member}")
        out[task] = (f"{task}/{stem}-Test.jsonl", data, len(items))
    return out


def convert_openbookqa(src):
    path = find_source(src, "openbookqa", SOURCES["openbookqa"])
    member, data = zip_member(path, "Data/Main/test.jsonl")
    items = parse_jsonl(data, f"{path}:{member}")
    check_arc_items(items, f"{path}:{member}")
    return {"openbookqa": ("openbookqa/test.jsonl", data, len(items))}


def convert_winogrande(src):
    path = find_source(src, "winogrande", SOURCES["winogrande"])
    member, data = zip_member(path, "/dev.jsonl")
    items = parse_jsonl(data, f"{path}:{member}")
    for line, x in items:
        at = f"{path}:{member}:{line}"
        if "_" not in field(x, "sentence", str, at):
            fail(f"{at}: the sentence has no '_' blank")
        field(x, "option1", str, at)
        field(x, "option2", str, at)
        if str(x.get("answer")) not in ("1", "2"):
            fail(f"{at}: 'answer' should be \"1\" or \"2\", found {json.dumps(x.get('answer'))}")
    return {"winogrande": ("winogrande/dev.jsonl", data, len(items))}


def convert_boolq(src):
    """SuperGLUE's BoolQ/val.jsonl (label true/false or 0/1) or Google's dev.jsonl (answer
    true/false), written as Google's form {"question", "passage", "answer"} (boolq/dev.jsonl)."""
    path = find_source(src, "boolq", ["BoolQ.zip", "dev.jsonl", "val.jsonl"])
    if path.endswith(".zip"):
        member, data = zip_member(path, "BoolQ/val.jsonl")
        where = f"{path}:{member}"
    else:
        data, where = read_file(path), path
    records = []
    for line, x in parse_jsonl(data, where):
        at = f"{where}:{line}"
        rec = {"question": field(x, "question", str, at), "passage": field(x, "passage", str, at)}
        if "title" in x:
            rec["title"] = field(x, "title", str, at)
        if "answer" in x:
            rec["answer"] = field(x, "answer", bool, at)
        elif x.get("label") in (True, False, 0, 1):
            rec["answer"] = bool(x["label"])
        else:
            fail(f"{at}: expected 'answer' true/false or 'label' true/false/0/1")
        records.append(rec)
    return {"boolq": ("boolq/dev.jsonl", jsonl_bytes(records), len(records))}


def convert_sciq(src):
    path = find_source(src, "sciq", SOURCES["sciq"])
    member, data = zip_member(path, "/test.json")
    try:
        items = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(f"{path}:{member}: not a UTF-8 JSON file ({e})")
    if not isinstance(items, list) or not items:
        fail(f"{path}:{member}: expected a non-empty JSON array")
    for i, x in enumerate(items, 1):
        at = f"{path}:{member} item {i}"
        if not isinstance(x, dict):
            fail(f"{at}: expected an object")
        for k in ("question", "distractor1", "distractor2", "distractor3", "correct_answer",
                  "support"):
            field(x, k, str, at)
    return {"sciq": ("sciq/test.json", data, len(items))}


def convert_lambada(src):
    path = find_source(src, "lambada_openai", SOURCES["lambada_openai"])
    data = read_file(path)
    items = parse_jsonl(data, path)
    for line, x in items:
        if " " not in field(x, "text", str, f"{path}:{line}"):
            fail(f"{path}:{line}: the text has no space (no last word to predict)")
    return {"lambada_openai": ("lambada_openai/lambada_test.jsonl", data, len(items))}


def convert_copa(src):
    path = find_source(src, "copa", SOURCES["copa"])
    member, data = zip_member(path, "COPA/val.jsonl")
    items = parse_jsonl(data, f"{path}:{member}")
    for line, x in items:
        at = f"{path}:{member}:{line}"
        for k in ("premise", "choice1", "choice2"):
            field(x, k, str, at)
        if x.get("question") not in ("cause", "effect"):
            fail(f"{at}: 'question' should be \"cause\" or \"effect\"")
        if x.get("label") not in (0, 1) or isinstance(x.get("label"), bool):
            fail(f"{at}: 'label' should be 0 or 1")
    return {"copa": ("copa/val.jsonl", data, len(items))}


def mmlu_split_files(path, split):
    """{subject: csv bytes} of one split (test, dev), from data.tar or an extracted folder."""
    out = {}
    suffix = f"_{split}.csv"
    if os.path.isdir(path):
        split_dir = os.path.join(path, split) if os.path.isdir(os.path.join(path, split)) \
            else os.path.join(path, "data", split)
        if not os.path.isdir(split_dir):
            return out
        for name in sorted(os.listdir(split_dir)):
            if name.endswith(suffix):
                out[name[:-len(suffix)]] = read_file(os.path.join(split_dir, name))
    else:
        try:
            with tarfile.open(path) as t:
                for m in t.getmembers():
                    parts = m.name.split("/")
                    if m.isfile() and len(parts) >= 2 and parts[-2] == split \
                            and parts[-1].endswith(suffix):
                        out[parts[-1][:-len(suffix)]] = t.extractfile(m).read()
        except tarfile.TarError as e:
            fail(f"{path}: not a tar archive ({e})")
    return out


def convert_mmlu(src):
    """MMLU's CSVs as published, byte for byte, under mmlu/test/ and mmlu/dev/ (moeeval reads
    this layout: the 57 mmlu_<subject> tasks, their groups, and 5-shot from dev). Every row is
    checked here first (6 fields, answer A-D); the count is the test split's."""
    path = find_source(src, "mmlu", ["data.tar", "data", "test"])
    if os.path.basename(path) == "test":
        path = os.path.dirname(path)
    out, n_test = {}, 0
    for split in ("test", "dev"):
        files = mmlu_split_files(path, split)
        if split == "test" and not files:
            fail(f"{path}: no test/<subject>_test.csv found")
        for subject, raw in sorted(files.items()):
            where = f"{path}: {split}/{subject}_{split}.csv"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                fail(f"{where}: not UTF-8 (byte {e.start})")
            rows = 0
            for i, row in enumerate(csv.reader(io.StringIO(text, newline="")), 1):
                if len(row) != 6:
                    fail(f"{where}: row {i} has {len(row)} fields, expected 6 "
                         f"(question,A,B,C,D,answer; no header)")
                if row[5] not in ("A", "B", "C", "D"):
                    fail(f"{where}: row {i}: answer '{row[5]}' (expected A, B, C or D)")
                rows += 1
            if split == "test":
                n_test += rows
            rel = f"mmlu/{split}/{subject}_{split}.csv"
            out[rel] = (rel, raw, rows)
    out["mmlu"] = (None, None, n_test)  # the count only: the files are the entries above
    return out


CONVERTERS = {
    "hellaswag": convert_hellaswag, "piqa": convert_piqa, "arc": convert_arc,
    "openbookqa": convert_openbookqa, "winogrande": convert_winogrande, "boolq": convert_boolq,
    "sciq": convert_sciq, "mmlu": convert_mmlu, "lambada_openai": convert_lambada,
    "copa": convert_copa,
}


# ---- writing ---------------------------------------------------------------------------------

def write_atomic(path, data):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def cmd_tasks(args):
    only = list(CONVERTERS) if not args.only else args.only.split(",")
    unknown = [t for t in only if t not in CONVERTERS]
    if unknown:
        fail(f"--only: unknown {unknown} (known: {', '.join(CONVERTERS)})")
    outputs = {}
    for name in only:  # check everything before writing anything
        outputs.update(CONVERTERS[name](args.src))
    for task, (_, _, n) in outputs.items():
        want = EXPECTED.get(task)
        if want is not None and n != want:
            msg = f"{task}: {n} documents, the published split has {want}"
            if args.strict:
                fail(msg)
            print(f"convert.py: note: {msg}", file=sys.stderr)
    for task, (rel, data, n) in outputs.items():
        if rel is None:  # mmlu: its files are separate entries
            print(f"{task}: {n} -> {os.path.join(args.out, task)}/")
            continue
        write_atomic(os.path.join(args.out, rel), data)
        if not task.startswith("mmlu/"):
            print(f"{task}: {n} -> {os.path.join(args.out, rel)}")
    return 0


def cmd_corpus(args):
    docs = 0
    tmp = f"{args.out}.tmp-{os.getpid()}"
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as out:
            for src in args.src:
                opener = gzip.open if src.endswith(".gz") else open
                try:
                    with opener(src, "rt", encoding="utf-8", newline="\n") as f:
                        for i, line in enumerate(f, 1):
                            if args.max_docs and docs >= args.max_docs:
                                break
                            if not line.strip():
                                continue
                            try:
                                obj = json.loads(line)
                            except json.JSONDecodeError as e:
                                fail(f"{src}:{i}: not valid JSON ({e.msg})")
                            if not isinstance(obj, dict):
                                fail(f"{src}:{i}: expected a JSON object")
                            text = field(obj, "text", str, f"{src}:{i}")
                            if text:
                                out.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                                docs += 1
                except (OSError, EOFError, UnicodeDecodeError) as e:
                    fail(f"{src}: cannot read ({e})")
        if docs == 0:
            fail(f"{', '.join(args.src)}: no documents")
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"corpus: {docs} documents -> {args.out}")
    return 0


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tasks", help="zero-shot task files")
    t.add_argument("--src", required=True, help="download folder (one subfolder per task)")
    t.add_argument("--out", required=True, help="task folder for moeeval --task-dir")
    t.add_argument("--only", default="", help=f"comma list of: {', '.join(CONVERTERS)}")
    t.add_argument("--strict", action="store_true", help="document counts must be the published ones")
    c = sub.add_parser("corpus", help="C4 JSON-lines shards -> a JSONL corpus")
    c.add_argument("--src", required=True, nargs="+", help=".json.gz (or .json) shards")
    c.add_argument("--out", required=True, help="output .jsonl")
    c.add_argument("--max-docs", type=int, default=0, help="stop after N documents (0: all)")
    args = p.parse_args(argv)
    try:
        return cmd_tasks(args) if args.cmd == "tasks" else cmd_corpus(args)
    except InputError as e:
        print(f"convert.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
