#!/usr/bin/python3
"""The conversion step of tools/fetch_data.sh (tools/data/convert.py), tested without a network.

1. Small files in each upstream format (the archives and files fetch_data.sh downloads, with
   their member paths), written here, are converted; `moeeval --dump-requests` must read every
   converted task, and each document's requests must be the harness's rendering of the fixture
   (expected strings written out below, from the task YAMLs, not from the C++ readers).
2. The shipped files of data/zeroshot that are in upstream format (PIQA, BoolQ, LAMBADA, MMLU;
   OpenBookQA and ARC-Easy-Dev packed into their upstream zip layout) are converted with
   --strict; moeeval must read the results with the same requests as the shipped files.
3. Bad input is refused with exit 2, naming the file, and nothing is written.
4. A C4-format shard (gzipped JSON lines) becomes a JSONL corpus that moetrain trains on.

Usage: convert_check.py BUILD_DIR SOURCE_DIR WORK_DIR
"""
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile

BUILD, SRC, WORK = (os.path.abspath(a) for a in sys.argv[1:4])
CONVERT = [sys.executable, os.path.join(SRC, "tools", "data", "convert.py")]
MOEEVAL = os.path.join(BUILD, "apps", "moeeval")
MOETRAIN = os.path.join(BUILD, "apps", "moetrain")
SHIPPED = os.path.join(SRC, "data", "zeroshot")


def fail(msg):
    print(f"convert_check: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def run(cmd, expect=0):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != expect:
        fail(f"{' '.join(cmd)}\nexit {r.returncode}, expected {expect}\n{r.stdout}{r.stderr}")
    return r


def jl(records):
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def write_zip(path, members):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def dump(task_dir, tasks, out):
    os.makedirs(out)
    run([MOEEVAL, "--dump-requests", out, "--task-dir", task_dir, "--log-level", "error",
         "--tasks", ",".join(tasks)])
    docs = {}
    for t in tasks:
        with open(os.path.join(out, t + ".jsonl"), encoding="utf-8") as f:
            docs[t] = [json.loads(line) for line in f if line.strip()]
    return docs


def mc(ctx, conts, gold):
    return {"requests": [[ctx, c] for c in conts], "gold": gold}


def check_docs(task, got, want):
    if len(got) != len(want):
        fail(f"{task}: moeeval read {len(got)} documents, expected {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        g = {"requests": g["requests"], "gold": g["gold"]}
        if g != w:
            fail(f"{task} document {i}:\n got  {json.dumps(g)}\n want {json.dumps(w)}")


# ---- 1. fixtures in the upstream formats -----------------------------------------------------
DL = os.path.join(WORK, "download")
write(os.path.join(DL, "hellaswag", "hellaswag_val.jsonl"), jl([
    {"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.",
     "ctx_b": "he", "ctx": "A man is sitting on a roof. he", "split": "val", "split_type": "indomain",
     "label": 3, "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                             "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
     "source_id": "activitynet~v_-JhWjGDPHMY"},
    {"ind": 92, "activity_label": "Clean and jerk", "ctx_a": "[header] How to lift. [title] Stand",
     "ctx_b": "then, John lifts", "label": 0,
     "endings": ["the  bar [step] up.", "a [substeps] b", "c", "d"]}]))
write(os.path.join(DL, "piqa", "valid.jsonl"), jl([
    {"goal": "How do I ready a guinea pig cage for it's new occupants?",
     "sol1": "Provide the guinea pig with a cage full of a few inches of bedding.",
     "sol2": "Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips."},
    {"goal": "dresser", "sol1": "can hold clothes", "sol2": "can hold a car"}]))
write(os.path.join(DL, "piqa", "valid-labels.lst"), "1\n0\n")
arc_item = {"id": "Mercury_7175875", "question": {"stem": "An astronomer observes that a planet rotates faster?",
            "choices": [{"text": "Planetary density will decrease.", "label": "A"},
                        {"text": "Planetary years will become longer.", "label": "B"},
                        {"text": "Planetary days will become shorter.", "label": "C"}]},
            "answerKey": "C"}
arc_num = {"id": "NYSEDREGENTS_2015_4_7", "question": {"stem": "Which is a mixture?",
           "choices": [{"text": "salt", "label": "1"}, {"text": "sugar", "label": "2"},
                       {"text": "trail mix", "label": "3"}, {"text": "water", "label": "4"}]},
           "answerKey": "3"}
write_zip(os.path.join(DL, "arc", "ARC-V1-Feb2018.zip"), {
    "ARC-V1-Feb2018-2/ARC-Easy/ARC-Easy-Test.jsonl": jl([arc_item, arc_num]),
    "ARC-V1-Feb2018-2/ARC-Easy/ARC-Easy-Dev.jsonl": jl([arc_num]),
    "ARC-V1-Feb2018-2/ARC-Challenge/ARC-Challenge-Test.jsonl": jl([arc_num]),
    "ARC-V1-Feb2018-2/ARC-Challenge/ARC-Challenge-Train.jsonl": jl([arc_item])})
obqa_item = {"id": "8-343", "question": {"stem": "A person wants to start saving money ",
             "choices": [{"text": "make more phone calls", "label": "A"},
                         {"text": "quit eating lunch out", "label": "B"}]}, "answerKey": " B"}
write_zip(os.path.join(DL, "openbookqa", "OpenBookQA-V1-Sep2018.zip"), {
    "OpenBookQA-V1-Sep2018/Data/Main/test.jsonl": jl([obqa_item]),
    "OpenBookQA-V1-Sep2018/Data/Main/dev.jsonl": jl([obqa_item, obqa_item]),
    "OpenBookQA-V1-Sep2018/Data/Additional/test_complete.jsonl": jl([obqa_item])})
write_zip(os.path.join(DL, "winogrande", "winogrande_1.1.zip"), {
    "winogrande_1.1/dev.jsonl": jl([
        {"qID": "1", "sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
         "option1": "Sarah", "option2": "Maria", "answer": "1"},
        {"qID": "2", "sentence": "He poured the water into the cup until _.", "option1": "it",
         "option2": "the cup", "answer": "2"}]),
    "winogrande_1.1/train_xl.jsonl": jl([]),
    "__MACOSX/winogrande_1.1/._dev.jsonl": b"\x00\x05"})
write_zip(os.path.join(DL, "boolq", "BoolQ.zip"), {
    "BoolQ/val.jsonl": jl([
        {"question": "does ethanol take more energy make that produces", "passage": "Ethanol fuel -- ...",
         "idx": 0, "label": False},
        {"question": "is house tax and property tax are same", "passage": "Property tax -- ...",
         "idx": 1, "label": True}]),
    "BoolQ/train.jsonl": jl([])})
write_zip(os.path.join(DL, "sciq", "SciQ.zip"), {
    "SciQ dataset-2 3/test.json": json.dumps([
        {"question": "What type of organism is commonly used in preparation of foods such as cheese?",
         "distractor3": "viruses", "distractor1": "protozoa", "distractor2": "gymnosperms",
         "correct_answer": "mesophilic organisms", "support": "  Mesophiles grow best."},
        {"question": "What is the fixed point?", "distractor3": "a", "distractor1": "b",
         "distractor2": "c", "correct_answer": "d", "support": ""}]),
    "SciQ dataset-2 3/train.json": "[]"})
write(os.path.join(DL, "lambada_openai", "lambada_test.jsonl"),
      jl([{"text": "In my palm is a clear stone, and inside it is a small ivory statuette. Marco"}]))
write_zip(os.path.join(DL, "copa", "COPA.zip"), {
    "COPA/val.jsonl": jl([
        {"premise": "The man turned on the faucet.", "choice1": "The toilet filled with water.",
         "choice2": "Water flowed from the spout.", "question": "effect", "label": 1, "idx": 0}])})
mmlu_tar = os.path.join(DL, "mmlu", "data.tar")
os.makedirs(os.path.dirname(mmlu_tar), exist_ok=True)
with tarfile.open(mmlu_tar, "w") as t:
    for name, data in {
            "data/test/college_physics_test.csv":
                b'" Which is a vector?\r\nPick one. ",speed,velocity,mass,"time, ""t"""\r\n'
                b'2+2?,3,4,5,6\n',
            "data/test/astronomy_test.csv": b"What is the Sun?,a star,a planet,a moon,a comet,A",
            "data/dev/astronomy_dev.csv": b"x,a,b,c,d,A\n"}.items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
# The physics rows lack their answer column on purpose; fixed below after the refusal check.

# 3 (first part). Bad input: exit 2 naming the file; nothing written.
OUT = os.path.join(WORK, "zeroshot")
r = run(CONVERT + ["tasks", "--src", DL, "--out", OUT], expect=2)
if "college_physics_test.csv" not in r.stderr or "expected 6" not in r.stderr:
    fail(f"a 5-field MMLU row was not refused with the file named: {r.stderr}")
if os.path.exists(OUT):
    fail("a refused conversion wrote output")
with tarfile.open(mmlu_tar, "w") as t:
    for name, data in {
            "data/test/college_physics_test.csv":
                b'" Which is a vector?\r\nPick one. ",speed,velocity,mass,"time, ""t""",B\r\n'
                b'2+2?,3,4,5,6,B',
            "data/test/astronomy_test.csv": b"What is the Sun?,a star,a planet,a moon,a comet,A",
            "data/dev/astronomy_dev.csv": b"x,a,b,c,d,A\n"}.items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))

r = run(CONVERT + ["tasks", "--src", DL, "--out", OUT])
r2 = run(CONVERT + ["tasks", "--src", DL, "--out", OUT + "-strict", "--strict"], expect=2)
if "published split" not in r2.stderr:
    fail(f"--strict accepted a 2-document hellaswag: {r2.stderr}")

TASKS = ["hellaswag", "piqa", "arc_easy", "arc_challenge", "openbookqa", "winogrande", "boolq",
         "sciq", "lambada_openai", "copa", "mmlu_college_physics", "mmlu_astronomy"]
got = dump(OUT, TASKS, os.path.join(WORK, "dump"))
ABCD = [" A", " B", " C", " D"]
phys = "The following are multiple choice questions (with answers) about college physics.\n\n"
astro = "The following are multiple choice questions (with answers) about astronomy.\n\n"
want = {
    "hellaswag": [
        mc("Roof shingle removal: A man is sitting on a roof. He",
           [" is using wrap to wrap a pair of skis.", " is ripping level tiles off.",
            " is holding a rubik's cube.", " starts pulling up roofing on a roof."], 3),
        # preprocess: " [title]" -> ". ", [..] spans dropped, one pass of "  " -> " ";
        # ctx_b.capitalize() lower-cases "John".
        mc("Clean and jerk: How to lift.. Stand Then, john lifts", [" the bar up.", " a b", " c", " d"], 0)],
    "piqa": [
        mc("Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:",
           [" Provide the guinea pig with a cage full of a few inches of bedding.",
            " Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips."], 1),
        mc("Question: dresser\nAnswer:", [" can hold clothes", " can hold a car"], 0)],
    "arc_easy": [
        mc("Question: An astronomer observes that a planet rotates faster?\nAnswer:",
           [" Planetary density will decrease.", " Planetary years will become longer.",
            " Planetary days will become shorter."], 2),
        mc("Question: Which is a mixture?\nAnswer:", [" salt", " sugar", " trail mix", " water"], 2)],
    "arc_challenge": [mc("Question: Which is a mixture?\nAnswer:", [" salt", " sugar", " trail mix", " water"], 2)],
    # the stem is the context as is (its trailing space moves to the continuation only when
    # tokenizing); answerKey " B" is lstripped
    "openbookqa": [mc("A person wants to start saving money ",
                      [" make more phone calls", " quit eating lunch out"], 1)],
    "winogrande": [
        {"requests": [["Sarah was a much better surgeon than Maria so Sarah", " always got the harder cases."],
                      ["Sarah was a much better surgeon than Maria so Maria", " always got the harder cases."]],
         "gold": 0},
        {"requests": [["He poured the water into the cup until it", " ."],
                      ["He poured the water into the cup until the cup", " ."]], "gold": 1}],
    "boolq": [
        mc("Ethanol fuel -- ...\nQuestion: does ethanol take more energy make that produces?\nAnswer:", [" no", " yes"], 0),
        mc("Property tax -- ...\nQuestion: is house tax and property tax are same?\nAnswer:", [" no", " yes"], 1)],
    "sciq": [
        mc("Mesophiles grow best.\nQuestion: What type of organism is commonly used in preparation of foods such as cheese?\nAnswer:",
           [" protozoa", " gymnosperms", " viruses", " mesophilic organisms"], 3),
        mc("\nQuestion: What is the fixed point?\nAnswer:", [" b", " c", " a", " d"], 3)],
    "lambada_openai": [{"requests": [["In my palm is a clear stone, and inside it is a small ivory statuette.",
                                      " Marco"]], "gold": 0}],
    "copa": [mc("The man turned on the faucet therefore",
                ["  the toilet filled with water.", "  water flowed from the spout."], 1)],
    "mmlu_college_physics": [
        mc(phys + "Which is a vector?\r\nPick one.\nA. speed\nB. velocity\nC. mass\nD. time, \"t\"\nAnswer:", ABCD, 1),
        mc(phys + "2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:", ABCD, 1)],
    "mmlu_astronomy": [mc(astro + "What is the Sun?\nA. a star\nB. a planet\nC. a moon\nD. a comet\nAnswer:", ABCD, 0)],
}
# The CSVs are copied byte for byte (moeeval parses them).
with tarfile.open(mmlu_tar) as t:
    for m in t.getmembers():
        with open(os.path.join(OUT, "mmlu", *m.name.split("/")[1:]), "rb") as f:
            if f.read() != t.extractfile(m).read():
                fail(f"{m.name} was not copied byte for byte")
for task in TASKS:
    check_docs(task, got[task], want[task])
ALL = os.path.join(WORK, "dump-all")
os.makedirs(ALL)
# "all" skips mmlu here (2 of its 57 subjects are present), with a warning.
run([MOEEVAL, "--dump-requests", ALL, "--task-dir", OUT, "--log-level", "error", "--tasks", "all"])
if sorted(os.listdir(ALL)) != sorted(t + ".jsonl" for t in TASKS[:10]):
    fail(f"--tasks all (the README's command) read {sorted(os.listdir(ALL))}")
print(f"convert_check: upstream-format fixtures: {len(TASKS)} tasks converted and read by moeeval")

# ---- 2. the shipped files that are in upstream format ----------------------------------------
STAGE = os.path.join(WORK, "shipped-download")
with open(os.path.join(SHIPPED, "openbookqa", "test.jsonl"), "rb") as f:
    obqa = f.read()
write_zip(os.path.join(STAGE, "openbookqa", "OpenBookQA-V1-Sep2018.zip"),
          {"OpenBookQA-V1-Sep2018/Data/Main/test.jsonl": obqa})
for task, rel in (("piqa", "valid.jsonl"), ("piqa", "valid-labels.lst"), ("boolq", "dev.jsonl"),
                  ("lambada_openai", "lambada_test.jsonl")):
    with open(os.path.join(SHIPPED, task, rel), "rb") as f:
        write(os.path.join(STAGE, task, rel), f.read())
os.symlink(os.path.join(SHIPPED, "mmlu"), os.path.join(STAGE, "mmlu"))
CONV = os.path.join(WORK, "shipped-converted")
run(CONVERT + ["tasks", "--src", STAGE, "--out", CONV, "--strict",
               "--only", "piqa,boolq,lambada_openai,openbookqa,mmlu"])
same = ["piqa", "boolq", "lambada_openai", "openbookqa"]
a = dump(SHIPPED, same, os.path.join(WORK, "dump-shipped"))
b = dump(CONV, same + ["mmlu_abstract_algebra"], os.path.join(WORK, "dump-converted"))
for task in same:
    check_docs(task, b[task], [{"requests": d["requests"], "gold": d["gold"]} for d in a[task]])
n_mmlu = 0
for split in ("test", "dev"):
    for name in sorted(os.listdir(os.path.join(SHIPPED, "mmlu", split))):
        with open(os.path.join(SHIPPED, "mmlu", split, name), "rb") as f1, \
                open(os.path.join(CONV, "mmlu", split, name), "rb") as f2:
            if f1.read() != f2.read():
                fail(f"mmlu/{split}/{name} was not copied byte for byte")
        n_mmlu += split == "test"
if n_mmlu != 57:
    fail(f"mmlu: {n_mmlu} test files converted, expected 57")
first = b["mmlu_abstract_algebra"][0]
want_first = mc("The following are multiple choice questions (with answers) about abstract algebra.\n\n"
                "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
                "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:", ABCD, 1)
check_docs("mmlu_abstract_algebra[0]", [first], [want_first])
print("convert_check: shipped files (piqa, boolq, lambada_openai, openbookqa, mmlu 14042) converted "
      "with --strict; moeeval reads the same requests")

# ---- 3. more refusals ------------------------------------------------------------------------
BAD = os.path.join(WORK, "bad")
write(os.path.join(BAD, "piqa", "valid.jsonl"), jl([{"goal": "g", "sol1": "a", "sol2": "b"}]))
write(os.path.join(BAD, "piqa", "valid-labels.lst"), "1\n0\n")
r = run(CONVERT + ["tasks", "--src", BAD, "--out", BAD + "-out", "--only", "piqa"], expect=2)
if "valid-labels.lst" not in r.stderr or "2 labels for the 1 items" not in r.stderr:
    fail(f"piqa label count mismatch not reported: {r.stderr}")
bad_arc = dict(arc_item, answerKey="E")
write_zip(os.path.join(BAD, "arc", "ARC-V1-Feb2018.zip"), {
    "ARC-V1-Feb2018-2/ARC-Easy/ARC-Easy-Test.jsonl": jl([arc_item, bad_arc]),
    "ARC-V1-Feb2018-2/ARC-Challenge/ARC-Challenge-Test.jsonl": jl([arc_num])})
r = run(CONVERT + ["tasks", "--src", BAD, "--out", BAD + "-out", "--only", "arc"], expect=2)
if "ARC-Easy-Test.jsonl:2" not in r.stderr or "answerKey 'E'" not in r.stderr:
    fail(f"an ARC answer key outside the labels was not reported at file:line: {r.stderr}")
r = run(CONVERT + ["tasks", "--src", BAD, "--out", BAD + "-out", "--only", "sciq"], expect=2)
if "SciQ.zip" not in r.stderr:
    fail(f"a missing download was not reported by name: {r.stderr}")
if os.path.exists(BAD + "-out"):
    fail("a refused conversion wrote output")
print("convert_check: bad inputs refused with exit 2, file and line named, nothing written")

# ---- 4. a C4 shard -> a JSONL corpus that moetrain reads --------------------------------------
with open(os.path.join(SRC, "data", "corpora", "tinyshakespeare", "input.txt"), encoding="utf-8") as f:
    speeches = [s for s in f.read().split("\n\n") if s.strip()][:1500]
C4DIR = os.path.join(WORK, "c4")
os.makedirs(C4DIR)
for name, docs in (("c4-train.00000-of-01024.json.gz", speeches[:1400] + ["", "Ünïcödé — 文字 ✓"]),
                   ("c4-validation.00000-of-00008.json.gz", speeches[1400:])):
    with gzip.open(os.path.join(C4DIR, name), "wt", encoding="utf-8") as g:
        for i, text in enumerate(docs):
            g.write(json.dumps({"text": text, "timestamp": "2019-04-25T12:57:54Z",
                                "url": f"https://example.org/{i}"}) + "\n")
run(CONVERT + ["corpus", "--src", os.path.join(C4DIR, "c4-train.00000-of-01024.json.gz"),
               "--out", os.path.join(C4DIR, "train.jsonl")])
run(CONVERT + ["corpus", "--src", os.path.join(C4DIR, "c4-validation.00000-of-00008.json.gz"),
               "--out", os.path.join(C4DIR, "valid.jsonl")])
with open(os.path.join(C4DIR, "train.jsonl"), encoding="utf-8") as f:
    train = [json.loads(line) for line in f]
if len(train) != 1401 or train[-1] != {"text": "Ünïcödé — 文字 ✓"} or train[0]["text"] != speeches[0]:
    fail(f"C4 conversion: {len(train)} records (expected 1401: the empty text dropped, text kept)")
cfg = os.path.join(C4DIR, "tiny.yaml")
write(cfg, f"""model: {{d_model: 32, n_layers: 2, n_heads: 2, n_kv_heads: 1, n_experts: 4, top_k: 2,
         expert_ffn_dim: 32, max_seq_len: 32}}
data: {{train: [{C4DIR}/train.jsonl], valid: [{C4DIR}/valid.jsonl], tokenizer_vocab_size: 400}}
train: {{threads: 1, batch_size: 2, seq_len: 32, max_steps: 2, warmup_steps: 1}}
run: {{out_dir: {C4DIR}/run, eval_every: 2, eval_batches: 2, save_every: 100}}
""")
r = run([MOETRAIN, "--config", cfg, "--log-level", "info"])
with open(os.path.join(C4DIR, "run", "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
if not any(x.get("type") == "valid" for x in records):
    fail(f"moetrain on the converted C4 corpus wrote no validation record:\n{r.stderr}")
log = r.stderr + r.stdout
if "in 1401 docs" not in log or "in 100 docs" not in log:
    fail(f"moetrain's log does not show the 1401 training / 100 validation documents:\n{log}")
print("convert_check: C4-format shard converted; moetrain trained on it (1401 + 100 documents)")
print("convert_check: PASS")
