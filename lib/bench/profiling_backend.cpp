// Op families of the benchmark's step-time breakdown.
#include "bench/profiling_backend.h"

namespace moe {

const char* op_family(OpKind op) {
  switch (op) {
    case OpKind::embedding_forward: case OpKind::embedding_backward: return "embedding";
    case OpKind::rms_norm_forward: case OpKind::rms_norm_backward: return "norm";
    case OpKind::matmul_forward: case OpKind::matmul_backward: return "matmul";
    case OpKind::rope_forward: case OpKind::rope_backward:
    case OpKind::rope_forward_offset: return "rope";
    case OpKind::attention_forward: case OpKind::attention_backward:
    case OpKind::attention_forward_cached: return "attention";
    case OpKind::swiglu_forward: case OpKind::swiglu_backward: return "swiglu";
    case OpKind::router_forward: case OpKind::router_backward:
    case OpKind::topk_mass_forward: case OpKind::topk_mass_backward:
    case OpKind::expert_load_accumulate: case OpKind::balance_bias_update: return "router";
    case OpKind::moe_dispatch_plan: case OpKind::moe_permute: case OpKind::moe_permute_backward:
    case OpKind::moe_unpermute: case OpKind::moe_unpermute_backward: return "moe_dispatch";
    case OpKind::grouped_matmul_forward: case OpKind::grouped_matmul_backward:
      return "grouped_matmul";
    case OpKind::cross_entropy_forward: case OpKind::cross_entropy_backward:
      return "cross_entropy";
    case OpKind::lb_loss_forward: case OpKind::lb_loss_backward: return "loss_lb";
    case OpKind::z_loss_forward: case OpKind::z_loss_backward: return "loss_z";
    case OpKind::sp_loss_forward: case OpKind::sp_loss_backward: return "loss_sp";
    case OpKind::cp_loss_forward: case OpKind::cp_loss_backward: return "loss_cp";
    case OpKind::adamw_step: case OpKind::global_norm_sq: return "optimizer";
    case OpKind::add: case OpKind::axpy: case OpKind::scale: case OpKind::convert:
    case OpKind::fill: return "elementwise";
  }
  return "other";
}

std::map<std::string, double> ProfilingBackend::family_seconds() const {
  std::map<std::string, double> out;
  for (OpKind op : all_ops()) out[op_family(op)] += seconds(op);
  return out;
}

}  // namespace moe
