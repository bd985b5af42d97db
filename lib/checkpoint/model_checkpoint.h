// Loading a checkpoint for evaluation or inference: its config, a MoeModel with its weights built for
// rows x max_seq_len tokens, and its tokenizer. The model is built with "sp" in its loss list,
// so the routing overlap (the co-activated cos^2) is reported for every checkpoint, including
// those trained without sp. (MoeModel's forward currently computes that statistic whatever the
// loss list says; adding "sp" keeps the overlap measured should it ever skip unused statistics.)
// Logits are unaffected.
// DIR may be one checkpoint (checkpoints/step_XXXXXXXX) or a run directory (its newest one).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "config/config.h"
#include "data/tokenizer.h"
#include "model/model.h"

namespace moe {

struct LoadedCheckpoint {
  std::string dir;   // the checkpoint directory actually read
  Config config;
  std::unique_ptr<MoeModel> model;
  std::unique_ptr<data::Tokenizer> tokenizer;
  int64_t step = 0;
};

// Usage errors (exit 2) name the directory and what is missing: no such directory, no
// config.yaml / model.safetensors / tokenizer.model, a manifest that does not match.
LoadedCheckpoint load_model_checkpoint(const std::string& dir, Backend& backend, int64_t rows);

}  // namespace moe
