"""Both front-ends run the tiny profile end to end, in fresh copies of the project, and agree:
same results byte for byte; nothing left to do for either front-end after either one ran;
changing one method's budget reruns only that method's jobs and what depends on them.
Snakemake's jobs are tracked in MLflow (a SQLite store in the copy)."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = "pipelines/tiny/dvc.yaml"


def project_files() -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [name for name in listing.stdout.split("\0") if name and (ROOT / name).is_file()]


def environment(tracking: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env["PAG_TRACKING"] = "1" if tracking else "0"
    if tracking:
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tracking}"
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def fresh_copy(dest: Path) -> Path:
    for name in project_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    for stale in ("results/tiny", "paper_figures/tiny", "pipelines/tiny"):
        shutil.rmtree(dest / stale, ignore_errors=True)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


@pytest.fixture(scope="module")
def by_snakemake(tmp_path_factory):
    project = fresh_copy(tmp_path_factory.mktemp("snakemake"))
    env = environment(tracking=project / "mlflow.db")
    run(["pag", "dvc-yaml", "--profile", "tiny"], project, env)
    run(["snakemake", "--cores", "2", "--config", "profile=tiny"], project, env)
    return project, env


@pytest.fixture(scope="module")
def by_dvc(tmp_path_factory):
    project = fresh_copy(tmp_path_factory.mktemp("dvc"))
    env = environment()
    run(["pag", "dvc-yaml", "--profile", "tiny"], project, env)
    run(["dvc", "repro", "--quiet", TINY], project, env)
    return project, env


def result_files(project: Path) -> dict[str, bytes]:
    files = {}
    for folder in ("results/tiny", "paper_figures/tiny"):
        for path in sorted((project / folder).rglob("*")):
            if path.is_file() and not path.name.endswith(".lock"):  # pag.locking's lock files
                files[str(path.relative_to(project))] = path.read_bytes()
    return files


def nothing_to_do(project: Path, env: dict[str, str]) -> None:
    dry = run(["snakemake", "-n", "--config", "profile=tiny"], project, env)
    assert "Nothing to be done" in dry, dry
    status = run(["dvc", "status", "--json", TINY], project, env)
    assert json.loads(status) == {}, status


def test_both_front_ends_produce_the_same_results(by_snakemake, by_dvc):
    ours, theirs = result_files(by_snakemake[0]), result_files(by_dvc[0])
    # per run its metrics, headline, history and samples (one seed: every run's); summary
    # and trivial; the report (13 figures and 5 tables in two formats each, README)
    assert len(ours) == 4 * 9 + 4 + 2 * (13 + 5) + 1
    assert ours.keys() == theirs.keys()
    differing = [name for name in ours if ours[name] != theirs[name]]
    assert not differing
    rows = list(csv.DictReader((by_dvc[0] / "results/tiny/summary.csv").read_text().splitlines()))
    assert {row["method"] for row in rows} == {
        "dense",
        "dense_ft",
        "multipool_avg",
        "mp_pag",
        "pag",
        "random_gate",
        "truncation",
        "layer_skip",
        "sact",
    }


def test_every_figure_rebuilds_from_the_repository_without_training(by_snakemake, tmp_path):
    """A fresh clone holds the committed results (each run's metrics, samples and history):
    rendering the data again and `pag report` redraw every figure and table byte for byte,
    PDFs included, with no run directory (issue 17)."""
    project, env = by_snakemake
    clone = fresh_copy(tmp_path / "clone")
    shutil.copytree(project / "results/tiny", clone / "results/tiny")
    assert not (clone / "runs").exists() and not (clone / "data").exists()
    run(["pag", "data", "synth", "--profile", "tiny"], clone, env)
    run(["pag", "report", "--profile", "tiny"], clone, env)
    drawn = result_files(clone)
    made = result_files(project)
    assert drawn.keys() == made.keys()
    assert [name for name in made if drawn[name] != made[name]] == []


def test_nothing_left_to_do_after_either_front_end(by_snakemake, by_dvc):
    nothing_to_do(*by_snakemake)  # dvc.lock was written by Snakemake's onsuccess (dvc commit)
    nothing_to_do(*by_dvc)  # and Snakemake accepts what DVC made


def test_snakemake_jobs_are_tracked_in_mlflow(by_snakemake):
    from mlflow.tracking import MlflowClient

    _, env = by_snakemake
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    kinds = sorted(run.data.tags.get("pag.kind", "?") for run in runs)
    assert kinds == ["evaluate"] * 9 + ["pipeline"] + ["train"] * 9, kinds
    # one parent run, started and ended by the Snakefile, with every job as its child
    (parent,) = [run for run in runs if run.data.tags["pag.kind"] == "pipeline"]
    assert parent.info.status == "FINISHED"
    children = [run for run in runs if run is not parent]
    assert {run.data.tags.get("mlflow.parentRunId") for run in children} == {parent.info.run_id}
    trained = {
        r.data.tags["pag.run"]: r.info.run_id
        for r in children
        if r.data.tags["pag.kind"] == "train"
    }
    for run in children:
        if run.data.tags["pag.kind"] == "evaluate":
            assert run.data.tags["pag.trained_by"] == trained[run.data.tags["pag.run"]]


def test_one_changed_budget_reruns_only_its_jobs(by_dvc):
    project, env = by_dvc
    # after a DVC-only run Snakemake has no provenance records (params, inputs) for the
    # outputs; `--touch --forceall` writes them without running anything (the README says so)
    run(
        ["snakemake", "--touch", "--forceall", "--cores", "1", "--config", "profile=tiny"],
        project,
        env,
    )
    nothing_to_do(project, env)
    profile = project / "params/tiny.yaml"
    raw = yaml.safe_load(profile.read_text())
    raw["methods"]["pag"] = [0.4]
    profile.write_text(yaml.safe_dump(raw, sort_keys=False))
    # issue 17: with dvc.yaml not regenerated, DVC sees the change and stops at its first
    # stage, naming the fix, instead of running the old sweep
    status = json.loads(run(["dvc", "status", "--json", TINY], project, env))
    assert {name.split(":", 1)[1] for name in status} == {"plan"}, status
    stale = subprocess.run(["dvc", "repro", TINY], cwd=project, env=env, capture_output=True)
    said = stale.stdout.decode() + stale.stderr.decode()
    assert stale.returncode != 0 and "Running stage 'train" not in said, said
    assert "is stale for this profile (new stages: train-pag-0_4-s0" in said, said
    assert "run `pag dvc-yaml --profile tiny`" in said
    run(["pag", "dvc-yaml", "--profile", "tiny"], project, env)
    dry = run(["snakemake", "-n", "--quiet", "rules", "--config", "profile=tiny"], project, env)
    counts = {}
    for line in dry.splitlines():
        words = line.split()
        if len(words) == 2 and words[1].isdigit():
            counts[words[0]] = int(words[1])
    assert counts == {"train": 1, "evaluate": 1, "summarize": 1, "report": 1, "all": 1, "total": 5}
    status = json.loads(run(["dvc", "status", "--json", TINY], project, env))
    stages = {name.split(":", 1)[1] for name in status}
    # the check (cheap) runs again, as the profile changed; its output stays the same
    assert stages == {"plan", "train-pag-0_4-s0", "eval-pag-0_4-s0", "summarize", "report"}, status


def test_dvc_metrics_and_plots_read_the_results(by_dvc):
    project, env = by_dvc
    shown = subprocess.run(
        ["dvc", "metrics", "show", "--json"], cwd=project, env=env, capture_output=True
    )  # stdout only: another test may have added a run whose headline is not there yet
    files = json.loads(shown.stdout)[""]["data"]
    dense = files["results/tiny/runs/dense-s0/headline.json"]["data"]
    assert dense["macs_pct"] == 100.0 and "semantic_miou" in dense  # one flat row per run
    run(["dvc", "plots", "show", "--out", "dvc_plots"], project, env)
    html = (project / "dvc_plots/index.html").read_text()
    assert "semantic_miou" in html and "accuracy_vs_compute" in html
    assert '"field": "method"' in html  # one colour per method
    assert not re.search(r"""<script[^>]*src\s*=\s*["']?https?:""", html)  # works offline


def test_snakemake_report_includes_the_figures(by_snakemake):
    project, env = by_snakemake
    run(["snakemake", "--report", "report.html", "--config", "profile=tiny"], project, env)
    html = (project / "report.html").read_text(errors="replace")
    for figure in ("accuracy_vs_compute", "ponder_maps_pag", "multipool_maps", "training_curves"):
        assert f"{figure}.png" in html
    # the workflow's description page, a category per figure family, the tables and summary
    assert "Pixel-wise Attentional Gating" in html
    for category in ("Ponder maps", "Qualitative", "Training curves", "Tables"):
        assert category in html, category
    assert "summary.csv" in html and "table_matched_budgets.md" in html


def test_slurm_profile_dry_run_of_a_real_data_profile():
    """The cluster profile plans the NYUv2 sweep: GPU training, torchrun for several GPUs."""
    env = environment()
    dry = run(
        [
            "snakemake",
            "-n",
            "--profile",
            "workflow/profiles/slurm",
            "--config",
            "profile=nyuv2",
        ],
        ROOT,
        env,
    )
    assert "pag train --profile params/nyuv2.yaml --run dense-s0" in dry
    assert "gpu=1" in dry and "slurm_partition=gpu" in dry
    assert "pag weights fetch --depth 50 --out data/weights/resnet50-0676ba61.pth" in dry
