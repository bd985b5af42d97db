#!/usr/bin/env python3
"""GGUF conversion of an export_hf.py directory with llama.cpp's own convert_hf_to_gguf.py (the
copy in the llama-cpp-python sdist that tools/setup_llamacpp.sh unpacks to tools/llamacpp/src).

    tools/hf/venv/bin/python tools/hf/convert_gguf.py HF_DIR OUT.gguf [--outtype f32|f16|bf16|q8_0]

Runs the upstream converter unchanged except for three things, both printed when they apply:

1. torch compatibility: the converter (llama.cpp of llama-cpp-python 0.3.36) names torch dtypes
   that Debian's torch 1.13 lacks (float8_e4m3fn, float8_e5m2, float8_e8m0fnu, uint16/32/64) in
   its dtype tables, so importing it fails with AttributeError. They are given placeholder
   values that no tensor can have: our exports hold F32 tensors only.
2. qwen2_moe vocabulary: upstream converts a Qwen2MoeForCausalLM tokenizer only as a GPT-2
   byte-level BPE recognised by the hash of its pre-tokenizer output (get_vocab_base_pre); our
   tokenizer is a sentencepiece BPE (tokenizer.model beside tokenizer.json), so upstream stops
   with "NotImplementedError: BPE pre-tokenizer was not recognized - update
   get_vocab_base_pre()". When that error is raised, the vocabulary is written by the converter's
   own sentencepiece path (_set_vocab_sentencepiece, the one upstream's dense Qwen2ForCausalLM
   tries first and Mixtral uses): tokenizer.ggml.model "llama" with our pieces, scores and
   byte-fallback tokens. The weights and hyper-parameters are converted by upstream's
   Qwen2MoeModel as they are. (Mixtral exports need no change: LlamaModel reads tokenizer.model.)
3. tied head under qwen2_moe: llama.cpp's qwen2moe loader requires a separate output.weight (it
   has no tied-embedding fallback, unlike its qwen2), so a tied export converts but does not load:
   "llama_model_load: error loading model: check_tensor_dims: tensor 'output.weight' not found".
   For a qwen2_moe export with tie_word_embeddings, the embedding is written a second time as
   lm_head.weight -> output.weight: the same matrix, so the same logits (V x d more floats).

Known limits: a model with dense first layers (qwen2_moe mlp_only_layers) does not convert
(upstream: "Can not map tensor 'model.layers.0.mlp.down_proj.weight'"); on the quickstart model
llama.cpp's greedy text is wrong although every tensor matches (docs/benchmarks.md).
"""
import logging
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("LLAMACPP_SRC", os.path.join(HERE, "..", "llamacpp", "src"))


def main():
    if not os.path.exists(os.path.join(SRC, "convert_hf_to_gguf.py")):
        sys.exit(f"convert_gguf: {SRC}/convert_hf_to_gguf.py missing: run tools/setup_llamacpp.sh")
    sys.path[:0] = [os.path.join(SRC, "gguf-py"), SRC]
    import torch
    missing = [n for n in ("float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu", "uint16", "uint32",
                           "uint64") if not hasattr(torch, n)]
    for n in missing:
        setattr(torch, n, f"<torch {torch.__version__} has no {n}>")
    if missing:
        print(f"convert_gguf: torch {torch.__version__} lacks {', '.join(missing)}: placeholders "
              "(no F8/U16/U32/U64 tensor is converted)", file=sys.stderr)

    import convert_hf_to_gguf as upstream
    from conversion.qwen import Qwen2MoeModel

    upstream_set_vocab = Qwen2MoeModel.set_vocab

    def set_vocab(self):
        try:
            upstream_set_vocab(self)
        except NotImplementedError as e:
            if not (self.dir_model / "tokenizer.model").is_file():
                raise
            logging.getLogger("convert_gguf").warning(
                "upstream qwen2_moe vocabulary: %s; writing the sentencepiece vocabulary of "
                "tokenizer.model instead", e)
            self._set_vocab_sentencepiece()

    Qwen2MoeModel.set_vocab = set_vocab
    upstream_modify = Qwen2MoeModel.modify_tensors

    def modify_tensors(self, data_torch, name, bid):
        yield from upstream_modify(self, data_torch, name, bid)
        if name == "model.embed_tokens.weight" and self.hparams.get("tie_word_embeddings"):
            logging.getLogger("convert_gguf").warning(
                "tied embeddings: writing model.embed_tokens.weight also as output.weight "
                "(llama.cpp's qwen2moe has no tied-head fallback)")
            yield from upstream_modify(self, data_torch, "lm_head.weight", bid)

    Qwen2MoeModel.modify_tensors = modify_tensors
    upstream.main()  # reads sys.argv: HF_DIR --outfile OUT --outtype T


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1].startswith("-"):
        sys.exit("usage: convert_gguf.py HF_DIR OUT.gguf [--outtype f32|f16|bf16|q8_0]")
    hf_dir, out = sys.argv[1], sys.argv[2]
    sys.argv = [sys.argv[0], hf_dir, "--outfile", out] + sys.argv[3:]
    if "--outtype" not in sys.argv:
        sys.argv += ["--outtype", "f32"]
    main()
