// prepare_data and the token shards: header fields, stream layout, split, cache reuse and the
// refusal of shards made with another tokenizer.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/error.h"
#include "data/prepare.h"
#include "data/shard_builder.h"
#include "data/shards.h"
#include "data_test_util.h"

namespace fs = std::filesystem;

namespace moe::data {
namespace {

using moe::test::make_temp_dir;
using moe::test::read_text;
using moe::test::write_text;

std::string expect_usage_error_message(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected a usage error";
  return "";
}

std::vector<int32_t> all_tokens(const TokenShard& s) {
  std::vector<int32_t> t(static_cast<size_t>(s.size()));
  s.copy(0, s.size(), t.data());
  return t;
}

// A corpus of n small documents, each "document <i>: <some shakespeare>".
std::vector<std::string> write_docs(const std::string& dir, int n) {
  const std::string text = moe::test::english_sample(60'000);
  std::vector<std::string> docs;
  for (int i = 0; i < n; ++i) {
    std::string d = "document " + std::to_string(i) + ":\n" +
                     text.substr(static_cast<size_t>(i) * 997 % 50'000, 300 + 37 * i);
    write_text(fmt::format("{}/doc{:03d}.txt", dir, i), d);
    docs.push_back(d);
  }
  return docs;
}

struct Fixture {
  std::string root, corpus, tok_path;
  std::vector<std::string> docs;
  DataConfig cfg;
};

Fixture make_fixture(const std::string& tag, int n_docs) {
  Fixture f;
  f.root = make_temp_dir(tag);
  f.corpus = f.root + "/corpus";
  f.docs = write_docs(f.corpus, n_docs);
  f.tok_path = f.root + "/small.model";
  moe::test::small_tokenizer().save(f.tok_path);
  f.cfg.train = {f.corpus};
  f.cfg.tokenizer = f.tok_path;
  f.cfg.valid_fraction = 0.25;
  return f;
}

// Splits a shard's stream at eos into documents (dropping the leading context eos).
std::vector<std::string> decode_docs(const Tokenizer& tok, const std::vector<int32_t>& stream) {
  std::vector<std::string> docs;
  std::vector<int32_t> cur;
  EXPECT_EQ(stream.at(0), tok.eos_id());
  for (size_t i = 1; i < stream.size(); ++i) {
    if (stream[i] == tok.eos_id()) {
      docs.push_back(tok.decode(cur));
      cur.clear();
    } else {
      cur.push_back(stream[i]);
    }
  }
  EXPECT_TRUE(cur.empty()) << "a shard ends with eos";
  return docs;
}

TEST(Shards, HeaderFieldsAndStreamLayout) {
  Fixture f = make_fixture("shards-header", 12);
  const PreparedData data = prepare_data(f.cfg, f.root + "/run");
  const Tokenizer& tok = *data.tokenizer;
  ASSERT_EQ(data.train.shards.size(), 1u);
  ASSERT_EQ(data.valid.shards.size(), 1u);
  const std::vector<uint8_t> held = holdout_documents(12, 0.25);

  int64_t all_bytes = 0;
  for (const auto& d : f.docs) all_bytes += static_cast<int64_t>(d.size());
  EXPECT_EQ(data.train.text_bytes + data.valid.text_bytes, all_bytes);
  EXPECT_EQ(data.train.docs + data.valid.docs, 12);

  for (bool valid : {false, true}) {
    const SplitInfo& split = valid ? data.valid : data.train;
    const ShardHeader h = read_shard_header(split.shards[0]);
    EXPECT_EQ(std::string(h.magic), "MOETOKS");
    EXPECT_EQ(h.version, kShardVersion);
    EXPECT_EQ(h.token_width, 2u);  // vocab 512 <= 65536
    EXPECT_EQ(h.fingerprint, tok.fingerprint());
    EXPECT_EQ(h.vocab_size, 512u);
    EXPECT_EQ(static_cast<int64_t>(h.token_count), split.tokens);
    EXPECT_EQ(static_cast<int64_t>(h.text_bytes), split.text_bytes);
    EXPECT_EQ(static_cast<int64_t>(h.doc_count), split.docs);
    EXPECT_EQ(fs::file_size(split.shards[0]), 64 + 2 * h.token_count);

    const TokenShard shard = TokenShard::open(split.shards[0], tok.fingerprint(), 512);
    std::vector<std::string> expected;
    int64_t bytes = 0;
    for (size_t i = 0; i < f.docs.size(); ++i) {
      if ((held[i] != 0) == valid) {
        expected.push_back(f.docs[i]);
        bytes += static_cast<int64_t>(f.docs[i].size());
      }
    }
    EXPECT_EQ(decode_docs(tok, all_tokens(shard)), expected);
    EXPECT_EQ(static_cast<int64_t>(h.text_bytes), bytes);
  }
  EXPECT_EQ(read_text(data.tokenizer_path), read_text(f.tok_path));
}

TEST(Shards, HoldoutIsDeterministicAndNeverEmpty) {
  EXPECT_EQ(holdout_documents(1000, 0.1), holdout_documents(1000, 0.1));
  int held = 0;
  for (uint8_t h : holdout_documents(10000, 0.1)) held += h;
  EXPECT_NEAR(held, 1000, 100);
  for (int n = 2; n < 40; ++n) {
    for (double frac : {0.001, 0.5, 0.999}) {
      int k = 0;
      for (uint8_t h : holdout_documents(n, frac)) k += h;
      EXPECT_GE(k, 1) << n << " " << frac;
      EXPECT_LE(k, n - 1) << n << " " << frac;
    }
  }
  for (uint8_t h : holdout_documents(50, 0.0)) EXPECT_EQ(h, 0);
}

TEST(Shards, SingleBookIsSplitByTokens) {
  Fixture f = make_fixture("shards-book", 0);
  const std::string book = moe::test::english_sample(100'000);
  write_text(f.corpus + "/book.txt", book);
  f.cfg.valid_fraction = 0.1;
  const PreparedData data = prepare_data(f.cfg, f.root + "/run");
  const Tokenizer& tok = *data.tokenizer;
  const auto train = all_tokens(TokenShard::open(data.train.shards[0], tok.fingerprint(), 512));
  const auto valid = all_tokens(TokenShard::open(data.valid.shards[0], tok.fingerprint(), 512));
  const auto whole = tok.encode(book);
  const size_t n_valid = valid.size() - 2;  // minus the context token and the final eos
  EXPECT_EQ(n_valid, static_cast<size_t>(std::ceil(0.1 * static_cast<double>(whole.size()))));
  // train = [eos] + head; valid = [last head token] + tail + [eos]
  std::vector<int32_t> joined(train.begin() + 1, train.end());
  EXPECT_EQ(valid.front(), joined.back());
  joined.insert(joined.end(), valid.begin() + 1, valid.end() - 1);
  EXPECT_EQ(joined, whole);
  EXPECT_EQ(valid.back(), tok.eos_id());
  EXPECT_EQ(data.train.text_bytes + data.valid.text_bytes, static_cast<int64_t>(book.size()));
  const std::vector<int32_t> tail(valid.begin() + 1, valid.end() - 1);
  EXPECT_EQ(data.valid.text_bytes, static_cast<int64_t>(tok.decode(tail).size()));
}

TEST(Shards, SecondPrepareReusesTheCache) {
  Fixture f = make_fixture("shards-reuse", 6);
  const PreparedData first = prepare_data(f.cfg, f.root + "/run");
  EXPECT_FALSE(first.reused_shards);
  const auto mtime = fs::last_write_time(first.train.shards[0]);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const PreparedData second = prepare_data(f.cfg, f.root + "/run");
  EXPECT_TRUE(second.reused_shards);
  EXPECT_EQ(fs::last_write_time(second.train.shards[0]), mtime);
  EXPECT_EQ(second.train.tokens, first.train.tokens);
  EXPECT_EQ(second.valid.text_bytes, first.valid.text_bytes);

  // A damaged shard is rebuilt, not trusted.
  fs::resize_file(second.train.shards[0], fs::file_size(second.train.shards[0]) - 2);
  const PreparedData repaired = prepare_data(f.cfg, f.root + "/run");
  EXPECT_FALSE(repaired.reused_shards);
  EXPECT_EQ(repaired.train.tokens, first.train.tokens);
  EXPECT_EQ(read_shard_header(repaired.train.shards[0]).token_count,
            static_cast<uint64_t>(first.train.tokens));

  // A changed source re-tokenizes.
  write_text(f.corpus + "/doc000.txt", "a changed document\n");
  const PreparedData third = prepare_data(f.cfg, f.root + "/run");
  EXPECT_FALSE(third.reused_shards);
  EXPECT_NE(third.train.text_bytes + third.valid.text_bytes,
            first.train.text_bytes + first.valid.text_bytes);
}

TEST(Shards, RefusesACacheMadeWithAnotherTokenizer) {
  Fixture f = make_fixture("shards-refuse", 6);
  prepare_data(f.cfg, f.root + "/run");
  // Another tokenizer (another vocabulary) pointed at the same cache.
  data::TrainingSample sample(50'000, 50'000);
  sample.add_document(moe::test::english_sample(50'000));
  const Tokenizer other = train_tokenizer(sample.sentences(), 400);
  other.save(f.root + "/other.model");
  DataConfig cfg2 = f.cfg;
  cfg2.tokenizer = f.root + "/other.model";
  cfg2.cache_dir = f.root + "/run/data";
  const std::string msg = expect_usage_error_message([&] { prepare_data(cfg2, f.root + "/run2"); });
  EXPECT_NE(msg.find("manifest.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find(other.fingerprint_hex()), std::string::npos) << msg;
  EXPECT_NE(msg.find("vocab 400"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vocab 512"), std::string::npos) << msg;

  // Opening a shard directly with the wrong tokenizer is refused too.
  const std::string shard = f.root + "/run/data/train-00000.bin";
  const std::string open_msg = expect_usage_error_message(
      [&] { TokenShard::open(shard, other.fingerprint(), 400); });
  EXPECT_NE(open_msg.find("train-00000.bin"), std::string::npos) << open_msg;
  EXPECT_NE(open_msg.find("another tokenizer"), std::string::npos) << open_msg;
  const std::string vocab_msg = expect_usage_error_message([&] {
    TokenShard::open(shard, moe::test::small_tokenizer().fingerprint(), 1024);
  });
  EXPECT_NE(vocab_msg.find("expected vocab size 1024, found 512"), std::string::npos) << vocab_msg;

  // A run directory keeps its tokenizer.
  DataConfig cfg3 = cfg2;
  cfg3.cache_dir = f.root + "/cache3";
  const std::string run_msg =
      expect_usage_error_message([&] { prepare_data(cfg3, f.root + "/run"); });
  EXPECT_NE(run_msg.find("tokenizer.model"), std::string::npos) << run_msg;
}

TEST(Shards, TrainsTheTokenizerOnceAndReusesIt) {
  Fixture f = make_fixture("shards-train-tok", 8);
  f.cfg.tokenizer.clear();
  f.cfg.tokenizer_vocab_size = 400;
  f.cfg.tokenizer_train_bytes = 20'000;
  const PreparedData first = prepare_data(f.cfg, f.root + "/run");
  EXPECT_TRUE(first.trained_tokenizer);
  EXPECT_EQ(first.vocab_size, 400);
  EXPECT_TRUE(fs::exists(f.root + "/run/tokenizer.model"));
  EXPECT_TRUE(fs::exists(f.root + "/run/data/tokenizer.model"));
  const PreparedData second = prepare_data(f.cfg, f.root + "/run");
  EXPECT_FALSE(second.trained_tokenizer);
  EXPECT_TRUE(second.reused_shards);
  EXPECT_EQ(second.fingerprint, first.fingerprint);
  // Other tokenizer settings on the same cache: refused, not silently retrained.
  f.cfg.tokenizer_vocab_size = 420;
  const std::string msg = expect_usage_error_message([&] { prepare_data(f.cfg, f.root + "/run"); });
  EXPECT_NE(msg.find("trained on other data or settings"), std::string::npos) << msg;
}

TEST(Shards, OutputDoesNotDependOnThreadsAndShardSize) {
  Fixture f = make_fixture("shards-threads", 10);
  f.cfg.valid_fraction = 0.0;
  PrepareOptions one, two;
  one.threads = 1;
  two.threads = 2;
  two.shard_max_tokens = 500;  // several shards, cut at document boundaries
  f.cfg.cache_dir = f.root + "/c1";
  const PreparedData a = prepare_data(f.cfg, f.root + "/run1", one);
  f.cfg.cache_dir = f.root + "/c2";
  const PreparedData b = prepare_data(f.cfg, f.root + "/run2", two);
  EXPECT_TRUE(a.valid.shards.empty());
  ASSERT_EQ(a.train.shards.size(), 1u);
  ASSERT_GT(b.train.shards.size(), 2u);
  const Tokenizer& tok = *a.tokenizer;
  std::vector<std::string> docs_b;
  for (const auto& p : b.train.shards) {
    for (auto& d : decode_docs(tok, all_tokens(TokenShard::open(p, tok.fingerprint(), 512)))) {
      docs_b.push_back(d);
    }
  }
  EXPECT_EQ(docs_b, f.docs);
  const TokenShard single = TokenShard::open(a.train.shards[0], tok.fingerprint(), 512);
  EXPECT_EQ(decode_docs(tok, all_tokens(single)), f.docs);
  EXPECT_EQ(b.train.text_bytes, a.train.text_bytes);
}

TEST(Shards, MixedInputsAndAnExplicitValidSet) {
  const std::string root = make_temp_dir("shards-mixed");
  write_text(root + "/a/part1.jsonl", "{\"text\": \"json one\"}\n{\"text\": \"json two\"}\n");
  write_text(root + "/a/part2.jsonl", "{\"text\": \"json three\"}\n");
  write_text(root + "/book.txt", "plain\r\ntext\r\n");
  write_text(root + "/held.txt", "validation text\r");
  moe::test::small_tokenizer().save(root + "/tok.model");
  DataConfig cfg;
  cfg.train = {root + "/a/*.jsonl", root + "/book.txt"};
  cfg.valid = {root + "/held.txt"};
  cfg.tokenizer = root + "/tok.model";
  const PreparedData d = prepare_data(cfg, root + "/run");
  const Tokenizer& tok = *d.tokenizer;
  const auto train = all_tokens(TokenShard::open(d.train.shards.at(0), tok.fingerprint(), 512));
  const auto valid = all_tokens(TokenShard::open(d.valid.shards.at(0), tok.fingerprint(), 512));
  EXPECT_EQ(decode_docs(tok, train),
            (std::vector<std::string>{"json one", "json two", "json three", "plain\ntext\n"}));
  EXPECT_EQ(decode_docs(tok, valid), (std::vector<std::string>{"validation text\n"}));
  EXPECT_EQ(d.train.text_bytes, 8 + 8 + 10 + 11);  // bytes after CRLF normalisation
  EXPECT_EQ(d.valid.text_bytes, 16);
  EXPECT_EQ(d.valid.docs, 1);

  write_text(root + "/bad.jsonl", "{\"text\": \"fine\"}\n{\"text\": \"unterminated}\n");
  cfg.train = {root + "/bad.jsonl"};
  cfg.cache_dir = root + "/cache-bad";
  const std::string msg = expect_usage_error_message([&] { prepare_data(cfg, root + "/run"); });
  EXPECT_NE(msg.find("bad.jsonl:2"), std::string::npos) << msg;
}

TEST(Shards, ErrorsNameTheProblem) {
  const std::string root = make_temp_dir("shards-errors");
  write_text(root + "/empty/a.txt", "");
  write_text(root + "/empty/b.txt", "");
  DataConfig cfg;
  cfg.tokenizer_vocab_size = 400;
  cfg.train = {root + "/empty"};
  std::string msg = expect_usage_error_message([&] { prepare_data(cfg, root + "/run"); });
  EXPECT_NE(msg.find("holds no text"), std::string::npos) << msg;
  cfg.train = {root + "/missing.txt"};
  msg = expect_usage_error_message([&] { prepare_data(cfg, root + "/run"); });
  EXPECT_NE(msg.find("missing.txt"), std::string::npos) << msg;
  cfg.train = {};
  msg = expect_usage_error_message([&] { prepare_data(cfg, root + "/run"); });
  EXPECT_NE(msg.find("data.train"), std::string::npos) << msg;
  EXPECT_EQ(resolve_vocab_size(0, 512), 512);
  EXPECT_EQ(resolve_vocab_size(576, 512), 576);
  msg = expect_usage_error_message([&] { resolve_vocab_size(500, 512); });
  EXPECT_NE(msg.find("model.vocab_size"), std::string::npos) << msg;
}

// Issue 11, item 5: a forged token_count whose byte count wraps modulo 2^64 (2^63 tokens of 2
// bytes = 0 bytes) matched a file holding only the header. Now a usage error naming the shard.
TEST(Shards, ForgedTokenCountIsAUsageError) {
  const std::string path = make_temp_dir("shards-forged") + "/forged.bin";
  ShardHeader h{};
  std::memcpy(h.magic, "MOETOKS", 8);  // with its NUL: the 8-byte magic
  h.version = kShardVersion;
  h.vocab_size = 512;
  h.token_width = token_width_for_vocab(512);
  for (uint64_t count : {uint64_t{1} << 63, ~uint64_t{0}}) {
    h.token_count = count;
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(&h), sizeof(h));
    }
    const std::string msg = expect_usage_error_message([&] { read_shard_header(path); });
    EXPECT_NE(msg.find("token_count"), std::string::npos) << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace moe::data
