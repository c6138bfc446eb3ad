"""`torchrun --nproc_per_node=2 -m pag train` on CPU (gloo) against one process with the same
global batch, distributed resumption, and the pieces of `pag.training.distributed`.

Tolerance: BatchNorm statistics are synchronised over ranks (sums in float64), so two
processes compute the one-process forward and gradient up to floating-point summation order
when the loss is a mean over images, as depth's is. One optimizer step matches to ~1e-6.
Longer runs of these tiny models are chaotic, though: one process whose initial weights are
perturbed by 1e-7 ends 21 SGD steps as far from the unperturbed run (~0.9 in a BatchNorm
running variance) as the two-process run does. So the equivalence is checked over 2 steps
(global batch 14, 7 images per rank, two epochs with different orders), where weights,
buffers and losses agree to 1e-4 absolute and relative.
"""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pag.data.synthetic import SynthParams, generate
from pag.errors import PagError
from pag.training import checkpoint, load_run_params, train
from pag.training.data import epoch_batches
from pag.training.distributed import World, per_rank_batch, shard

TASKS = {"semantic": 10, "boundary": None, "depth": None, "normals": None}
RUN = {
    "name": "ddp_run",
    "dataset": "synthetic",
    "tasks": {"depth": None},  # a mean over images: exact under DDP (see the module doc)
    "input_size": [40, 56],
    "model": {"depth": 26, "width_multiplier": 0.125, "head_hidden": 8},
    "method": "dense",
    "training": {"epochs": 2, "batch_size": 14, "lr": 0.01, "checkpoint_every": 1},
    "seed": 3,
    "threads": 1,
}
WEIGHT_ATOL = 1e-4
LOSS_RTOL = 1e-4


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """16 synthetic images at 48 x 64 (14 in the train split: one global batch of 14)."""
    root = tmp_path_factory.mktemp("data")
    generate(root / "synthetic", 16, SynthParams(seed=0, height=48, width=64), progress=False)
    return root


def params_file(path: Path, **training) -> Path:
    raw = {**RUN, "training": {**RUN["training"], **training}}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def torchrun(params: Path, run_dir: Path, data_root: Path, nproc: int = 2):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={nproc}", "-m", "pag", "train", "--params", str(params)]
    command += ["--out", str(run_dir), "--data-root", str(data_root)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)


def kill_processes_naming(path: Path) -> None:
    """SIGKILL every process whose command line contains `path` (via /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if str(path) in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.model_weights(run_dir / "checkpoints" / "final.pt")


def assert_close_runs(one: Path, two: Path) -> None:
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert worst < WEIGHT_ATOL, worst
    ma = json.loads((one / "train_metrics.json").read_text())
    mb = json.loads((two / "train_metrics.json").read_text())
    assert ma["steps"] == mb["steps"] and ma["epochs"] == mb["epochs"]
    for ha, hb in zip(ma["history"], mb["history"], strict=True):
        assert ha["lr"] == pytest.approx(hb["lr"], rel=1e-12)
        assert ha["train"].keys() == hb["train"].keys()
        for key in ha["train"]:
            assert ha["train"][key] == pytest.approx(hb["train"][key], rel=LOSS_RTOL, abs=1e-6)


@pytest.fixture(scope="module")
def single(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("single")
    params = load_run_params(params_file(tmp / "p.yaml"))
    train(params, tmp / "run", data_root=data_root, stream=io.StringIO(), tty=False)
    return tmp / "run"


def test_two_processes_match_one_with_the_same_global_batch(tmp_path, data_root, single):
    run_dir = tmp_path / "ddp"
    done = torchrun(params_file(tmp_path / "p.yaml"), run_dir, data_root)
    assert done.returncode == 0, done.stderr
    summaries = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert len(summaries) == 1 and summaries[0]["steps"] == 2  # rank 0 alone reports
    assert_close_runs(single, run_dir)
    last = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert last["world_size"] == 2 and len(last["rng_ranks"]) == 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["final.pt", "last.pt"]


def test_a_killed_distributed_run_resumes_and_refuses_another_world_size(
    tmp_path, data_root, single
):
    params = params_file(tmp_path / "p.yaml", epochs=30)  # 30 steps: room to kill mid-run
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", "-m", "pag", "train", "--params", str(params)]
    command += ["--out", str(run_dir), "--data-root", str(data_root)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    last = run_dir / "checkpoints" / "last.pt"
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not last.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.002)
    finally:
        kill_processes_naming(run_dir)  # torchrun and both workers (in sessions of their own)
        process.communicate()
    killed_at = checkpoint.load(last)["state"]["step"]
    assert 1 <= killed_at < 30 and not (run_dir / "train_metrics.json").exists()

    full = load_run_params(params)
    with pytest.raises(PagError, match=r"written by 2 process\(es\); resume it with the same"):
        train(full, run_dir, data_root=data_root, stream=io.StringIO())
    done = torchrun(params, run_dir, data_root)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    uninterrupted = torchrun(params, tmp_path / "whole", data_root)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    assert_close_runs(tmp_path / "whole", run_dir)
    whole, resumed = weights(tmp_path / "whole"), weights(run_dir)  # same code path: exact
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_batches_are_sharded_by_rank_in_the_global_order():
    batches = epoch_batches(14, 4, 3, 0)
    shards = [shard(batches, World(rank, 2)) for rank in range(2)]
    assert [a + b for a, b in zip(*shards, strict=True)] == batches
    assert shard(batches, World()) == batches
    with pytest.raises(PagError, match="batch_size 6 is the global batch and must be divisible"):
        per_rank_batch(6, World(0, 4))


def test_an_indivisible_global_batch_is_refused_before_anything_is_written(
    tmp_path, data_root, monkeypatch
):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    params = load_run_params(params_file(tmp_path / "p.yaml", batch_size=6))
    with pytest.raises(PagError, match="must be divisible by the number of processes"):
        train(params, tmp_path / "run", data_root=data_root, stream=io.StringIO())
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("method", "budget"),
    [
        ("dense", None),
        ("dense_ft", None),
        ("pag", 0.5),
        ("random_gate", 0.5),
        ("mp_pag", None),
        ("multipool_avg", None),
        ("truncation", 5),
        ("layer_skip", 0.5),
        ("sact", 0.01),
    ],
)
def test_every_parameter_gets_a_gradient_so_ddp_needs_no_unused_parameter_search(method, budget):
    from pag.models import build_model
    from pag.models.losses import task_losses
    from pag.training.distributed import UNUSED_PARAMETER_METHODS

    torch.manual_seed(0)
    model = build_model(method, budget, tasks=TASKS, depth=26, width_multiplier=0.125)
    model.train()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 40, 56, generator=generator)
    targets = {
        "semantic": torch.randint(0, 10, (2, 40, 56), generator=generator),
        "boundary": torch.rand(2, 1, 40, 56, generator=generator) > 0.9,
        "depth": torch.rand(2, 40, 56, generator=generator) + 0.5,
        "normals": torch.nn.functional.normalize(torch.randn(2, 3, 40, 56), dim=1),
    }
    out = model(images)
    terms = task_losses(out["pred"], targets)
    (sum(terms.values()) + model.budget_loss(out["aux"])).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == [] and method not in UNUSED_PARAMETER_METHODS
