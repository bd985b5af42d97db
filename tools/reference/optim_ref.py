"""The optimizer step of the reference: global-norm clipping, AdamW, and the balancing-bias update.

Written out by hand (not torch.optim) so that every operation and its order is visible to whoever
matches it in C++; self_check.py verifies it against torch.optim.AdamW and
torch.nn.utils.clip_grad_norm_.

  clip:   norm = sqrt(sum over every trainable gradient element g^2) (the bias is not trainable);
          if max_norm > 0 and norm > max_norm: every g *= max_norm / (norm + 1e-6); else unchanged.
  AdamW (torch.optim.AdamW, step t = 1, 2, ...), per parameter p with gradient g:
          p *= 1 - lr * weight_decay            (only for decayed tensors: not for norm gains)
          m  = beta1 * m + (1 - beta1) * g
          v  = beta2 * v + (1 - beta2) * g * g
          p -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
  bias:   after the optimizer step, per MoE layer with loads c_e = (token, slot) pairs chosen for
          expert e in the step's forward passes, mean = sum_e c_e / E:
          b_e += gamma * sign(mean - c_e)       (sign(0) = 0)
"""
import math

import torch

from moe_ref import is_decayed, is_trainable


def clip_by_global_norm(grads, max_norm):
    """Scales grads in place. Returns (norm before clipping, coefficient applied)."""
    norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads.values()))
    coef = 1.0
    if max_norm > 0 and norm > max_norm:
        coef = max_norm / (norm + 1e-6)
        for g in grads.values():
            g.mul_(coef)
    return norm, coef


class AdamW:
    def __init__(self, lr, beta1, beta2, eps, weight_decay):
        self.lr, self.beta1, self.beta2, self.eps, self.wd = lr, beta1, beta2, eps, weight_decay
        self.t = 0
        self.m, self.v = {}, {}

    def step(self, params, grads, lr=None):
        lr = self.lr if lr is None else lr
        self.t += 1
        bc1 = 1.0 - self.beta1 ** self.t
        bc2_sqrt = math.sqrt(1.0 - self.beta2 ** self.t)
        with torch.no_grad():
            for name, p in params.items():
                if not is_trainable(name):
                    continue
                g = grads[name]
                if name not in self.m:
                    self.m[name] = torch.zeros_like(p)
                    self.v[name] = torch.zeros_like(p)
                m, v = self.m[name], self.v[name]
                if is_decayed(name):
                    p.mul_(1.0 - lr * self.wd)
                m.mul_(self.beta1).add_(g, alpha=1.0 - self.beta1)
                v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
                p.addcdiv_(m, v.sqrt().div_(bc2_sqrt).add_(self.eps), value=-lr / bc1)


def update_balance_bias(params, routing, gamma):
    """b_e += gamma * sign(mean_load - load_e) for every MoE layer's bias (in place)."""
    with torch.no_grad():
        for rec in routing:
            name = f"model.layers.{rec['layer']}.mlp.gate.e_score_correction_bias"
            if name not in params:
                continue
            load = rec["load"].to(torch.float64)
            params[name].add_((gamma * torch.sign(load.mean() - load)).to(params[name].dtype))
