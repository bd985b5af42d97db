// MoeModel::init_parameters: deterministic, platform-independent initialisation.
//
// Each parameter draws from its own stream, seeded by splitmix64(seed ^ FNV-1a(name)), so a
// tensor's values depend only on the seed and its Hugging Face name (not on the order or number
// of other tensors, nor on the standard library: normals come from our own Box-Muller, never
// std::normal_distribution, whose algorithm is implementation-defined). Matrices ~ N(0, init_std),
// output projections (o_proj, every down_proj) scaled by 1/sqrt(2 * n_layers) (GPT-2 / Megatron),
// norm gains 1, balancing bias 0.
#include <cmath>
#include <cstring>

#include "model/model_impl.h"

namespace moe {
namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) {
    h ^= ch;
    h *= 0x100000001b3ull;
  }
  return h;
}

// Standard normals by Box-Muller from 53-bit uniforms in (0, 1).
class NormalStream {
 public:
  explicit NormalStream(uint64_t seed) : state_(seed) {}
  double next() {
    if (have_spare_) {
      have_spare_ = false;
      return spare_;
    }
    const double u1 = uniform(), u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double angle = 6.283185307179586476925 * u2;
    spare_ = r * std::sin(angle);
    have_spare_ = true;
    return r * std::cos(angle);
  }

 private:
  double uniform() { return (static_cast<double>(splitmix64(state_) >> 11) + 0.5) * 0x1.0p-53; }
  uint64_t state_;
  double spare_ = 0;
  bool have_spare_ = false;
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(),
                                                suffix) == 0;
}

void upload_values(Backend& be, Tensor& t, const std::vector<double>& v) {
  if (t.dtype() == DType::kF64) {
    be.upload_vec(t, v);
  } else {
    MOE_CHECK(t.dtype() == DType::kF32, "init: master weights must be f32 or f64, found {}",
              dtype_name(t.dtype()));
    be.upload_vec(t, std::vector<float>(v.begin(), v.end()));
  }
}

}  // namespace

void MoeModel::init_parameters(uint64_t seed) {
  const double out_scale = 1.0 / std::sqrt(2.0 * static_cast<double>(cfg_.n_layers));
  for (Param& p : params_) {
    const int64_t n = p.value.numel();
    if (ends_with(p.name, "layernorm.weight") || p.name == "model.norm.weight") {
      backend_.fill(p.value, 1.0);
    } else if (ends_with(p.name, "e_score_correction_bias")) {
      backend_.fill(p.value, 0.0);
    } else {
      uint64_t state = seed ^ fnv1a(p.name);
      NormalStream normal(splitmix64(state));
      double std = cfg_.init_std;
      if (ends_with(p.name, "o_proj.weight") || ends_with(p.name, "down_proj.weight")) {
        std *= out_scale;
      }
      std::vector<double> v(static_cast<size_t>(n));
      for (double& x : v) x = std * normal.next();
      upload_values(backend_, p.value, v);
    }
    backend_.fill(p.grad, 0.0);
  }
  for (Layer& layer : impl_->layers) {
    if (layer.expert_load.defined()) backend_.fill(layer.expert_load, 0.0);
  }
  sync_lowp();
}

}  // namespace moe
