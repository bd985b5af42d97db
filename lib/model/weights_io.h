// Saving and loading a MoeModel's weights as safetensors under their Hugging Face names
// (docs/model.md §5). Loading is strict: every parameter must be present with exactly its shape,
// and a tensor the model does not have is an error too, except the routed experts of other
// shards when the model holds one shard of them (expert parallelism), and unless allow_unknown
// (for files such as the test fixtures that carry inputs and expected values beside the
// weights). Floating-point file dtypes (F32, F64, BF16, F16) are converted to the master dtype.
#pragma once
#include <map>
#include <string>

#include "io/safetensors.h"
#include "model/model.h"

namespace moe {

// Writes every parameter (master values, in their dtype) to `path`, through a temporary file
// renamed into place.
void save_weights(MoeModel& model, const std::string& path,
                  const std::map<std::string, std::string>& metadata = {});
// Adds every parameter to an existing writer (for files that hold more than the weights).
void add_weights(MoeModel& model, SafeTensorsWriter& writer);

void load_weights(MoeModel& model, const std::string& path);
void load_weights(MoeModel& model, const SafeTensorsReader& reader, bool allow_unknown = false);

}  // namespace moe
