"""Trivial predictors: the floor a trained model must clearly beat on every task.

Fitted on the profile's training split, scored on its evaluation split with the same metrics
as `pag evaluate`, each predicts one constant for every pixel of every image:

* semantic: the most frequent class of the training labels;
* depth: the mean valid training depth;
* normals: the normalised mean of the valid training normals;
* boundary: a constant soft map (every threshold either keeps all pixels or none).

`pag trivial --profile P` writes `results/<profile>/trivial.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pag import run_layout
from pag.data import get_dataset
from pag.errors import PagError
from pag.fileio import remove_temporaries, write_json_atomic
from pag.pipeline import plan as layout
from pag.pipeline.plan import Plan


def fit(dataset, tasks: dict[str, int | None]) -> dict[str, Any]:
    """The constants of the trivial predictors, from every sample of `dataset`."""
    class_counts = np.zeros(int(tasks.get("semantic") or 1), dtype=np.int64)
    depth_sum, depth_count = 0.0, 0
    normal_sum = np.zeros(3)
    for index in range(len(dataset)):
        sample = dataset[index]
        if "semantic" in tasks:
            labels = sample["semantic"].numpy().ravel()
            labels = labels[labels < class_counts.size]
            class_counts += np.bincount(labels, minlength=class_counts.size)
        if "depth" in tasks:
            depth = sample["depth"].numpy()
            depth_sum += float(depth[depth > 0].sum())
            depth_count += int((depth > 0).sum())
        if "normals" in tasks:
            normals = sample["normals"].numpy().reshape(3, -1)
            normal_sum += normals[:, np.any(normals != 0, axis=0)].sum(axis=1)
    constants: dict[str, Any] = {}
    if "semantic" in tasks:
        constants["semantic"] = int(class_counts.argmax())
    if "depth" in tasks:
        if depth_count == 0:
            raise PagError("no valid depth in the training split")
        constants["depth"] = depth_sum / depth_count
    if "normals" in tasks:
        norm = float(np.linalg.norm(normal_sum))
        if norm == 0:
            raise PagError("no valid normals in the training split")
        constants["normals"] = (normal_sum / norm).tolist()
    if "boundary" in tasks:
        constants["boundary"] = 0.5
    return constants


def predictions(constants: dict[str, Any], height: int, width: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if "semantic" in constants:
        out["semantic"] = np.full((height, width), constants["semantic"], dtype=np.int64)
    if "depth" in constants:
        out["depth"] = np.full((height, width), constants["depth"], dtype=np.float32)
    if "normals" in constants:
        vector = np.asarray(constants["normals"], dtype=np.float32)[:, None, None]
        out["normals"] = np.broadcast_to(vector, (3, height, width)).copy()
    if "boundary" in constants:
        out["boundary"] = np.full((height, width), constants["boundary"], dtype=np.float32)
    return out


def trivial_metrics(plan: Plan) -> dict[str, Any]:
    from pag.training.evaluate import TaskMetrics

    profile = plan.profile
    root = layout.data_root(profile)
    train = get_dataset(profile.dataset, root=root, split="train")
    constants = fit(train, profile.tasks)
    split = profile.evaluation.split
    evaluation = get_dataset(profile.dataset, root=root, split=split)
    metrics = TaskMetrics(profile.tasks, profile.dataset)
    for index in range(len(evaluation)):
        sample = evaluation[index]
        height, width = sample["image"].shape[-2:]
        metrics.update(predictions(constants, height, width), sample)
    return {
        "split": split,
        "num_images": len(evaluation),
        "dataset": profile.dataset,
        "constants": constants,
        **metrics.compute(),
    }


def write_trivial(plan: Plan, root: Path = Path(".")) -> Path:
    return write_floor(plan, run_layout.TRIVIAL, trivial_metrics, root)


def write_floor(plan: Plan, name: str, metrics_of, root: Path = Path(".")) -> Path:
    """`metrics_of(plan)` as `results/<profile>/<name>`, computed before anything is written
    (a failure leaves no folder behind), written atomically after removing what a killed
    writer left. The floors' one writer: trivial predictors and classical detectors."""
    from pag.training.evaluate import json_safe

    path = root / layout.results_dir(plan.profile) / name
    metrics = json_safe(metrics_of(plan))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_temporaries(path)
    write_json_atomic(path, metrics)
    return path
