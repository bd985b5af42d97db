// save_weights / load_weights: a MoeModel's parameters <-> safetensors, strict by name and shape.
#include "model/weights_io.h"

#include <set>
#include <vector>

namespace moe {

void add_weights(MoeModel& model, SafeTensorsWriter& writer) {
  Backend& be = model.backend();
  for (const Param& p : model.params()) {
    std::vector<uint8_t> bytes(p.value.nbytes());
    be.download(bytes.data(), p.value, bytes.size());
    writer.add(p.name, st_dtype_of(p.value.dtype()), p.value.shape(), bytes.data(), bytes.size());
  }
}

void save_weights(MoeModel& model, const std::string& path,
                  const std::map<std::string, std::string>& metadata) {
  SafeTensorsWriter writer;
  add_weights(model, writer);
  for (const auto& kv : metadata) writer.set_metadata(kv.first, kv.second);
  writer.write(path, /*atomic=*/true);
}

void load_weights(MoeModel& model, const std::string& path) {
  SafeTensorsReader reader(path);
  load_weights(model, reader, /*allow_unknown=*/false);
}

void load_weights(MoeModel& model, const SafeTensorsReader& reader, bool allow_unknown) {
  // Validate everything before touching any parameter, so a bad file leaves the model intact.
  std::set<std::string> known;
  for (const Param& p : model.params()) {
    known.insert(p.name);
    MOE_CHECK(reader.has(p.name), "{}: missing tensor \"{}\" (expected shape {})", reader.path(),
              p.name, shape_str(p.value.shape()));
    const Shape& found = reader.shape(p.name);
    MOE_CHECK(found == p.value.shape(), "{}: tensor \"{}\" has shape {}, expected {}",
              reader.path(), p.name, shape_str(found), shape_str(p.value.shape()));
    const StDType dt = reader.info(p.name).dtype;
    MOE_CHECK(dt == StDType::kF32 || dt == StDType::kF64 || dt == StDType::kBF16 ||
                  dt == StDType::kF16,
              "{}: tensor \"{}\" has dtype {}, expected a floating-point dtype", reader.path(),
              p.name, st_dtype_name(dt));
  }
  if (!allow_unknown) {
    for (const std::string& name : reader.names()) {
      // Expert parallelism: a full checkpoint holds the experts of the other shards too.
      if (model.is_other_shard_expert(name)) continue;
      MOE_CHECK(known.count(name), "{}: unexpected tensor \"{}\" of shape {}: the model (arch {}, "
                "{} layers, {} experts, tie_embeddings {}) has no such parameter", reader.path(),
                name, shape_str(reader.shape(name)), model.config().arch, model.config().n_layers,
                model.config().n_experts, model.config().tie_embeddings);
    }
  }
  Backend& be = model.backend();
  for (Param& p : model.params()) {
    std::vector<uint8_t> bytes = reader.to_dtype(p.name, p.value.dtype());
    be.upload(p.value, bytes.data(), bytes.size());
  }
  model.sync_lowp();
}

}  // namespace moe
