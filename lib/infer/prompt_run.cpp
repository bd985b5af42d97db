// Generation from prompts (see prompt_run.h).
#include "infer/prompt_run.h"

#include <algorithm>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "infer/decode_session.h"
#include "infer/generate.h"

namespace moe::infer {

std::vector<std::string> read_prompt_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MOE_USAGE_CHECK(f.good(), "--prompt-file {}: cannot open", path);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    MOE_USAGE_CHECK(!line.empty(), "--prompt-file {}: line {} is an empty prompt", path,
                    lines.size() + 1);
    lines.push_back(line);
  }
  MOE_USAGE_CHECK(!lines.empty(), "--prompt-file {}: no prompt", path);
  return lines;
}

std::vector<int32_t> encode_prompt(const data::Tokenizer& tok, const std::string& text,
                                   const std::string& where, int64_t max_seq) {
  MOE_USAGE_CHECK(!text.empty(), "{}: empty prompt", where);
  std::vector<int32_t> ids{tok.eos_id()};
  const std::vector<int32_t> body = tok.encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  MOE_USAGE_CHECK(static_cast<int64_t>(ids.size()) <= max_seq, "{}: the prompt has {} tokens "
                  "(with the leading eos), longer than the model's max_seq_len {}", where,
                  ids.size(), max_seq);
  return ids;
}

void run_prompts(MoeModel& model, const data::Tokenizer& tok, const std::vector<std::string>& texts,
                 const std::vector<std::string>& sources, bool stream, const PromptRunOptions& o,
                 std::FILE* out) {
  MOE_USAGE_CHECK(o.batch_size >= 1, "--batch-size must be >= 1, got {}", o.batch_size);
  MOE_CHECK(texts.size() == sources.size(), "run_prompts: {} texts, {} sources", texts.size(),
            sources.size());
  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 0; i < texts.size(); ++i) {
    prompts.push_back(encode_prompt(tok, texts[i], sources[i], model.config().max_seq_len));
  }
  DecodeSession session(model, o.batch_size);
  session.set_stepwise_prompts(o.stepwise_prompts);
  const size_t bs = static_cast<size_t>(o.batch_size);
  for (size_t first = 0; first < prompts.size(); first += bs) {
    const size_t last = std::min(prompts.size(), first + bs);
    const std::vector<std::vector<int32_t>> batch(prompts.begin() + first, prompts.begin() + last);
    std::vector<int32_t> streamed;
    std::string shown;
    TokenCallback on_token;
    if (stream) {  // each piece as it comes (decoding the whole tail keeps UTF-8 characters whole)
      std::fputs(texts[first].c_str(), out);
      on_token = [&](int64_t, int32_t t) {
        streamed.push_back(t);
        const std::string text = tok.decode(streamed);
        if (text.size() > shown.size() && text.compare(0, shown.size(), shown) == 0) {
          std::fputs(text.c_str() + shown.size(), out);
          std::fflush(out);
          shown = text;
        }
      };
    }
    const auto results = generate(session, batch, o.max_new_tokens, o.sampling, tok.eos_id(),
                                  on_token, nullptr, static_cast<int64_t>(first));
    if (stream) {
      std::fputs("\n", out);
      continue;
    }
    for (size_t i = 0; i < results.size(); ++i) {
      const nlohmann::json j = {{"prompt", texts[first + i]},
                                {"completion", tok.decode(results[i].tokens)},
                                {"prompt_tokens", batch[i].size()},
                                {"completion_tokens", results[i].tokens.size()},
                                {"prompt_ids", batch[i]},
                                {"completion_ids", results[i].tokens},
                                {"finish_reason", results[i].finish_reason}};
      std::fprintf(out, "%s\n", j.dump().c_str());
    }
    std::fflush(out);
  }
}

}  // namespace moe::infer
