"""Datasets: one registry, one sample type, aligned transforms, safe downloads."""

from pag.data.base import (
    CheckReport,
    DenseDataset,
    FetchSpec,
    RemoteFile,
    dataset_class,
    dataset_names,
    get_dataset,
    register,
)
from pag.data.sample import IGNORE_INDEX, TASKS, Sample, collate_samples, validate_sample

# dataset modules register themselves with the registry on import
from pag.data import bsds500, cityscapes, nyuv2, stanford2d3d, synthetic  # noqa: F401  isort: skip
from pag.data.archive import safe_extract  # isort: skip

__all__ = [
    "IGNORE_INDEX",
    "TASKS",
    "CheckReport",
    "DenseDataset",
    "FetchSpec",
    "RemoteFile",
    "Sample",
    "collate_samples",
    "dataset_class",
    "dataset_names",
    "get_dataset",
    "register",
    "safe_extract",
    "validate_sample",
]
