"""The numbers published for PAG that the public record holds, with where each comes from.

The paper's own tables are not available (../shared/paper.md, §7.1): these are the leaderboard
values attributed to the paper and the authors' logged validation result of their demo model.
Each row says which of our (dataset, task, metric) it corresponds to and how to convert our
value (a fraction) to the unit the number is given in."""

from __future__ import annotations

from dataclasses import dataclass

_LB = "[LB] leaderboard"
_CODE = "[CODE] authors' demo log"
SOURCES = {
    _LB: (
        "a leaderboard aggregator (wizwand 'Related benchmarks') attributes the value to the "
        "paper; which table it comes from is unverified (shared/paper.md §7.1a)"
    ),
    _CODE: (
        "the validation log of the authors' demo script, epoch 140 with flip augmentation: "
        "ResNet-50 + MultiPool + PAG (λ = 0.7), Stanford-2D-3D areas 3 and 4, local normals; "
        "not necessarily a number of the paper (shared/paper.md §7.1b)"
    ),
}


@dataclass(frozen=True)
class PaperNumber:
    dataset: str  # our dataset name (kitti: a dataset this project has no loader for)
    task: str
    metric: str
    value: float
    scale: float  # our value x scale is in the published number's unit
    unit: str
    source: str


PAPER_NUMBERS = (
    PaperNumber("cityscapes", "semantic", "miou", 75.8, 100.0, "%", _LB),
    PaperNumber("nyuv2", "semantic", "miou", 46.5, 100.0, "%", _LB),
    PaperNumber("bsds500", "boundary", "ods", 0.792, 1.0, "", _LB),
    PaperNumber("kitti", "depth", "abs_rel", 11.74, 100.0, "%", _LB),  # KITTI test set
    PaperNumber("cityscapes", "depth", "delta1", 34.6, 100.0, "%", _LB),
    PaperNumber("stanford2d3d", "normals", "within_11_25", 57.93, 100.0, "%", _CODE),
    PaperNumber("stanford2d3d", "normals", "within_22_5", 74.08, 100.0, "%", _CODE),
    PaperNumber("stanford2d3d", "normals", "within_30", 80.39, 100.0, "%", _CODE),
    PaperNumber("stanford2d3d", "normals", "mean", 16.54, 1.0, "°", _CODE),
)
# datasets the numbers are for that this project cannot run, and why
UNSUPPORTED = {"kitti": "not run (no KITTI loader)"}
