// What the trainer needs from the data pipeline, as an interface: the trainer (and its tests)
// depend on this, and lib/train/corpus_data.cpp adapts lib/data's shards and loaders to it.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "model/model.h"

namespace moe {

class TrainingData {
 public:
  virtual ~TrainingData() = default;
  virtual int64_t vocab_size() const = 0;
  // The serialized sentencepiece model (the bytes of tokenizer.model) saved with checkpoints.
  virtual std::string tokenizer_model_bytes() const = 0;
  // A hash of what the training stream reads (tokenizer and token shards): ranks of one run
  // compare it before step 1, so ranks that read different data are an error, not a silent
  // divergence.
  virtual uint64_t content_hash() const = 0;

  // The next training micro-batch (batch x seq), advancing the resumable position.
  virtual void next_train_batch(Batch& out) = 0;
  // The position (and shuffle RNG state) of the training stream, and its restoration: after
  // restore, next_train_batch continues exactly where the saved stream was.
  virtual nlohmann::json train_state() const = 0;
  virtual void restore_train_state(const nlohmann::json& state) = 0;

  // Validation batches: the same fixed sequence every time, from the start of the held-out
  // split; returns false when the split is exhausted (or there is none).
  virtual void reset_valid() = 0;
  virtual bool next_valid_batch(Batch& out) = 0;
  // UTF-8 bytes of the text the batch's targets spell out (for bits per byte).
  virtual int64_t target_bytes(const Batch& batch) const = 0;
};

}  // namespace moe
