"""Morphological thinning equivalent to MATLAB ``bwmorph(bw, 'thin', Inf)``.

MATLAB documents its 'thin' operation as the parallel two-subiteration algorithm of Guo and
Hall (1989) as given by Lam, Lee and Suen, "Thinning methodologies - a comprehensive survey",
IEEE TPAMI 14(9), 1992, p. 879. With the 8 neighbours of p numbered counter-clockwise from
the east, ``x1 = E, x2 = NE, x3 = N, x4 = NW, x5 = W, x6 = SW, x7 = S, x8 = SE`` (north =
previous row) and ``x9 = x1``:

* G1: ``X_H(p) = 1``, where ``X_H = sum_{i=1..4} b_i`` and ``b_i = 1`` iff ``x_{2i-1} = 0``
  and (``x_{2i} = 1`` or ``x_{2i+1} = 1``);
* G2: ``2 <= min(n1, n2) <= 3`` with ``n1 = sum_k (x_{2k-1} or x_{2k})`` and
  ``n2 = sum_k (x_{2k} or x_{2k+1})``;
* G3: ``(x2 or x3 or not x8) and x1 == 0`` (first subiteration);
  G3': ``(x6 or x7 or not x4) and x5 == 0`` (second subiteration).

A foreground pixel is deleted in the first subiteration if G1, G2 and G3 hold, in the second
if G1, G2 and G3' hold; every decision of a subiteration is taken on the image as it was
before that subiteration (parallel). Both subiterations repeat until nothing changes; pixels
outside the image count as background. scikit-image's ``skimage.morphology.thin`` implements
the same algorithm (scikit-image/scikit-image PR #2294, "replicating MATLAB's
bwmorph('thin',...)"), and our tests check its published expected outputs.

Implementation: the conditions become two 256-entry lookup tables indexed by the 8-bit
neighbourhood code. The image is padded by one pixel and flattened; each subiteration looks up
the codes of the candidate pixels only, and after the first full pass the only candidates are
foreground pixels next to a pixel deleted since that table was last applied, since a pixel
whose neighbourhood has not changed gets the same answer again. The per-pixel loops are
compiled with numba: a thick map (a network's soft output at a low threshold) needs hundreds
of subiterations, and vectorised numpy spent seconds per image on them (measured in
docs/decisions.md, "Boundary metric speed").
"""

from __future__ import annotations

import numba
import numpy as np

# (row, col) offsets of x1..x8; bit k of the neighbourhood code is x_{k+1}
_OFFSETS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _build_luts() -> tuple[np.ndarray, np.ndarray]:
    codes = np.arange(256)
    x = [None] + [((codes >> k) & 1).astype(bool) for k in range(8)]  # x[1]..x[8]
    x.append(x[1])  # x9 = x1
    x_h = sum((~x[2 * i - 1]) & (x[2 * i] | x[2 * i + 1]) for i in range(1, 5))
    n1 = sum((x[2 * k - 1] | x[2 * k]).astype(int) for k in range(1, 5))
    n2 = sum((x[2 * k] | x[2 * k + 1]).astype(int) for k in range(1, 5))
    m = np.minimum(n1, n2)
    g12 = (x_h == 1) & (m >= 2) & (m <= 3)
    g3 = ~((x[2] | x[3] | ~x[8]) & x[1])
    g3p = ~((x[6] | x[7] | ~x[4]) & x[5])
    return g12 & g3, g12 & g3p


DELETE_LUT_1, DELETE_LUT_2 = _build_luts()


def thin(bw: np.ndarray) -> np.ndarray:
    """Thin a binary H x W map to one-pixel-wide lines, like ``bwmorph(bw, 'thin', Inf)``.
    Returns a new boolean array; the input is not modified."""
    bw = np.asarray(bw)
    if bw.ndim != 2:
        raise ValueError(f"thin: expected a 2-D binary map, got shape {bw.shape}")
    return thin_many(bw[None])[0]


def thin_many(maps: np.ndarray) -> np.ndarray:
    """`thin` of each of N binary H x W maps, in one pass of subiterations over all of them.

    Each map is padded by one background pixel, so in the flattened N x (H+2) x (W+2) stack
    a pixel's 8 neighbours lie in its own map, and every map goes through exactly the
    subiterations it would alone: a map that has converged deletes nothing in the further
    subiterations the others need. The per-subiteration Python work is paid once for all N
    maps (the boundary metric thins up to 99 thresholded maps per image)."""
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"thin_many: expected N x H x W binary maps, got shape {maps.shape}")
    n, h, w = maps.shape
    width = w + 2
    img = np.zeros(n * (h + 2) * width, dtype=np.uint8)
    img.reshape(n, h + 2, width)[:, 1:-1, 1:-1] = maps != 0
    offs = np.array([dr * width + dc for dr, dc in _OFFSETS], dtype=np.int64)
    ring = np.concatenate([[0], offs])  # a pixel and its 8 neighbours

    luts = (DELETE_LUT_1, DELETE_LUT_2)
    evaluated_all = [False, False]  # has the table had its first pass over every pixel?
    candidates = [np.zeros(0, np.int64), np.zeros(0, np.int64)]
    last_deleted = [np.zeros(0, np.int64), np.zeros(0, np.int64)]
    scratch = np.zeros(img.size, dtype=np.uint8)
    sub = 0
    idle = 0  # consecutive subiterations without a deletion
    while idle < 2:
        if evaluated_all[sub]:
            cand = candidates[sub]
        else:
            cand = np.flatnonzero(img)
            evaluated_all[sub] = True
        deleted = _delete(img, cand, offs, luts[sub])
        idle = 0 if deleted.size else idle + 1
        last_deleted[sub] = deleted
        # The other table gave its answers on the image as it was when it last ran; since
        # then only its own deletions and this table's have changed any neighbourhood.
        other = sub ^ 1
        changed = np.concatenate([last_deleted[other], deleted])
        candidates[other] = _foreground_near(img, changed, ring, scratch)
        sub = other
    return img.reshape(n, h + 2, width)[:, 1:-1, 1:-1].astype(bool)


@numba.njit(cache=True, nogil=True)
def _delete(img: np.ndarray, cand: np.ndarray, offs: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """One parallel subiteration: the candidates `lut` deletes, judged on the image as it is,
    then deleted."""
    deleted = np.empty(cand.size, dtype=np.int64)
    count = 0
    for p in cand:
        code = 0
        for k in range(8):
            if img[p + offs[k]]:
                code |= 1 << k
        if lut[code]:
            deleted[count] = p
            count += 1
    for i in range(count):
        img[deleted[i]] = 0
    return deleted[:count]


@numba.njit(cache=True, nogil=True)
def _foreground_near(
    img: np.ndarray, changed: np.ndarray, ring: np.ndarray, scratch: np.ndarray
) -> np.ndarray:
    """The foreground pixels in the 3 x 3 neighbourhoods of `changed`, each once (`scratch`
    is all zeros on entry and on return)."""
    found = np.empty(changed.size * ring.size, dtype=np.int64)
    count = 0
    for p in changed:
        for off in ring:
            q = p + off
            if img[q] and not scratch[q]:
                scratch[q] = 1
                found[count] = q
                count += 1
    for i in range(count):
        scratch[found[i]] = 0
    return found[:count]
