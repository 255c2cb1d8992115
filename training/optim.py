"""AdamW written out (decoupled weight decay, bias correction), parameter groups by tensor rank,
and global-norm gradient clipping.

    groups = param_groups(model, weight_decay=0.1)   # matrices/embeddings decay, the rest not
    opt = AdamW(groups, lr=6e-4, betas=(0.9, 0.95), eps=1e-8)
    norm = clip_grad_norm(model.parameters(), 1.0)   # the pre-clip norm, as torch returns it
    opt.step(lr=get_lr(step, ...))

The update is vectorised over all tensors of a group with torch's `_foreach_*` ops (one kernel
launch per op for the whole group instead of one per tensor). With `compiled=True` the same
update goes through torch.compile, which fuses it into one pass over (param, grad, m, v): the
eager version reads and writes those tensors about ten times, and on a CPU the optimizer step
is bound by memory traffic, not arithmetic.
"""

from __future__ import annotations

from typing import Iterable

import torch


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups by tensor rank (GUIDE lesson 3): every tensor with dim >= 2 (Linear weights and
    embeddings, including the tied LM head once) decays; biases and LayerNorm gains (dim 1) don't.
    Each group carries the parameter names, which key the optimizer state in checkpoints."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # tied weights appear once
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append((name, p))
    return [
        {"params": [p for _, p in decay], "names": [n for n, _ in decay],
         "weight_decay": weight_decay},
        {"params": [p for _, p in no_decay], "names": [n for n, _ in no_decay],
         "weight_decay": 0.0},
    ]


def group_counts(groups: list[dict]) -> dict:
    """Tensor and element counts per group, for the run log."""
    out = {}
    for label, g in zip(("decay", "no_decay"), groups):
        out[f"{label}_tensors"] = len(g["params"])
        out[f"{label}_params"] = sum(p.numel() for p in g["params"])
    return out


@torch.no_grad()
def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale all gradients so their global L2 norm is at most `max_norm`; returns the norm before
    clipping. The same arithmetic as torch.nn.utils.clip_grad_norm_: coefficient
    max_norm / (norm + 1e-6), clamped to 1 (so gradients under the threshold are untouched up to
    a multiply by exactly 1). max_norm <= 0 only measures."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = torch._foreach_norm(grads, 2)  # one norm per tensor, vectorised
    total = torch.linalg.vector_norm(torch.stack([n.to(grads[0].device) for n in norms]), 2)
    if max_norm > 0:
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        torch._foreach_mul_(grads, coef)
    return total


def _adamw_update(params, grads, exp_avgs, exp_avg_sqs, lr, beta1, beta2, eps, weight_decay,
                  bias_correction1, bias_correction2_sqrt):
    """One AdamW step over lists of tensors, in place (the order of torch.optim.AdamW's ops):

        p <- p * (1 - lr * wd)                       decoupled weight decay (Loshchilov & Hutter)
        m <- beta1 m + (1 - beta1) g                 first moment (lerp)
        v <- beta2 v + (1 - beta2) g^2               second moment
        p <- p - lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)   bias-corrected step

    with bc_i = 1 - beta_i ** step. Scalars may be floats (eager) or 0-dim tensors (compiled, so
    a changing learning rate does not trigger recompilation)."""
    if weight_decay != 0:
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias_correction2_sqrt)
    torch._foreach_add_(denom, eps)
    step_size = -lr / bias_correction1
    if isinstance(step_size, torch.Tensor):
        # addcdiv's `value` must be a Python number; a tensor step size is a separate multiply.
        torch._foreach_addcdiv_(params, torch._foreach_mul(exp_avgs, step_size), denom)
    else:
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)


def _adamw_update_tensors(params, grads, exp_avgs, exp_avg_sqs, lr, beta1, beta2, eps,
                          weight_decay, bias_correction1, bias_correction2_sqrt):
    # The compiled form: element-wise over each tensor, which inductor fuses into one loop per
    # tensor that reads p, g, m, v once and writes p, m, v once.
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = v.sqrt() / bias_correction2_sqrt + eps
        p.mul_(1 - lr * weight_decay).add_(m / denom * (-lr / bias_correction1))


class AdamW:
    """AdamW over parameter groups (dicts with "params", optional "names" and "weight_decay").

    Hyper-parameters given here are defaults for every group; `step(lr=...)` sets the learning
    rate of all groups for this step (the schedule lives outside, in schedule.get_lr). The step
    counter is shared by all parameters (they are always updated together in training); a
    parameter whose .grad is None is skipped, like torch does.
    """

    def __init__(self, groups: list[dict] | Iterable[torch.Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, compiled: bool = False):
        groups = list(groups)
        if groups and isinstance(groups[0], torch.Tensor):
            groups = [{"params": groups}]
        self.defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        self.param_groups: list[dict] = []
        for i, group in enumerate(groups):
            g = {**self.defaults, **group}
            g["params"] = list(g["params"])
            g["names"] = list(g.get("names") or [f"{i}.{j}" for j in range(len(g["params"]))])
            if len(g["names"]) != len(g["params"]):
                raise ValueError(f"param group {i}: {len(g['names'])} names for "
                                 f"{len(g['params'])} parameters")
            self.param_groups.append(g)
        names = [n for g in self.param_groups for n in g["names"]]
        if len(set(names)) != len(names):
            raise ValueError("parameter names must be unique across groups")
        # Moments allocated up front (zeros), so state_dict/load_state_dict need no special case
        # for a fresh optimizer.
        self.state: dict[str, dict[str, torch.Tensor]] = {
            name: {"exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                   "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
            for g in self.param_groups for name, p in zip(g["names"], g["params"])
        }
        self.step_count = 0
        self.compiled = compiled
        self._update = torch.compile(_adamw_update_tensors) if compiled else _adamw_update

    def zero_grad(self) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None  # frees the memory; the next backward allocates fresh gradients

    @torch.no_grad()
    def step(self, lr: float | None = None) -> None:
        self.step_count += 1
        for g in self.param_groups:
            if lr is not None:
                g["lr"] = lr
            live = [(n, p) for n, p in zip(g["names"], g["params"]) if p.grad is not None]
            if not live:
                continue
            params = [p for _, p in live]
            grads = [p.grad for _, p in live]
            exp_avgs = [self.state[n]["exp_avg"] for n, _ in live]
            exp_avg_sqs = [self.state[n]["exp_avg_sq"] for n, _ in live]
            beta1, beta2 = g["betas"]
            bc1 = 1 - beta1 ** self.step_count
            bc2_sqrt = (1 - beta2 ** self.step_count) ** 0.5
            scalars = (g["lr"], beta1, beta2, g["eps"], g["weight_decay"], bc1, bc2_sqrt)
            if self.compiled:
                # 0-dim tensors: a new lr or step count is new data, not a new graph.
                scalars = tuple(torch.tensor(s, dtype=torch.float32) for s in scalars)
            self._update(params, grads, exp_avgs, exp_avg_sqs, *scalars)

    # ---- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """{"step": int, "groups": [hyper-parameters + names], "state": {name: {exp_avg, exp_avg_sq}}}"""
        return {
            "step": self.step_count,
            "groups": [{k: (list(v) if k == "betas" else v) for k, v in g.items() if k != "params"}
                       for g in self.param_groups],
            "state": {n: dict(s) for n, s in self.state.items()},
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        groups = state["groups"]
        if [g["names"] for g in groups] != [g["names"] for g in self.param_groups]:
            raise ValueError("optimizer state was saved for different parameter groups")
        for mine, saved in zip(self.param_groups, groups):
            for key in ("lr", "eps", "weight_decay"):
                mine[key] = saved[key]
            mine["betas"] = tuple(saved["betas"])
        for name, moments in self.state.items():
            saved = state["state"].get(name)
            if saved is None:
                raise ValueError(f"optimizer state lacks parameter {name}")
            for key, tensor in moments.items():
                if saved[key].shape != tensor.shape:
                    raise ValueError(f"optimizer state {name}.{key}: shape {tuple(saved[key].shape)}"
                                     f", expected {tuple(tensor.shape)}")
                tensor.copy_(saved[key])
        self.step_count = int(state["step"])
