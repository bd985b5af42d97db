// save_weights / load_weights: a MoeModel's parameters <-> safetensors, strict by name and shape.
#include "model/weights_io.h"

#include <cmath>
#include <cstring>
#include <set>
#include <vector>

namespace moe {
namespace {

// The index of the first NaN or infinite element of a host copy of `dtype` values, or -1.
// Integer and bf16 copies are never asked about (the model's values are f32 or f64).
int64_t first_non_finite(const std::vector<uint8_t>& bytes, DType dtype) {
  if (dtype == DType::kF32) {
    const size_t n = bytes.size() / sizeof(float);
    for (size_t i = 0; i < n; ++i) {
      float v;
      std::memcpy(&v, bytes.data() + i * sizeof(float), sizeof v);
      if (!std::isfinite(v)) return static_cast<int64_t>(i);
    }
  } else if (dtype == DType::kF64) {
    const size_t n = bytes.size() / sizeof(double);
    for (size_t i = 0; i < n; ++i) {
      double v;
      std::memcpy(&v, bytes.data() + i * sizeof(double), sizeof v);
      if (!std::isfinite(v)) return static_cast<int64_t>(i);
    }
  }
  return -1;
}

}  // namespace

void add_weights(MoeModel& model, SafeTensorsWriter& writer) {
  Backend& be = model.backend();
  for (const Param& p : model.params()) {
    std::vector<uint8_t> bytes(p.value.nbytes());
    be.download(bytes.data(), p.value, bytes.size());
    // A diverged run (a huge loss.bias_gamma, an exploding update) must stop here rather than
    // write a checkpoint whose weights cannot be evaluated or resumed from.
    const int64_t bad = first_non_finite(bytes, p.value.dtype());
    MOE_CHECK(bad < 0, "refusing to save non-finite weights: parameter \"{}\" element {} is not "
              "finite (the run diverged; resume from an earlier checkpoint with a lower "
              "train.lr or loss.bias_gamma)", p.name, bad);
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
      MOE_CHECK(known.count(name), "{}: unexpected tensor \"{}\" of shape {}: the model (arch {}, "
                "{} layers, {} experts, tie_embeddings {}) has no such parameter", reader.path(),
                name, shape_str(reader.shape(name)), model.config().arch, model.config().n_layers,
                model.config().n_experts, model.config().tie_embeddings);
    }
  }
  // Every value must be finite, checked before any upload so a bad file leaves the model
  // intact: two conversion passes rather than a second host copy of the whole model.
  for (const Param& p : model.params()) {
    const int64_t bad = first_non_finite(reader.to_dtype(p.name, p.value.dtype()),
                                         p.value.dtype());
    MOE_USAGE_CHECK(bad < 0, "{}: tensor \"{}\" holds a non-finite value (NaN or inf) at element "
                    "{}: these weights cannot be evaluated or trained from", reader.path(), p.name,
                    bad);
  }
  Backend& be = model.backend();
  for (Param& p : model.params()) {
    std::vector<uint8_t> bytes = reader.to_dtype(p.name, p.value.dtype());
    be.upload(p.value, bytes.data(), bytes.size());
  }
  model.sync_lowp();
}

}  // namespace moe
