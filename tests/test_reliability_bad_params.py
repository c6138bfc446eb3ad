"""Bad parameters: a wrong type, an unknown key, a missing key, a budget outside its range, a
method that does not exist, a non-finite number, a boolean for a number, a profile whose
dataset has no data. Each gives one `error:` line naming the file and the key (or the missing
directory), exit code 1, and writes nothing.

tests/test_training.py and tests/test_params.py check the messages of more run-params and
profile mistakes at the Python level; here they go through the commands."""

import math
import re
import shutil
from pathlib import Path

import pytest
import yaml
from faults import pag_cli, snapshot, write_run_params

ROOT = Path(__file__).resolve().parents[1]
DELETE = object()


def changed(raw: dict, key: str, value) -> dict:
    """`raw` with the dotted `key` set to `value` (or deleted, for DELETE)."""
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return raw


# (dotted key, value, what the error must say after "<file>: ")
RUN_CASES = {
    "wrong-type": ("training.epochs", "many", r"training\.epochs: Input should be a valid integer"),
    "boolean-for-number": ("seed", True, r"seed: a boolean where a number or a name is expected"),
    "not-a-pair": ("input_size", 48, r"input_size: Input should be a valid tuple"),
    "unknown-key": ("training.warmup", 3, r"training\.warmup: Extra inputs are not permitted"),
    "missing-key": ("training.lr", DELETE, r"training\.lr: Field required"),
    "infinite-lr": ("training.lr", math.inf, r"training\.lr: Input should be a finite number"),
    "nan-weight": ("training.loss_weights", {"depth": math.nan}, r"loss_weights\.depth: Input"),
    "budget-out-of-range": ("method", "pag", r"method 'pag' needs a finite numeric budget"),
    "unknown-method": ("method", "pagg", r"method: unknown method 'pagg'; expected one of"),
    "unknown-dataset": ("dataset", "imagenet", r"dataset: unknown dataset 'imagenet'; expected"),
}


@pytest.mark.parametrize("case", RUN_CASES)
def test_bad_run_params_give_one_line_naming_the_file_and_key(case, tmp_path, tally):
    key, value, message = RUN_CASES[case]
    path = write_run_params(tmp_path / "run.yaml")
    raw = changed(yaml.safe_load(path.read_text()), key, value)
    path.write_text(yaml.safe_dump(raw))
    tally.bad_input(f"run params: {case}")
    before = snapshot(tmp_path)
    result = pag_cli(["train", "--params", path, "--out", tmp_path / "run"])
    assert result.code == 1
    assert re.fullmatch(f"error: {re.escape(str(path))}: .*{message}.*\n", result.err), result.err
    assert snapshot(tmp_path) == before


# profile mistakes: (dotted key, value, message)
PROFILE_CASES = {
    "wrong-type": ("seeds", "zero", r"seeds: Input should be a valid list"),
    "boolean-for-number": ("baseline.epochs", True, r"baseline\.epochs: a boolean where"),
    "unknown-key": ("finetune.learning_rate", 0.1, r"finetune\.learning_rate: Extra inputs"),
    "missing-key": ("baseline", DELETE, r"baseline: Field required"),
    "budget-out-of-range": ("methods.pag", [1.5], r"methods\.pag: budget 1\.5 outside the range"),
    "truncation-beyond-blocks": ("methods.truncation", [99], r"methods\.truncation: budget 99"),
    "unknown-method": ("methods.pagg", [0.5], r"unknown method\(s\) \['pagg'\]"),
    "infinite-number": ("finetune.lr", math.inf, r"finetune\.lr: Input should be a finite number"),
}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project with the tiny profile in params/ (the commands run from its root)."""
    (tmp_path / "params").mkdir()
    shutil.copy(ROOT / "params" / "tiny.yaml", tmp_path / "params" / "tiny.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


COMMANDS = {
    "plan": ["plan", "--profile", "params/tiny.yaml"],
    "train": ["train", "--profile", "params/tiny.yaml", "--run", "dense-s0", "--out", "run"],
    "flops": ["flops", "--profile", "params/tiny.yaml"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", PROFILE_CASES)
def test_bad_profiles_give_one_line_naming_the_file_and_key(case, command, project, tally):
    key, value, message = PROFILE_CASES[case]
    path = Path("params/tiny.yaml")
    raw = changed(yaml.safe_load(path.read_text()), key, value)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    tally.bad_input(f"profile: {case}")
    before = snapshot(project)
    result = pag_cli(COMMANDS[command])
    assert result.code == 1
    assert re.fullmatch(f"error: {re.escape(str(path))}: .*{message}.*\n", result.err), result.err
    assert snapshot(project) == before


def without_data(name: str, dataset: str) -> dict:
    raw = yaml.safe_load((ROOT / "params" / "tiny.yaml").read_text())
    raw.update(name=name, dataset=dataset)
    if dataset != "synthetic":
        del raw["data"]
    return raw


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--profile", "{profile}", "--run", "dense-s0", "--out", "runs/x"],
        ["trivial", "--profile", "{profile}"],
        ["data", "check", "{dataset}", "--root", "data/{name}"],
    ],
    ids=["train", "trivial", "data-check"],
)
@pytest.mark.parametrize("dataset", ["synthetic", "nyuv2"])
def test_a_profile_whose_dataset_has_no_data_names_the_missing_folder(
    command, dataset, project, tally
):
    name = f"no_{dataset}"
    profile = Path("params") / f"{name}.yaml"
    profile.write_text(yaml.safe_dump(without_data(name, dataset), sort_keys=False))
    tally.bad_input("profile: dataset without data")
    fill = {"profile": str(profile), "dataset": dataset, "name": name}
    before = snapshot(project)
    result = pag_cli([part.format(**fill) for part in command])
    assert result.code == 1
    folder = re.escape(f"data/{name}/{dataset}")
    assert re.search(rf"^(error|problem): {folder}: .*(not found|no such directory)", result.err)
    assert snapshot(project) == before
