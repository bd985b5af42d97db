"""moeinfer's greedy continuation equals transformers' generate() on the exported model, token for
token (tools/hf/greedy_check.py), for tiny trained vanilla (a dense first layer) and DeepSeekMoE
models as qwen2_moe and a Mixtral-shaped one as mixtral; moeinfer at --batch-size 1 and 3 (prompts
of different lengths in one batch), transformers one prompt at a time. The tokenizers must give
the same prompt ids as well. The models are near their random initialisation (2 steps at lr 1e-5)
with an untied head: a trained tiny model repeats one token (a newline) and a tied one repeats
its input, which would make "identical" nearly free; here the continuations wander over many
tokens and experts (at least 8 distinct generated ids per run is required)."""
import os
import re
import subprocess
import sys

import hf_common as hc

env = hc.Env(sys.argv, "greedy")
tools = os.path.join(env.src, "tools", "hf")
moeinfer = os.path.join(env.build, "apps", "moeinfer")
prompts = env.path("prompts.txt")
with open(prompts, "w") as f:
    f.write("The computer is\n"
            "A scientist, 42 years old, said:\n"
            "Why\n")

cache = env.path("cache")
for name, arch in (("vanilla", "qwen2_moe"), ("deepseek", "qwen2_moe"), ("mixtral_fit", "mixtral")):
    ckpt = hc.train_tiny(env, name, steps=2, lr=1e-5, cache=cache,
                         model_extra={"tie_embeddings": False})
    out = env.path("hf", name)
    hc.run([sys.executable, os.path.join(tools, "export_hf.py"), ckpt, out, "--arch", arch])
    for bs in ("1", "3"):
        r = subprocess.run([sys.executable, os.path.join(tools, "greedy_check.py"), ckpt, out,
                            prompts, "--moeinfer", moeinfer, "--max-new-tokens", "12",
                            "--batch-size", bs], capture_output=True, text=True)
        print(f"{name} as {arch}, moeinfer --batch-size {bs}:")
        print("  " + "\n  ".join(line for line in r.stdout.splitlines()))
        assert r.returncode == 0, f"{name}/{arch} --batch-size {bs}: {r.stdout}\n{r.stderr}"
        m = re.search(r"(\d+) generated tokens \((\d+) distinct ids\), all identical", r.stdout)
        assert m and int(m.group(1)) >= 30 and int(m.group(2)) >= 8, r.stdout
env.done()
