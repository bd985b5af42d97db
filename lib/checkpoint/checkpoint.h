// Checkpoints (docs/model.md §5): one directory per checkpoint,
//   <run_dir>/checkpoints/step_XXXXXXXX/
//     model.safetensors      parameters, Hugging Face names, f32 (model/weights_io.h)
//     optimizer.safetensors  AdamW moments "exp_avg.<name>", "exp_avg_sq.<name>"
//     config.yaml            the resolved config (vocab_size filled in)
//     tokenizer.model        the sentencepiece model the data was encoded with
//     trainer_state.json     step, tokens seen, learning rate, data-loader position (with its
//                            shuffle RNG state): everything else an exact resume needs
//     manifest.json          size and 64-bit hash of every file above, written last
//
// Atomicity: everything is written into step_XXXXXXXX.tmp-<pid>, each file fsync'ed, then the
// directory is renamed into place (and the parent fsync'ed). A directory named step_XXXXXXXX is
// therefore complete unless it was damaged later; the manifest catches that (a truncated or
// altered file is an error naming the file). *.tmp-* directories left by a crash are never
// read. Pruning keeps the newest `keep_last` complete checkpoints and never the newest one.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "model/model.h"

namespace moe {

class SafeTensorsReader;
class SafeTensorsWriter;

// What a checkpoint needs of an optimizer: its state as named tensors (optimizer.safetensors).
// The trainer's AdamW implements it; the checkpoint module stays below train/.
class OptimizerStateIO {
 public:
  virtual ~OptimizerStateIO() = default;
  virtual void save(SafeTensorsWriter& out) = 0;
  virtual void load(const SafeTensorsReader& in) = 0;
};

struct TrainerState {
  int64_t step = 0;           // optimizer updates done
  int64_t tokens_seen = 0;    // training tokens consumed (all micro-batches)
  double lr = 0;              // learning rate of the last update
  nlohmann::json data_state;  // the training loader's resumable position and RNG state
};

// model.safetensors metadata key: hash_bytes of the tokenizer.model the model was trained with.
constexpr const char* kTokenizerHashKey = "moe.tokenizer_hash";

std::string checkpoint_name(int64_t step);  // "step_00000042"
std::string checkpoints_root(const std::string& run_dir);  // <run_dir>/checkpoints

// Complete checkpoints under <run_dir>/checkpoints (names step_ + 8 digits exactly; temporary
// directories are skipped), ascending by step: (step, path).
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& run_dir);
// The newest complete checkpoint's path, or "" when there is none.
std::string latest_checkpoint(const std::string& run_dir);
// --resume DIR: DIR is a run directory (its newest checkpoint) or one checkpoint directory.
// Usage error when DIR holds no checkpoint.
std::string resolve_resume_checkpoint(const std::string& dir);
// The run directory a checkpoint directory belongs to (<run_dir>/checkpoints/step_X).
std::string run_dir_of_checkpoint(const std::string& checkpoint_dir);

// Writes a checkpoint of `step` atomically and returns its final path. Refuses to replace an
// existing checkpoint directory.
std::string save_checkpoint(const std::string& run_dir, const Config& cfg, MoeModel& model,
                            OptimizerStateIO& optimizer, const std::string& tokenizer_model_bytes,
                            const TrainerState& state);
// Deletes the oldest complete checkpoints so that at most keep_last (>= 1) remain.
void prune_checkpoints(const std::string& run_dir, int64_t keep_last);

// Checks the manifest: every file present with the recorded size and hash. Usage error (a bad
// input, exit code 2) naming the checkpoint and the file otherwise.
void verify_checkpoint(const std::string& checkpoint_dir);
Config load_checkpoint_config(const std::string& checkpoint_dir);
// Usage error (exit code 2) for anything malformed or out of range (step < 0, a step that does
// not match the directory's name, a non-finite lr), before the caller changes anything.
TrainerState load_trainer_state(const std::string& checkpoint_dir);
// Restores the weights and the optimizer moments of a verified checkpoint.
void load_training_state(const std::string& checkpoint_dir, MoeModel& model,
                         OptimizerStateIO& optimizer);

// moeeval and moeinfer load checkpoints with load_model_checkpoint (checkpoint/model_checkpoint.h).

// Small file helpers shared by the trainer (run directory files).
void write_file_synced(const std::string& path, const std::string& bytes);  // write + fsync
void write_file_atomic(const std::string& path, const std::string& bytes);  // tmp + rename
std::string read_file(const std::string& path);  // runtime error naming the path
uint64_t hash_bytes(const void* data, size_t n);  // fast 64-bit content hash (manifests)
// hash_bytes of a file's content, streamed; the size in bytes goes to *size_out when given.
uint64_t hash_file(const std::string& path, uint64_t* size_out = nullptr);

}  // namespace moe
