"""Classical edge detectors: the floor a learned boundary detector must beat.

Each detector maps an RGB image (3 x H x W floats in [0, 1], a sample's `image`) to a soft
boundary map in [0, 1] of the image's size, scored at full resolution against every annotator
with the benchmark `pag evaluate` uses (ODS / OIS / AP, `pag.metrics.boundary`):

* `gradient`: the gradient magnitude of the Gaussian-smoothed grey image, divided by the
  image's largest value;
* `canny`: Canny's edges (scikit-image: the same smoothing, Sobel gradient, non-maximum
  suppression), each edge pixel weighted by its normalised gradient magnitude.

The smoothing scale of each was chosen on the val split (`SIGMAS`; docs/decisions.md,
"Classical floor"), never on test. `pag classical --profile P` writes
`results/<profile>/classical.json` for the profile's `evaluation.classical` detectors on its
`evaluation.split`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from pag import run_layout
from pag.errors import PagError
from pag.pipeline import plan as layout
from pag.pipeline.plan import Plan
from pag.pipeline.trivial import write_floor

# Gaussian standard deviation in pixels of the full-resolution image, chosen on the first 25
# val images (docs/decisions.md, "Classical floor")
SIGMAS = {"gradient": 3.0, "canny": 3.0}
# ITU-R BT.709 luma, as skimage.color.rgb2gray
LUMA = (0.2125, 0.7154, 0.0721)
SETTINGS_NOTE = {
    "gradient": "gradient magnitude of the Gaussian-smoothed grey image / the image's maximum",
    "canny": "Canny edges (skimage, no hysteresis) x gradient magnitude / the image's maximum",
}


def grey(image: Any) -> np.ndarray:
    """The H x W luma of a 3 x H x W RGB image (a sample's `image`, tensor or array)."""
    rgb = np.asarray(image, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise PagError(f"expected a 3 x H x W RGB image, got shape {rgb.shape}")
    return np.tensordot(LUMA, rgb, axes=1)


def _per_image_max(values: np.ndarray) -> np.ndarray:
    """`values` / their maximum; all zeros for an image without any gradient (no division)."""
    peak = float(values.max(initial=0.0))
    return values / peak if peak > 0 else np.zeros_like(values)


def gradient(image: Any, sigma: float = SIGMAS["gradient"]) -> np.ndarray:
    """The gradient magnitude of the grey image smoothed with a Gaussian of `sigma` pixels
    (derivatives of the Gaussian, `scipy.ndimage.gaussian_gradient_magnitude`; borders
    replicate the edge pixels), divided by the image's largest magnitude.

    Why per image: the benchmark thresholds every map at the same 99 levels in [0, 1], and a
    raw magnitude has no common scale (it grows with the image's contrast and shrinks with
    sigma), so a fixed divisor would leave most images' edges below the first level or above
    the last. Dividing by the image's maximum makes a threshold mean "this fraction of the
    image's strongest edge", the same question on every image: ODS then picks one fraction
    for the whole set, OIS one per image. The price is that a low-contrast image's faint
    edges count as much as a high-contrast image's strong ones."""
    magnitude = ndi.gaussian_gradient_magnitude(grey(image), sigma, mode="nearest")
    return _per_image_max(magnitude)


def canny(image: Any, sigma: float = SIGMAS["canny"]) -> np.ndarray:
    """Canny's edges of the grey image (scikit-image's `canny`: Gaussian smoothing of `sigma`
    pixels, Sobel gradient, non-maximum suppression along the gradient), each valued by its
    gradient magnitude divided by the image's largest magnitude, 0 elsewhere.

    Canny's output is binary, and its thresholds are what its precision-recall curve sweeps.
    Here the hysteresis thresholds are 0 (every non-maximum-suppressed pixel with a gradient
    is kept) and the benchmark's threshold t plays the role of Canny's: thresholding the map
    at t keeps exactly the edges Canny keeps with low = high = t x the image's largest
    magnitude. Hysteresis with low < high (which also keeps weaker pixels connected to strong
    ones) is not modelled. scikit-image's `canny` blanks the image's outermost pixels."""
    luma = grey(image)
    edges = _skimage_canny(luma, sigma)
    smoothed = _skimage_gaussian(luma, sigma)
    magnitude = np.hypot(ndi.sobel(smoothed, axis=0), ndi.sobel(smoothed, axis=1))
    return _per_image_max(np.where(edges, magnitude, 0.0))


def _skimage_canny(luma: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.feature import canny as skimage_canny

    return skimage_canny(luma, sigma, low_threshold=0.0, high_threshold=0.0, mode="nearest")


def _skimage_gaussian(luma: np.ndarray, sigma: float) -> np.ndarray:
    """The smoothing `skimage.feature.canny` applies with mode="nearest" (so the magnitude
    weighting an edge is the one its non-maximum suppression saw)."""
    from skimage.filters import gaussian

    return gaussian(luma, sigma=sigma, mode="nearest", preserve_range=False)


DETECTORS: dict[str, Callable[..., np.ndarray]] = {"gradient": gradient, "canny": canny}


def settings(name: str) -> dict[str, Any]:
    return {"sigma": SIGMAS[name], "construction": SETTINGS_NOTE[name]}


# -- scoring -------------------------------------------------------------------------------------

_worker_dataset = None


def _open(dataset: str, root: str, split: str) -> None:
    from pag.data import get_dataset

    global _worker_dataset
    _worker_dataset = get_dataset(dataset, root=root, split=split)


def _image_counts(job: tuple[int, tuple[str, ...], dict[str, float]]) -> dict[str, np.ndarray]:
    """One image's benchmark counts per detector (`evaluate_boundary_image`, the defaults
    `pag evaluate`'s accumulator uses)."""
    from pag.metrics.boundary import evaluate_boundary_image

    index, names, sigmas = job
    sample = _worker_dataset[index]
    truth = sample["boundary"].numpy()
    return {
        name: evaluate_boundary_image(DETECTORS[name](sample["image"], sigmas[name]), truth)
        for name in names
    }


def score(
    dataset: str,
    root: str | Path,
    split: str,
    names: list[str] | tuple[str, ...],
    *,
    sigmas: dict[str, float] | None = None,
    limit: int | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Each detector of `names` on the first `limit` (default: every) image of `split`, as
    `{name: {"settings": ..., "boundary": metrics}}` plus the split, image count, dataset and
    data fingerprint. `workers` > 1 scores images in that many spawned processes (the result
    does not depend on it: counts are added in image order)."""
    from pag.data import get_dataset
    from pag.metrics.boundary import BoundaryAccumulator
    from pag.training.provenance import data_fingerprint

    unknown = sorted(set(names) - set(DETECTORS))
    if unknown or not names:
        raise PagError(f"classical detectors must be some of {list(DETECTORS)}, got {names}")
    sigmas = {**SIGMAS, **(sigmas or {})}
    data = get_dataset(dataset, root=root, split=split)
    if "boundary" not in data.tasks:
        raise PagError(f"{dataset}: has no boundary ground truth to score edge detectors on")
    count = len(data) if limit is None else min(limit, len(data))
    jobs = [(index, tuple(names), sigmas) for index in range(count)]
    accumulators = {name: BoundaryAccumulator() for name in names}
    if workers > 1 and count > 1:
        ctx = get_context("spawn")
        init = (dataset, str(root), split)
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_open, initargs=init) as pool:
            results = list(pool.map(_image_counts, jobs, chunksize=1))
    else:
        _open(dataset, str(root), split)
        results = [_image_counts(job) for job in jobs]
    for counts in results:
        for name, image_counts in counts.items():
            accumulators[name].add_counts(image_counts)
    return {
        "split": split,
        "num_images": count,
        "dataset": dataset,
        "data": data_fingerprint(dataset, data.root),
        "detectors": {
            name: {
                "settings": {**settings(name), "sigma": sigmas[name]},
                "boundary": accumulators[name].compute(),
            }
            for name in names
        },
    }


def classical_metrics(plan: Plan, workers: int = 1) -> dict[str, Any]:
    profile = plan.profile
    if not profile.evaluation.classical:
        raise PagError(
            f"{plan.profile_file}: evaluation.classical lists no detector (some of "
            f"{list(DETECTORS)})"
        )
    return score(
        profile.dataset,
        layout.data_root(profile),
        profile.evaluation.split,
        profile.evaluation.classical,
        workers=workers,
    )


def write_classical(plan: Plan, root: Path = Path("."), workers: int = 1) -> Path:
    return write_floor(plan, run_layout.CLASSICAL, lambda p: classical_metrics(p, workers), root)
