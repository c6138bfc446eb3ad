"""Interruption: `pag train` and `pag evaluate` killed (SIGKILL) at chosen points, then run again
with the same command, end exactly as uninterrupted runs; the pipeline front-ends, killed in the
middle of the tiny profile, rerun only what was unfinished (slow tests).

The kills come from inside the process (tests/faults.py), so each lands at a known point: before
an optimizer step, in the middle of a checkpoint write, right after one, and between the final
weights and metrics.json. tests/test_training.py kills from outside at a moment it observes."""

import io
import json

import pytest
import torch
from faults import killed, make_synthetic, pag_cli, pag_with_fault, temporaries, write_run_params

from pag.training import checkpoint, load_run_params, train
from pag.training.evaluate import evaluate

STEPS = 21  # 14 training images in batches of 2: 7 steps per epoch, 3 epochs; checkpoints
# every 3 steps


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    """An uninterrupted run of the same params, trained in this process."""
    tmp = tmp_path_factory.mktemp("reference")
    params = load_run_params(write_run_params(tmp / "params.yaml"))
    metrics = train(params, tmp / "run", data_root=data_root, stream=io.StringIO(), tty=False)
    return tmp / "run", metrics


def state_step(run_dir) -> int:
    return checkpoint.load(run_dir / "checkpoints" / "last.pt")["state"]["step"]


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "images_per_s"}


def assert_same_weights(a, b) -> None:
    a, b = checkpoint.model_weights(a), checkpoint.model_weights(b)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)


@pytest.fixture(scope="module")
def killed_four_times(tmp_path_factory, data_root):
    """One run killed at four points in turn, each time restarted with the same command, then
    finished; returns the run dir and what was seen after each kill."""
    tmp = tmp_path_factory.mktemp("killed")
    run_dir = tmp / "run"
    command = ["train", "--params", write_run_params(tmp / "params.yaml"), "--out", run_dir]
    command += ["--data-root", data_root]
    checkpoints = run_dir / "checkpoints"
    seen = {}
    for fault in (
        "kill-before-step:2",  # mid-epoch, before the first checkpoint
        "torn-replace:last.pt:2",  # in the middle of writing the second checkpoint (step 6)
        "kill-after-replace:last.pt:3",  # right after a checkpoint: the third since the restart
        "kill-before-replace:metrics.json:1",  # final.pt written, metrics.json not yet
    ):
        result = pag_with_fault(command, fault)
        assert killed(result), (fault, result.returncode, result.stderr)
        seen[fault] = {
            "last": state_step(run_dir) if (checkpoints / "last.pt").exists() else None,
            "final": (checkpoints / "final.pt").exists(),
            "metrics": (run_dir / "metrics.json").exists(),
            "params": (run_dir / "params.yaml").exists(),
            "temporaries": [p.name for p in temporaries(run_dir)],
        }
    done = pag_cli(command)  # the same command, run here (saves starting a process)
    assert done.code == 0, done.err
    return run_dir, seen, done


def test_training_killed_at_four_points_ends_as_an_uninterrupted_run(
    killed_four_times, reference, tally
):
    run_dir, seen, done = killed_four_times
    tally.fault("SIGKILL pag train", 4)
    # what each kill left: never a file that claims more than was done
    assert seen["kill-before-step:2"] == {
        "last": None,
        "final": False,
        "metrics": False,
        "params": True,
        "temporaries": [],
    }
    torn = seen["torn-replace:last.pt:2"]
    assert torn["last"] == 3 and not torn["final"] and not torn["metrics"]
    assert len(torn["temporaries"]) == 1 and torn["temporaries"][0].startswith(".last.pt.")
    after = seen["kill-after-replace:last.pt:3"]  # resumed at 3: saved 6, 9, then 12
    assert after["last"] == 12 and after["temporaries"] == []  # the torn file was cleaned up
    final = seen["kill-before-replace:metrics.json:1"]
    assert final["last"] == STEPS and final["final"] and not final["metrics"]

    assert f"resuming {run_dir} at step {STEPS}/{STEPS}" in done.err
    ref_dir, ref_metrics = reference
    assert_same_weights(ref_dir / "checkpoints/final.pt", run_dir / "checkpoints/final.pt")
    assert_same_weights(ref_dir / "checkpoints/last.pt", run_dir / "checkpoints/last.pt")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert without_timing(metrics) == without_timing(ref_metrics)
    assert temporaries(run_dir) == []


def test_evaluation_killed_before_its_metrics_leaves_no_metrics_file(
    killed_four_times, data_root, tally, tmp_path
):
    """metrics.json marks a finished evaluation: a kill between the samples and the metrics
    must not leave the previous metrics.json beside new samples."""
    run_dir = killed_four_times[0]
    out, samples = tmp_path / "metrics.json", tmp_path / "samples.npz"
    evaluate(run_dir, "val", out=out, samples=samples, data_root=data_root, save=2)
    expected = out.read_bytes(), samples.read_bytes()
    command = ["evaluate", "--run", run_dir, "--split", "val", "--out", out]
    command += ["--samples", samples, "--save", "2", "--data-root", data_root]
    result = pag_with_fault(command, "kill-before-replace:metrics.json:1")
    tally.fault("SIGKILL pag evaluate")
    assert killed(result), result.stderr
    assert not out.exists()  # moved aside before the new samples were written
    names = {p.name for p in temporaries(tmp_path)}  # the previous files, the new metrics
    previous = {".metrics.json.previous.tmp", ".samples.npz.previous.tmp"}
    assert previous < names and len(names) == 3 and samples.exists()
    rerun = pag_cli(command)
    assert rerun.code == 0, rerun.err
    assert (out.read_bytes(), samples.read_bytes()) == expected
    assert temporaries(tmp_path) == []  # what the killed writer left is cleaned up
