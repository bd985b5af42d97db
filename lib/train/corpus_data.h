// TrainingData over the data pipeline (lib/data): prepare_data() (tokenizer + cached token
// shards), the shuffled resumable TrainLoader and the fixed ValidSet.
#pragma once
#include <memory>
#include <string>

#include "config/config.h"
#include "train/data_source.h"

namespace moe {

// Prepares the data of cfg (training the tokenizer and encoding the shards when the cache does
// not hold them yet) and opens the loaders for train.batch_size x train.seq_len. When
// tokenizer_override is non-empty (a resumed run's checkpoint tokenizer.model), it is used
// instead of data.tokenizer / the cached one.
std::unique_ptr<TrainingData> open_corpus_data(const Config& cfg,
                                               const std::string& tokenizer_override = "");

}  // namespace moe
