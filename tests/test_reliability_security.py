"""Security: downloaded archives with absolute paths, `..` components or links out of the target
are refused by `fetch` with nothing extracted; a download whose size or checksum is wrong is
never used; checkpoints that would run code when unpickled are refused; nothing in `pag/`
unpickles untrusted data; the MLflow UI the README starts binds to 127.0.0.1.

tests/test_archive.py tries many more hostile archives on `safe_extract` itself and
tests/test_download.py the download checks; here they go through `fetch`, over HTTP."""

import ast
import hashlib
import os
import re
import warnings
from pathlib import Path

import pytest
import torch
from faults import file_server, make_synthetic, pag_cli, snapshot, write_run_params
from test_archive import UNSAFE_TARS, _file, make_tar, make_zip

from pag.data.base import FetchSpec, RemoteFile
from pag.data.download import extracted_marker, fetch
from pag.errors import DownloadError, PagError
from pag.training import checkpoint

ROOT = Path(__file__).resolve().parents[1]
TAR_CASES = ["absolute", "dotdot", "symlink-outside", "hardlink-outside", "symlink-chain"]
ZIP_CASES = {"zip-dotdot": "../evil.txt", "zip-absolute": "/tmp/evil.txt"}


def hostile_archive(folder: Path, case: str) -> Path:
    if case in ZIP_CASES:
        return make_zip(folder / "data.zip", {"good.txt": b"good", ZIP_CASES[case]: b"evil"})
    members = [_file("good.txt", b"good"), *UNSAFE_TARS[case][0]]
    return make_tar(folder / "data.tar.gz", members)


def remote(url: str, archive: Path, **changes) -> RemoteFile:
    data = archive.read_bytes()
    known = {"size": len(data), "md5": hashlib.md5(data).hexdigest()}
    return RemoteFile(url=url, filename=archive.name, extract=True, **{**known, **changes})


@pytest.mark.parametrize("case", [*TAR_CASES, *ZIP_CASES])
def test_fetch_refuses_a_hostile_archive_and_extracts_nothing(case, tmp_path, tally):
    served, dataset = tmp_path / "served", tmp_path / "area" / "dataset"
    served.mkdir()
    archive = hostile_archive(served, case)
    tally.bad_input(f"security: archive {case}")
    with file_server(served) as base:
        spec = FetchSpec(files=(remote(f"{base}/{archive.name}", archive),))
        with pytest.raises(DownloadError, match=r"unsafe member .*nothing was extracted"):
            fetch(spec, dataset, progress=False, echo=lambda _: None)
    # the verified archive is kept; nothing came out of it, here or beside it
    assert sorted(p.name for p in dataset.iterdir()) == [archive.name]
    assert not extracted_marker(dataset, archive.name).exists()
    assert sorted(p.name for p in (tmp_path / "area").iterdir()) == ["dataset"]
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


@pytest.mark.parametrize(
    ("change", "problem"),
    [({"md5": "0" * 32}, "md5 mismatch"), ({"size": 10}, "size mismatch")],
    ids=["checksum", "size"],
)
def test_a_download_with_the_wrong_checksum_or_size_is_never_used(change, problem, tmp_path, tally):
    served, dataset = tmp_path / "served", tmp_path / "dataset"
    served.mkdir()
    archive = make_tar(served / "data.tar.gz", [_file("good.txt", b"good")])
    tally.bad_input(f"security: download with the wrong {problem.split()[0]}")
    with file_server(served) as base:
        spec = FetchSpec(files=(remote(f"{base}/{archive.name}", archive, **change),))
        with pytest.raises(DownloadError, match=problem):
            fetch(spec, dataset, progress=False, echo=lambda _: None)
    assert list(dataset.iterdir()) == []  # no archive, no .part, nothing extracted


class RunsCode:
    """Unpickling this creates `marker`: what a hostile checkpoint would do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class RunsCommand(RunsCode):
    """The same through a shell command: torch words this refusal differently."""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"weight": torch.zeros(1)}, "payload": RunsCode(marker)}, path)
    return path


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, tally):
    marker = tmp_path / "pwned"
    evil = hostile_checkpoint(tmp_path / "evil.pt", marker)
    tally.bad_input("security: pickle that runs code", 2)
    with pytest.raises(PagError) as error:
        checkpoint.load(evil)
    assert str(error.value) == (
        f"{evil}: not a readable checkpoint (it holds io.open, which the safe loader refuses "
        "to run or build)"
    )
    # through the command line: fine-tuning from it is refused before anything is written
    data_root = make_synthetic(tmp_path / "data")
    params = write_run_params(tmp_path / "run.yaml")
    before = snapshot(tmp_path)
    command = ["train", "--params", params, "--out", tmp_path / "run", "--init-from", evil]
    result = pag_cli([*command, "--data-root", data_root])
    assert result.code == 1 and result.err == f"error: {error.value}\n"
    assert not marker.exists() and snapshot(tmp_path) == before
    # torch's other wording ("unsupported GLOBAL posix.system ...") comes with its advice to
    # load the file unsafely, which a refusal must not repeat
    command = tmp_path / "command.pt"
    torch.save({"model": {}, "payload": RunsCommand(marker)}, command)
    with pytest.raises(PagError) as error:
        checkpoint.load(command)
    assert str(error.value) == (
        f"{command}: not a readable checkpoint (it holds posix.system, which the safe loader "
        "refuses to run or build)"
    )
    assert not marker.exists()


# calls that deserialise with pickle (or worse) when their inputs come from outside
UNSAFE_CALLS = {"pickle.load", "pickle.loads", "cloudpickle.load", "dill.load", "joblib.load"}
UNSAFE_CALLS |= {"yaml.load", "yaml.unsafe_load", "yaml.full_load", "marshal.loads", "eval"}
UNSAFE_CALLS |= {"exec", "pd.read_pickle", "pandas.read_pickle", "shelve.open"}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return ast.literal_eval(kw.value) if isinstance(kw.value, ast.Constant) else "?"
    return None


def unsafe_deserialisation(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        if name in UNSAFE_CALLS:
            found.append(f"{node.lineno}: {name}")
        elif name == "torch.load" and keyword(node, "weights_only") is not True:
            found.append(f"{node.lineno}: torch.load without weights_only=True")
        elif name in ("np.load", "numpy.load") and keyword(node, "allow_pickle") not in (
            None,
            False,
        ):
            found.append(f"{node.lineno}: {name} with allow_pickle")
    return found


def test_the_scan_finds_what_it_looks_for():
    source = (
        "import pickle, torch, yaml, numpy as np\n"
        "pickle.loads(b'')\ntorch.load('x')\ntorch.load('x', weights_only=False)\n"
        "np.load('x', allow_pickle=True)\nyaml.load('')\n"
        "torch.load('x', weights_only=True)\nnp.load('x')\nyaml.safe_load('')\n"
    )
    assert [line.split(":")[0] for line in unsafe_deserialisation(source)] == list("23456")


def test_nothing_in_pag_unpickles_untrusted_data():
    found = {
        str(path.relative_to(ROOT)): problems
        for path in sorted((ROOT / "pag").rglob("*.py"))
        if (problems := unsafe_deserialisation(path.read_text()))
    }
    assert found == {}


def test_the_mlflow_ui_binds_to_localhost_unless_told_otherwise():
    """pag starts no server itself; the README's `mlflow ui` line and MLflow's default both
    bind to 127.0.0.1, and no project file tells a server to listen on every interface."""
    import click

    with warnings.catch_warnings():  # MLflow's import warns about its own type hints
        warnings.simplefilter("ignore")
        from mlflow.cli import cli

        with click.Context(cli) as context:
            for name in ("ui", "server"):
                host = next(p for p in cli.get_command(context, name).params if p.name == "host")
                assert host.default == "127.0.0.1", name
    texts = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "pag").rglob("*.py"))]
    texts += sorted((ROOT / "workflow").rglob("*.*")) + sorted((ROOT / "docs").rglob("*.md"))
    commands = []
    for path in texts:
        text = path.read_text(errors="replace")
        assert not re.search(r"(--host[= ]|host\s*=\s*['\"])(0\.0\.0\.0|::)", text), path
        commands += re.findall(r"mlflow (?:ui|server) [^\n`]*", text)
    assert commands and all("--host 127.0.0.1" in line for line in commands), commands
