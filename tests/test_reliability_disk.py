"""Disk faults: writes that fail midway, from a real file-size limit (RLIMIT_FSIZE: write(2)
fails with EFBIG, as on a full disk) or an injected ENOSPC. A complete file is always either
the previous one or absent, no temporary is left, and the error names the file.

tests/test_download.py covers interrupted downloads (the `.part` file is kept to resume; the
destination never holds a partial file) and tests/test_archive.py a corrupt archive's late
member (nothing half-extracted)."""

import errno
import io
import json
import os
import tarfile

import pytest
import torch
from faults import (
    make_synthetic,
    pag_cli,
    pag_with_fault,
    temporaries,
    train_reference,
    write_run_params,
)

from pag.data.archive import safe_extract
from pag.errors import DataError
from pag.fileio import atomic_write, write_bytes_atomic, write_json_atomic
from pag.training import checkpoint, load_run_params, train
from pag.training.evaluate import evaluate

TRAINING = {"epochs": 1}  # 7 steps; checkpoints at 3 and 6, and at the end


def _text(path, value):
    with atomic_write(path, "w") as handle:
        handle.write(value)


WRITERS = {
    "atomic_write": _text,
    "write_bytes_atomic": lambda path, value: write_bytes_atomic(path, value.encode()),
    "write_json_atomic": write_json_atomic,
    "checkpoint.save": lambda path, value: checkpoint.save(path, {"value": value}),
}


@pytest.mark.parametrize("previous", [True, False], ids=["over-a-file", "new-file"])
@pytest.mark.parametrize("writer", WRITERS)
def test_a_write_failing_at_fsync_leaves_the_previous_file_or_none(
    writer, previous, tmp_path, monkeypatch, tally
):
    """ENOSPC at fsync: where a file system that allocates late reports a full disk."""
    target = tmp_path / "out" / "file"
    if previous:
        target.parent.mkdir()
        target.write_bytes(b"previous")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    tally.fault(f"disk: ENOSPC in {writer}")
    with pytest.raises(OSError, match="No space left on device") as error:
        WRITERS[writer](target, "x" * 100_000)
    assert error.value.filename == str(target)  # the file, not its temporary
    assert sorted(p.name for p in target.parent.iterdir()) == (["file"] if previous else [])
    if previous:
        assert target.read_bytes() == b"previous"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    run_dir, _ = train_reference(tmp_path_factory.mktemp("reference"), data_root, TRAINING)
    return checkpoint.model_weights(run_dir / "checkpoints" / "final.pt")


@pytest.mark.parametrize(
    ("fault", "kept_step"),
    [("fsize:60000", None), ("enospc-replace:last.pt:2", 3)],
    ids=["file-size-limit", "enospc-second-checkpoint"],
)
def test_training_on_a_full_disk_stops_naming_the_file_and_resumes_later(
    fault, kept_step, data_root, reference, tmp_path, tally
):
    run_dir = tmp_path / "run"
    params = write_run_params(tmp_path / "run.yaml", training=TRAINING)
    command = ["train", "--params", params, "--out", run_dir, "--data-root", data_root]
    failed = pag_with_fault(command, fault)
    tally.fault(f"disk: {fault.split(':')[0]} in pag train")
    last = run_dir / "checkpoints" / "last.pt"
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1].startswith(f"error: {last}: ")
    assert failed.stderr.splitlines()[-1].endswith(("File too large", "No space left on device"))
    assert temporaries(run_dir) == []
    if kept_step is None:
        assert not last.exists()
    else:
        assert checkpoint.load(last)["state"]["step"] == kept_step
    assert not (run_dir / "checkpoints" / "final.pt").exists()

    done = pag_cli(command)  # space again: the same command finishes the run
    assert done.code == 0, done.err
    weights = checkpoint.model_weights(run_dir / "checkpoints" / "final.pt")
    assert all(torch.equal(weights[k], reference[k]) for k in reference)


def test_generating_data_on_a_full_disk_leaves_no_manifest(tmp_path, tally):
    """The manifest is written last and marks a complete dataset."""
    out = tmp_path / "synthetic"
    command = ["data", "synth", "--out", out, "--num", "16", "--seed", "0"]
    command += ["--height", "48", "--width", "64"]
    failed = pag_with_fault(command, "fsize:10000")  # each PNG fits, the manifest does not
    tally.fault("disk: fsize in pag data synth")
    assert failed.returncode == 1
    assert failed.stderr.strip() == f"error: {out / 'manifest.json'}: File too large"
    assert not (out / "manifest.json").exists() and temporaries(out) == []
    check = pag_cli(["data", "check", "synthetic", "--data-root", tmp_path])
    assert check.code == 1 and "manifest.json: manifest not found" in check.err
    assert pag_cli(command).code == 0
    assert pag_cli(["data", "check", "synthetic", "--data-root", tmp_path]).code == 0


def test_evaluation_on_a_full_disk_keeps_the_previous_results(data_root, tmp_path, tally):
    params = load_run_params(write_run_params(tmp_path / "run.yaml", training=TRAINING))
    run_dir = tmp_path / "run"
    train(params, run_dir, data_root=data_root, stream=io.StringIO(), tty=False)
    out, samples = tmp_path / "metrics.json", tmp_path / "samples.npz"
    evaluate(run_dir, "val", out=out, samples=samples, data_root=data_root, save=1)
    before = out.read_bytes(), samples.read_bytes()
    command = ["evaluate", "--run", run_dir, "--split", "val", "--out", out, "--samples", samples]
    failed = pag_with_fault([*command, "--save", "2", "--data-root", data_root], "fsize:3000")
    tally.fault("disk: fsize in pag evaluate")
    assert failed.returncode == 1
    assert failed.stderr.strip() == f"error: {samples}: File too large"
    assert (out.read_bytes(), samples.read_bytes()) == before  # put back as they were
    assert temporaries(tmp_path) == []
    assert json.loads(out.read_bytes())["num_images"] == 1


def test_extracting_onto_a_full_disk_leaves_the_target_as_it_was(tmp_path, monkeypatch, tally):
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("a/one.bin", "a/two.bin", "b/three.bin"):
            info = tarfile.TarInfo(name)
            info.size = 1000
            tar.addfile(info, io.BytesIO(bytes(1000)))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "kept.txt").write_text("kept")
    original = tarfile.TarFile.makefile
    calls = []

    def makefile(self, tarinfo, targetpath):
        calls.append(tarinfo.name)
        if len(calls) == 2:  # the disk fills up while the second member is written
            with open(targetpath, "wb") as handle:
                handle.write(bytes(10))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), targetpath)
        return original(self, tarinfo, targetpath)

    monkeypatch.setattr(tarfile.TarFile, "makefile", makefile)
    tally.fault("disk: ENOSPC in safe_extract")
    with pytest.raises(DataError, match=r"data\.tar\.gz: cannot extract it .*No space left"):
        safe_extract(archive, dest)
    assert sorted(p.name for p in dest.rglob("*")) == ["kept.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.tar.gz", "dest"]
