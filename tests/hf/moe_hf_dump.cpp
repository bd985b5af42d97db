// moe_hf_dump: what the Hugging Face interop tests (tests/hf/*.py) compare transformers against,
// computed by the C++ model and tokenizer themselves.
//   moe_hf_dump logits CHECKPOINT IN.safetensors OUT.safetensors
//     IN holds input_ids (I32 [B, T], T <= max_seq_len); OUT gets logits (F32 [B, T, V]) of one
//     forward pass and, for each MoE layer l, topk.l (I32 [B * T, k], the chosen experts in slot
//     order) from the model's routing record.
//   moe_hf_dump import HF_DIR TOKENIZER.model OUT_DIR
//     the weights moetrain --init-from HF_DIR starts from (read_hf_checkpoint, apply_hf_config,
//     load_hf_weights), untrained, as a checkpoint directory for eval: config.yaml,
//     model.safetensors, tokenizer.model (max_seq_len: max_position_embeddings, at most 128).
//   moe_hf_dump encode TOKENIZER.model IN.jsonl OUT.jsonl
//     each line of IN is a JSON string; each line of OUT the token ids of Tokenizer::encode.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "config/config.h"
#include "core/error.h"
#include "data/tokenizer.h"
#include "checkpoint/model_checkpoint.h"
#include "io/safetensors.h"
#include "model/hf_import.h"
#include "model/weights_io.h"

namespace {

int dump_logits(const std::string& ckpt, const std::string& in, const std::string& out) {
  moe::SafeTensorsReader reader(in);
  const moe::Shape shape = reader.shape("input_ids");
  MOE_USAGE_CHECK(shape.size() == 2, "{}: input_ids must be [B, T]", in);
  const int64_t B = shape[0], T = shape[1];
  auto backend = moe::make_backend("cpu", 1);
  moe::LoadedCheckpoint ck = moe::load_model_checkpoint(ckpt, *backend, B);
  MOE_USAGE_CHECK(T <= ck.config.model.max_seq_len, "{}: T = {} > max_seq_len {}", in, T,
                  ck.config.model.max_seq_len);
  moe::Batch batch;
  batch.batch = B;
  batch.seq = T;
  batch.inputs = reader.to_i32("input_ids");
  batch.targets.assign(B * T, -1);
  ck.model->forward(batch, /*need_grad=*/false);
  moe::SafeTensorsWriter writer;
  const std::vector<float> logits = ck.model->logits_host();
  const int64_t V = static_cast<int64_t>(logits.size()) / (B * T);
  writer.add_f32("logits", {B, T, V}, logits);
  for (const moe::LayerRouting& r : ck.model->routing()) {
    writer.add_i32("topk." + std::to_string(r.layer), {r.n_tokens, r.top_k}, r.topk_idx);
  }
  writer.write(out, /*atomic=*/true);
  return 0;
}

int import_hf(const std::string& hf_dir, const std::string& tokenizer, const std::string& out) {
  const moe::HfImport hf = moe::read_hf_checkpoint(hf_dir);
  moe::Config cfg;
  cfg.model.max_seq_len = std::min<int64_t>(hf.max_position_embeddings > 0
                                                ? hf.max_position_embeddings : 128, 128);
  moe::apply_hf_config(hf, cfg.model);
  cfg.data.tokenizer = tokenizer;
  cfg.train.seq_len = cfg.model.max_seq_len;
  moe::validate(cfg);
  auto backend = moe::make_backend("cpu", 1);
  moe::MoeModel model(cfg.model, cfg.loss, *backend, 1, cfg.model.max_seq_len);
  model.init_parameters(1);
  moe::load_hf_weights(model, hf);
  std::filesystem::create_directories(out);
  moe::save_weights(model, out + "/model.safetensors");
  std::ofstream(out + "/config.yaml") << moe::config_to_yaml(cfg);
  std::filesystem::copy_file(tokenizer, out + "/tokenizer.model",
                             std::filesystem::copy_options::overwrite_existing);
  return 0;
}

int encode(const std::string& model, const std::string& in, const std::string& out) {
  const moe::data::Tokenizer tok = moe::data::Tokenizer::load(model);
  std::ifstream src(in);
  MOE_USAGE_CHECK(src.good(), "{}: cannot open", in);
  std::ofstream dst(out);
  std::string line;
  while (std::getline(src, line)) {
    const std::string text = nlohmann::json::parse(line).get<std::string>();
    dst << nlohmann::json(tok.encode(text)).dump() << '\n';
  }
  MOE_CHECK(dst.good(), "{}: write failed", out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> a(argv + 1, argv + argc);
    if (a.size() == 4 && a[0] == "logits") return dump_logits(a[1], a[2], a[3]);
    if (a.size() == 4 && a[0] == "import") return import_hf(a[1], a[2], a[3]);
    if (a.size() == 4 && a[0] == "encode") return encode(a[1], a[2], a[3]);
    std::cerr << "usage: moe_hf_dump logits CHECKPOINT IN.safetensors OUT.safetensors\n"
                 "       moe_hf_dump import HF_DIR TOKENIZER.model OUT_DIR\n"
                 "       moe_hf_dump encode TOKENIZER.model IN.jsonl OUT.jsonl\n";
    return 2;
  } catch (const moe::Error& e) {
    std::cerr << "moe_hf_dump: " << e.what() << '\n';
    return e.exit_code();
  } catch (const std::exception& e) {
    std::cerr << "moe_hf_dump: " << e.what() << '\n';
    return 1;
  }
}
