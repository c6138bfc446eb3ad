"""Numerical faults: a loss term that turns NaN or Inf, and weights that turn NaN after an
optimizer step while the loss is still finite. Each stops the run with an error line naming
the step (and the term or the tensor); the last checkpoint is a good one, and the same command
without the fault resumes from it to exactly the weights of an uninterrupted run.

tests/test_training.py checks a NaN depth loss at step 5 with the same message format."""

import json
import math
import re

import pytest
import torch
from faults import make_synthetic, pag_cli, temporaries, train_reference, write_run_params

from pag.models import losses
from pag.models.model import DensePredictionModel
from pag.training import checkpoint

FAULT_STEP = 8  # after the checkpoint of step 6 (checkpoints every 3 steps), in epoch 2
TRAINING = {"epochs": 2}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    run_dir, _ = train_reference(tmp_path_factory.mktemp("reference"), data_root, TRAINING)
    return checkpoint.model_weights(run_dir / "checkpoints" / "final.pt")


def poison_loss(monkeypatch, term: str, value: float) -> None:
    """Make loss term `term` equal `value` at step FAULT_STEP (one call per step)."""
    calls = []

    def wrap(original):
        def poisoned(*args):
            calls.append(1)
            result = original(*args)
            return result * value if len(calls) == FAULT_STEP else result

        return poisoned

    if term == "budget":
        monkeypatch.setattr(
            DensePredictionModel, "budget_loss", wrap(DensePredictionModel.budget_loss)
        )
    else:
        monkeypatch.setitem(losses.LOSSES, term, wrap(losses.LOSSES[term]))


def poison_weights(monkeypatch, value: float) -> None:
    """After optimizer step FAULT_STEP, one weight becomes `value`; the loss of that step was
    finite (an overflowing gradient does this)."""
    calls = []
    original = torch.optim.SGD.step

    def step(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == FAULT_STEP:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = value
        return result

    monkeypatch.setattr(torch.optim.SGD, "step", step)


FAULTS = {
    "semantic-inf": ("loss", "semantic", math.inf, r"step 8: loss term 'semantic' is inf"),
    "normals-nan": ("loss", "normals", math.nan, r"step 8: loss term 'normals' is nan"),
    "budget-nan": ("loss", "budget", math.nan, r"step 8: loss term 'budget' is nan"),
    # the weight turns NaN at step 8: the loss of step 9 is the first to show it, and the
    # checkpoint of step 9 must not be written
    "weights-nan": ("weights", None, math.nan, r"step 9: loss term '\w+' is nan"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    fault, data_root, reference, tmp_path, monkeypatch, tally
):
    kind, term, value, message = FAULTS[fault]
    if kind == "loss":
        poison_loss(monkeypatch, term, value)
    else:
        poison_weights(monkeypatch, value)
    tally.fault(f"numerical: {fault}")
    params = write_run_params(tmp_path / "run.yaml", training=TRAINING)
    run_dir = tmp_path / "run"
    command = ["train", "--params", params, "--out", run_dir, "--data-root", data_root]
    result = pag_cli(command)
    assert result.code == 1
    assert re.fullmatch(f"error: {message}", result.err.splitlines()[-1]), result.err
    last = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert last["state"]["step"] == 6
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    assert not (run_dir / "checkpoints" / "final.pt").exists()
    assert not (run_dir / "train_metrics.json").exists() and temporaries(run_dir) == []

    monkeypatch.undo()
    done = pag_cli(command)
    assert done.code == 0, done.err
    assert f"resuming {run_dir} at step 6/14" in done.err
    weights = checkpoint.model_weights(run_dir / "checkpoints" / "final.pt")
    assert all(torch.equal(weights[k], reference[k]) for k in reference)
    assert json.loads((run_dir / "train_metrics.json").read_text())["steps"] == 14


def test_weights_that_turn_nan_on_a_checkpoint_step_are_never_saved(
    data_root, tmp_path, monkeypatch, tally
):
    """The loss of the step was finite, so only the saver can see it: it refuses to write
    non-finite weights over the last good checkpoint."""
    calls = []
    original = torch.optim.SGD.step

    def step(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 9:  # a checkpoint step (every 3)
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = math.inf
        return result

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    tally.fault("numerical: weights-inf on a checkpoint step")
    params = write_run_params(tmp_path / "run.yaml", training=TRAINING)
    run_dir = tmp_path / "run"
    result = pag_cli(["train", "--params", params, "--out", run_dir, "--data-root", data_root])
    assert result.code == 1
    last_path = run_dir / "checkpoints" / "last.pt"
    assert result.err.splitlines()[-1] == (
        f"error: step 9: 'trunk.conv1.weight' is not finite after the optimizer step; nothing "
        f"was saved over {last_path}, which holds the last good state"
    )
    last = checkpoint.load(last_path)
    assert last["state"]["step"] == 6
    assert all(torch.isfinite(v).all() for v in last["model"].values())
