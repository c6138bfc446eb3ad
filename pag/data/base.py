"""The dataset base class and the registry through which every dataset is reached by name."""

from __future__ import annotations

import bisect
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch.utils.data

from pag.data.sample import IGNORE_INDEX, Sample, validate_sample
from pag.errors import DataMissing, PagError
from pag.fileio import file_digest
from pag.params import DATASET_NAMES
from pag.paths import dataset_dir

Transform = Callable[[Sample], Sample]


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file of a dataset, placed at `<dataset dir>/<filename>`."""

    url: str
    filename: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    extract: bool = False  # unpack with `safe_extract` into the dataset dir after download


@dataclass(frozen=True)
class FetchSpec:
    """What `pag data fetch` does: download `files`, and/or print `manual` instructions."""

    files: tuple[RemoteFile, ...] = ()
    manual: str | None = None


@dataclass
class CheckReport:
    """Problems found by `check`; an empty list means the dataset is ready."""

    dataset: str
    root: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth knowing, but not a failure
    checked: int = 0

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def note(self, message: str) -> None:
        self.notes.append(message)

    @property
    def ok(self) -> bool:
        return not self.problems


class DenseDataset(torch.utils.data.Dataset):
    """A split of a dense-prediction dataset; items are `Sample` dicts (see `pag.data.sample`).

    Subclasses set the class attributes and implement `__len__` and `load(index)`; they index
    their files in `__init__` and raise `DataError` naming the file when the layout is wrong.
    """

    name: ClassVar[str]
    splits: ClassVar[tuple[str, ...]]
    tasks: ClassVar[tuple[str, ...]]  # subset of pag.data.sample.TASKS
    class_names: ClassVar[tuple[str, ...]] = ()
    ignore_index: ClassVar[int] = IGNORE_INDEX
    fetch_spec: ClassVar[FetchSpec] = FetchSpec()

    def __init__(self, root: str | os.PathLike, split: str, transform: Transform | None = None):
        if split not in self.splits:
            raise PagError(
                f"dataset '{self.name}' has no split '{split}'; expected one of {list(self.splits)}"
            )
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataMissing(
                f"{self.root}: dataset '{self.name}' not found (no such directory)",
                self.missing_hint(),
            )
        self.split = split
        self.transform = transform

    @classmethod
    def missing_hint(cls) -> str:
        """What to run when the dataset is not there."""
        return f"run `pag data fetch {cls.name}` or see README"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load(self, index: int) -> Sample:
        raise NotImplementedError

    def files(self, index: int) -> dict[str, Path]:
        """The file each key of sample `index` is read from, where the dataset keeps one file
        per key (errors name it); empty otherwise (errors name the sample id)."""
        return {}

    def validated(self, index: int, num_classes: int | None = None) -> Sample:
        """Sample `index`, untransformed, checked against the sample contract (labels in
        0..num_classes-1 or ignore): what training and `check` read, so that nothing trains
        on a sample that is silently broken. A failure is a DataError naming the file."""
        sample = self.load(index)
        validate_sample(sample, num_classes=num_classes, files=self.files(index))
        return sample

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(
                f"{self.name}/{self.split}: index {index} out of range 0..{len(self) - 1}"
            )
        sample = self.load(index)
        return self.transform(sample) if self.transform is not None else sample

    @classmethod
    def fingerprint(cls, root: str | os.PathLike) -> str | None:
        """A digest of what identifies the installed files (what runs record as their data's
        provenance): the markers `pag data fetch` wrote, which hold each extracted archive's
        size and time, or, for a tree installed with `--from`, a digest of every file (see
        `pag.data.install`). None when there is nothing to go by (installed by hand)."""
        markers = sorted([*Path(root).glob(".*.extracted"), *Path(root).glob(".installed")])
        if not markers:
            return None
        digest = hashlib.sha256()
        for marker in markers:
            digest.update(marker.name.encode() + b"\0" + marker.read_bytes() + b"\0")
        return digest.hexdigest()

    @classmethod
    def check(cls, root: str | os.PathLike, report: CheckReport) -> None:
        """Verify a prepared dataset: layout, counts, checksums where known, and that every
        sample decodes and satisfies the sample contract. Adds every problem to `report`."""
        cls.check_samples(root, report, cls.splits)

    @classmethod
    def check_samples(cls, root: str | os.PathLike, report: CheckReport, splits) -> None:
        """Open each split, then decode and validate every sample, recording each failure; an
        image file (by path or by content) in two splits is a leak between them."""
        seen: dict[str, tuple[str, Path]] = {}  # path or sha256 -> (split, file)
        for split in splits:
            try:
                dataset = cls(root, split)
            except PagError as exc:
                report.add(f"{split}: {exc}")
                continue
            for index in range(len(dataset)):
                try:
                    dataset.validated(index, num_classes=dataset.num_classes or None)
                except PagError as exc:
                    report.add(f"{split}[{index}]: {exc}")
                report.checked += 1
                image = dataset.files(index).get("image")
                if image is not None and image.is_file():
                    for key in (str(image.resolve()), file_digest(image)):
                        other = seen.setdefault(key, (split, image))
                        if other[0] != split:
                            report.add(
                                f"{image}: image of split {split!r} is also in split "
                                f"{other[0]!r} ({other[1]}): the splits leak into each other"
                            )
                            break


_REGISTRY: dict[str, type[DenseDataset]] = {}


def register(cls: type[DenseDataset]) -> type[DenseDataset]:
    """Class decorator: make a dataset reachable by `get_dataset(cls.name, ...)`."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"dataset name '{cls.name}' registered twice")
    if cls.name not in DATASET_NAMES:
        raise ValueError(
            f"dataset {cls.name!r} is not in pag.params.DATASET_NAMES, which params are "
            "validated against; add it there"
        )
    _REGISTRY[cls.name] = cls
    return cls


def dataset_names() -> list[str]:
    return sorted(_REGISTRY)


def dataset_class(name: str) -> type[DenseDataset]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PagError(f"unknown dataset '{name}'; expected one of {dataset_names()}") from None


def get_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    split: str | list[str] = "train",
    transform: Transform | None = None,
    **options,
) -> DenseDataset:
    """The dataset `name` under the data root (`root`, else $PAG_DATA, else ./data), as
    `<root>/<name>`; `options` go to the dataset class (e.g. `layout=` for Stanford-2D-3D).
    A list of splits gives them joined in that order (`JoinedSplits`)."""
    cls = dataset_class(name)
    if isinstance(split, str):
        return cls(dataset_dir(name, root), split, transform=transform, **options)
    parts = [cls(dataset_dir(name, root), s, transform=transform, **options) for s in split]
    return JoinedSplits(parts)  # type: ignore[return-value]


class JoinedSplits(torch.utils.data.ConcatDataset):
    """Splits of one dataset read as one, in order: HED and RCF train on BSDS500's train and
    val together. Adds to torch's ConcatDataset what training reads of a split (`load`,
    `validated`, `root`)."""

    def __init__(self, parts: list[DenseDataset]):
        if not parts:
            raise PagError("JoinedSplits needs at least one split")
        super().__init__(parts)
        first = parts[0]
        self.name, self.root, self.tasks = first.name, first.root, first.tasks
        self.num_classes = first.num_classes
        self.split = "+".join(part.split for part in parts)

    def _locate(self, index: int) -> tuple[DenseDataset, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}/{self.split}: index {index} out of range")
        part = bisect.bisect_right(self.cumulative_sizes, index)
        return self.datasets[part], index - (self.cumulative_sizes[part - 1] if part else 0)

    def load(self, index: int) -> Sample:
        part, local = self._locate(index)
        return part.load(local)

    def validated(self, index: int, num_classes: int | None = None) -> Sample:
        part, local = self._locate(index)
        return part.validated(local, num_classes)
