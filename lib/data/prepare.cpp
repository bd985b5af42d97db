// prepare_data: tokenizer + shard cache orchestration (reuse, refusal, atomic writes).
// See prepare.h for the contract.
#include "data/prepare.h"

#include <chrono>
#include <filesystem>
#include <optional>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "data/atomic_file.h"
#include "data/corpus.h"
#include "data/shard_builder.h"
#include "data/shards.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace moe::data {
namespace {

constexpr int kManifestFormat = 1;
constexpr const char* kManifest = "manifest.json";
constexpr const char* kCachedTokenizer = "tokenizer.model";
constexpr const char* kCachedTokenizerInfo = "tokenizer.json";

std::string absolute_path(const std::string& p) {
  return fs::absolute(p).lexically_normal().string();
}

json sources_json(const std::vector<SourceFile>& sources, bool with_mtime) {
  json arr = json::array();
  for (const SourceFile& s : sources) {
    json e = {{"path", absolute_path(s.path)}, {"size", s.size_bytes}};
    if (with_mtime) e["mtime_ns"] = s.mtime_ns;
    arr.push_back(e);
  }
  return arr;
}

std::optional<json> read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in.good()) return std::nullopt;
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    MOE_USAGE_FAIL("{} is not valid JSON ({}); delete it to rebuild the data cache", path,
                   e.what());
  }
}

struct CorpusScan {
  int64_t docs = 0, bytes = 0;
};

CorpusScan scan(const std::vector<SourceFile>& sources, const std::string& field) {
  CorpusScan s;
  for_each_document(sources, field, [&](Document&& d) {
    ++s.docs;
    s.bytes += static_cast<int64_t>(d.text.size());
  });
  return s;
}

std::string join_specs(const std::vector<std::string>& specs) {
  std::string out;
  for (const auto& s : specs) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// What a trained tokenizer depends on (mtimes left out: touching a file keeps the tokenizer).
json tokenizer_key(const DataConfig& cfg, const std::vector<SourceFile>& train) {
  return {{"sources", sources_json(train, false)},
          {"jsonl_field", cfg.jsonl_field},
          {"vocab_size", cfg.tokenizer_vocab_size},
          {"train_bytes", cfg.tokenizer_train_bytes},
          {"settings", "bpe byte_fallback identity no_dummy_prefix keep_whitespace split_digits "
                       "unk0 bos1 eos2 nopad"}};
}

std::shared_ptr<const Tokenizer> train_and_cache_tokenizer(const DataConfig& cfg,
                                                           const std::vector<SourceFile>& train,
                                                           const std::string& cache,
                                                           const json& key) {
  const CorpusScan corpus = scan(train, cfg.jsonl_field);
  MOE_USAGE_CHECK(corpus.bytes > 0, "data.train ({}) holds no text", join_specs(cfg.train));
  TrainingSample sample(cfg.tokenizer_train_bytes, corpus.bytes);
  for_each_document(train, cfg.jsonl_field, [&](Document&& d) { sample.add_document(d.text); });
  spdlog::info("training a {}-token BPE tokenizer on {:.1f} MB of {:.1f} MB ({} sentences)",
               cfg.tokenizer_vocab_size, static_cast<double>(sample.bytes()) / 1e6,
               static_cast<double>(corpus.bytes) / 1e6, sample.sentences().size());
  const auto t0 = std::chrono::steady_clock::now();
  auto tok = std::make_shared<const Tokenizer>(
      train_tokenizer(sample.sentences(), cfg.tokenizer_vocab_size));
  spdlog::info("tokenizer trained in {:.1f} s (fingerprint {})",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
               tok->fingerprint_hex());
  tok->save(cache + "/" + kCachedTokenizer);
  json info = {{"fingerprint", tok->fingerprint_hex()}, {"vocab_size", tok->vocab_size()},
               {"key", key}};
  write_file_atomically(cache + "/" + kCachedTokenizerInfo, info.dump(2) + "\n");
  return tok;
}

// Step 2 of prepare.h.
std::shared_ptr<const Tokenizer> obtain_tokenizer(const DataConfig& cfg,
                                                  const std::vector<SourceFile>& train,
                                                  const std::string& cache, bool* trained) {
  *trained = false;
  if (!cfg.tokenizer.empty()) {
    auto tok = std::make_shared<const Tokenizer>(Tokenizer::load(cfg.tokenizer));
    if (tok->vocab_size() != cfg.tokenizer_vocab_size) {
      spdlog::info("data.tokenizer {} has {} tokens (data.tokenizer_vocab_size {} is ignored)",
                   cfg.tokenizer, tok->vocab_size(), cfg.tokenizer_vocab_size);
    }
    return tok;
  }
  const json key = tokenizer_key(cfg, train);
  const std::string model_path = cache + "/" + kCachedTokenizer;
  const std::string info_path = cache + "/" + kCachedTokenizerInfo;
  if (fs::exists(model_path)) {
    const auto info = read_json_file(info_path);
    MOE_USAGE_CHECK(info.has_value(), "{} exists without {}: cannot tell what it was trained "
                    "on; delete the cache directory {} or set data.cache_dir", model_path,
                    info_path, cache);
    MOE_USAGE_CHECK((*info)["key"] == key,
                    "the cache {} holds a tokenizer trained on other data or settings "
                    "(see {}); expected one for data.train = [{}], vocab {}, train bytes {}. "
                    "Delete the cache, set data.cache_dir elsewhere, or pass it as data.tokenizer",
                    cache, info_path, join_specs(cfg.train), cfg.tokenizer_vocab_size,
                    cfg.tokenizer_train_bytes);
    auto tok = std::make_shared<const Tokenizer>(Tokenizer::load(model_path));
    spdlog::info("reusing the tokenizer {} (fingerprint {})", model_path, tok->fingerprint_hex());
    return tok;
  }
  *trained = true;
  return train_and_cache_tokenizer(cfg, train, cache, key);
}

json shards_key(const DataConfig& cfg, const std::vector<SourceFile>& train,
                const std::vector<SourceFile>& valid, const PrepareOptions& opt) {
  return {{"train", sources_json(train, true)},
          {"valid", sources_json(valid, true)},
          {"jsonl_field", cfg.jsonl_field},
          {"valid_fraction", valid.empty() ? cfg.valid_fraction : 0.0},
          {"shard_max_tokens", opt.shard_max_tokens}};
}

json split_json(const SplitStats& s) {
  return {{"shards", s.shards}, {"tokens", s.tokens}, {"text_bytes", s.text_bytes},
          {"docs", s.docs}};
}

SplitInfo split_from_json(const json& j, const std::string& cache) {
  SplitInfo s;
  for (const auto& name : j.at("shards")) s.shards.push_back(cache + "/" + name.get<std::string>());
  s.tokens = j.at("tokens").get<int64_t>();
  s.text_bytes = j.at("text_bytes").get<int64_t>();
  s.docs = j.at("docs").get<int64_t>();
  return s;
}

// True when every shard listed exists with a sound header; a shard of another tokenizer is
// refused (usage error), a missing or damaged one only means the cache must be rebuilt.
bool shards_intact(const SplitInfo& s, const Tokenizer& tok) {
  for (const std::string& path : s.shards) {
    if (!fs::exists(path)) return false;
    ShardHeader h{};
    try {
      h = read_shard_header(path);
    } catch (const Error& e) {
      spdlog::warn("{}", e.what());
      return false;
    }
    check_shard_matches(h, path, tok.fingerprint(), tok.vocab_size());
  }
  return true;
}

void remove_listed_shards(const json& manifest, const std::string& cache) {
  for (const char* split : {"train", "valid"}) {
    if (!manifest.contains(split)) continue;
    for (const auto& name : manifest[split].value("shards", json::array())) {
      std::error_code ec;
      fs::remove(cache + "/" + name.get<std::string>(), ec);
    }
  }
}

// Returns true when `path` already holds this tokenizer; refuses a different one.
bool run_dir_has_tokenizer(const Tokenizer& tok, const std::string& path) {
  if (fs::exists(path)) {
    const Tokenizer existing = Tokenizer::load(path);
    MOE_USAGE_CHECK(existing.fingerprint() == tok.fingerprint(),
                    "{} holds another tokenizer (fingerprint {}, vocab {}) than this run's "
                    "(fingerprint {}, vocab {}): a run directory keeps the tokenizer its "
                    "checkpoints use; choose another run.out_dir",
                    path, existing.fingerprint_hex(), existing.vocab_size(), tok.fingerprint_hex(),
                    tok.vocab_size());
    return true;
  }
  return false;
}

// Tokenizes the corpus into shards and writes the manifest (last, so a crash leaves none).
json build_and_record(const DataConfig& cfg, const std::vector<SourceFile>& train,
                      const std::vector<SourceFile>& valid, const Tokenizer& tok,
                      const PrepareOptions& opt, const json& key,
                      const std::string& manifest_path) {
  const CorpusScan train_scan = scan(train, cfg.jsonl_field);
  MOE_USAGE_CHECK(train_scan.bytes > 0, "data.train ({}) holds no text (empty corpus)",
                  join_specs(cfg.train));
  const CorpusScan valid_scan = scan(valid, cfg.jsonl_field);
  MOE_USAGE_CHECK(valid.empty() || valid_scan.bytes > 0, "data.valid ({}) holds no text",
                  join_specs(cfg.valid));
  BuildOptions bo;
  bo.jsonl_field = cfg.jsonl_field;
  bo.valid_fraction = cfg.valid_fraction;
  bo.shard_max_tokens = opt.shard_max_tokens;
  bo.total_bytes = train_scan.bytes + valid_scan.bytes;
  bo.threads = opt.threads;
  const std::string cache = fs::path(manifest_path).parent_path().string();
  const BuildResult r = build_shards(tok, train, valid, cache, bo);
  spdlog::info("tokenized {:.1f} MB in {:.1f} s ({:.2f} MB/s): {} train tokens in {} docs, "
               "{} valid tokens in {} docs",
               static_cast<double>(r.source_bytes) / 1e6, r.seconds,
               r.seconds > 0 ? static_cast<double>(r.source_bytes) / 1e6 / r.seconds : 0.0,
               r.train.tokens, r.train.docs, r.valid.tokens, r.valid.docs);
  const json manifest = {{"format", kManifestFormat},
                         {"fingerprint", tok.fingerprint_hex()},
                         {"vocab_size", tok.vocab_size()},
                         {"key", key},
                         {"train", split_json(r.train)},
                         {"valid", split_json(r.valid)}};
  write_file_atomically(manifest_path, manifest.dump(2) + "\n");
  return manifest;
}

}  // namespace

std::string resolve_cache_dir(const DataConfig& cfg, const std::string& out_dir) {
  return cfg.cache_dir.empty() ? (fs::path(out_dir) / "data").string() : cfg.cache_dir;
}

int64_t resolve_vocab_size(int64_t configured, int64_t tokenizer_vocab) {
  if (configured == 0) return tokenizer_vocab;
  MOE_USAGE_CHECK(configured >= tokenizer_vocab,
                  "model.vocab_size is {} but the tokenizer has {} tokens; set model.vocab_size "
                  "to 0 (use the tokenizer's) or to at least {}",
                  configured, tokenizer_vocab, tokenizer_vocab);
  return configured;
}

PreparedData prepare_data(const DataConfig& cfg, const std::string& out_dir,
                          const PrepareOptions& opt) {
  MOE_USAGE_CHECK(!cfg.train.empty(), "data.train is empty: give at least one corpus path");
  MOE_USAGE_CHECK(cfg.valid_fraction >= 0 && cfg.valid_fraction < 1,
                  "data.valid_fraction must be in [0, 1), found {}", cfg.valid_fraction);
  const std::vector<SourceFile> train = resolve_sources(cfg.train, "data.train");
  const std::vector<SourceFile> valid = resolve_sources(cfg.valid, "data.valid");

  PreparedData out;
  out.cache_dir = resolve_cache_dir(cfg, out_dir);
  std::error_code ec;
  fs::create_directories(out.cache_dir, ec);
  MOE_USAGE_CHECK(!ec, "cannot create the data cache {}: {}", out.cache_dir, ec.message());
  fs::create_directories(out_dir, ec);
  MOE_USAGE_CHECK(!ec, "cannot create run.out_dir {}: {}", out_dir, ec.message());

  out.tokenizer = obtain_tokenizer(cfg, train, out.cache_dir, &out.trained_tokenizer);
  const Tokenizer& tok = *out.tokenizer;
  out.vocab_size = tok.vocab_size();
  out.fingerprint = tok.fingerprint();
  out.tokenizer_path = (fs::path(out_dir) / "tokenizer.model").string();
  const bool run_dir_ready = run_dir_has_tokenizer(tok, out.tokenizer_path);

  const std::string manifest_path = out.cache_dir + "/" + kManifest;
  const json key = shards_key(cfg, train, valid, opt);
  const auto old = read_json_file(manifest_path);
  if (old) {
    const std::string found = old->value("fingerprint", std::string("?"));
    const int64_t found_vocab = old->value("vocab_size", int64_t{-1});
    MOE_USAGE_CHECK(found == tok.fingerprint_hex() && found_vocab == tok.vocab_size(),
                    "{} lists shards made with another tokenizer: expected fingerprint {} and "
                    "vocab {}, found fingerprint {} and vocab {}. Delete the cache or set "
                    "data.cache_dir elsewhere",
                    manifest_path, tok.fingerprint_hex(), tok.vocab_size(), found, found_vocab);
  }
  if (old && old->value("format", 0) == kManifestFormat && (*old)["key"] == key) {
    try {
      out.train = split_from_json(old->at("train"), out.cache_dir);
      out.valid = split_from_json(old->at("valid"), out.cache_dir);
      out.reused_shards = shards_intact(out.train, tok) && shards_intact(out.valid, tok);
    } catch (const json::exception& e) {
      spdlog::warn("{} is damaged ({}): rebuilding the cache", manifest_path, e.what());
    }
  }
  if (out.reused_shards) {
    spdlog::info("reusing token shards in {} ({} train tokens, {} valid tokens)", out.cache_dir,
                 out.train.tokens, out.valid.tokens);
  } else {
    if (old) {
      spdlog::info("{} does not describe this corpus (or a shard is missing): re-tokenizing",
                   manifest_path);
      fs::remove(manifest_path, ec);
      remove_listed_shards(*old, out.cache_dir);
    }
    const json manifest = build_and_record(cfg, train, valid, tok, opt, key, manifest_path);
    out.train = split_from_json(manifest["train"], out.cache_dir);
    out.valid = split_from_json(manifest["valid"], out.cache_dir);
  }
  MOE_USAGE_CHECK(out.train.tokens >= 2, "the training split holds {} tokens; need at least 2",
                  out.train.tokens);
  if (!run_dir_ready) tok.save(out.tokenizer_path);
  return out;
}

}  // namespace moe::data
