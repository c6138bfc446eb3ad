"""Interruption: `pag train` and `pag evaluate` killed (SIGKILL) at chosen points, then run again
with the same command, end exactly as uninterrupted runs; the pipeline front-ends, killed in the
middle of the tiny profile, rerun only what was unfinished (slow tests).

The kills come from inside the process (tests/faults.py), so each lands at a known point: before
an optimizer step, in the middle of a checkpoint write, right after one, and between the final
weights and train_metrics.json. tests/test_training.py kills from outside at a moment it
observes."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from faults import (
    kill_group_when,
    killed,
    make_synthetic,
    pag_cli,
    pag_with_fault,
    temporaries,
    train_reference,
    write_run_params,
)
from test_pipeline_e2e import TINY, environment, fresh_copy, result_files
from test_pipeline_e2e import run as run_command

from pag.training import checkpoint
from pag.training.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
STEPS = 21  # 14 training images in batches of 2: 7 steps per epoch, 3 epochs; checkpoints
# every 3 steps


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    """An uninterrupted run of the same params, trained in this process."""
    return train_reference(tmp_path_factory.mktemp("reference"), data_root)


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
        "kill-before-replace:train_metrics.json:1",  # final.pt written, train_metrics.json not yet
    ):
        result = pag_with_fault(command, fault)
        assert killed(result), (fault, result.returncode, result.stderr)
        seen[fault] = {
            "last": state_step(run_dir) if (checkpoints / "last.pt").exists() else None,
            "final": (checkpoints / "final.pt").exists(),
            "metrics": (run_dir / "train_metrics.json").exists(),
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
    final = seen["kill-before-replace:train_metrics.json:1"]
    assert final["last"] == STEPS and final["final"] and not final["metrics"]

    assert f"resuming {run_dir} at step {STEPS}/{STEPS}" in done.err
    ref_dir, ref_metrics = reference
    assert_same_weights(ref_dir / "checkpoints/final.pt", run_dir / "checkpoints/final.pt")
    assert_same_weights(ref_dir / "checkpoints/last.pt", run_dir / "checkpoints/last.pt")
    metrics = json.loads((run_dir / "train_metrics.json").read_text())
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


# -- the pipeline front-ends, killed in the middle of the tiny profile (slow) ------------------


def tiny_runs() -> list[str]:
    from pag.pipeline.plan import load_plan

    return [run.name for run in load_plan(ROOT / "params" / "tiny.yaml").runs()]


def final_weights(project) -> dict[str, dict]:
    return {
        run: checkpoint.model_weights(project / f"runs/tiny/{run}/checkpoints/final.pt")
        for run in tiny_runs()
    }


def finished(project) -> set[str]:
    return {
        run for run in tiny_runs() if (project / f"runs/tiny/{run}/train_metrics.json").exists()
    }


def evaluated(project) -> set[str]:
    return {
        run for run in tiny_runs() if (project / f"results/tiny/runs/{run}/metrics.json").exists()
    }


def stages(runs) -> set[str]:
    """DVC stage names of runs (pag.pipeline.plan.Job.stage: `pag-0.5-s0` is `pag-0_5-s0`)."""
    return {re.sub(r"[^A-Za-z0-9_-]", "_", run) for run in runs}


def fine_tune_running(project, logs) -> bool:
    """The dense baseline has finished and a fine-tune is past its 4th of 8 steps; `logs()`
    gives (log text, run name) of the training jobs started so far."""
    if not (project / "runs/tiny/dense-s0/train_metrics.json").exists():
        return False
    return any(run != "dense-s0" and "step 4/8" in text for text, run in logs())


def assert_same_as(reference, project) -> None:
    results, weights = reference
    ours = result_files(project)
    assert ours.keys() == results.keys()
    assert [name for name in ours if ours[name] != results[name]] == []
    for run, state in final_weights(project).items():
        assert all(torch.equal(state[k], weights[run][k]) for k in weights[run]), run


@pytest.fixture(scope="module")
def project_source(tmp_path_factory):
    """One copy of the project that every pipeline test copies again: the same sources for
    the uninterrupted and the killed runs, even while the working tree changes."""
    return fresh_copy(tmp_path_factory.mktemp("source"))


def project_copy(source, dest):
    return shutil.copytree(source, dest, symlinks=True)


@pytest.fixture(scope="module")
def reference_pipeline(tmp_path_factory, project_source):
    """The tiny profile run through Snakemake without interruption (tests/test_pipeline_e2e.py
    shows that DVC gives the same files)."""
    project = project_copy(project_source, tmp_path_factory.mktemp("uninterrupted") / "p")
    env = environment()
    run_command(["pag", "dvc-yaml", "--profile", "tiny"], project, env)
    run_command(["snakemake", "--cores", "2", "--config", "profile=tiny"], project, env)
    return result_files(project), final_weights(project)


def jobs_run(log: str, rule: str) -> set[str]:
    """The `run` wildcard of every job of `rule` that Snakemake started."""
    pattern = rf"^(?:local)?rule {rule}:\n(?:    .*\n)*?    wildcards: run=(\S+)"
    return set(re.findall(pattern, log, re.M))


@pytest.mark.slow
def test_snakemake_killed_mid_pipeline_reruns_only_unfinished_jobs(
    reference_pipeline, project_source, tmp_path, tally
):
    project = project_copy(project_source, tmp_path / "project")
    env = environment()
    run_command(["pag", "dvc-yaml", "--profile", "tiny"], project, env)
    command = ["snakemake", "--cores", "2", "--config", "profile=tiny"]

    def logs():
        return [(p.read_text(), p.stem) for p in (project / "logs/tiny/train").glob("*.log")]

    log = tmp_path / "killed.log"
    kill_group_when(command, project, env, log, lambda: fine_tune_running(project, logs))
    tally.fault("SIGKILL snakemake (process group)")
    trained, scored = finished(project), evaluated(project)
    assert "dense-s0" in trained and trained != set(tiny_runs())
    for run in set(tiny_runs()) - trained:  # nothing unfinished looks finished
        assert not (project / f"runs/tiny/{run}/checkpoints/final.pt").exists()

    # the same command refuses to run while the killed one's lock is there, and says why
    locked = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    assert locked.returncode != 0, locked.stderr
    assert "Directory cannot be locked" in locked.stderr, locked.stderr
    run_command(["snakemake", "--unlock", "--config", "profile=tiny"], project, env)
    rerun = run_command([*command, "--rerun-incomplete"], project, env)
    assert jobs_run(rerun, "train") == set(tiny_runs()) - trained
    assert jobs_run(rerun, "evaluate") == set(tiny_runs()) - scored
    assert "rule data:" not in rerun
    assert_same_as(reference_pipeline, project)
    assert "Nothing to be done" in run_command([*command, "-n"], project, env)


@pytest.mark.slow
def test_dvc_repro_killed_mid_pipeline_reruns_only_unfinished_stages(
    reference_pipeline, project_source, tmp_path, tally
):
    project = project_copy(project_source, tmp_path / "project")
    env = environment()
    run_command(["pag", "dvc-yaml", "--profile", "tiny"], project, env)
    command = ["dvc", "repro", TINY]
    log = tmp_path / "killed.log"

    def logs():  # DVC runs one stage at a time, each announced before its output
        parts = re.split(r"Running stage '[^']*:train-([^']+)'", log.read_text())
        return list(zip(parts[2::2], parts[1::2], strict=True))

    kill_group_when(command, project, env, log, lambda: fine_tune_running(project, logs))
    tally.fault("SIGKILL dvc repro (process group)")
    trained = finished(project)
    assert "dense-s0" in trained and trained != set(tiny_runs())
    assert (project / ".dvc/tmp/rwlock").exists()  # the killed dvc's lock entries stay

    rerun = run_command(command, project, env)  # dvc sees the dead pid and drops its entries
    assert "had been killed. Auto removed it from the lock file" in rerun
    ran = set(re.findall(r"Running stage '[^']*:train-([^']+)'", rerun))
    skipped = set(re.findall(r"Stage '[^']*:train-([^']+)' didn't change, skipping", rerun))
    assert ran == stages(set(tiny_runs()) - trained) and skipped == stages(trained)
    assert "Running stage 'pipelines/tiny/dvc.yaml:data'" not in rerun
    assert_same_as(reference_pipeline, project)
    assert json.loads(run_command(["dvc", "status", "--json", TINY], project, env)) == {}
