// Config loading: defaults, the YAML round trip, --set overrides, the --losses shorthand, and
// each kind of usage error (unknown key with a suggestion, wrong type, out of range, malformed
// YAML), all of which must name the key and exit with code 2.
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include <gtest/gtest.h>

#include "config/cli.h"
#include "config/config.h"
#include "core/error.h"
#include "support/paths.h"

namespace moe {
namespace {

// Runs fn, expects a usage error, and returns its message.
template <typename Fn>
std::string usage_error(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
    EXPECT_EQ(e.exit_code(), 2);
    return e.what();
  }
  ADD_FAILURE() << "expected a usage error";
  return "";
}

Config from_yaml(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  return config_from_yaml_string(yaml, "test.yaml", overrides);
}

TEST(Config, DefaultsValidate) {
  Config cfg;
  EXPECT_NO_THROW(validate(cfg));
  Config empty = from_yaml("");
  EXPECT_EQ(empty.model.n_experts, cfg.model.n_experts);
  EXPECT_EQ(empty.loss.losses, cfg.loss.losses);
  EXPECT_EQ(empty.train.schedule, "cosine");
}

TEST(Config, ReadsEveryType) {
  Config cfg = from_yaml(R"(
model: {arch: deepseek, n_shared_experts: 2, n_experts: 16, top_k: 6, norm_topk_prob: true,
        rope_theta: 5e5, max_seq_len: 256}
loss: {losses: [lb, sp, cp, z], sp_coef: 0.004, balance: bias}
data: {train: [a.txt, "dir/*.txt"], valid: b.txt, tokenizer: ~}
train: {lr: 1e-3, seq_len: 256, max_steps: 2e3, device: "cuda:1", dtype: bf16}
run: {out_dir: runs/x}
)");
  EXPECT_EQ(cfg.model.arch, "deepseek");
  EXPECT_EQ(cfg.model.n_shared_experts, 2);
  EXPECT_TRUE(cfg.model.norm_topk_prob);
  EXPECT_DOUBLE_EQ(cfg.model.rope_theta, 5e5);
  EXPECT_EQ(cfg.loss.losses, (std::vector<std::string>{"lb", "sp", "cp", "z"}));
  EXPECT_DOUBLE_EQ(cfg.loss.sp_coef, 0.004);
  EXPECT_EQ(cfg.data.train, (std::vector<std::string>{"a.txt", "dir/*.txt"}));
  EXPECT_EQ(cfg.data.valid, (std::vector<std::string>{"b.txt"}));
  EXPECT_EQ(cfg.data.tokenizer, "");
  EXPECT_EQ(cfg.train.max_steps, 2000);
  EXPECT_EQ(cfg.train.device, "cuda:1");
}

TEST(Config, RoundTripKeepsEveryValue) {
  Config cfg;
  cfg.model.arch = "deepseek";
  cfg.model.n_shared_experts = 1;
  cfg.model.rope_theta = 123456.789;
  cfg.model.init_std = 0.1 / 3.0;  // not a short decimal: must still round-trip exactly
  cfg.loss.losses = {};
  cfg.data.train = {"a b.txt", "x: y.txt", "'quoted'.txt"};
  cfg.data.cache_dir = "";
  cfg.train.lr = 2.5e-4;
  cfg.train.recompute = true;
  cfg.run.out_dir = "runs/#hash";
  const std::string yaml = config_to_yaml(cfg);
  Config back = from_yaml(yaml);
  EXPECT_EQ(config_to_yaml(back), yaml);
  EXPECT_EQ(back.model.rope_theta, cfg.model.rope_theta);
  EXPECT_EQ(back.model.init_std, cfg.model.init_std);
  EXPECT_TRUE(back.loss.losses.empty());
  EXPECT_EQ(back.data.train, cfg.data.train);
  EXPECT_EQ(back.train.lr, cfg.train.lr);
  EXPECT_TRUE(back.train.recompute);
  EXPECT_EQ(back.run.out_dir, cfg.run.out_dir);
}

TEST(Config, DumpWritesEveryKey) {
  const std::string yaml = config_to_yaml(Config{});
  for (const char* key : {"arch:", "capacity_factor:", "bias_gamma:", "jsonl_field:", "shuffle:",
                          "recompute:", "keep_last:", "tokenizer_train_bytes:"}) {
    EXPECT_NE(yaml.find(key), std::string::npos) << key;
  }
}

TEST(Config, UnknownKeyNamesKeySuggestionAndLine) {
  std::string msg = usage_error([] { from_yaml("model:\n  d_model: 64\n  n_expert: 4\n"); });
  EXPECT_NE(msg.find("model.n_expert'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'model.n_experts'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("test.yaml:3"), std::string::npos) << msg;
}

TEST(Config, UnknownKeyInWrongSectionPointsToRightSection) {
  std::string msg = usage_error([] { from_yaml("model: {lr: 0.1}\n"); });
  EXPECT_NE(msg.find("did you mean 'train.lr'"), std::string::npos) << msg;
}

TEST(Config, UnknownSectionSuggestsSection) {
  std::string msg = usage_error([] { from_yaml("modle:\n  d_model: 64\n"); });
  EXPECT_NE(msg.find("'modle'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'model'"), std::string::npos) << msg;
}

TEST(Config, DuplicateKeyIsAnError) {
  std::string msg = usage_error([] { from_yaml("train:\n  lr: 1\n  lr: 2\n"); });
  EXPECT_NE(msg.find("duplicate key 'train.lr'"), std::string::npos) << msg;
}

TEST(Config, WrongTypeNamesKeyExpectedAndFound) {
  std::string msg = usage_error([] { from_yaml("train:\n  lr: abc\n"); });
  EXPECT_NE(msg.find("train.lr: expected a number, found 'abc'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("test.yaml:2"), std::string::npos) << msg;
  msg = usage_error([] { from_yaml("model: {n_layers: 2.5}\n"); });
  EXPECT_NE(msg.find("model.n_layers: expected an integer, found '2.5'"), std::string::npos)
      << msg;
  msg = usage_error([] { from_yaml("model: {tie_embeddings: maybe}\n"); });
  EXPECT_NE(msg.find("model.tie_embeddings: expected true or false"), std::string::npos) << msg;
  msg = usage_error([] { from_yaml("model: {d_model: [1, 2]}\n"); });
  EXPECT_NE(msg.find("model.d_model: expected an integer, found a list"), std::string::npos)
      << msg;
  msg = usage_error([] { from_yaml("train: 3\n"); });
  EXPECT_NE(msg.find("train: expected a mapping"), std::string::npos) << msg;
}

TEST(Config, MalformedYamlNamesFileAndLine) {
  std::string msg = usage_error([] { from_yaml("model:\n  d_model: 64\n   n_layers: [2\n"); });
  EXPECT_NE(msg.find("test.yaml:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("malformed YAML"), std::string::npos) << msg;
}

TEST(Config, MissingFileIsUsageError) {
  std::string msg = usage_error([] { load_config("/nonexistent/dir/cfg.yaml"); });
  EXPECT_NE(msg.find("/nonexistent/dir/cfg.yaml"), std::string::npos) << msg;
}

struct RangeCase {
  const char* yaml;
  const char* expect;  // a fragment of the message
};

TEST(Config, OutOfRangeValuesNameTheKey) {
  const RangeCase cases[] = {
      {"model: {d_model: 0}", "model.d_model: expected a positive integer, found 0"},
      {"model: {top_k: 9, n_experts: 8}", "model.top_k: expected a value <= model.n_experts (8)"},
      {"model: {n_heads: 6, n_kv_heads: 4}", "model.n_heads: expected a multiple of"},
      {"model: {d_model: 130, n_heads: 4}", "model.d_model: expected a multiple of model.n_heads"},
      {"model: {arch: vanilla, n_shared_experts: 1}", "model.n_shared_experts: expected 0"},
      {"model: {arch: deepseek}", "model.n_shared_experts: expected >= 1"},
      {"model: {arch: mixtral}", "model.arch: expected one of vanilla, deepseek, found 'mixtral'"},
      {"model: {dense_layers: 4, n_layers: 4}", "model.dense_layers: expected a value < "},
      {"model: {capacity_factor: 0.5}", "model.capacity_factor"},
      {"loss: {losses: [lb, sq]}", "loss.losses: expected names from lb, sp, cp, z, found 'sq'"},
      {"loss: {losses: 'lb,lb'}", "loss.losses: 'lb' is listed twice"},
      {"loss: {balance: none}", "loss.balance: expected one of aux, bias"},
      {"loss: {sp_coef: -1}", "loss.sp_coef: expected a value in [0, "},
      {"train: {schedule: step}", "train.schedule: expected one of cosine, linear, constant"},
      {"train: {device: gpu}", "train.device: expected 'cpu', 'cuda' or 'cuda:N', found 'gpu'"},
      {"train: {device: 'cuda:x'}", "train.device"},
      {"train: {dtype: fp16}", "train.dtype: expected one of fp32, bf16"},
      {"train: {dtype: bf16, device: cpu}", "train.dtype: 'bf16' needs a CUDA device"},
      {"train: {beta2: 1.0}", "train.beta2: expected a value in [0, 1)"},
      {"train: {min_lr_ratio: 1.5}", "train.min_lr_ratio: expected a value in [0, 1]"},
      {"train: {seq_len: 256}", "train.seq_len: expected a value <= model.max_seq_len (128)"},
      {"train: {lr: 0}", "train.lr: expected a positive number"},
      {"data: {valid_fraction: 1}", "data.valid_fraction: expected a value in [0, 1)"},
      {"run: {keep_last: 0}", "run.keep_last: expected a positive integer"},
  };
  for (const auto& c : cases) {
    std::string msg = usage_error([&] { from_yaml(c.yaml); });
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.yaml << "\n  got: " << msg;
  }
}

// Issue 11, item 4: every float key is finite and in range. .inf trained to exit 0 and wrote a
// config.yaml the reader then refused, so the run's checkpoints could not be loaded.
TEST(Config, EveryFloatKeyRefusesNonFiniteValues) {
  const char* float_keys[] = {"model.rope_theta", "model.norm_eps",     "model.init_std",
                              "model.capacity_factor", "loss.lb_coef", "loss.z_coef",
                              "loss.sp_coef",     "loss.cp_coef",       "loss.bias_gamma",
                              "data.valid_fraction", "train.lr",        "train.min_lr_ratio",
                              "train.weight_decay", "train.beta1",      "train.beta2",
                              "train.eps",        "train.grad_clip"};
  for (const char* key : float_keys) {
    for (const char* value : {".inf", "-.inf", ".nan", ".NaN", "1e400", "-1e400"}) {
      const std::string set = std::string(key) + "=" + value;
      std::string msg = usage_error([&] { from_yaml("", {set}); });
      EXPECT_NE(msg.find(key), std::string::npos) << set << "\n  got: " << msg;
      const std::string leaf = std::string(key).substr(std::string(key).find('.') + 1);
      msg = usage_error([&] {
        from_yaml(std::string(key).substr(0, std::string(key).find('.')) + ":\n  " + leaf + ": " +
                  value + "\n");
      });
      EXPECT_NE(msg.find(key), std::string::npos) << key << ": " << value << "\n  got: " << msg;
      EXPECT_NE(msg.find("test.yaml:2"), std::string::npos) << msg;
    }
  }
}

// Configs built in code (not read from YAML) are caught by validate() too.
TEST(Config, ValidateRefusesNonFiniteFloats) {
  using Set = void (*)(Config&, double);
  const std::pair<const char*, Set> cases[] = {
      {"model.rope_theta", [](Config& c, double v) { c.model.rope_theta = v; }},
      {"model.norm_eps", [](Config& c, double v) { c.model.norm_eps = v; }},
      {"model.init_std", [](Config& c, double v) { c.model.init_std = v; }},
      {"model.capacity_factor", [](Config& c, double v) { c.model.capacity_factor = v; }},
      {"loss.bias_gamma", [](Config& c, double v) { c.loss.bias_gamma = v; }},
      {"loss.cp_coef", [](Config& c, double v) { c.loss.cp_coef = v; }},
      {"train.lr", [](Config& c, double v) { c.train.lr = v; }},
      {"train.weight_decay", [](Config& c, double v) { c.train.weight_decay = v; }},
      {"train.eps", [](Config& c, double v) { c.train.eps = v; }},
      {"train.grad_clip", [](Config& c, double v) { c.train.grad_clip = v; }},
  };
  for (const auto& [key, set] : cases) {
    for (double v : {HUGE_VAL, -HUGE_VAL, std::nan("")}) {
      Config cfg;
      set(cfg, v);
      const std::string msg = usage_error([&] { validate(cfg); });
      EXPECT_NE(msg.find(key), std::string::npos) << key << " = " << v << "\n  got: " << msg;
    }
  }
}

TEST(Config, UpperLimitsNameTheKey) {
  const RangeCase cases[] = {
      {"loss: {bias_gamma: 1e300}", "loss.bias_gamma: expected a value in [0, 1]"},
      {"loss: {bias_gamma: 2}", "loss.bias_gamma"},
      {"model: {rope_theta: 1e300}", "model.rope_theta: expected a value <= "},
      {"model: {expert_ffn_dim: 4611686018427387904}", "model.expert_ffn_dim: expected a value <= "},
      {"model: {d_model: 1e15}", "model.d_model: expected a value <= "},
      {"model: {n_experts: 1e12, top_k: 2}", "model.n_experts: expected a value <= "},
      {"model: {vocab_size: 1e12}", "model.vocab_size: expected a value <= "},
      {"train: {threads: 100000}", "train.threads: expected a value <= 1024, found 100000"},
      {"train: {batch_size: 1e12}", "train.batch_size: expected a value <= "},
      {"train: {max_steps: 1e15}", "train.max_steps: expected a value <= "},
      {"train: {lr: 1e300}", "train.lr: expected a value <= "},
      {"train: {grad_clip: 1e300}", "train.grad_clip"},
      {"train: {eps: 2}", "train.eps: expected a value <= 1"},
      {"train: {eps: 1e-320}", "train.eps: expected 0 or a number of magnitude >= "},
      {"loss: {lb_coef: 1e300}", "loss.lb_coef"},
      {"data: {tokenizer_vocab_size: 1e12}", "data.tokenizer_vocab_size: expected a value <= "},
      {"run: {save_every: 1e15}", "run.save_every: expected a value <= "},
      {"train: {max_steps: 1e12, batch_size: 1e6, grad_accum: 1e6}",
       "train.max_steps x train.batch_size"},
  };
  for (const auto& c : cases) {
    std::string msg = usage_error([&] { from_yaml(c.yaml); });
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.yaml << "\n  got: " << msg;
  }
}

// Whatever config_to_yaml writes must read back to the same config, at the edges of every range.
TEST(Config, ExtremeValidValuesRoundTrip) {
  Config cfg;
  cfg.model.rope_theta = 1e12;
  cfg.model.norm_eps = std::numeric_limits<double>::min();  // the smallest normal double
  cfg.model.init_std = 1e3;
  cfg.model.vocab_size = int64_t{1} << 24;
  cfg.loss.bias_gamma = 1.0;
  cfg.loss.lb_coef = 1e6;
  cfg.loss.z_coef = 0.1 + 0.2;  // 0.30000000000000004
  cfg.train.seed = std::numeric_limits<int64_t>::max();
  cfg.train.eps = std::numeric_limits<double>::min();
  cfg.train.grad_clip = 1e6;
  cfg.train.threads = 1024;
  cfg.train.max_steps = int64_t{1} << 40;
  cfg.train.lr = 1e3;
  cfg.data.train = {"tab\there", "new\nline", "quote\"d", "unicode \xE2\x96\x81"};
  cfg.run.out_dir = "- leading dash: and colon";
  ASSERT_NO_THROW(validate(cfg));
  const std::string yaml = config_to_yaml(cfg);
  Config back;
  ASSERT_NO_THROW(back = from_yaml(yaml)) << yaml;
  EXPECT_EQ(config_to_yaml(back), yaml);
  EXPECT_EQ(back.model.norm_eps, cfg.model.norm_eps);
  EXPECT_EQ(back.train.eps, cfg.train.eps);
  EXPECT_EQ(back.loss.z_coef, cfg.loss.z_coef);
  EXPECT_EQ(back.train.seed, cfg.train.seed);
  EXPECT_EQ(back.data.train, cfg.data.train);
  EXPECT_EQ(back.run.out_dir, cfg.run.out_dir);
}

TEST(Config, HeadDimDecouplesWidth) {
  Config cfg = from_yaml("model: {d_model: 96, n_heads: 4, n_kv_heads: 2, head_dim: 32}\n");
  EXPECT_EQ(cfg.model.resolved_head_dim(), 32);
}

TEST(Config, OverridesApplyInOrderAndParseYaml) {
  Config cfg = from_yaml("train: {lr: 0.1}\n",
                         {"train.lr=2e-3", "model.n_experts=16", "model.top_k=4",
                          "data.train=[a.txt, b.txt]", "train.lr=5e-4", "model.tie_embeddings=false"});
  EXPECT_DOUBLE_EQ(cfg.train.lr, 5e-4);
  EXPECT_EQ(cfg.model.n_experts, 16);
  EXPECT_EQ(cfg.model.top_k, 4);
  EXPECT_FALSE(cfg.model.tie_embeddings);
  EXPECT_EQ(cfg.data.train, (std::vector<std::string>{"a.txt", "b.txt"}));
}

TEST(Config, OverrideErrorsNameTheKey) {
  std::string msg = usage_error([] { from_yaml("", {"train.lrr=1"}); });
  EXPECT_NE(msg.find("unknown key 'train.lrr' (did you mean 'train.lr'?)"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("--set train.lrr=1"), std::string::npos) << msg;
  msg = usage_error([] { from_yaml("", {"train.lr=abc"}); });
  EXPECT_NE(msg.find("train.lr: expected a number, found 'abc'"), std::string::npos) << msg;
  msg = usage_error([] { from_yaml("", {"train.lr"}); });
  EXPECT_NE(msg.find("KEY=VALUE"), std::string::npos) << msg;
  // Validation runs after the overrides: the final values must be consistent.
  msg = usage_error([] { from_yaml("", {"model.top_k=12"}); });
  EXPECT_NE(msg.find("model.top_k"), std::string::npos) << msg;
}

TEST(Config, LossesAcceptACommaString) {
  Config cfg = from_yaml("loss: {losses: 'lb, sp,cp'}\n");
  EXPECT_EQ(cfg.loss.losses, (std::vector<std::string>{"lb", "sp", "cp"}));
  EXPECT_TRUE(cfg.loss.has("cp"));
  EXPECT_FALSE(cfg.loss.has("z"));
}

// The shared command line: --config, --set, --losses and their priority.
class Cli : public ::testing::Test {
 protected:
  int parse(std::vector<std::string> args) {
    args.insert(args.begin(), "prog");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    app_ = std::make_unique<CLI::App>("test");
    opts_ = CliOptions{};
    add_config_options(*app_, opts_);
    add_run_options(*app_, opts_);
    return parse_command_line(*app_, static_cast<int>(argv.size()), argv.data());
  }
  std::string write_config(const std::string& text) {
    std::string path = test::make_temp_dir("cli") + "/c.yaml";
    std::ofstream(path) << text;
    return path;
  }
  std::unique_ptr<CLI::App> app_;
  CliOptions opts_;
};

TEST_F(Cli, LossesShorthandWinsOverSet) {
  std::string path = write_config("loss: {losses: [lb]}\n");
  ASSERT_EQ(parse({"--config", path, "--set", "loss.losses=[z]", "--losses", "lb,sp,cp",
                   "--set", "train.lr=1e-4"}), -1);
  Config cfg = resolve_config(opts_);
  EXPECT_EQ(cfg.loss.losses, (std::vector<std::string>{"lb", "sp", "cp"}));
  EXPECT_DOUBLE_EQ(cfg.train.lr, 1e-4);
}

TEST_F(Cli, LossesNoneMeansNoAuxiliaryLoss) {
  std::string path = write_config("");
  ASSERT_EQ(parse({"--config", path, "--losses", "none"}), -1);
  EXPECT_TRUE(resolve_config(opts_).loss.losses.empty());
}

TEST_F(Cli, UnknownFlagExitsWithTwo) {
  testing::internal::CaptureStderr();
  int code = parse({"--confg", "x.yaml"});
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(code, 2);
  EXPECT_NE(err.find("--confg"), std::string::npos) << err;
}

TEST_F(Cli, MissingConfigIsUsageError) {
  ASSERT_EQ(parse({"--dry-run"}), -1);
  std::string msg = usage_error([&] { resolve_config(opts_); });
  EXPECT_NE(msg.find("--config"), std::string::npos) << msg;
}

TEST_F(Cli, FallbackConfigFromResume) {
  std::string path = write_config("train: {lr: 0.25}\n");
  ASSERT_EQ(parse({"--resume", "somewhere", "--set", "train.max_steps=7"}), -1);
  Config cfg = resolve_config(opts_, path);
  EXPECT_DOUBLE_EQ(cfg.train.lr, 0.25);
  EXPECT_EQ(cfg.train.max_steps, 7);
}

}  // namespace
}  // namespace moe
