"""One optimizer step: forward (bfloat16 autocast on CUDA), the weighted loss, its check,
backward, the gradient norms, and the update."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from pag.errors import PagError
from pag.models.losses import task_losses
from pag.training import distributed
from pag.training.optimization import decision_parameters, gradient_norms
from pag.training.run_params import RunParams
from pag.training.state import Training

BUDGET_TERM = "budget"


@dataclass(frozen=True)
class StepSettings:
    """What every step of a run weighs and measures the same way."""

    weights: dict[str, float]  # each task's loss weight
    budget_weight: float  # the budget term's
    decision: list[torch.nn.Parameter]  # decision parameters: their gradient norm is reported
    clip: float | None  # gradient-norm clipping

    @classmethod
    def of(cls, params: RunParams, model: torch.nn.Module) -> StepSettings:
        t = params.training
        return cls(
            weights={task: t.loss_weights.get(task, 1.0) for task in params.tasks},
            budget_weight=t.budget_weight,
            decision=decision_parameters(model),
            clip=t.grad_clip,
        )


def train_step(training: Training, settings: StepSettings, batch: dict, step: int) -> dict:
    """One optimizer step; the loss terms (unweighted) and the weighted total as floats
    (averaged over ranks under torchrun), and the gradient norms (`gradient_norms`; the
    decision parameters' after clipping). A term that is not finite stops the run, on every
    rank, before the weights change."""
    device, model, weights = training.device, training.model, settings.weights
    cuda = device.type == "cuda"
    images = batch["image"].to(device, non_blocking=True)
    if cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = {task: batch[task].to(device, non_blocking=True) for task in weights}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    with autocast:
        out = training.net(images)
    terms = task_losses({k: v.float() for k, v in out["pred"].items()}, targets)
    terms[BUDGET_TERM] = model.budget_loss(out["aux"]).float()
    loss = sum(weights[k] * terms[k] for k in weights) + settings.budget_weight * terms[BUDGET_TERM]
    values = torch.stack([v.detach() for v in (*terms.values(), loss)])
    values = distributed.average(values, training.world).tolist()  # one sync
    named = dict(zip([*terms, "total"], values, strict=True))
    check_finite(step, named)
    training.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norms = gradient_norms(model, settings.decision, settings.clip)
    training.optimizer.step()
    named["loss"] = named.pop("total")
    return {**named, **norms}


def check_finite(step: int, values: dict[str, float]) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            kind = "nan" if math.isnan(value) else "inf"
            raise PagError(f"step {step}: loss term '{name}' is {kind}")
