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

Tensor Backend::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  fill(t, 0.0);
  return t;
}

}  // namespace moe
