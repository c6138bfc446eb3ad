"""Training data: each epoch's batches and its augmented samples, exactly reproducible.

There is no hidden random state in the data pipeline. Epoch `e` visits the training split in
the order `torch.randperm` gives with a generator seeded from (seed, e); sample `i` of epoch
`e` is cropped and flipped with a generator seeded from (seed, e, i). A run resumed at step k
of an epoch rebuilds the same order and skips the k batches already done, and DataLoader
workers (`training.num_workers`) change nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from pag.data import collate_samples, get_dataset
from pag.data.transforms import (
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRotate90,
    RandomScale,
)
from pag.errors import PagError
from pag.params import Augmentation
from pag.training.run_params import RunParams
from pag.training.seeds import AUGMENT, ORDER, derived_seed


def epoch_order(num_samples: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(derived_seed(seed, ORDER, epoch))
    return torch.randperm(num_samples, generator=generator).tolist()


def epoch_batches(num_samples: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's batches of sample indices; the last incomplete batch is dropped, so every
    step sees `batch_size` images (BatchNorm statistics) and the step count is fixed."""
    order = epoch_order(num_samples, seed, epoch)
    count = num_samples // batch_size
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(count)]


# bytes of training samples a run keeps decoded in memory (`SampleCache`)
SAMPLE_CACHE_BYTES = 2 * 1024**3


class SampleCache:
    """A training split's validated samples, restricted to the run's keys, kept in memory
    until they fill `limit` bytes, so that later epochs skip reading and decoding them: on
    BSDS500, reading one ground-truth .mat file takes longer than a CPU step spends on its
    crop. Samples past the limit are read each time; what a run computes is unchanged."""

    def __init__(self, base, keys: tuple[str, ...], limit: int = SAMPLE_CACHE_BYTES):
        self.base, self.keys, self.limit = base, keys, limit
        self._kept: dict[int, dict] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self.base)

    def validated(self, index: int, num_classes: int | None = None) -> dict:
        if index in self._kept:
            return dict(self._kept[index])
        sample = self.base.validated(index, num_classes)
        sample = {k: sample[k] for k in self.keys}  # type: ignore[literal-required]
        size = sum(v.nbytes for v in sample.values() if isinstance(v, torch.Tensor))
        if self._bytes + size <= self.limit:
            self._kept[index] = sample
            self._bytes += size
        return dict(sample)


class AugmentedSplit(Dataset):
    """Training samples of one epoch: resized by the run's input scale (and a random scale),
    rotated by a random quarter turn where the run asks, a random crop to `size` and a random
    horizontal flip,
    each sample with its own generator seeded from (seed, epoch, index), then normalisation.
    Only the image and the run's targets are kept. Every sample is checked against the
    sample contract first (labels within the run's classes), so a broken file stops the run
    with a DataError naming it."""

    def __init__(
        self,
        base,
        size: tuple[int, int],
        tasks,
        seed: int,
        epoch: int,
        *,
        input_scale: float = 1.0,
        augmentation: Augmentation | None = None,
    ):
        self.base, self.size, self.keys = base, tuple(size), ("image", *tasks)
        self.num_classes = tasks.get("semantic")
        self.seed, self.epoch = seed, epoch
        self.input_scale = input_scale
        self.augmentation = augmentation or Augmentation()
        self.normalize = Normalize()

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(
            derived_seed(self.seed, AUGMENT, self.epoch, index)
        )
        sample = self.base.validated(index, self.num_classes)
        sample = {k: sample[k] for k in self.keys}  # type: ignore[literal-required]
        scale = RandomScale(self.augmentation.scales, self.input_scale, generator=generator)
        sample = scale(sample)  # type: ignore[arg-type]
        turns = [degrees // 90 for degrees in self.augmentation.rotations]
        sample = RandomRotate90(turns, generator=generator)(sample)
        sample = RandomCrop(self.size, generator=generator)(sample)  # type: ignore[arg-type]
        sample = RandomHorizontalFlip(generator=generator)(sample)
        if "boundary" in sample:  # images have 4 to 9 annotators (BSDS500): batch what agrees
            sample["boundary"] = sample["boundary"].float().mean(0, keepdim=True)
        return self.normalize(sample)  # type: ignore[return-value]


def open_train_split(params: RunParams, data_root: str | os.PathLike | None):
    root = data_root if data_root is not None else params.data_root
    dataset = get_dataset(params.dataset, root, split=params.train_split)
    missing = sorted(set(params.tasks) - set(dataset.tasks))
    if missing:
        raise PagError(f"dataset '{params.dataset}' has no targets for tasks {missing}")
    classes = params.tasks.get("semantic")
    if "semantic" in params.tasks and dataset.num_classes and classes != dataset.num_classes:
        raise PagError(
            f"tasks.semantic is {classes} but dataset '{params.dataset}' has "
            f"{dataset.num_classes} classes"
        )
    if len(dataset) < params.training.batch_size:
        raise PagError(
            f"split '{params.train_split}' of '{params.dataset}' has {len(dataset)} images, "
            f"fewer than training.batch_size {params.training.batch_size}"
        )
    return dataset


# a training crop may be up to this many times an image's area (padded with ignore/invalid)
MAX_CROP_TO_IMAGE = 4


def check_input_size(params: RunParams, dataset) -> None:
    """Training crops far larger than the images would be mostly padding, and a typo such as
    an extra digit would exhaust memory before the first step: refused before anything runs."""
    height, width = (int(n) for n in dataset.load(0)["image"].shape[-2:])
    crop_h, crop_w = params.input_size
    scaled_area = height * width * params.input_scale**2
    if crop_h * crop_w > MAX_CROP_TO_IMAGE * scaled_area:
        raise PagError(
            f"input_size {list(params.input_size)} is larger than the images of split "
            f"'{params.train_split}' of '{params.dataset}' (its first is {height} x {width}"
            f"{'' if params.input_scale == 1 else f' before input_scale {params.input_scale}'}); "
            f"a training crop may be at most {MAX_CROP_TO_IMAGE} times an image's area"
        )


def batches_of(loader: DataLoader) -> Iterator[dict]:
    """The loader's batches. A PagError raised in a DataLoader worker arrives with the worker's
    traceback in its message: it is raised again with its own message alone (one CLI line)."""
    try:
        yield from loader
    except PagError as exc:
        text = str(exc)
        marker = f"\n{type(exc).__module__}.{type(exc).__qualname__}: "
        if not text.startswith("Caught ") or marker not in text:
            raise
        raise type(exc)(text.rpartition(marker)[2].strip()) from None


def epoch_loader(
    params: RunParams, samples, epoch: int, batches: list[list[int]], position: int
) -> DataLoader:
    """The loader of one epoch's augmented samples (`AugmentedSplit` of `samples`), over
    this process's `batches` from `position` on (a resumed epoch skips those done)."""
    return DataLoader(
        AugmentedSplit(
            samples,
            params.input_size,
            params.tasks,
            params.seed,
            epoch,
            input_scale=params.input_scale,
            augmentation=params.augmentation,
        ),
        batch_sampler=batches[position:],
        num_workers=params.training.num_workers,
        collate_fn=collate_samples,
        generator=torch.Generator(),  # DataLoader would otherwise draw from the global one
    )
