"""The experiment plan: one profile expanded into the jobs both front-ends run.

A profile (`params/<name>.yaml`) becomes: data (render or fetch), optional ImageNet weights,
one dense baseline per seed, one fine-tuning run per (method, budget, seed) starting from the
dense weights of its seed, one evaluation per run, the trivial predictors' floor, the
classical edge detectors' floor (profiles that list them in `evaluation.classical`), the
summary, and the report. Every job is a `pag` command with declared inputs and outputs. The
Snakefile builds its DAG from these jobs (rules in `workflow/rules/`), and `pag dvc-yaml`
writes the same jobs as `dvc.yaml` stages, so the two front-ends run the same commands on the
same files.

Paths are relative to the project root, where both front-ends run (`pag.run_layout` defines
them):

    data/<profile>/<dataset>/                    the dataset (`data_root` = data/<profile>)
    data/weights/<torchvision file>.pth          ImageNet weights (profiles with `pretrained`)
    runs/<profile>/<run>/checkpoints/final.pt    a trained run (run dirs are not committed)
    runs/<profile>/<run>/train_metrics.json      its training metrics
    runs/<profile>/<run>/eval_<split>/samples.npz
    results/<profile>/runs/<run>/metrics.json    a run's evaluation (committed)
    results/<profile>/runs/<run>/headline.json   its headline metrics (committed, `dvc metrics`)
    results/<profile>/summary.csv, headline.json, curves.csv
    results/<profile>/trivial.json, classical.json  the floors (committed)
    paper_figures/<profile>/...                  the report (committed)

Runs are named `<method>[-<budget>]-s<seed>`, e.g. `dense-s0`, `pag-0.5-s1`, `truncation-6-s0`.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pag import run_layout as layout
from pag.errors import PagError
from pag.methods import registry
from pag.params import EvaluationParams, Profile, load_profile
from pag.pipeline.report_outputs import planned_files

PROFILES_DIR = "params"
DEFAULT_PROFILE = "synthetic"


@dataclass(frozen=True)
class Run:
    """One training run of the sweep."""

    method: str
    budget: float | int | None
    seed: int

    @property
    def name(self) -> str:
        return run_name(self.method, self.budget, self.seed)

    @property
    def is_baseline(self) -> bool:
        """Trained from scratch; every other run fine-tunes its seed's baseline."""
        return self.method == registry.baseline().name


def format_budget(budget: float | int | None) -> str:
    return "" if budget is None else f"{budget:g}"


def run_name(method: str, budget: float | int | None, seed: int) -> str:
    budget_part = "" if budget is None else f"-{format_budget(budget)}"
    return f"{method}{budget_part}-s{seed}"


@dataclass(frozen=True)
class Job:
    """One step: a command, what it reads and writes, and the profile keys it depends on.

    `outs` are cached by DVC and ignored by git; `results` are small outputs committed to git
    (`cache: false`). `values` are what the job computes from (a run's resolved params): the
    Snakefile hands them to Snakemake as `params`, so a change reruns the job."""

    name: str
    cmd: str
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    results: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    threads: int = 1
    gpus: int = 0
    run: Run | None = None
    values: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def stage(self) -> str:
        """The DVC stage name (letters, digits, '-' and '_')."""
        return re.sub(r"[^A-Za-z0-9_-]", "_", self.name)


@dataclass
class Plan:
    profile: Profile
    profile_file: str
    jobs: list[Job]

    @property
    def name(self) -> str:
        return self.profile.name

    def job(self, name: str) -> Job:
        for job in self.jobs:
            if job.name == name:
                return job
        raise PagError(f"{self.profile_file}: no job {name!r} in the plan")

    def runs(self) -> list[Run]:
        return [
            job.run for job in self.jobs if job.run is not None and job.name.startswith("train")
        ]


# -- layout --------------------------------------------------------------------------------------


def profile_path(name: str) -> str:
    return f"{PROFILES_DIR}/{name}.yaml"


def data_root(profile: Profile) -> str:
    return layout.profile_data_root(profile.name)


def dataset_path(profile: Profile) -> str:
    return f"{data_root(profile)}/{profile.dataset}"


def run_dir(profile: Profile, run: str) -> str:
    return layout.profile_run_dir(profile.name, run)


def final_checkpoint(profile: Profile, run: str) -> str:
    return layout.final_checkpoint(run_dir(profile, run)).as_posix()


def train_metrics(profile: Profile, run: str) -> str:
    return layout.train_metrics_file(run_dir(profile, run)).as_posix()


def eval_metrics(profile: Profile, run: str) -> str:
    return layout.committed_eval_metrics(profile.name, run)


def eval_samples(profile: Profile, run: str) -> str:
    return layout.samples_file(run_dir(profile, run), profile.evaluation.split).as_posix()


def drawn_runs(profile: Profile) -> list[Run]:
    """The runs whose saved samples the report draws: each method's lowest seed (the image
    figures show one seed), whose samples the summary commits."""
    return [run for run in sweep(profile) if run.seed == min(profile.seeds_of(run.method))]


def committed_samples(profile: Profile, run: str) -> str:
    return layout.committed_samples(profile.name, run)


def train_history(profile: Profile, run: str) -> str:
    return layout.committed_history(profile.name, run)


def run_headline(profile: Profile, run: str) -> str:
    return layout.run_headline(profile.name, run)


def results_dir(profile: Profile) -> str:
    return layout.profile_results_dir(profile.name)


def classical_results(profile: Profile) -> str:
    return f"{results_dir(profile)}/{layout.CLASSICAL}"


def figures_dir(profile: Profile) -> str:
    return layout.profile_figures_dir(profile.name)


def weights_path(profile: Profile) -> str | None:
    if profile.pretrained is None:
        return None
    from pag.weights import imagenet_file

    return f"data/weights/{imagenet_file(profile.model.depth)}"


def report_files(profile: Profile) -> list[str]:
    """The files `pag report` writes for the profile's methods and tasks."""
    return planned_files(tuple(profile.methods), tuple(profile.tasks))


SUMMARY_FILES = layout.SUMMARY_FILES


# -- expansion ----------------------------------------------------------------------------------


def sweep(profile: Profile) -> list[Run]:
    """Every run: the dense baseline per seed first, then each method's budgets per seed."""
    baseline = registry.baseline().name
    runs = [Run(baseline, None, seed) for seed in profile.seeds_of(baseline)]
    for method, budget in profile.runs():
        if method != baseline:
            runs.extend(Run(method, budget, seed) for seed in profile.seeds_of(method))
    return runs


# the profile keys a training run depends on (its budget and seed are in its name): the
# trunk's, plus those of its own method, so a gating knob leaves the dense baseline alone
_RUN_KEYS = ("dataset", "tasks", "input_size", "resources.device", "resources.threads")
_RUN_KEYS += ("resources.gpus",)
# `InputParams`: tracked where the profile sets them (DVC refuses a params key the file lacks)
_INPUT_KEYS = ("train_split", "input_scale", "augmentation")
_SET_ONLY_MODEL_KEYS = ("boundary_head",)
_TRUNK_KEYS = ("depth", "width_multiplier", "output_stride", "head_hidden", "boundary_head")


def model_keys(method: str) -> tuple[str, ...]:
    return _TRUNK_KEYS + registry.get(method).model_keys


def run_params(profile: Profile, run: Run | str, *, init_from: str | None = None) -> dict:
    """The run params (`pag.training.RunParams` fields) of one run of the profile."""
    if isinstance(run, str):
        run = parse_run(profile, run)
    training = profile.training_of(run.method)
    method = profile.base_method(run.method)
    params = {
        "name": run.name,
        "experiment": profile.name,
        "dataset": profile.dataset,
        "data_root": data_root(profile),
        "tasks": dict(profile.tasks),
        "input_size": list(profile.input_size),
        "train_split": profile.train_split,
        "input_scale": profile.input_scale,
        "augmentation": (
            None if profile.augmentation is None else profile.augmentation.model_dump(mode="json")
        ),
        # keys the method does not use keep their defaults, so they never make it stale
        "model": {
            key: value
            for key, value in profile.model_of(run.method).model_dump(mode="json").items()
            if key in model_keys(method)
        },
        "method": method,
        "budget": run.budget,
        "training": training.model_dump(mode="json"),
        "seed": run.seed,
        "threads": profile.resources.threads,
        "device": profile.resources.device,
    }
    if init_from is not None:
        params["init_from"] = init_from
    if run.is_baseline and profile.pretrained is not None:
        params["pretrained"] = weights_path(profile)
    return params


def parse_run(profile: Profile, name: str) -> Run:
    """The run of the profile called `name`; an unknown name lists the known ones."""
    for run in sweep(profile):
        if run.name == name:
            return run
    known = ", ".join(run.name for run in sweep(profile))
    raise PagError(f"profile {profile.name}: no run named {name!r}; its runs are {known}")


def data_command(profile: Profile, threads: int = 1) -> str:
    """The command that makes the profile's dataset: renders it with the profile's count, seed
    and size, or fetches and checks it (what the data job runs, and what a "data missing"
    message tells a user to run)."""
    if profile.data is not None:
        d = profile.data
        return (
            f"pag data synth --out {dataset_path(profile)} --num {d.num} --seed {d.seed} "
            f"--height {d.height} --width {d.width} --workers {threads}"
        )
    root = data_root(profile)
    source = f" --from {shlex.quote(profile.fetch_from)}" if profile.fetch_from else ""
    return (
        f"pag data fetch {profile.dataset} --root {root} --no-progress{source} && "
        f"pag data check {profile.dataset} --root {root}"
    )


def _data_job(profile: Profile, threads: int) -> Job:
    cmd = data_command(profile, threads)
    if profile.data is not None:
        keys: tuple[str, ...] = ("data",)
    else:
        keys = ("dataset", "fetch_from") if profile.fetch_from else ("dataset",)
    return Job("data", cmd, outs=(dataset_path(profile),), params=keys, threads=threads)


def _weights_job(profile: Profile) -> Job | None:
    path = weights_path(profile)
    if path is None:
        return None
    cmd = f"pag weights fetch --depth {profile.model.depth} --out {path}"
    return Job("weights", cmd, outs=(path,), params=("pretrained", "model.depth"))


def _train_job(profile: Profile, profile_file: str, run: Run, weights: str | None) -> Job:
    deps = [dataset_path(profile)]
    init = ""
    if run.is_baseline:
        section = "baseline"
        if weights is not None:
            deps.append(weights)
    else:
        section = "finetune"
        dense = final_checkpoint(profile, run_name(registry.baseline().name, None, run.seed))
        deps.append(dense)
        init = f" --init-from {dense}"
    r = profile.resources
    # more than one GPU: one process per GPU under torchrun (pag.training.distributed)
    launcher = f"torchrun --standalone --nproc_per_node={r.gpus} -m " if r.gpus > 1 else ""
    cmd = (
        f"{launcher}pag train --profile {profile_file} --run {run.name} "
        f"--out {run_dir(profile, run.name)}{init} --replace-stale"
    )
    method = profile.base_method(run.method)
    model = tuple(k for k in model_keys(method) if k not in _SET_ONLY_MODEL_KEYS)
    model += tuple(k for k in _SET_ONLY_MODEL_KEYS if k in profile.model.model_fields_set)
    keys = (*_RUN_KEYS, *(f"model.{key}" for key in model), section)
    keys += tuple(key for key in _INPUT_KEYS if key in profile.model_fields_set)
    if run.method in profile.method_training:
        keys += (f"method_training.{run.method}",)
    if run.method in profile.variants:
        keys += (f"variants.{run.method}",)
    if run.is_baseline:
        keys += ("pretrained",)
    return Job(
        f"train-{run.name}",
        cmd,
        deps=tuple(deps),
        outs=(final_checkpoint(profile, run.name), train_metrics(profile, run.name)),
        params=keys,
        threads=r.threads,
        gpus=r.gpus,
        run=run,
        values=run_params(profile, run),
    )


def evaluation_settings(profile: Profile, run: Run) -> dict[str, Any]:
    """How a run of the profile is evaluated: its split, the rule its gates decide by, and the
    extra rules scored beside it (only models with learned gates have rules)."""
    e = profile.evaluation
    method = registry.get(profile.base_method(run.method))
    gated = method.gated
    rules = [rule for rule in e.gate_rules if rule in method.gate_rules]
    return {
        "split": e.split,
        "gate_rule": e.gate_rule if gated else "hard",
        "gate_rules": rules if gated else [],
    }


def _eval_job(profile: Profile, run: Run) -> Job:
    e = profile.evaluation
    metrics = eval_metrics(profile, run.name)
    samples = eval_samples(profile, run.name)
    cmd = (
        f"pag evaluate --run {run_dir(profile, run.name)} --split {e.split} --out {metrics} "
        f"--samples {samples} --save {e.save} --device {profile.resources.device}"
    )
    settings = evaluation_settings(profile, run)
    if settings["gate_rule"] != "hard":
        cmd += f" --gate-rule {settings['gate_rule']}"
    if settings["gate_rules"]:
        cmd += f" --gate-rules {','.join(settings['gate_rules'])}"
    return Job(
        f"eval-{run.name}",
        cmd,
        deps=(dataset_path(profile), final_checkpoint(profile, run.name)),
        outs=(samples,),
        results=(metrics,),
        params=(*_evaluation_keys(profile), "resources.device"),
        threads=profile.resources.threads,
        gpus=min(profile.resources.gpus, 1),
        run=run,
        values={
            **e.model_dump(mode="json", exclude={"classical"}),
            "device": profile.resources.device,
        },
    )


def _evaluation_keys(profile: Profile) -> tuple[str, ...]:
    """The `evaluation` keys a run's evaluation depends on: the whole section, or, where the
    profile lists classical detectors (which no run's evaluation uses, `pag classical` scores
    them), every other key, so that changing the detectors reruns no evaluation. Profiles
    without them keep the whole section, as their existing dvc.lock files record it."""
    if not profile.evaluation.classical:
        return ("evaluation",)
    keys = (key for key in EvaluationParams.model_fields if key != "classical")
    return tuple(f"evaluation.{key}" for key in keys)


def _classical_job(profile: Profile, profile_file: str) -> Job | None:
    """The classical edge detectors' floor (`pag.pipeline.classical`), where the profile lists
    them."""
    e = profile.evaluation
    if not e.classical:
        return None
    threads = profile.resources.threads
    return Job(
        "classical",
        f"pag classical --profile {profile_file} --workers {threads}",
        deps=(dataset_path(profile),),
        results=(classical_results(profile),),
        params=("evaluation.classical", "evaluation.split"),
        threads=threads,
        values={"classical": list(e.classical), "split": e.split},
    )


def expand(profile: Profile, profile_file: str) -> Plan:
    """The profile's jobs in an order that respects their dependencies."""
    threads = profile.resources.threads
    jobs = [_data_job(profile, threads)]
    weights = _weights_job(profile)
    if weights is not None:
        jobs.append(weights)
    runs = sweep(profile)
    weights_file = weights_path(profile)
    jobs.extend(_train_job(profile, profile_file, run, weights_file) for run in runs)
    jobs.extend(_eval_job(profile, run) for run in runs)
    results = results_dir(profile)
    jobs.append(
        Job(
            "trivial",
            f"pag trivial --profile {profile_file}",
            deps=(dataset_path(profile),),
            results=(f"{results}/{layout.TRIVIAL}",),
            params=("tasks", "evaluation.split"),
        )
    )
    classical = _classical_job(profile, profile_file)
    if classical is not None:
        jobs.append(classical)
    summary = tuple(f"{results}/{name}" for name in SUMMARY_FILES)
    drawn = drawn_runs(profile)
    jobs.append(
        Job(
            "summarize",
            f"pag summarize --profile {profile_file}",
            deps=tuple(eval_metrics(profile, run.name) for run in runs)
            + tuple(train_metrics(profile, run.name) for run in runs)
            + tuple(eval_samples(profile, run.name) for run in drawn),
            results=summary
            + tuple(run_headline(profile, run.name) for run in runs)
            + tuple(train_history(profile, run.name) for run in runs)
            + tuple(committed_samples(profile, run.name) for run in drawn),
        )
    )
    figures = figures_dir(profile)
    jobs.append(
        Job(
            "report",
            f"pag report --profile {profile_file}",
            deps=(
                dataset_path(profile),
                summary[0],
                *(eval_metrics(profile, run.name) for run in runs),
                *(committed_samples(profile, run.name) for run in drawn),
                *(train_history(profile, run.name) for run in runs),
                *(classical.results if classical is not None else ()),
            ),
            results=tuple(f"{figures}/{name}" for name in report_files(profile)),
        )
    )
    return Plan(profile, profile_file, jobs)


def load_plan(profile: str | os.PathLike) -> Plan:
    """The plan of a profile given by name (`synthetic`) or file (`params/synthetic.yaml`);
    the profile's `name` must be its file's stem, which names its data, runs and results."""
    text = str(profile)
    path = Path(text) if text.endswith((".yaml", ".yml")) or os.sep in text else None
    if path is None:
        path = Path(profile_path(text))
    loaded = load_profile(path)
    if loaded.name != path.stem:
        raise PagError(
            f"{path}: name is {loaded.name!r} but must be the file's name {path.stem!r} "
            "(it names the profile's data, runs and results)"
        )
    return expand(loaded, path.as_posix())
