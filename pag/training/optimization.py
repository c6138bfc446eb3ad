"""Optimisation: the optimizer (decision parameters in their own group), the learning-rate
schedule, and the gradient norms a step reports."""

from __future__ import annotations

from typing import Any

import torch

from pag.methods import registry
from pag.training.run_params import RunParams


def _is_decision(name: str) -> bool:
    """A parameter a method added to decide what to compute (`Method.decision_params`: PAG
    and layer-skip gates, SACT halting heads, the MultiPool attention)."""
    return any(part in name for part in registry.decision_param_fragments())


def make_optimizer(params: RunParams, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD or Adam; the decision parameters in their own group, at
    `training.decision_lr_mult` times the learning rate."""
    t = params.training
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decision = [p for n, p in named if _is_decision(n)]
    rest = [p for n, p in named if not _is_decision(n)]
    groups: list[dict[str, Any]] = [{"params": rest}]
    if decision:
        groups.append({"params": decision, "lr": t.lr * t.decision_lr_mult})
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return torch.optim.Adam(groups, lr=t.lr, weight_decay=t.weight_decay)


def make_scheduler(optimizer, total_steps: int, power: float):
    """Poly schedule over the run's steps: lr * (1 - step / total) ** power."""

    def factor(step: int) -> float:
        return (1.0 - min(step, total_steps) / total_steps) ** power

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def decision_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters a method added to decide what to compute."""
    return [p for n, p in model.named_parameters() if p.requires_grad and _is_decision(n)]


def gradient_norms(model, decision, clip: float | None) -> dict[str, float]:
    """The global gradient norm before clipping (the gradients are then clipped to `clip`
    when set), and that of the decision parameters alone after clipping: how the gates'
    gradients grow as the temperature falls."""
    params = [p for p in model.parameters() if p.grad is not None]
    if clip is not None:
        total = torch.nn.utils.clip_grad_norm_(params, clip)
    else:
        total = torch.nn.utils.get_total_norm([p.grad for p in params])
    norms = {"grad_norm": float(total)}
    grads = [p.grad for p in decision if p.grad is not None]
    if grads:
        norms["decision_grad_norm"] = float(torch.nn.utils.get_total_norm(grads))
    return norms
