"""What matters on a GPU, runnable on any device: every method's forward and backward, MAC
counting, the sparse executor's exactness, and resume. Marked `cuda`: they run on
$PAG_TEST_DEVICE (`benchmarks/gpu_check.py` sets it; `--device cpu --quick` in CI), else on
CUDA where there is one, else they skip."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from pag.flops import measure_macs
from pag.methods import registry
from pag.models import build_model
from pag.sparse import SparseExecutor
from pag.sparse.forcing import blob_masks, force_gates

pytestmark = pytest.mark.cuda
ROOT = Path(__file__).resolve().parents[1]
SMALL = {"depth": 26, "width_multiplier": 0.125, "head_hidden": 16, "output_stride": 8}
TASKS = {"semantic": 5, "boundary": None, "depth": None, "normals": None}
BUDGETS = {"pag": 0.5, "random_gate": 0.5, "truncation": 5, "layer_skip": 0.5, "sact": 0.01}


@pytest.fixture
def device() -> torch.device:
    name = os.environ.get("PAG_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "")
    if not name:
        pytest.skip("no CUDA device (PAG_TEST_DEVICE=cpu runs these on the CPU)")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("PAG_TEST_DEVICE=cuda but no CUDA device")
    return torch.device(name)


@pytest.mark.parametrize("method", registry.names())
def test_every_method_trains_a_step_on_the_device(method, device):
    torch.manual_seed(0)
    model = build_model(method, BUDGETS.get(method), tasks=TASKS, **SMALL).to(device).train()
    x = torch.rand(2, 3, 48, 64, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with autocast:
        out = model(x)
    assert out["pred"]["semantic"].shape == (2, 5, 48, 64)
    loss = sum(p.float().mean() for p in out["pred"].values()) + model.budget_loss(out["aux"])
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_mac_counting_is_the_same_on_the_device(device):
    torch.manual_seed(0)
    model = build_model("pag", 0.5, tasks=TASKS, **SMALL).eval()
    x = torch.rand(1, 3, 48, 64)
    on_cpu = measure_macs(model, x)
    on_device = measure_macs(model.to(device), x.to(device))
    assert on_device.dense == on_cpu.dense
    assert float(on_device.effective[0]) == pytest.approx(float(on_cpu.effective[0]), rel=1e-6)


@pytest.mark.parametrize("rate", [1.0, 0.5, 0.3])
def test_the_sparse_executor_matches_the_dense_forward_on_the_device(rate, device):
    torch.manual_seed(0)
    model = build_model("pag", 0.5, tasks=TASKS, **SMALL).to(device).eval()
    x = torch.rand(1, 3, 48, 64, device=device)
    executor = SparseExecutor(model)
    masks = blob_masks(model, x, rate, seed=2)
    executor.forced = masks
    with torch.no_grad(), force_gates(model, masks):
        dense, sparse = model.features(x), executor.features(x)
    assert float((sparse - dense).abs().max() / dense.abs().max()) < 1e-4


def test_a_killed_run_resumes_to_the_same_weights_on_the_device(device):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_check import check_resume

    result = check_resume(device.type)
    assert result["interrupted"], "the run finished before it could be killed"
    assert result["identical"], result
