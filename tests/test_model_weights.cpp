// Model weights <-> safetensors: Hugging Face names and shapes of docs/model.md §5, a bitwise round trip
// (the reloaded model computes the same logits), the parameter count, and clear errors for a
// truncated file, a missing tensor, a wrong shape and an unexpected tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/param_count.h"
#include "model/weights_io.h"
#include "support/paths.h"
#include "support/tiny_models.h"

namespace moe {
namespace {

// Expects `fn` to throw a moe::Error whose message contains every fragment.
template <typename Fn>
void expect_error(Fn fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning " << fragments[0];
  } catch (const Error& e) {
    for (const auto& f : fragments) {
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
    }
  }
}

TEST(ModelWeights, HuggingFaceNamesAndShapes) {
  auto be = make_backend("cpu");
  const ModelConfig c = test::tiny_deepseek_config();  // d 12, E 6, f 5, S 2, fs 4, hd 6
  MoeModel model(c, test::all_losses("bias"), *be, 1, 4);
  const std::pair<std::string, Shape> expected[] = {
      {"model.embed_tokens.weight", {19, 12}},
      {"model.layers.0.input_layernorm.weight", {12}},
      {"model.layers.0.self_attn.q_proj.weight", {18, 12}},
      {"model.layers.0.self_attn.k_proj.weight", {6, 12}},
      {"model.layers.0.self_attn.v_proj.weight", {6, 12}},
      {"model.layers.0.self_attn.o_proj.weight", {12, 18}},
      {"model.layers.0.post_attention_layernorm.weight", {12}},
      {"model.layers.0.mlp.gate_proj.weight", {14, 12}},
      {"model.layers.0.mlp.up_proj.weight", {14, 12}},
      {"model.layers.0.mlp.down_proj.weight", {12, 14}},
      {"model.layers.1.mlp.gate.weight", {6, 12}},
      {"model.layers.1.mlp.gate.e_score_correction_bias", {6}},
      {"model.layers.2.mlp.experts.5.gate_proj.weight", {5, 12}},
      {"model.layers.2.mlp.experts.0.up_proj.weight", {5, 12}},
      {"model.layers.2.mlp.experts.3.down_proj.weight", {12, 5}},
      {"model.layers.1.mlp.shared_experts.gate_proj.weight", {8, 12}},
      {"model.layers.1.mlp.shared_experts.up_proj.weight", {8, 12}},
      {"model.layers.1.mlp.shared_experts.down_proj.weight", {12, 8}},
      {"model.norm.weight", {12}},
      {"lm_head.weight", {19, 12}},
  };
  for (const auto& e : expected) EXPECT_EQ(model.param(e.first).value.shape(), e.second) << e.first;
  EXPECT_FALSE(model.param("model.layers.1.mlp.gate.e_score_correction_bias").trainable);
  EXPECT_FALSE(model.param("model.norm.weight").decay);
  expect_error([&] { model.param("model.layers.0.mlp.gate.weight"); },
               {"model.layers.0.mlp.gate.weight"});

  // 3 layers x 9 + embed + norm + head; MoE layers: router, bias, 3 x 6 experts, 3 shared.
  EXPECT_EQ(model.params().size(), 1 + 9 + 2 * (6 + 2 + 18 + 3) + 1 + 1);
  int64_t trainable = 0;
  std::set<std::string> names;
  for (const Param& p : model.params()) {
    if (p.trainable) trainable += p.value.numel();
    EXPECT_TRUE(names.insert(p.name).second) << "duplicate " << p.name;
  }
  EXPECT_EQ(model.n_params_total(), trainable);
  EXPECT_EQ(model.n_params_total(), params_total(c));

  MoeModel vanilla(test::tiny_vanilla_config(), test::all_losses("aux"), *be, 1, 4);
  expect_error([&] { vanilla.param("lm_head.weight"); }, {"lm_head.weight"});
  expect_error([&] { vanilla.param("model.layers.0.mlp.gate.e_score_correction_bias"); },
               {"e_score_correction_bias"});
}

TEST(ModelWeights, ActivationEstimateMatchesWhatTheModelAllocates) {
  auto be = make_backend("cpu", 1);
  for (const ModelConfig& c : {test::tiny_vanilla_config(), test::tiny_deepseek_config()}) {
    for (bool recompute : {false, true}) {
      for (DType dtype : {DType::kF32, DType::kF64}) {
        MoeModel model(c, test::all_losses("bias"), *be, 3, 5, dtype, recompute);
        EXPECT_EQ(model.activation_bytes(),
                  estimate_activation_memory(c, 0, 3, 5, dtype, true, recompute).total_bytes)
            << c.arch << " recompute " << recompute << " " << dtype_name(dtype);
      }
    }
  }
}

TEST(ModelWeights, RoundTripIsBitwiseAndComputesTheSameLogits) {
  auto be = make_backend("cpu");
  const ModelConfig c = test::tiny_deepseek_config();
  const LossConfig l = test::all_losses("bias");
  MoeModel a(c, l, *be, 2, 6), b(c, l, *be, 2, 6);
  a.init_parameters(1);
  b.init_parameters(2);
  const std::string path = test::make_temp_dir("weights") + "/model.safetensors";
  save_weights(a, path, {{"step", "0"}});
  {
    SafeTensorsReader r(path);
    EXPECT_EQ(r.metadata().at("step"), "0");
    EXPECT_EQ(r.names().size(), a.params().size());
    EXPECT_EQ(r.info("model.layers.2.mlp.experts.4.down_proj.weight").dtype, StDType::kF32);
  }
  load_weights(b, path);
  for (size_t i = 0; i < a.params().size(); ++i) {
    EXPECT_EQ(be->download_vec<float>(a.params()[i].value),
              be->download_vec<float>(b.params()[i].value))
        << a.params()[i].name;
  }
  const Batch batch = test::random_batch(2, 6, c.vocab_size, 3);
  a.forward(batch, false);
  b.forward(batch, false);
  EXPECT_EQ(a.logits_host(), b.logits_host());
}

TEST(ModelWeights, BadFilesAreClearErrors) {
  auto be = make_backend("cpu");
  const ModelConfig c = test::tiny_vanilla_config();
  const LossConfig l = test::all_losses("aux");
  MoeModel model(c, l, *be, 1, 4);
  model.init_parameters(1);
  const std::string dir = test::make_temp_dir("weights_bad");
  const std::string good = dir + "/good.safetensors";
  save_weights(model, good);

  // Truncated: the path and "truncated" in the message; the model is left untouched.
  const auto before = be->download_vec<float>(model.params()[0].value);
  {
    const auto size = std::filesystem::file_size(good);
    std::filesystem::copy_file(good, dir + "/cut.safetensors");
    std::filesystem::resize_file(dir + "/cut.safetensors", size - 10);
  }
  expect_error([&] { load_weights(model, dir + "/cut.safetensors"); },
               {dir + "/cut.safetensors", "truncated"});
  EXPECT_EQ(before, be->download_vec<float>(model.params()[0].value));

  // A model with another width: shape mismatch names the tensor and both shapes.
  ModelConfig wide = c;
  wide.expert_ffn_dim = 11;
  MoeModel other(wide, l, *be, 1, 4);
  expect_error([&] { load_weights(other, good); },
               {"model.layers.0.mlp.experts.0.gate_proj.weight", "[10, 12]", "[11, 12]"});

  // Untied model from a tied file: lm_head.weight is missing.
  ModelConfig untied = c;
  untied.tie_embeddings = false;
  MoeModel head(untied, l, *be, 1, 4);
  expect_error([&] { load_weights(head, good); }, {"missing tensor", "lm_head.weight"});

  // An extra tensor is an error too (strict loading).
  SafeTensorsWriter w;
  add_weights(model, w);
  w.add_f32("model.layers.0.mlp.gate.e_score_correction_bias", {4}, {0, 0, 0, 0});
  w.write(dir + "/extra.safetensors");
  expect_error([&] { load_weights(model, dir + "/extra.safetensors"); },
               {"unexpected tensor", "e_score_correction_bias"});
}

// Issue 11, item 4: NaN weights were evaluated without complaint, and a diverged run (a huge
// loss.bias_gamma) saved NaN balancing biases. Loading names the tensor (usage error, exit 2)
// and leaves the model untouched; saving refuses.
TEST(ModelWeights, NonFiniteWeightsAreRefused) {
  auto be = make_backend("cpu");
  const ModelConfig c = test::tiny_vanilla_config();
  const LossConfig l = test::all_losses("bias");
  MoeModel model(c, l, *be, 1, 4);
  model.init_parameters(1);
  const std::string dir = test::make_temp_dir("weights_nonfinite");
  const auto before = be->download_vec<float>(model.params()[0].value);
  for (float bad : {std::nanf(""), HUGE_VALF, -HUGE_VALF}) {
    SafeTensorsWriter w;
    for (const Param& p : model.params()) {
      std::vector<float> v = be->download_vec<float>(p.value);
      if (p.name == "model.layers.1.mlp.gate.e_score_correction_bias") v[2] = bad;
      w.add_f32(p.name, p.value.shape(), v);
    }
    w.write(dir + "/nan.safetensors");
    try {
      load_weights(model, dir + "/nan.safetensors");
      ADD_FAILURE() << "a non-finite weight was loaded";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
      EXPECT_NE(std::string(e.what()).find("model.layers.1.mlp.gate.e_score_correction_bias"),
                std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("element 2"), std::string::npos) << e.what();
    }
    EXPECT_EQ(before, be->download_vec<float>(model.params()[0].value));
  }
  // Saving: the run stops with an error naming the parameter instead of writing the file.
  Param& p = model.param("model.layers.0.mlp.gate.weight");
  std::vector<float> v = be->download_vec<float>(p.value);
  v[0] = std::nanf("");
  be->upload(p.value, v.data(), v.size() * sizeof(float));
  expect_error([&] { save_weights(model, dir + "/diverged.safetensors"); },
               {"non-finite", "model.layers.0.mlp.gate.weight"});
  EXPECT_FALSE(std::filesystem::exists(dir + "/diverged.safetensors"));
}

// Issue 11, item 5: sizes from a config are multiplied exactly. Each key below is within its
// limit, but the model's parameter count passes int64: a usage error naming the keys, before
// any allocation (expert_ffn_dim = 2^62 used to segfault inside oneDNN).
TEST(ModelWeights, OverflowingSizesAreUsageErrors) {
  auto be = make_backend("cpu");
  ModelConfig c = test::tiny_vanilla_config();
  c.d_model = int64_t{1} << 20;
  c.n_heads = 1;
  c.n_kv_heads = 1;
  c.head_dim = 2;
  c.n_experts = int64_t{1} << 16;
  c.top_k = 1;
  c.expert_ffn_dim = int64_t{1} << 20;
  c.n_layers = int64_t{1} << 16;
  c.dense_layers = 0;
  const LossConfig l = test::all_losses("aux");
  try {
    count_params(c, 1000);
    ADD_FAILURE() << "count_params did not overflow";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
    EXPECT_NE(std::string(e.what()).find("model.expert_ffn_dim"), std::string::npos) << e.what();
  }
  try {
    MoeModel model(c, l, *be, 1, 4);
    ADD_FAILURE() << "the model was built";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
    EXPECT_NE(std::string(e.what()).find("does not fit"), std::string::npos) << e.what();
  }
  EXPECT_THROW(estimate_activation_memory(c, 1000, int64_t{1} << 24, int64_t{1} << 24,
                                          DType::kF32, true),
               Error);
}

}  // namespace
}  // namespace moe
