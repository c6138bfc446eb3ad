"""Metrics for the four tasks, each following a standard protocol (see each module).

Every ``*_metrics`` function takes numpy arrays (one image, a stacked batch or a list of
images) and returns a plain dict; every accumulator does the same incrementally with
``update(...)`` and ``compute()``. Malformed input raises `MetricError` (a `PagError` and a
`ValueError`) naming the argument at fault.
"""

from pag.metrics._validate import MetricError
from pag.metrics.boundary import (
    BoundaryAccumulator,
    boundary_metrics,
    boundary_thresholds,
    correspond_pixels,
    edge_nms,
    evaluate_boundary_image,
    thin,
)
from pag.metrics.depth import (
    DEPTH_KEYS,
    EIGEN_CROP,
    NYU_MAX_DEPTH,
    DepthAccumulator,
    depth_metrics,
    eigen_crop_mask,
)
from pag.metrics.normals import NORMAL_KEYS, NormalAccumulator, angular_errors, normal_metrics
from pag.metrics.segmentation import SegmentationAccumulator, segmentation_metrics

__all__ = [
    "DEPTH_KEYS",
    "EIGEN_CROP",
    "NORMAL_KEYS",
    "NYU_MAX_DEPTH",
    "BoundaryAccumulator",
    "DepthAccumulator",
    "MetricError",
    "NormalAccumulator",
    "SegmentationAccumulator",
    "angular_errors",
    "boundary_metrics",
    "boundary_thresholds",
    "correspond_pixels",
    "depth_metrics",
    "edge_nms",
    "eigen_crop_mask",
    "evaluate_boundary_image",
    "normal_metrics",
    "segmentation_metrics",
    "thin",
]
