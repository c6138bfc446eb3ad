"""Run integrity: no result may carry the wrong label.

Every result records its provenance and is checked against it (pag.training.provenance);
writers exclude each other (pag.locking); outputs never land on another command's files;
the report is exactly its inputs; hostile YAML, manifests and archives fail fast with one
line; a dead tracking server costs a job seconds. Each case is a reproduction from the issue
that found it, run through the `pag` commands where it was seen."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from faults import finish, make_synthetic, pag_cli, snapshot, start_pag, write_run_params

from pag.fileio import file_digest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("data"), num=20)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_root) -> Path:
    """A finished run (its params file beside it as params.yaml's source), never modified:
    tests copy it."""
    tmp = tmp_path_factory.mktemp("finished")
    params = write_run_params(tmp / "run.yaml", training={"epochs": 2})
    result = pag_cli(["train", "--params", params, "--out", tmp / "run", "--root", data_root])
    assert result.code == 0, result.err
    return tmp


def copy_run(finished: Path, tmp: Path) -> tuple[Path, Path]:
    shutil.copytree(finished / "run", tmp / "run")
    shutil.copy(finished / "run.yaml", tmp / "run.yaml")
    return tmp / "run", tmp / "run.yaml"


def one_error_line(result) -> str:
    assert result.code == 1, (result.out, result.err)
    assert result.err.count("\n") == 1 and result.err.startswith("error: "), result.err
    return result.err


# -- provenance ----------------------------------------------------------------------------------


def test_weights_under_an_edited_params_file_are_refused_by_train_and_evaluate(
    finished, data_root, tmp_path, tally
):
    """The issue's case: a finished run's params.yaml edited (epochs 2 -> 3), then `pag train`
    with matching params trained nothing and `pag evaluate` recorded the new hash."""
    run, params = copy_run(finished, tmp_path)
    tally.bad_input("params.yaml edited after training")
    for path in (run / "params.yaml", params):
        path.write_text(path.read_text().replace("epochs: 2", "epochs: 3"))
    before = snapshot(tmp_path)
    err = one_error_line(pag_cli(["train", "--params", params, "--out", run, "--root", data_root]))
    assert re.search(r"final\.pt was made from other inputs .*training\.epochs differs", err)
    err = one_error_line(pag_cli(["evaluate", "--run", run, "--root", data_root]))
    assert re.search(r"final\.pt was trained with other params than .*params\.yaml", err)
    assert "training.epochs differs" in err
    assert snapshot(tmp_path) == before
    # --replace-stale trains it again, with the params it now has
    result = pag_cli(
        ["train", "--params", params, "--out", run, "--root", data_root, "--replace-stale"]
    )
    assert result.code == 0, result.err
    assert json.loads((run / "train_metrics.json").read_text())["epochs"] == 3


def test_a_changed_dataset_or_init_checkpoint_makes_a_finished_run_stale(
    finished, data_root, tmp_path, tally
):
    """Params alone do not make a result: a regenerated dataset, or a retrained dense model a
    fine-tune started from, is refused too (each named)."""
    from pag.training import checkpoint
    from pag.training.provenance import recorded_provenance

    run, params = copy_run(finished, tmp_path)
    data = tmp_path / "data"
    shutil.copytree(data_root, data)
    recorded = recorded_provenance(run / "checkpoints" / "final.pt")
    assert recorded.data == file_digest(data / "synthetic" / "manifest.json")
    manifest = json.loads((data / "synthetic" / "manifest.json").read_text())
    manifest["images"] = manifest["images"][:-1]  # one image fewer
    (data / "synthetic" / "manifest.json").write_text(json.dumps(manifest))
    tally.bad_input("dataset changed under a finished run")
    err = one_error_line(pag_cli(["train", "--params", params, "--out", run, "--root", data]))
    assert "(data differs)" in err

    # a fine-tune from the finished dense weights; then those weights change
    init = tmp_path / "dense.pt"
    shutil.copy(finished / "run" / "checkpoints" / "final.pt", init)
    tune = write_run_params(
        tmp_path / "tune.yaml", {"method": "pag", "budget": 0.5}, training={"epochs": 1}
    )
    args = ["train", "--params", tune, "--out", tmp_path / "tune", "--root", data_root]
    assert pag_cli([*args, "--init-from", init]).code == 0
    weights = checkpoint.load(init)
    weights["model"] = {
        k: v + 1 if v.is_floating_point() else v for k, v in weights["model"].items()
    }
    checkpoint.save(init, weights)
    tally.bad_input("init checkpoint retrained under a finished fine-tune")
    err = one_error_line(pag_cli([*args, "--init-from", init]))
    assert "(init differs)" in err


def test_a_checkpoint_without_provenance_is_refused_and_replaced_when_asked(
    finished, data_root, tmp_path, tally
):
    from pag.training import checkpoint

    run, params = copy_run(finished, tmp_path)
    final = run / "checkpoints" / "final.pt"
    payload = checkpoint.load(final)
    del payload["provenance"]
    checkpoint.save(final, payload)
    tally.bad_input("final.pt of an older pag (no provenance)")
    args = ["train", "--params", params, "--out", run, "--root", data_root]
    err = one_error_line(pag_cli(args))
    assert f"{final}: records no provenance" in err
    err = one_error_line(pag_cli(["evaluate", "--run", run, "--root", data_root]))
    assert f"{final}: records no provenance" in err
    result = pag_cli([*args, "--replace-stale"])
    assert result.code == 0 and "starting over" in result.err


def test_an_evaluation_records_the_provenance_of_its_weights(finished, data_root, tmp_path):
    from pag.training import checkpoint
    from pag.training.provenance import CODE_VERSION, weights_digest

    run, _ = copy_run(finished, tmp_path)
    assert pag_cli(["evaluate", "--run", run, "--root", data_root, "--save", "0"]).code == 0
    metrics = json.loads((run / "eval_val" / "metrics.json").read_text())
    provenance = metrics["provenance"]
    final = checkpoint.load(run / "checkpoints" / "final.pt")
    assert provenance["training"] == final["provenance"]
    assert provenance["training"]["params_hash"] == metrics["params_hash"]
    assert provenance["training"]["code"] == CODE_VERSION
    assert provenance["weights"] == weights_digest(final["model"])
    assert provenance["data"] == file_digest(data_root / "synthetic" / "manifest.json")


def fake_results(plan, root: Path) -> None:
    """Evaluations (and training metrics) of every run of `plan`, with the provenance a real
    one records, as the pipeline would leave them."""
    from pag.pipeline import plan as layout
    from pag.pipeline.summary import expected_params
    from pag.training.provenance import comparable_params

    for run in plan.runs():
        params = expected_params(plan, run)
        settings = layout.evaluation_settings(plan.profile, run)
        evaluation = {
            "split": settings["split"],
            "gate_rule": settings["gate_rule"],
            "method": params.method,
            "budget": params.budget,
            "params_hash": params.digest(),
            "provenance": {"training": {"params": comparable_params(params)}},
            "macs": {"dense": 10.0, "effective": 8.0},
            "semantic": {"miou": 0.5},
            "boundary": {"ods": 0.5},
            "depth": {"rmse": 1.0},
            "normals": {"mean": 30.0},
        }
        if settings["gate_rules"]:
            evaluation["gate_rules"] = {rule: {} for rule in settings["gate_rules"]}
        path = root / layout.eval_metrics(plan.profile, run.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(evaluation))
        train = root / layout.train_metrics(plan.profile, run.name)
        train.parent.mkdir(parents=True, exist_ok=True)
        train.write_text(json.dumps({"params_hash": params.digest(), "history": []}))
        samples = root / layout.eval_samples(plan.profile, run.name)
        samples.parent.mkdir(parents=True, exist_ok=True)
        samples.write_bytes(b"saved samples")


def test_summarize_and_report_name_the_runs_older_than_the_profile(tmp_path, monkeypatch, tally):
    """The issue's case: a profile edited (finetune epochs 1 -> 5) without rerunning, then
    `pag summarize` and `pag report` exited 0 on the old evaluations."""
    from pag.pipeline.plan import load_plan

    profile = tmp_path / "params" / "tiny.yaml"
    profile.parent.mkdir()
    shutil.copy(ROOT / "params" / "tiny.yaml", profile)
    fake_results(load_plan(profile), tmp_path)
    monkeypatch.chdir(tmp_path)
    assert pag_cli(["summarize", "--profile", profile]).code == 0
    raw = yaml.safe_load(profile.read_text())
    raw["finetune"]["epochs"] += 4
    raw["evaluation"]["split"] = "test"
    profile.write_text(yaml.safe_dump(raw))
    tally.bad_input("results older than their profile", 2)
    before = snapshot(tmp_path / "results")
    for command in ("summarize", "report"):
        err = one_error_line(pag_cli([command, "--profile", profile]))
        fine_tuned = [r.name for r in load_plan(profile).runs() if r.method != "dense"]
        assert f"{len(fine_tuned) + 1} of {len(fine_tuned) + 1} runs are stale" in err
        assert "dense-s0 (evaluated otherwise: evaluation.split)" in err
        assert f"{fine_tuned[0]} (trained with other params: training.epochs; " in err
    assert snapshot(tmp_path / "results") == before


def test_a_summary_names_an_evaluation_that_is_not_a_json_object(tmp_path, monkeypatch, tally):
    from pag.pipeline.plan import load_plan

    plan = load_plan(ROOT / "params" / "tiny.yaml")
    fake_results(plan, tmp_path)
    path = tmp_path / "results" / "tiny" / "runs" / "dense-s0" / "metrics.json"
    tally.bad_input("evaluation that is a JSON list, then truncated, then nested 200000 deep", 3)
    monkeypatch.chdir(tmp_path)
    for text, why in (
        ("[1, 2]", "evaluation must be a JSON object, got a list"),
        ('{"split": "va', "evaluation is not valid JSON"),
        ("[" * 200_000 + "]" * 200_000, "evaluation is nested too deep to be read"),
    ):
        path.write_text(text)
        err = one_error_line(pag_cli(["summarize", "--profile", ROOT / "params" / "tiny.yaml"]))
        assert err == f"error: results/tiny/runs/dense-s0/metrics.json: {why}\n" or (
            why in err and "results/tiny/runs/dense-s0/metrics.json" in err
        )


# -- writers exclude each other --------------------------------------------------------------------


def wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_second_training_into_a_locked_run_directory_fails_at_once(data_root, tmp_path, tally):
    """The issue's case: two `pag train` into one --out at once, one with lr 0.05, both exit 0
    and params.yaml disagrees with the weights. Now the second is refused while the first
    runs, and the first ends as if alone."""
    first = write_run_params(tmp_path / "a.yaml", training={"epochs": 30})
    second = write_run_params(tmp_path / "b.yaml", training={"epochs": 30, "lr": 0.05})
    run = tmp_path / "run"
    process = start_pag(["train", "--params", first, "--out", run, "--root", data_root])
    try:
        wait_for(lambda: (run / "checkpoints" / "last.pt").is_file())
        tally.fault("second writer of a run directory")
        err = one_error_line(
            pag_cli(["train", "--params", second, "--out", run, "--root", data_root])
        )
        assert re.fullmatch(
            rf"error: {re.escape(str(run))}: another process \(pid {process.pid}\) is using "
            r"this run directory \(lock .*\.run\.lock\); .*use another --out\n",
            err,
        ), err
    finally:
        process.kill()
        finish(process)
    # killed: its lock died with it; the same command now resumes (and the other is refused
    # for its params, not for the lock)
    err = one_error_line(pag_cli(["train", "--params", second, "--out", run, "--root", data_root]))
    assert "was started with other params (training.lr differ" in err
    assert yaml.safe_load((run / "params.yaml").read_text())["training"]["lr"] == 0.01


def test_concurrent_data_synth_into_one_folder_is_refused(tmp_path, tally):
    """The issue's case: two `pag data synth` chunks at once kept 30 of 60 images in the
    manifest, and `pag data check` said ok."""
    from pag.locking import locked

    out = tmp_path / "synthetic"
    tally.fault("second generator of a dataset folder")
    with locked(out, "dataset folder"):
        err = one_error_line(
            pag_cli(["data", "synth", "--out", out, "--num", "10", "--seed", "0", "--start", "30"])
        )
    assert f"{out}: another process (pid {os.getpid()}) is using this dataset folder" in err
    assert not out.exists()
    assert pag_cli(["data", "synth", "--out", out, "--num", "10", "--seed", "0"]).code == 0


def test_a_killed_lock_holder_leaves_no_lock(tmp_path):
    from pag.locking import lock_path, locked

    target = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pag.locking import locked\n"
            f"with locked({str(target)!r}, 'run directory'):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(Exception, match="another process"), locked(target, "run directory"):
        pass
    with pytest.raises(Exception, match="another process"), locked(target, "x", shared=True):
        pass
    holder.kill()
    holder.communicate()
    held = locked(target, "run directory")
    again = locked(target, "run directory")  # flock: a second open file description
    with held, pytest.raises(Exception, match="another process"), again:
        pass
    assert lock_path(target) == tmp_path / ".run.lock"


# -- outputs never land on another command's files -------------------------------------------------


def test_outputs_in_the_wrong_place_are_refused(finished, data_root, tmp_path, tally):
    """The issue's cases: `pag train --out results/tiny` replaced the summary's headline.json;
    `pag evaluate --out RUN/metrics.json` replaced the training metrics."""
    run, params = copy_run(finished, tmp_path)
    results = tmp_path / "results" / "tiny"
    results.mkdir(parents=True)
    for name in ("summary.csv", "headline.json"):
        (results / name).write_text("x")
    (tmp_path / "other.json").write_text('{"anything": 1}')
    cases = {
        "train into a results folder": (
            ["train", "--params", params, "--out", results, "--root", data_root],
            f"{results}: holds files that are not a training run's (headline.json, summary.csv)",
        ),
        "evaluate over the training metrics": (
            ["evaluate", "--run", run, "--root", data_root, "--out", run / "train_metrics.json"],
            f"{run}/train_metrics.json: is a training run's own file",
        ),
        "samples over the weights": (
            ["evaluate", "--run", run, "--root", data_root, "--samples", run / "checkpoints/x.npz"],
            "checkpoints/x.npz: is a training run's own file",
        ),
        "evaluate over another file": (
            ["evaluate", "--run", run, "--root", data_root, "--out", tmp_path / "other.json"],
            "other.json: holds something other than an evaluation",
        ),
        "synth into a results folder": (
            ["data", "synth", "--out", results, "--num", "10", "--seed", "0"],
            f"{results}: holds files that `pag data synth` did not write",
        ),
    }
    before = snapshot(tmp_path)
    for case, (args, message) in cases.items():
        tally.bad_input(f"--out: {case}")
        assert message in one_error_line(pag_cli(args)), case
    assert snapshot(tmp_path) == before


def test_the_report_folder_holds_exactly_the_report(tmp_path):
    """An output the report skips is removed, so the folder never shows a figure its README
    says is missing; a folder holding other files is refused."""
    from pag.report.make import _report_files

    out = tmp_path / "figures"
    out.mkdir()
    (out / "old_figure.png").write_bytes(b"png")
    (out / ".x.png.123.tmp").write_bytes(b"")
    assert [p.name for p in _report_files(out)] == ["old_figure.png"]
    (out / "summary.csv").write_text("x")
    with pytest.raises(Exception, match=r"holds files that are not a report's \(summary\.csv\)"):
        _report_files(out)


# -- hostile and malformed input -------------------------------------------------------------------


def anchor_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + f"\ninput_size: *a{levels - 1}\n"


YAML_CASES = {
    "duplicate key": ("seed: 1\nseed: 2\n", r"line \d+: key 'seed' is given twice \(also at line"),
    "anchor bomb": (anchor_bomb(), r"its aliases expand to more than 20000 values"),
    "5000 levels deep": ("x: " + "[" * 5000 + "]" * 5000 + "\n", r"nested deeper than 48"),
    "recursive alias": ("x: &x [1, *x]\n", r"an alias refers to itself"),
}


@pytest.mark.parametrize("case", YAML_CASES)
def test_hostile_yaml_fails_fast_with_one_line(case, tmp_path, tally):
    text, message = YAML_CASES[case]
    run = write_run_params(tmp_path / "run.yaml")
    run.write_text(run.read_text() + text)
    profile = tmp_path / "tiny.yaml"
    profile.write_text((ROOT / "params" / "tiny.yaml").read_text() + text)
    tally.bad_input(f"yaml: {case}", 2)
    before = snapshot(tmp_path)
    started = time.monotonic()
    for args, path in (
        (["train", "--params", run, "--out", tmp_path / "out"], run),
        (["plan", "--profile", profile], profile),
    ):
        err = one_error_line(pag_cli(args))
        assert re.match(rf"error: {re.escape(str(path))}: .*{message}", err), err
    assert time.monotonic() - started < 10
    assert snapshot(tmp_path) == before


def test_numbers_out_of_range_and_crops_larger_than_the_images(data_root, tmp_path, tally):
    """`seed: 1.0e+29` was an OverflowError traceback; an input_size larger than the images
    was killed by memory with no message."""
    run = write_run_params(tmp_path / "run.yaml")
    run.write_text(run.read_text().replace("seed: 1", "seed: 1.0e+29"))
    tally.bad_input("seed 1e29")
    err = one_error_line(pag_cli(["train", "--params", run, "--out", tmp_path / "out"]))
    assert "seed: a number is out of range (at most 2**53 in magnitude)" in err
    tally.bad_input("input_size larger than the images")
    run = write_run_params(tmp_path / "big.yaml", {"input_size": [4800, 6400]})
    args = ["train", "--params", run, "--out", tmp_path / "out", "--root", data_root]
    err = one_error_line(pag_cli(args))
    assert "input_size [4800, 6400] is larger than the images of split 'train'" in err
    assert "(its first is 48 x 64)" in err
    assert not (tmp_path / "out").exists()


def test_damaged_checkpoints_and_metrics_of_a_run_name_the_file(
    finished, data_root, tmp_path, tally
):
    """A crafted last.pt with the right hash but a missing key or tensor, and a truncated
    finished train_metrics.json, were tracebacks."""
    from pag.training import checkpoint

    run, params = copy_run(finished, tmp_path)
    args = ["train", "--params", params, "--out", run, "--root", data_root]
    metrics = run / "train_metrics.json"
    good = metrics.read_text()
    metrics.write_text(good[: len(good) // 2])
    tally.bad_input("truncated finished train_metrics.json")
    err = one_error_line(pag_cli(args))
    assert f"{metrics}: training metrics is not valid JSON" in err
    metrics.write_text(good)

    (run / "checkpoints" / "final.pt").unlink()
    metrics.unlink()
    last = run / "checkpoints" / "last.pt"
    payload = checkpoint.load(last)
    for damage in ("optimizer", "tensor"):
        broken = dict(payload)
        if damage == "optimizer":
            del broken["optimizer"]
        else:
            broken["model"] = dict(payload["model"])
            broken["model"].pop(next(iter(broken["model"])))
        checkpoint.save(last, broken)
        tally.bad_input(f"last.pt missing its {damage}")
        err = one_error_line(pag_cli(args))
        assert f"{last}: not a complete checkpoint of this run" in err, err


def test_data_check_reports_a_leak_between_splits(tmp_path, tally):
    """The issue's case: a manifest whose val entries point at train files passed."""
    root = make_synthetic(tmp_path, num=20)
    manifest_path = root / "synthetic" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    val = next(e for e in manifest["images"] if e["split"] == "val")
    train = next(e for e in manifest["images"] if e["split"] == "train")
    val["files"] = json.loads(json.dumps(train["files"]))
    manifest_path.write_text(json.dumps(manifest))
    tally.bad_input("val entries pointing at train files")
    result = pag_cli(["data", "check", "synthetic", "--root", root])
    assert result.code == 1
    assert f"rgb of image {val['id']} (split 'val') points at {train['files']['rgb']['path']}" in (
        result.err
    )
    assert "the splits leak into each other" in result.err

    tally.bad_input("manifest nested 200000 levels deep")
    manifest_path.write_text("[" * 200_000 + "]" * 200_000)
    result = pag_cli(["data", "check", "synthetic", "--root", root])
    assert result.code == 1
    assert f"problem: {manifest_path}: manifest is nested too deep to be read" in result.err


def test_an_archive_that_expands_too_far_is_refused_before_anything_is_written(tmp_path, tally):
    from pag.data.archive import MAX_RATIO, RATIO_FROM_BYTES, safe_extract
    from pag.errors import UnsafeArchiveError

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\0" * (RATIO_FROM_BYTES + 2**20))
    assert bomb.stat().st_size * MAX_RATIO < RATIO_FROM_BYTES
    tally.bad_input("zip decompression bomb")
    with pytest.raises(UnsafeArchiveError, match=r"expand \d+ times the archive's size"):
        safe_extract(bomb, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- tracking never holds a job hostage ------------------------------------------------------------


def test_a_dead_tracking_server_costs_a_job_seconds(tmp_path, monkeypatch, caplog, tally):
    """The issue's case: an unreachable MLFLOW_TRACKING_URI held a finished job for 252 s."""
    from pag.tracking import log_run

    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "params.yaml").write_text("name: x\n")
    (tmp_path / "train_metrics.json").write_text('{"steps": 1}')
    tally.fault("unreachable tracking server")
    started = time.monotonic()
    assert log_run(tmp_path, "train", "x", uri="http://127.0.0.1:1") is None
    assert time.monotonic() - started < 10
    assert "tracking server 127.0.0.1:1 unreachable" in caplog.text  # a warning on stderr


def test_a_writer_that_cannot_create_its_temporary_names_the_target(tmp_path, monkeypatch, tally):
    """A message named the temporary (`.<name>.xyz.tmp`) that failed to be created, not the
    file being written."""
    import tempfile

    from pag.fileio import write_json_atomic

    def refuse(prefix, suffix, dir):
        name = os.path.join(dir, f"{prefix}abc{suffix}")
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    tally.fault("temporary file refused")
    with pytest.raises(OSError) as error:
        write_json_atomic(tmp_path / "summary.json", {})
    assert error.value.filename == str(tmp_path / "summary.json")
    assert error.value.strerror == "Permission denied"


def test_a_second_fetch_of_one_dataset_is_refused(tmp_path, tally):
    from pag.data.base import FetchSpec, RemoteFile
    from pag.data.download import fetch
    from pag.errors import PagError
    from pag.locking import locked

    spec = FetchSpec(files=(RemoteFile("http://127.0.0.1:1/x.zip", "x.zip"),))
    tally.fault("second fetch of a dataset folder")
    with locked(tmp_path / "ds", "dataset folder"), pytest.raises(PagError) as error:
        fetch(spec, tmp_path / "ds", progress=False, echo=lambda _: None)
    assert "is using this dataset folder" in str(error.value)
    assert not (tmp_path / "ds").exists()


def test_data_check_notes_images_its_manifest_does_not_list(tmp_path, tally):
    """What two concurrent generators left before they were excluded: images on disk that the
    manifest does not list. They are unused, so a note, not a problem."""
    root = make_synthetic(tmp_path, num=10)
    shutil.copy(root / "synthetic/train/000000_rgb.png", root / "synthetic/train/000030_rgb.png")
    tally.bad_input("image files the manifest does not list")
    result = pag_cli(["data", "check", "synthetic", "--root", root])
    assert result.code == 0
    assert (
        f"note: 1 files in {root / 'synthetic'} are not in its manifest (first: "
        "train/000030_rgb.png)"
    ) in result.err
