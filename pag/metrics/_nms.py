"""Edge non-maximum suppression, as in Piotr Dollar's Structured Edge toolbox.

The steps and constants are those of ``pdollar/edges: edgesDetect.m`` (the ``opts.nms``
branch) and ``pdollar/edges: private/edgesNmsMex.cpp``, which HED/RCF-style evaluations
apply before the BSDS benchmark (pyEdgeEval's ``fast_nms``,
``haruishi43/py-edge-eval: pyEdgeEval/preprocess/nms/fast_nms.py``, does the same):

1. ``E = convTri(E, 1)``: separable [1 2 1] / 4 smoothing, symmetric padding;
2. orientation: ``[Ox, Oy] = gradient2(convTri(E, 4))``, ``[Oxx, ~] = gradient2(Ox)``,
   ``[Oxy, Oyy] = gradient2(Oy)``, ``O = mod(atan(Oyy * sign(-Oxy) / (Oxx + 1e-5)), pi)``;
3. NMS with r = 1, m = 1.01: a pixel is zeroed when ``m * E`` is below the bilinearly
   interpolated E at distance 1 along the normal (``cos O, sin O``) on either side;
4. the ``s = 5`` pixels nearest each image border are scaled by ``distance / s``.

Everything runs vectorised in float32, the precision of the mex; values that tie in the last
bit may be resolved differently than in MATLAB.
"""

from __future__ import annotations

import numpy as np


def conv_tri(image: np.ndarray, r: int) -> np.ndarray:
    """pdollar ``convTri``: separable triangle filter of radius r, symmetric padding."""
    if r <= 1:
        p = 12.0 / r / (r + 2) - 2.0
        kernel = np.array([1.0, p, 1.0]) / (2.0 + p)
        r = 1
    else:
        kernel = np.concatenate([np.arange(1, r + 2), np.arange(r, 0, -1)]) / float((r + 1) ** 2)
    kernel = kernel.astype(image.dtype)
    padded = np.pad(image, r, mode="symmetric")
    h, w = image.shape
    rows = sum(kernel[k] * padded[k : k + h, :] for k in range(kernel.size))
    return sum(kernel[k] * rows[:, k : k + w] for k in range(kernel.size))


def _gradient2(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pdollar ``gradient2`` (= MATLAB ``gradient``): returns (d/dx, d/dy)."""
    gy, gx = np.gradient(image)
    return gx, gy


def _interp(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear interpolation with edgesNmsMex's clamping to [0, size - 1.001]."""
    h, w = image.shape
    x = np.clip(x, 0, np.float32(w - 1.001))
    y = np.clip(y, 0, np.float32(h - 1.001))
    x0 = x.astype(np.int64)
    y0 = y.astype(np.int64)
    dx0 = x - x0
    dy0 = y - y0
    dx1 = 1 - dx0
    dy1 = 1 - dy0
    return (
        image[y0, x0] * dx1 * dy1
        + image[y0, x0 + 1] * dx0 * dy1
        + image[y0 + 1, x0] * dx1 * dy0
        + image[y0 + 1, x0 + 1] * dx0 * dy0
    )


def edge_nms(prob: np.ndarray, r: int = 1, s: int = 5, m: float = 1.01) -> np.ndarray:
    """Thin a soft H x W edge map by non-maximum suppression across the edge direction."""
    edge = conv_tri(np.asarray(prob, dtype=np.float32), 1)
    ox, oy = _gradient2(conv_tri(edge, 4))
    oxx, _ = _gradient2(ox)
    oxy, oyy = _gradient2(oy)
    with np.errstate(divide="ignore", invalid="ignore"):
        orient = np.mod(np.arctan(oyy * np.sign(-oxy) / (oxx + np.float32(1e-5))), np.pi)
    orient = np.nan_to_num(orient.astype(np.float32))
    h, w = edge.shape
    out = edge.copy()
    ys, xs = np.nonzero(edge)
    if ys.size:
        e = edge[ys, xs] * np.float32(m)
        cos_o = np.cos(orient[ys, xs])
        sin_o = np.sin(orient[ys, xs])
        xf = xs.astype(np.float32)
        yf = ys.astype(np.float32)
        suppressed = np.zeros(ys.size, dtype=bool)
        for d in range(-r, r + 1):
            if d == 0:
                continue
            e0 = _interp(edge, xf + np.float32(d) * cos_o, yf + np.float32(d) * sin_o)
            suppressed |= e < e0
        out[ys[suppressed], xs[suppressed]] = 0
    s = min(s, w // 2, h // 2)
    col = np.ones(w, dtype=np.float32)
    row = np.ones(h, dtype=np.float32)
    for k in range(s):
        col[k] *= k / s
        col[w - 1 - k] *= k / s
        row[k] *= k / s
        row[h - 1 - k] *= k / s
    return out * row[:, None] * col[None, :]
