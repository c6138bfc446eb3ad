"""The experiment plan: a profile expands into the jobs both front-ends run, with the profile
keys each job depends on, so a change reruns exactly the jobs it touches."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pag.errors import PagError
from pag.params import load_profile
from pag.pipeline import dvcyaml
from pag.pipeline.plan import drawn_runs, load_plan, parse_run, run_params, sweep
from pag.training.run_params import validate_run_params

ROOT = Path(__file__).resolve().parents[1]

TINY = "params/tiny.yaml"


def tiny_raw():
    with open(TINY) as handle:
        return yaml.safe_load(handle)


def plan_of(tmp_path, raw, name="tiny"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_plan(path)


def test_tiny_plan_jobs_and_order():
    plan = load_plan("tiny")
    names = [job.name for job in plan.jobs]
    runs = [
        "dense-s0",
        "dense_ft-s0",
        "multipool_avg-s0",
        "mp_pag-s0",
        "pag-0.5-s0",
        "random_gate-0.5-s0",
        "truncation-6-s0",
        "layer_skip-0.5-s0",
        "sact-0.01-s0",
    ]
    assert names == [
        "data",
        *(f"train-{r}" for r in runs),
        *(f"eval-{r}" for r in runs),
        "trivial",
        "summarize",
        "report",
    ]
    # every job's inputs are the data or outputs of jobs before it: the order is a valid DAG
    made: set[str] = set()
    for job in plan.jobs:
        assert set(job.deps) <= made, job.name
        made.update(job.outs + job.results)
    pag = plan.job("train-pag-0.5-s0")
    assert pag.cmd == (
        "pag train --profile params/tiny.yaml --run pag-0.5-s0 --out runs/tiny/pag-0.5-s0 "
        "--init-from runs/tiny/dense-s0/checkpoints/final.pt --replace-stale"
    )
    assert pag.deps == ("data/tiny/synthetic", "runs/tiny/dense-s0/checkpoints/final.pt")
    assert plan.job("eval-pag-0.5-s0").results == ("results/tiny/runs/pag-0.5-s0/metrics.json",)
    assert plan.job("data").cmd == (
        "pag data synth --out data/tiny/synthetic --num 40 --seed 0 --height 48 --width 64 "
        "--workers 1"
    )


def test_seeds_multiply_runs_and_each_fine_tune_starts_from_its_seeds_baseline(tmp_path):
    raw = tiny_raw()
    raw["seeds"] = [3, 7]
    plan = plan_of(tmp_path, raw)
    assert len(plan.runs()) == 18  # 9 runs x 2 seeds
    job = plan.job("train-truncation-6-s7")
    assert "runs/tiny/dense-s7/checkpoints/final.pt" in job.deps
    assert job.values["seed"] == 7 and job.values["budget"] == 6


def test_run_params_validate_and_ignore_other_methods_model_keys(tmp_path):
    plan = load_plan("tiny")
    for run in sweep(plan.profile):
        params = validate_run_params(run_params(plan.profile, run), "plan", check_files=False)
        assert params.method == run.method and params.seed == run.seed
        assert params.experiment == "tiny" and params.data_root == "data/tiny"
    raw = tiny_raw()
    raw["model"]["gate_mode"] = "residual"
    raw["model"]["dilations"] = [2, 4, 6]
    changed = plan_of(tmp_path, raw)
    differing = {
        job.name
        for job, other in zip(plan.jobs, changed.jobs, strict=True)
        if job.values != other.values or job.params != other.params
    }
    gated = {"train-pag-0.5-s0", "train-random_gate-0.5-s0"}  # both run gate_mode
    assert differing == gated | {"train-mp_pag-s0", "train-multipool_avg-s0"}


def test_changing_one_methods_budgets_touches_only_its_jobs(tmp_path):
    before = {job.name: job for job in load_plan("tiny").jobs}
    raw = tiny_raw()
    raw["methods"]["pag"] = [0.4]
    after = {job.name: job for job in plan_of(tmp_path, raw).jobs}
    assert set(before) - set(after) == {"train-pag-0.5-s0", "eval-pag-0.5-s0"}
    assert set(after) - set(before) == {"train-pag-0.4-s0", "eval-pag-0.4-s0"}
    moved = str(tmp_path / "tiny.yaml")
    for name in set(before) & set(after) - {"summarize", "report"}:
        old, new = before[name], after[name]
        assert old.cmd == new.cmd.replace(moved, TINY), name  # the same command
        assert (old.deps, old.outs, old.params, old.values) == (
            new.deps,
            new.outs,
            new.params,
            new.values,
        ), name


def test_method_training_overrides_one_methods_schedule(tmp_path):
    raw = tiny_raw()
    raw["method_training"] = {"sact": {"lr": 0.5, "epochs": 3}}
    plan = plan_of(tmp_path, raw)
    sact = plan.job("train-sact-0.01-s0")
    assert sact.values["training"]["lr"] == 0.5 and sact.values["training"]["epochs"] == 3
    assert sact.values["training"]["batch_size"] == raw["finetune"]["batch_size"]
    assert "method_training.sact" in sact.params
    pag = plan.job("train-pag-0.5-s0")
    assert pag.values["training"]["lr"] == raw["finetune"]["lr"]
    assert "method_training.sact" not in pag.params
    for bad, message in [
        ({"sact": {"lr": -1}}, r"method_training.sact: lr: Input should be greater than 0"),
        ({"sact": {"learning_rate": 1}}, r"method_training.sact: learning_rate: Extra inputs"),
        ({"dense": {"lr": 1}}, r"method_training.dense: not a fine-tuned method"),
    ]:
        raw["method_training"] = bad
        with pytest.raises(PagError, match=message):
            plan_of(tmp_path, raw)


def test_unknown_run_lists_the_known_ones():
    profile = load_profile(TINY)
    assert parse_run(profile, "sact-0.01-s0").budget == 0.01
    with pytest.raises(PagError, match=r"no run named 'pag-0.3-s0'; its runs are dense-s0, "):
        parse_run(profile, "pag-0.3-s0")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methods": {"pag": [0.5]}}, r"methods: dense: \[null\] is required"),
        ({"methods": {"dense": [None], "pag": [0.5, 0.5]}}, r"pag: budgets repeat"),
        ({"seeds": [1, 1]}, r"seeds: .*distinct"),
        ({"seeds": []}, r"seeds: List should have at least 1 item"),
        ({"pretrained": "imagenet"}, r"pretrained: .*not ResNet-26 at width 0.125"),
        ({"data": None}, r"data: required for the synthetic dataset"),
        ({"finetune": {"epochs": 0, "batch_size": 2, "lr": 0.1}}, r"finetune.epochs"),
        ({"baseline": {"epochs": 1, "batch_size": 2, "lr": 0.1, "lr_decay": 2}}, "lr_decay"),
        ({"resources": {"threads": 0}}, r"resources.threads"),
        ({"fetch_from": "x.tgz"}, r"fetch_from: the synthetic dataset is rendered, not fetched"),
    ],
)
def test_invalid_profiles_fail_naming_the_key(tmp_path, change, message):
    with pytest.raises(PagError, match=message):
        plan_of(tmp_path, {**tiny_raw(), **change})


def test_real_dataset_profile_fetches_and_can_start_from_imagenet(tmp_path):
    raw = tiny_raw()
    raw.update(name="real", dataset="nyuv2", pretrained="imagenet")
    raw["tasks"] = {"semantic": 40, "depth": None, "normals": None}
    raw["model"] = {"depth": 50, "output_stride": 8}
    del raw["data"]
    plan = plan_of(tmp_path, raw, "real")
    assert plan.job("data").cmd == (
        "pag data fetch nyuv2 --root data/real --no-progress && "
        "pag data check nyuv2 --root data/real"
    )
    weights = "data/weights/resnet50-0676ba61.pth"
    assert plan.job("weights").outs == (weights,)
    assert weights in plan.job("train-dense-s0").deps
    assert plan.job("train-dense-s0").values["pretrained"] == weights
    assert "pretrained" not in plan.job("train-pag-0.5-s0").values
    raw["data"] = {"num": 10}
    with pytest.raises(PagError, match="data: only the synthetic dataset is rendered"):
        plan_of(tmp_path, raw, "real")
    del raw["data"]
    raw["fetch_from"] = "../shared/data/my nyu copy"  # installed from a local copy (offline)
    data = plan_of(tmp_path, raw, "real").job("data")
    assert data.cmd.startswith(
        "pag data fetch nyuv2 --root data/real --no-progress --from '../shared/data/my nyu copy' "
    )
    assert data.params == ("dataset", "fetch_from")


def test_several_gpus_train_under_torchrun(tmp_path):
    raw = tiny_raw()
    raw["resources"] = {"device": "cuda", "threads": 4, "gpus": 4}
    plan = plan_of(tmp_path, raw)
    train = plan.job("train-sact-0.01-s0")
    assert train.cmd.startswith("torchrun --standalone --nproc_per_node=4 -m pag train ")
    assert (train.gpus, train.threads) == (4, 4)
    evaluation = plan.job("eval-sact-0.01-s0")
    assert evaluation.gpus == 1 and evaluation.cmd.endswith("--device cuda")


def test_profile_name_must_be_its_file_name(tmp_path):
    raw = tiny_raw()
    with pytest.raises(PagError, match=r"other\.yaml: name is 'tiny' but must be .* 'other'"):
        plan_of(tmp_path, raw, "other")


def test_every_shipped_profile_expands():
    for name in ("synthetic", "tiny", "nyuv2", "stanford2d3d", "cityscapes", "bsds500"):
        plan = load_plan(name)
        report = plan.job("report")
        assert report.cmd == f"pag report --profile params/{name}.yaml"
        runs = [run.name for run in plan.runs()]
        # the dataset (ground truth of the saved images), the summary, every run's
        # evaluation, samples and training history, and the classical floor where listed
        assert report.deps[:2] == (
            f"data/{name}/{plan.profile.dataset}",
            f"results/{name}/summary.csv",
        )
        classical = (f"results/{name}/classical.json",) if name == "bsds500" else ()
        drawn = [run.name for run in drawn_runs(plan.profile)]
        assert report.deps[2 + 2 * len(runs) + len(drawn) :] == classical
        # the samples of each method's lowest seed (what the image figures show), committed
        assert f"results/{name}/runs/{runs[0]}/samples.npz" in report.deps
        lowest = {r.name for r in plan.runs() if r.seed == min(plan.profile.seeds_of(r.method))}
        assert set(drawn) == lowest
        assert [d for d in report.deps if d.endswith("samples.npz")] == [
            f"results/{name}/runs/{run}/samples.npz" for run in drawn
        ]
        assert f"results/{name}/runs/{runs[-1]}/history.json" in report.deps
        assert f"runs/{name}/{runs[0]}/train_metrics.json" not in report.deps  # no run dirs
        figures = {path.rsplit("/", 1)[1] for path in report.results}
        assert {"accuracy_vs_compute.png", "table_paper.tex", "README.md"} <= figures
        for task in plan.profile.tasks:
            assert f"qualitative_{task}.pdf" in figures


def test_report_outputs_follow_the_profile(tmp_path):
    raw = tiny_raw()
    raw["methods"] = {"dense": [None], "truncation": [6]}
    raw["tasks"] = {"depth": None}
    figures = {p.rsplit("/", 1)[1] for p in plan_of(tmp_path, raw).job("report").results}
    assert figures == {
        f"{stem}.{fmt}"
        for stem, formats in (
            ("accuracy_vs_compute", ("png", "pdf")),
            ("qualitative_depth", ("png", "pdf")),
            ("training_curves", ("png", "pdf")),
            ("summary_table", ("md", "tex")),
            ("table_matched_budgets", ("md", "tex")),
            ("table_paper", ("md", "tex")),
        )
        for fmt in formats
    } | {"README.md"}


def test_committed_dvc_yaml_is_what_the_plan_generates():
    plan = load_plan("synthetic")
    assert dvcyaml.dvc_yaml_path("synthetic") == "dvc.yaml"
    assert dvcyaml.is_current(plan), "dvc.yaml is stale: run `pag dvc-yaml`"


def test_dvc_yaml_stages_mirror_the_plan(tmp_path):
    plan = load_plan("tiny")
    document = yaml.safe_load(dvcyaml.render(plan))
    stages = document["stages"]
    assert list(stages) == ["plan", *(job.stage for job in plan.jobs)]
    # the first stage checks dvc.yaml against the whole profile; the data stage waits for it
    stamp = "runs/tiny/dvc-yaml.checked"
    assert stages["plan"]["cmd"] == f"pag dvc-yaml --check --profile {TINY} --stamp {stamp}"
    assert stages["plan"]["params"] == [{TINY: None}]
    assert stages["plan"]["outs"] == [{stamp: {"cache": False, "persist": True}}]
    assert stages["data"]["deps"] == [stamp]
    stage = stages["train-pag-0_5-s0"]
    job = plan.job("train-pag-0.5-s0")
    assert stage["cmd"] == job.cmd and stage["wdir"] == "../.."
    assert stage["deps"] == list(job.deps) and stage["outs"] == list(job.outs)
    # only keys the profile file has (DVC refuses absent ones): tiny sets no GPUs and keeps
    # the gates' defaults
    absent = {"resources.gpus", "model.hard_gates", "model.gate_bias", "model.budget_source"}
    assert absent <= set(job.params)
    assert stage["params"] == [{TINY: [k for k in job.params if k not in absent]}]
    evaluation = stages["eval-pag-0_5-s0"]
    assert {"results/tiny/runs/pag-0.5-s0/metrics.json": {"cache": False}} in evaluation["outs"]
    assert document["metrics"] == [
        f"../../results/tiny/runs/{run.name}/headline.json" for run in plan.runs()
    ]
    assert {plot["semantic_miou"]["template"] for plot in document["plots"][:1]} == {"by_method"}
    assert "../../paper_figures/tiny/accuracy_vs_compute.png" in document["plots"]


def test_cli_plan_and_dvc_yaml_check(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pag", "plan", "--profile", "tiny"],
        capture_output=True,
        text=True,
        check=True,
    )
    jobs = [json.loads(line) for line in out.stdout.splitlines()]
    assert jobs[0]["name"] == "data" and jobs[-1]["name"] == "report"
    check = subprocess.run(
        [sys.executable, "-m", "pag", "dvc-yaml", "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "pag", "plan", "--profile", str(tmp_path / "none.yaml")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "none.yaml: profile not found" in bad.stderr


def test_the_plan_and_dvc_yaml_import_neither_torch_matplotlib_mlflow_nor_the_report():
    """What Snakemake and `pag dvc-yaml` load for every job stays light (issue 16)."""
    code = (
        "import sys\n"
        "from pag.pipeline import dvcyaml\n"
        "from pag.pipeline.plan import load_plan\n"
        "for name in ('synthetic', 'tiny', 'ablation_gates', 'bsds500-cpu', 'nyuv2'):\n"
        "    load_plan(name)\n"
        "heavy = ('torch', 'matplotlib', 'mlflow', 'pandas', 'pag.report', 'pag.models')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_a_changed_sweep_stops_dvc_at_the_plan_stage_naming_the_fix(tmp_path):
    """Issue 17: a budget added to the profile (by hand or `dvc exp run -S`) without
    `pag dvc-yaml` makes the `plan` stage's check fail, naming the new stages and the fix;
    once regenerated, the check passes and writes the same stamp (nothing downstream reruns)."""
    import shutil

    shutil.copytree("params", tmp_path / "params")
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    pag = [sys.executable, "-m", "pag"]
    subprocess.run([*pag, "dvc-yaml", "--profile", "tiny"], cwd=tmp_path, env=env, check=True)
    stamp = tmp_path / "runs/tiny/dvc-yaml.checked"
    check = [*pag, "dvc-yaml", "--check", "--profile", TINY, "--stamp", str(stamp)]
    done = subprocess.run(check, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    before = stamp.read_bytes()
    profile = tmp_path / TINY
    text = profile.read_text()
    assert "  pag: [0.5]" in text
    profile.write_text(text.replace("  pag: [0.5]", "  pag: [0.5, 0.1]"))
    stamp.unlink()
    done = subprocess.run(check, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 1 and not stamp.exists()
    assert "pipelines/tiny/dvc.yaml is stale for this profile (new stages: train-pag-0_1-s0" in (
        done.stderr
    )
    assert "changed stages: summarize, report): run `pag dvc-yaml --profile tiny`" in done.stderr
    subprocess.run([*pag, "dvc-yaml", "--profile", "tiny"], cwd=tmp_path, env=env, check=True)
    done = subprocess.run(check, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert stamp.read_bytes() == before


def test_dvc_plots_page_loads_nothing_from_the_internet():
    """`.dvc/config` points `dvc plots show` at `.dvc/plots/offline.html`: Vega inlined, no
    `{scripts}` placeholder (where DVC would put its CDN scripts), no external src or href."""
    import re

    from pag.pipeline import dvc_offline

    assert "html_template = plots/offline.html" in (ROOT / ".dvc/config").read_text()
    page = (ROOT / dvcyaml.OFFLINE_HTML).read_text()
    assert page == dvc_offline.render(), "run `pag dvc-yaml --offline-html`"
    assert "{plot_divs}" in page and "{scripts}" not in page
    assert not re.search(r"""<(script|link|img)[^>]*(src|href)\s*=\s*["']?https?:""", page)
    template = json.loads((ROOT / dvcyaml.PLOTS_TEMPLATE_FILE).read_text())
    assert template["encoding"]["color"] == {
        "field": "method",
        "type": "nominal",
        "title": "method",
    }
