"""Transforms on whole samples, keeping image and every target aligned.

Geometry changes update what depends on geometry: a horizontal flip negates the x component of
camera-frame normals and mirrors the principal point; crops shift it; resizes scale the focal
lengths. Labels, depth and normals are resampled with nearest neighbour so invalid pixels never
mix with valid ones and no new label values appear.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pag.data.sample import IGNORE_INDEX, SPATIAL_KEYS, Sample
from pag.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# what a pixel outside the image becomes when padding
PAD_VALUE = {
    "image": 0.0,
    "semantic": IGNORE_INDEX,
    "depth": 0.0,
    "normals": 0.0,
    "boundary": 0,
    "instance": 0,
}


def _spatial(sample: Sample):
    return [key for key in SPATIAL_KEYS if key in sample]


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


class Compose:
    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample


class HorizontalFlip:
    """Mirror left-right; normals change the sign of x, cx becomes W - cx.

    Right for camera-frame normals and for per-column local panorama normals; world-frame
    panorama normals (Stanford-2D-3D official layout) must not be flipped this way."""

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        for key in _spatial(sample):
            out[key] = sample[key].flip(-1)
        if "normals" in out:
            out["normals"] = out["normals"] * torch.tensor([-1.0, 1.0, 1.0]).view(3, 1, 1)
        if "intrinsics" in out:
            k = out["intrinsics"].clone()
            k[0, 2] = sample["image"].shape[-1] - k[0, 2]
            out["intrinsics"] = k
        return out  # type: ignore[return-value]


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        self.p = p
        self.generator = generator
        self.flip = HorizontalFlip()

    def __call__(self, sample: Sample) -> Sample:
        if torch.rand((), generator=self.generator) < self.p:
            return self.flip(sample)
        return sample


def crop(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Crop every spatial key to [top, top+height) x [left, left+width); regions outside the
    image are padded with `PAD_VALUE` (ignore / invalid)."""
    img_h, img_w = sample["image"].shape[-2:]
    out = dict(sample)
    pad = (max(0, -left), max(0, left + width - img_w), max(0, -top), max(0, top + height - img_h))
    for key in _spatial(sample):
        value = sample[key]
        if any(pad):
            padded = F.pad(
                value.unsqueeze(0) if value.ndim == 2 else value, pad, value=PAD_VALUE[key]
            )
            value = padded.squeeze(0) if sample[key].ndim == 2 else padded
        t, le = top + pad[2], left + pad[0]
        out[key] = value[..., t : t + height, le : le + width]
    if "intrinsics" in out:
        k = out["intrinsics"].clone()
        k[0, 2] -= left
        k[1, 2] -= top
        out["intrinsics"] = k
    return out  # type: ignore[return-value]


class RandomCrop:
    """A random `size` crop; images smaller than `size` are padded with ignore / invalid."""

    def __init__(self, size: int | Sequence[int], generator: torch.Generator | None = None):
        self.size = _size(size)
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        height, width = self.size
        img_h, img_w = sample["image"].shape[-2:]
        top = int(torch.randint(0, max(img_h - height, 0) + 1, (), generator=self.generator))
        left = int(torch.randint(0, max(img_w - width, 0) + 1, (), generator=self.generator))
        return crop(sample, top, left, height, width)


class CenterCrop:
    def __init__(self, size: int | Sequence[int]):
        self.size = _size(size)

    def __call__(self, sample: Sample) -> Sample:
        height, width = self.size
        img_h, img_w = sample["image"].shape[-2:]
        return crop(sample, (img_h - height) // 2, (img_w - width) // 2, height, width)


class Resize:
    """Resize to (height, width): bilinear (antialiased) for the image, nearest for targets,
    except boundary maps made smaller: a pixel is marked when any pixel it covers was, so a
    1-pixel boundary stays unbroken (nearest would drop every other pixel of it)."""

    def __init__(self, size: int | Sequence[int]):
        self.size = _size(size)

    def __call__(self, sample: Sample) -> Sample:
        height, width = self.size
        img_h, img_w = sample["image"].shape[-2:]
        out = dict(sample)
        for key in _spatial(sample):
            value = sample[key]
            batch = value[None] if value.ndim == 3 else value[None, None]
            if key == "image":
                resized = F.interpolate(
                    batch, size=self.size, mode="bilinear", antialias=True, align_corners=False
                )
            elif key == "boundary" and (height < img_h or width < img_w):
                covered = F.interpolate(batch.float(), size=self.size, mode="area")
                resized = (covered > 0).to(value.dtype)
            else:
                resized = F.interpolate(batch.float(), size=self.size, mode="nearest-exact").to(
                    value.dtype
                )
            out[key] = resized[0] if value.ndim == 3 else resized[0, 0]
        if "intrinsics" in out:
            k = out["intrinsics"].clone()
            k[0] *= width / img_w
            k[1] *= height / img_h
            out["intrinsics"] = k
        return out  # type: ignore[return-value]


class RandomScale:
    """Resize by `base` times a factor drawn uniformly from `factors` (HED's and RCF's scale
    augmentation); draws nothing when there is one factor, so adding the transform at its
    default leaves a seeded run's random stream as it was."""

    def __init__(
        self,
        factors: Sequence[float] = (1.0,),
        base: float = 1.0,
        generator: torch.Generator | None = None,
    ):
        self.factors, self.base, self.generator = tuple(factors), base, generator

    def __call__(self, sample: Sample) -> Sample:
        factor = self.factors[0]
        if len(self.factors) > 1:
            factor = self.factors[
                int(torch.randint(len(self.factors), (), generator=self.generator))
            ]
        return rescale(sample, self.base * factor)


def rescale(sample: Sample, factor: float) -> Sample:
    """The sample resized by `factor` (sizes rounded, at least 1 pixel); unchanged at 1."""
    if factor == 1.0:
        return sample
    height, width = sample["image"].shape[-2:]
    return Resize((max(1, round(height * factor)), max(1, round(width * factor))))(sample)


class RandomRotate90:
    """Rotate by a multiple of 90 degrees drawn uniformly from `quarter_turns` (counter-
    clockwise): exact on thin boundary maps, where other angles would resample them. Samples
    with normals or intrinsics are refused, as their vectors would need rotating too. Draws
    nothing when there is one choice."""

    def __init__(
        self, quarter_turns: Sequence[int] = (0,), generator: torch.Generator | None = None
    ):
        self.quarter_turns, self.generator = tuple(quarter_turns), generator

    def __call__(self, sample: Sample) -> Sample:
        turns = self.quarter_turns[0]
        if len(self.quarter_turns) > 1:
            index = int(torch.randint(len(self.quarter_turns), (), generator=self.generator))
            turns = self.quarter_turns[index]
        if turns % 4 == 0:
            return sample
        kept = {"normals", "intrinsics"} & set(sample)
        if kept:
            raise DataError(
                f"RandomRotate90: samples with {sorted(kept)} cannot be rotated (their vectors "
                "would need rotating too)"
            )
        out = dict(sample)
        for key in _spatial(sample):
            out[key] = torch.rot90(sample[key], turns, dims=(-2, -1))
        return out  # type: ignore[return-value]


class Normalize:
    """Standardise the image channels (ImageNet statistics by default)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise DataError(f"Normalize needs 3 means and 3 positive stds, got {mean}, {std}")
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        out["image"] = (sample["image"] - self.mean) / self.std
        return out  # type: ignore[return-value]
