"""The numbers published for PAG that the public record holds, with where each comes from,
and published reference numbers of other detectors (`REFERENCE_NUMBERS`) shown beside them.

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

_HED = "[HED] Xie & Tu 2015, Table 4"
_FLOOR = "[FLOOR] measured by this pipeline"
REFERENCE_SOURCES = {
    _HED: (
        'as reprinted in Table 4 of Xie & Tu, "Holistically-Nested Edge Detection", ICCV 2015 '
        "(Human, Canny, gPb-owt-ucm originally from Arbeláez et al., TPAMI 2011); not "
        "re-verified against the PDF here"
    ),
    _FLOOR: (
        "`pag classical` (results/<profile>/classical.json): classical edge detectors scored "
        "with our benchmark (all annotators, full resolution) on the split named; their "
        "smoothing chosen on val (docs/decisions.md, Classical floor)"
    ),
}


@dataclass(frozen=True)
class ReferenceNumber:
    """Published ODS / OIS / AP of another detector (or of humans) on a dataset, shown beside
    PAG's and ours where the report has that dataset; None where the source gives none."""

    dataset: str
    task: str
    method: str
    ods: float
    ois: float | None
    ap: float | None
    decimals: int  # as published
    source: str


REFERENCE_NUMBERS = (
    ReferenceNumber("bsds500", "boundary", "Human", 0.80, 0.80, None, 2, _HED),
    ReferenceNumber("bsds500", "boundary", "Canny", 0.600, 0.640, 0.580, 3, _HED),
    ReferenceNumber("bsds500", "boundary", "gPb-owt-ucm", 0.726, 0.757, 0.696, 3, _HED),
    ReferenceNumber("bsds500", "boundary", "HED", 0.788, 0.808, 0.840, 3, _HED),
)
FLOOR_SOURCE = _FLOOR
# the classical detectors of pag.pipeline.classical as the table names them
FLOOR_LABELS = {"gradient": "Gaussian gradient magnitude", "canny": "Canny"}
