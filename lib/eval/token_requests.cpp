// Context/continuation tokenization and rolling windows (see token_requests.h).
#include "eval/token_requests.h"

#include <algorithm>

#include "core/error.h"
#include "eval/text_utils.h"

namespace moe::eval {

std::pair<std::string, std::string> split_context(const std::string& context,
                                                  const std::string& continuation) {
  const std::string kept = py_rstrip(context);  // a byte prefix of context
  const size_t n = context.size() - kept.size();
  if (n == 0) return {context, continuation};
  return {kept, context.substr(kept.size()) + continuation};
}

std::vector<TokenRequest> split_targets(const std::vector<int32_t>& seq, int64_t n_targets,
                                        int64_t max_length) {
  const int64_t n = static_cast<int64_t>(seq.size());
  MOE_CHECK(n_targets >= 0 && n_targets < n, "split_targets: {} targets of {} tokens", n_targets, n);
  std::vector<TokenRequest> out;
  for (int64_t a = n - n_targets; a < n || out.empty(); a += max_length) {
    const int64_t b = std::min(n, a + max_length);
    TokenRequest r;
    r.tokens.assign(seq.begin() + std::max<int64_t>(0, b - max_length - 1), seq.begin() + b);
    r.n_targets = b - a;
    out.push_back(std::move(r));
    if (b == n) break;
  }
  return out;
}

std::vector<TokenRequest> make_token_requests(const LoglikRequest& request, const Encoder& encode,
                                              int32_t start_token, int64_t max_length) {
  MOE_CHECK(max_length >= 1, "make_token_requests: max_length {} < 1", max_length);
  const auto [ctx, cont] = split_context(request.context, request.continuation);
  std::vector<int32_t> ctx_enc, cont_enc;
  if (ctx.empty()) {
    cont_enc = encode(cont);
  } else {
    const std::vector<int32_t> whole = encode(ctx + cont);
    ctx_enc = encode(ctx);
    if (whole.size() > ctx_enc.size()) cont_enc.assign(whole.begin() + ctx_enc.size(), whole.end());
  }
  std::vector<int32_t> seq;
  seq.reserve(1 + ctx_enc.size() + cont_enc.size());
  seq.push_back(start_token);
  seq.insert(seq.end(), ctx_enc.begin(), ctx_enc.end());
  seq.insert(seq.end(), cont_enc.begin(), cont_enc.end());
  return split_targets(seq, static_cast<int64_t>(cont_enc.size()), max_length);
}

std::vector<TokenRequest> rolling_windows(const std::vector<int32_t>& toks, int32_t start_token,
                                          int64_t max_length) {
  MOE_CHECK(max_length >= 1, "rolling_windows: max_length {} < 1", max_length);
  std::vector<TokenRequest> out;
  const int64_t n = static_cast<int64_t>(toks.size());
  if (n == 0) return out;
  const int64_t first = std::min(max_length, n);
  TokenRequest w;
  w.tokens.push_back(start_token);
  w.tokens.insert(w.tokens.end(), toks.begin(), toks.begin() + first);
  w.n_targets = first;
  out.push_back(std::move(w));
  for (int64_t start = first; start < n;) {
    const int64_t m = std::min(max_length, n - start);
    const int64_t end = start + m;
    TokenRequest r;
    r.tokens.assign(toks.begin() + (end - max_length - 1), toks.begin() + end);
    r.n_targets = m;
    out.push_back(std::move(r));
    start = end;
  }
  return out;
}

}  // namespace moe::eval
