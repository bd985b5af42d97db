#include "backend/backend.h"

namespace moe {

const char* op_name(OpKind op) {
  switch (op) {
#define MOE_OP(name) \
  case OpKind::name: return #name;
#include "backend/ops.def"
#undef MOE_OP
  }
  return "?";
}

std::vector<OpKind> all_ops() {
  return {
#define MOE_OP(name) OpKind::name,
#include "backend/ops.def"
#undef MOE_OP
  };
}

const char* attention_impl_name(AttentionImpl impl) {
  switch (impl) {
    case AttentionImpl::kAuto: return "auto";
    case AttentionImpl::kNative: return "native";
    case AttentionImpl::kCudnn: return "cudnn";
  }
  return "?";
}

AttentionImpl parse_attention_impl(const std::string& value, const std::string& where) {
  for (AttentionImpl impl : {AttentionImpl::kAuto, AttentionImpl::kNative, AttentionImpl::kCudnn})
    if (value == attention_impl_name(impl)) return impl;
  MOE_USAGE_FAIL("{}: expected one of auto, native, cudnn, found '{}'", where, value);
}

void Backend::set_attention_impl(AttentionImpl impl) {
  MOE_USAGE_CHECK(impl != AttentionImpl::kCudnn, "train.attention: 'cudnn' needs the CUDA "
                  "backend (cuDNN fused attention), found backend '{}'; use auto or native",
                  name());
  attention_impl_ = impl;
}

Tensor Backend::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  fill(t, 0.0);
  return t;
}

}  // namespace moe
