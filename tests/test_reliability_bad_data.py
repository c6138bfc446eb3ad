"""Bad data: a truncated PNG, flipped bytes in a PNG and in a .mat, a missing file, a wrong
image size, a label outside the class range. `pag data check` and `pag train` each name the
file and the problem, and no run trains on the broken sample (no final weights, no metrics).

The loaders' own tests (tests/test_synthetic.py, test_nyuv2.py, test_bsds500.py,
test_cityscapes.py) cover many more damaged files per format; here each fault goes through
the two commands a user runs."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from faults import make_synthetic, pag_cli, write_run_params
from fixtures_real import BSDS_DATA, flip_bytes, make_bsds, truncate_file
from PIL import Image

from pag.data.synthetic.writer import MANIFEST

IMAGE = 3  # a training image (index % 10 < 8)


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("clean"))


def image_file(root: Path, modality: str) -> Path:
    return root / "synthetic" / "train" / f"{IMAGE:06d}_{modality}.png"


def write_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG")


def _truncate(root):
    truncate_file(image_file(root, "rgb"), keep=0.5)
    return image_file(root, "rgb"), r"cannot decode image \(truncated or corrupt\?\)"


def _flip(root):
    flip_bytes(image_file(root, "depth"), offset=200, count=1)  # inside the pixel data
    return image_file(root, "depth"), r"cannot decode image"


def _missing(root):
    image_file(root, "normals").unlink()
    return image_file(root, "normals"), r"file not found"


def _wrong_size(root):
    path = image_file(root, "semantic")
    write_png(path, np.asarray(Image.open(path))[:40, :56].copy())
    return path, r"is 40 x 56, but the manifest's images are 48 x 64"


def _label_outside(root):
    path = image_file(root, "semantic")
    labels = np.asarray(Image.open(path)).copy()
    labels[5, 7] = 12  # 10 classes: 0..9, and 255 = ignore
    write_png(path, labels)
    return path, r"'semantic' has labels \[12\] outside 0\.\.9 and != 255"


MISSING_REHASHED = ("missing-file", "rehashed")
CORRUPTIONS = {
    "truncated-png": _truncate,
    "flipped-byte-png": _flip,
    "missing-file": _missing,
    "wrong-image-size": _wrong_size,
    "label-outside-classes": _label_outside,
}


def rehash(root: Path, path: Path) -> None:
    """Record the damaged file's sha256 in the manifest: the checksum no longer tells."""
    manifest_path = root / "synthetic" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    relative = path.relative_to(root / "synthetic").as_posix()
    for entry in manifest["images"]:
        for info in entry["files"].values():
            if info["path"] == relative:
                info["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))


# a missing file has no checksum to record
CASES = [(c, m) for c in CORRUPTIONS for m in ("as-is", "rehashed") if (c, m) != MISSING_REHASHED]


@pytest.fixture(params=CASES, ids=str)
def broken(request, clean_root, tmp_path, tally):
    """A copy of the dataset with one fault; with 'rehashed', the manifest agrees with it."""
    corruption, manifest = request.param
    root = tmp_path / "data"
    shutil.copytree(clean_root, root)
    path, problem = CORRUPTIONS[corruption](root)
    if manifest == "rehashed":
        rehash(root, path)
    tally.bad_input(f"data: {corruption}")
    return root, path, problem, manifest


def test_data_check_names_the_file_and_the_problem(broken):
    root, path, problem, manifest = broken
    result = pag_cli(["data", "check", "synthetic", "--data-root", root])
    assert result.code == 1
    lines = [line for line in result.err.splitlines() if line.startswith("problem: ")]
    assert any(re.search(re.escape(str(path)) + ".*" + problem, line) for line in lines), lines
    checksum = [line for line in lines if "sha256" in line]
    if manifest == "as-is" and path.exists():
        assert len(checksum) == 1 and str(path) in checksum[0]
    else:
        assert checksum == []
    assert re.search(r"^synthetic: \d+ problem\(s\) in ", result.err, re.M)


def test_training_names_the_file_and_the_problem_and_saves_nothing(broken, tmp_path):
    root, path, problem, _ = broken
    params = write_run_params(tmp_path / "run.yaml", training={"epochs": 1})
    run_dir = tmp_path / "run"
    result = pag_cli(["train", "--params", params, "--out", run_dir, "--data-root", root])
    assert result.code == 1
    assert re.fullmatch(f"error: {re.escape(str(path))}.*{problem}.*\n", result.err), result.err
    assert not (run_dir / "checkpoints" / "final.pt").exists()
    assert not (run_dir / "train_metrics.json").exists()


def test_a_broken_label_stops_training_in_a_dataloader_worker_too(clean_root, tmp_path, tally):
    """With worker processes the error crosses a process boundary: still one line."""
    root = tmp_path / "data"
    shutil.copytree(clean_root, root)
    path, problem = _label_outside(root)
    tally.bad_input("data: label-outside-classes (DataLoader worker)")
    params = write_run_params(tmp_path / "run.yaml", training={"epochs": 1, "num_workers": 1})
    result = pag_cli(["train", "--params", params, "--out", tmp_path / "run", "--data-root", root])
    assert result.code == 1
    assert re.fullmatch(f"error: {re.escape(str(path))}.*{problem}\n", result.err), result.err


@pytest.fixture
def bsds_root(tmp_path):
    root = tmp_path / "data"
    make_bsds(root / "bsds500")
    return root


def test_a_flipped_byte_in_a_mat_file_is_named_by_check_and_training(bsds_root, tmp_path, tally):
    mat = bsds_root / "bsds500" / BSDS_DATA / "groundTruth" / "train" / "2092.mat"
    flip_bytes(mat, offset=128, count=1)  # the first variable's data type tag
    tally.bad_input("data: flipped-byte-mat")
    check = pag_cli(["data", "check", "bsds500", "--data-root", bsds_root])
    assert check.code == 1
    assert re.search(rf"^problem: .*{re.escape(str(mat))}: cannot read MATLAB", check.err, re.M)
    params = write_run_params(
        tmp_path / "run.yaml",
        {"dataset": "bsds500", "tasks": {"boundary": None}, "input_size": [8, 8]},
        {"epochs": 1},
    )
    run_dir = tmp_path / "run"
    result = pag_cli(["train", "--params", params, "--out", run_dir, "--data-root", bsds_root])
    assert result.code == 1
    assert re.fullmatch(f"error: {re.escape(str(mat))}: cannot read MATLAB v5 file.*\n", result.err)
    assert not (run_dir / "checkpoints" / "final.pt").exists()
