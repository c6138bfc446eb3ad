"""Profiles validate before anything runs; `pag flops` reports every method and budget."""

import json
import subprocess
import sys

import pytest
import yaml

from pag.errors import PagError
from pag.params import load_profile

TINY = {
    "name": "tiny",
    "dataset": "synthetic",
    "tasks": {"semantic": 4, "depth": None},
    "input_size": [32, 48],
    "model": {"depth": 26, "width_multiplier": 0.125, "head_hidden": 8},
    "methods": {"dense": [None], "truncation": [8, 4], "pag": [0.5]},
    "data": {"num": 10},
    "baseline": {"epochs": 1, "batch_size": 2, "lr": 0.1},
    "finetune": {"epochs": 1, "batch_size": 2, "lr": 0.01},
}


def write(tmp_path, profile):
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def write_profile(tmp_path, profile):
    """A profile file named after the profile, as `--profile` wants it."""
    return write(tmp_path, profile).rename(tmp_path / f"{profile['name']}.yaml")


def test_the_default_profile_is_valid():
    profile = load_profile("params/synthetic.yaml")
    assert profile.dataset == "synthetic" and set(profile.tasks) == {
        "semantic",
        "boundary",
        "depth",
        "normals",
    }
    assert ("pag", 0.5) in profile.runs() and ("dense", None) in profile.runs()
    assert ("dense_ft", None) in profile.runs() and ("random_gate", 0.2) in profile.runs()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methods": {"pixel": [None]}}, r"methods: unknown method\(s\) \['pixel'\]"),
        (
            {"methods": {"dense": [None], "pag": [1.5]}},
            r"methods.pag: budget 1.5 outside the range",
        ),
        (
            {"methods": {"dense": [None], "truncation": [9]}},
            r"outside the range for 'truncation'.*\[1, 8\]",
        ),
        ({"dataset": "imagenet"}, r"dataset: unknown dataset 'imagenet'"),
        ({"tasks": {"semantic": 4, "edges": None}}, r"tasks: tasks must be a non-empty subset"),
        ({"model": {"depth": 27}}, r"model.depth: Input should be 18, 26, 34, 50 or 101"),
        ({"model": {"depth": "fifty"}}, r"model.depth"),
        ({"learning_rate": 0.1}, r"learning_rate: Extra inputs are not permitted"),
        ({"input_size": [32]}, r"input_size"),
    ],
)
def test_invalid_profiles_name_the_key(tmp_path, change, message):
    with pytest.raises(PagError, match=message):
        load_profile(write(tmp_path, {**TINY, **change}))


def test_missing_key_and_bad_file(tmp_path):
    profile = dict(TINY)
    del profile["methods"]
    with pytest.raises(PagError, match="methods: Field required"):
        load_profile(write(tmp_path, profile))
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(PagError, match=r"bad\.yaml: not valid YAML"):
        load_profile(tmp_path / "bad.yaml")
    with pytest.raises(PagError, match="profile not found"):
        load_profile(tmp_path / "none.yaml")


def test_flops_command_prints_one_json_line_per_run(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pag", "flops", "--profile", str(write_profile(tmp_path, TINY))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["method"], r["budget"]) for r in records] == [
        ("dense", None),
        ("truncation", 8),
        ("truncation", 4),
        ("pag", 0.5),
    ]
    dense, full, half, pag = records
    assert (
        dense["effective_macs"] == dense["dense_macs"]
        and dense["fraction_of_dense_baseline"] == 1.0
    )
    assert (
        full["effective_macs"] == dense["effective_macs"]
    )  # keeping all 8 blocks is the dense model
    assert half["fraction_of_dense_baseline"] < 1.0
    assert pag["dense_macs"] > dense["dense_macs"]  # the gate convs cost a little
    assert all(
        r["unit"] == "MACs per image" and r["effective_flops"] == 2 * r["effective_macs"]
        for r in records
    )


def test_flops_command_rejects_a_bad_profile_in_one_line(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pag",
            "flops",
            "--profile",
            str(write_profile(tmp_path, {**TINY, "methods": {"x": [1]}})),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        out.returncode == 1 and out.stderr.startswith("error: ") and "unknown method" in out.stderr
    )
    assert out.stdout == ""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input_size": [4, 48]}, r"input_size: input_size must be at least 8 x 8"),
        (
            {"method_training": {"pag": {"loss_weights": {"edges": 1}}}},
            r"method_training\.pag\.loss_weights: \['edges'\] are not among the tasks",
        ),
        (
            {"baseline": {**TINY["baseline"], "loss_weights": {"edges": 1}}},
            r"baseline\.loss_weights: \['edges'\] are not among the tasks",
        ),
        (
            {
                "model": {**TINY["model"], "boundary_head": "side_outputs"},
                "tasks": {"boundary": None},
            },
            r"methods\.truncation: truncation_mode 'rebuild_heads' removes stages",
        ),
    ],
)
def test_a_profile_checks_each_run_as_its_run_file_is_checked(tmp_path, change, message):
    """One schema path: what a run file refuses, the profile that would make it refuses too,
    naming the profile's key (`ExperimentParams.check_run`)."""
    with pytest.raises(PagError, match=message):
        load_profile(write(tmp_path, {**TINY, **change}))
