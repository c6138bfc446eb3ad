"""The installed `pag` command: help, exit codes and one-line errors instead of tracebacks;
one vocabulary (`--profile NAME`); diagnostics on stderr at the level `-v`/`-q` pick."""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from faults import make_synthetic, pag_cli, write_run_params

ROOT = Path(__file__).resolve().parents[1]


def pag(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "pag", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_console_script_is_installed_and_lists_commands():
    exe = shutil.which("pag") or str(__import__("pathlib").Path(sys.executable).parent / "pag")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "data" in out.stdout
    sub = pag("data", "--help")
    for command in ("synth", "fetch", "check", "list"):
        assert command in sub.stdout


def test_synth_then_check_round_trip(tmp_path):
    out = pag("data", "synth", "--num", "3", "--seed", "4", "--root", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "train 3" in out.stdout
    manifest = json.loads((tmp_path / "synthetic" / "manifest.json").read_text())
    assert len(manifest["images"]) == 3
    ok = pag("data", "check", "synthetic", "--data-root", str(tmp_path))
    assert ok.returncode == 0 and "ok (3 samples checked" in ok.stdout


def test_bad_input_gives_one_clear_line_and_nonzero_exit(tmp_path):
    bad = pag(
        "data", "synth", "--num", "1", "--seed", "0", "--height", "33", "--out", str(tmp_path / "x")
    )
    assert bad.returncode == 1
    assert (
        bad.stderr.strip()
        == "error: invalid generator parameters: height and width must be even, got 33 x 128"
    )
    assert not (tmp_path / "x").exists()
    unknown = pag("data", "check", "nosuch", "--root", str(tmp_path))
    assert unknown.returncode == 1 and "unknown dataset 'nosuch'; expected one of" in unknown.stderr
    missing = pag("data", "check", "synthetic", "--root", str(tmp_path))
    assert missing.returncode == 1 and "no such directory" in missing.stderr
    assert "Traceback" not in bad.stderr + unknown.stderr + missing.stderr


def test_write_failure_is_one_line_naming_the_path(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    out = pag("data", "synth", "--num", "1", "--seed", "0", "--out", str(tmp_path / "file" / "x"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"error: {tmp_path / 'file' / 'x'}")


def test_fetch_of_a_login_dataset_prints_the_manual_steps(tmp_path):
    out = pag("data", "fetch", "cityscapes", "--root", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert f"files go under {tmp_path / 'cityscapes'}" in out.stdout
    assert "gtFine_trainvaltest.zip" in out.stdout


def test_list_shows_registered_datasets(tmp_path):
    (tmp_path / "nyuv2").mkdir()  # an empty folder (e.g. after a failed fetch) is not data
    out = pag("data", "list", "--root", str(tmp_path))
    assert out.returncode == 0 and f"data root: {tmp_path}" in out.stdout
    lines = out.stdout.splitlines()
    for name in ("bsds500", "cityscapes", "nyuv2", "stanford2d3d", "synthetic"):
        assert any(line.startswith(name) and line.endswith("absent") for line in lines), name


def test_flops_takes_a_profile_by_name():
    out = pag("flops", "--profile", "tiny")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r["profile"] for r in records} == {"tiny"}
    assert records[0]["method"] == "dense" and records[0]["fraction_of_dense_baseline"] == 1.0
    assert len(records) == len({(r["method"], r["budget"]) for r in records}) > 1


@pytest.mark.parametrize(
    "command",
    [
        ["plan"],
        ["flops"],
        ["train", "--run", "dense-s0", "--out", "{tmp}/x"],
        ["report"],
        ["summarize"],
        ["dvc-yaml", "--check"],
    ],
    ids=lambda command: command[0],
)
def test_a_wrong_profile_name_lists_the_profiles(command, tmp_path):
    result = pag_cli([arg.format(tmp=tmp_path) for arg in command] + ["--profile", "tinny"])
    assert result.code == 1 and result.out == ""
    assert result.err.startswith("error: unknown profile 'tinny' (no params/tinny.yaml)")
    assert len(result.err.splitlines()) == 1
    listed = result.err.split("are: ")[1]
    assert "synthetic" in listed and "tiny" in listed and "nyuv2" in listed
    assert not (tmp_path / "x").exists()


@pytest.fixture
def pag_logger():
    """The `pag` logger as it was before the test (the CLI set up in this process changes it)."""
    logger = logging.getLogger("pag")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_quiet_hides_notes_and_verbose_shows_debug_lines(tmp_path, pag_logger):
    root = make_synthetic(tmp_path, num=2)
    extra = root / "synthetic" / "train" / "000099_rgb.png"
    shutil.copy(next((root / "synthetic" / "train").glob("*_rgb.png")), extra)
    check = ["data", "check", "synthetic", "--root", root]
    noted = pag_cli(check)
    assert noted.code == 0 and "ok (" in noted.out
    assert noted.err.startswith("note: 1 files in ")
    quiet = pag_cli(["-q", *check])
    assert quiet.code == 0 and quiet.out == noted.out and quiet.err == ""

    plain = pag_cli(["plan", "--profile", "tiny"])
    verbose = pag_cli(["-v", "plan", "--profile", "tiny"])
    assert plain.code == verbose.code == 0 and verbose.out == plain.out
    assert "debug:" not in plain.err
    assert "debug: pag.cli_options: profile 'tiny' is params/tiny.yaml" in verbose.err


def test_a_tracked_command_prints_no_mlflow_start_up_lines(tmp_path):
    """A first job on a fresh store: MLflow creates and migrates its tables (and says so through
    its own and Alembic's loggers); none of that reaches the command's output."""
    data = make_synthetic(tmp_path / "data", num=6)
    params = write_run_params(tmp_path / "run.yaml", training={"epochs": 1})
    env = {
        **os.environ,
        "PAG_TRACKING": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}",
    }
    env.pop("MLFLOW_LOGGING_LEVEL", None)
    args = ["train", "--params", params, "--out", tmp_path / "run", "--root", data]
    out = pag("-v", *map(str, args), env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["epochs"] == 1
    assert "debug: pag.tracking: train job" in out.stderr  # tracked, with -v
    for line in out.stderr.splitlines():
        assert "alembic" not in line.lower() and "mlflow." not in line.lower(), line
        assert "database tables" not in line and "Context impl" not in line, line
    assert (tmp_path / "store" / "mlflow.db").is_file()


def _tiny_project(tmp_path, monkeypatch):
    """A project folder holding only the tiny profile (no data)."""
    (tmp_path / "params").mkdir()
    shutil.copy(ROOT / "params/tiny.yaml", tmp_path / "params/tiny.yaml")
    monkeypatch.chdir(tmp_path)


def test_a_missing_dataset_names_the_profiles_own_command(tmp_path, monkeypatch):
    """Every command that knows the profile says how to make its data, with its count, seed
    and size (issue 17: `pag data fetch synthetic` used to be suggested)."""
    _tiny_project(tmp_path, monkeypatch)
    wanted = (
        "profile tiny makes it with `pag data synth --out data/tiny/synthetic --num 40 "
        "--seed 0 --height 48 --width 64 --workers 1` (or `pag data synth --profile tiny`)"
    )
    for args in (
        ["train", "--profile", "tiny", "--run", "dense-s0", "--out", tmp_path / "run"],
        ["trivial", "--profile", "tiny"],
    ):
        result = pag_cli(args)
        assert result.code == 1 and wanted in result.err, result.err
        assert "pag data fetch" not in result.err
    assert not (tmp_path / "run").exists() and not (tmp_path / "results").exists()


def test_data_synth_with_a_profile_renders_what_it_needs(tmp_path, monkeypatch):
    _tiny_project(tmp_path, monkeypatch)
    result = pag_cli(["data", "synth", "--profile", "tiny"])
    assert result.code == 0, result.err
    assert "wrote images 0..39 to data/tiny/synthetic (manifest: train 32, val 4, test 4)" in (
        result.out
    )
    manifest = json.loads((tmp_path / "data/tiny/synthetic/manifest.json").read_text())
    assert manifest["params"]["height"] == 48 and manifest["params"]["width"] == 64
    refused = pag_cli(["data", "synth", "--profile", "tiny", "--num", "3"])
    assert refused.code != 0 and "--profile sets --out, --num" in refused.err
    assert pag_cli(["data", "synth"]).code != 0


def test_evaluating_a_pipeline_run_without_its_data_names_the_profiles_command(
    tmp_path, monkeypatch
):
    """`pag evaluate --run DIR` knows its profile from the run's params (`experiment`)."""
    _tiny_project(tmp_path, monkeypatch)
    assert pag_cli(["data", "synth", "--profile", "tiny"]).code == 0
    trained = pag_cli(["train", "--profile", "tiny", "--run", "dense-s0", "--out", "runs/r"])
    assert trained.code == 0, trained.err
    shutil.rmtree(tmp_path / "data")
    result = pag_cli(["evaluate", "--run", "runs/r", "--split", "val"])
    assert result.code == 1
    assert "profile tiny makes it with `pag data synth --out data/tiny/synthetic" in result.err
