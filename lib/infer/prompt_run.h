// moeinfer's generation mode: prompts from --prompt or --prompt-file, encoded as training saw
// text, generated in batches, written as a stream (one prompt) or as JSON lines (a file).
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "infer/sampler.h"
#include "model/model.h"

namespace moe::infer {

struct PromptRunOptions {
  int64_t max_new_tokens = 64, batch_size = 8;
  SamplingOptions sampling;
  bool stepwise_prompts = false;  // expert offload: prompts one token per pass
};

// One prompt per line (a trailing CR dropped). Usage errors: unreadable file, an empty line
// (naming it), no line at all.
std::vector<std::string> read_prompt_file(const std::string& path);

// The prompt's tokens as the model saw text in training: end-of-sequence (the document
// separator) first, then the text. Usage errors name `where`: an empty prompt, more tokens than
// max_seq.
std::vector<int32_t> encode_prompt(const data::Tokenizer& tok, const std::string& text,
                                   const std::string& where, int64_t max_seq);

// Generates for every prompt (texts[i], named sources[i] in errors), batch_size at a time; the
// model must have been built for batch_size rows. stream: the prompt and then each generated
// piece go to `out` as they come (one prompt); otherwise one JSON line per prompt, in order:
// {"prompt", "completion", "prompt_tokens", "completion_tokens", "finish_reason"}.
void run_prompts(MoeModel& model, const data::Tokenizer& tok, const std::vector<std::string>& texts,
                 const std::vector<std::string>& sources, bool stream, const PromptRunOptions& o,
                 std::FILE* out);

}  // namespace moe::infer
