"""Transforms keep image and targets aligned, and update normals and intrinsics with geometry."""

import numpy as np
import pytest
import torch

from pag.data.sample import make_sample, validate_sample
from pag.data.transforms import (
    CenterCrop,
    Compose,
    HorizontalFlip,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    crop,
)
from pag.errors import DataError


def coordinate_sample(h=6, w=8):
    """Every map encodes its pixel's coordinates, so misalignment is visible."""
    v, u = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    image = np.stack([u * 10, v * 10, np.zeros_like(u)], -1).astype(np.uint8)
    normals = np.zeros((h, w, 3), np.float32)
    normals[..., 0], normals[..., 2] = 0.6, -0.8
    normals[0, 0] = 0  # one invalid pixel
    return make_sample(
        "s",
        image,
        semantic=(u + w * v) % 7,
        depth=(1.0 + u + 100 * v).astype(np.float32),
        normals=normals,
        boundary=(u == 3),
        instance=(u + w * v).astype(np.int32),
        intrinsics=np.array([[10.0, 0, 3.0], [0, 10.0, 2.5], [0, 0, 1]]),
    )


def test_flip_mirrors_every_map_negates_normal_x_and_cx():
    s = coordinate_sample()
    f = HorizontalFlip()(s)
    assert torch.equal(f["depth"][:, 0], s["depth"][:, -1])
    assert torch.equal(f["semantic"], s["semantic"].flip(-1))
    assert torch.equal(f["instance"], s["instance"].flip(-1))
    assert torch.equal(f["boundary"][0, :, 8 - 1 - 3], torch.ones(6, dtype=torch.uint8))
    assert f["normals"][0, 1, 0] == pytest.approx(-0.6) and f["normals"][2, 1, 0] == pytest.approx(
        -0.8
    )
    assert (f["normals"][:, 0, -1] == 0).all()  # invalid stays invalid
    assert f["intrinsics"][0, 2] == pytest.approx(8 - 3.0)
    # a 3-D point and its mirror image project to mirrored pixel positions
    k, kf = s["intrinsics"], f["intrinsics"]
    x, z = 0.37, 2.0
    assert (k[0, 0] * x / z + k[0, 2]) + (kf[0, 0] * -x / z + kf[0, 2]) == pytest.approx(8.0)
    g = HorizontalFlip()(f)
    for key in ("image", "semantic", "depth", "normals", "boundary", "instance", "intrinsics"):
        assert torch.equal(g[key], s[key]), key
    validate_sample(f)


def test_crop_aligns_targets_shifts_principal_point_and_pads_with_ignore():
    s = coordinate_sample()
    c = crop(s, 1, 2, 3, 4)
    assert c["image"].shape == (3, 3, 4)
    assert c["depth"][0, 0] == s["depth"][1, 2] and c["instance"][0, 2, 3] == s["instance"][0, 3, 5]
    assert c["intrinsics"][0, 2] == pytest.approx(1.0) and c["intrinsics"][1, 2] == pytest.approx(
        1.5
    )
    p = crop(s, -1, 6, 3, 4)  # one row above, two columns right of the image
    assert p["semantic"][0].tolist() == [255] * 4
    assert p["semantic"][1, :2].tolist() == s["semantic"][0, 6:].tolist()
    assert p["semantic"][1, 2:].tolist() == [255, 255]
    assert (p["depth"][:, 2:] == 0).all() and (p["normals"][:, 0] == 0).all()
    assert p["image"].shape == (3, 3, 4)


def test_random_crop_is_reproducible_with_a_generator():
    s = coordinate_sample()
    a = RandomCrop((3, 3), torch.Generator().manual_seed(1))(s)
    b = RandomCrop((3, 3), torch.Generator().manual_seed(1))(s)
    assert torch.equal(a["depth"], b["depth"])
    top, left = int(a["depth"][0, 0].item()) // 100, int(a["depth"][0, 0].item() - 1) % 100
    assert a["intrinsics"][0, 2] == pytest.approx(3.0 - left)
    assert a["intrinsics"][1, 2] == pytest.approx(2.5 - top)


def test_center_crop_and_resize():
    s = coordinate_sample()
    c = CenterCrop((2, 4))(s)
    assert c["depth"][0, 0] == s["depth"][2, 2]
    r = Resize((12, 16))(s)
    assert r["image"].shape == (3, 12, 16) and r["semantic"].shape == (12, 16)
    assert set(r["semantic"].unique().tolist()) <= set(s["semantic"].unique().tolist())
    assert r["depth"][2 * 3, 2 * 5] == s["depth"][3, 5]  # nearest neighbour, no mixing
    np.testing.assert_allclose(r["intrinsics"].numpy(), [[20, 0, 6], [0, 20, 5], [0, 0, 1]])
    validate_sample(r)


def test_normalize_and_compose():
    s = coordinate_sample()
    out = Compose([RandomHorizontalFlip(p=1.0), Normalize()])(s)
    expected = (s["image"].flip(-1)[0, 0, 0] - 0.485) / 0.229
    assert out["image"][0, 0, 0] == pytest.approx(float(expected))
    assert torch.equal(RandomHorizontalFlip(p=0.0)(s)["image"], s["image"])
    with pytest.raises(DataError, match="3 positive stds"):
        Normalize(std=(0.2, 0.0, 0.2))
