"""The report's inputs for a profile: where the plan put the summary, each run's evaluation,
samples and training history, the dataset that holds the saved images' ground truth, and the
classical detectors' floor where the profile lists them."""

from __future__ import annotations

from pathlib import Path

from pag import run_layout
from pag.pipeline import plan as layout
from pag.pipeline.plan import Plan
from pag.report import ReportInputs, RunFiles, dataset_ground_truth


def report_inputs(plan: Plan) -> ReportInputs:
    from pag.data import get_dataset
    from pag.models.multipool import branch_names

    profile = plan.profile
    runs = {
        run.name: RunFiles(
            evaluation=Path(layout.eval_metrics(profile, run.name)),
            samples=Path(layout.committed_samples(profile, run.name)),
            training=Path(layout.train_history(profile, run.name)),
        )
        for run in plan.runs()
    }
    root = layout.data_root(profile)
    dataset = get_dataset(profile.dataset, root=root, split=profile.evaluation.split)
    return ReportInputs(
        summary_csv=Path(layout.results_dir(profile)) / run_layout.SUMMARY_CSV,
        runs=runs,
        ground_truth=dataset_ground_truth(dataset),
        class_names=tuple(dataset.class_names),
        multipool_branches=tuple(branch_names(tuple(profile.model.dilations))),
        methods=tuple(profile.methods),
        tasks=tuple(profile.tasks),
        profile=profile.name,
        variants={name: variant.method for name, variant in profile.variants.items()},
        split=profile.evaluation.split,
        classical=(
            Path(layout.classical_results(profile)) if profile.evaluation.classical else None
        ),
    )
