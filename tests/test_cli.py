"""The installed `pag` command: help, exit codes and one-line errors instead of tracebacks."""

import json
import shutil
import subprocess
import sys


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
