"""Synthetic scenes: determinism, chunked generation, ground truth correct by construction."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest
import torch

from pag.data import get_dataset, validate_sample
from pag.data.base import CheckReport
from pag.data.codecs import boundaries_from_regions
from pag.data.synthetic import (
    CLASSES,
    SyntheticScenes,
    SynthParams,
    generate,
    render_index,
    split_of,
)
from pag.data.synthetic.scene import CLASS_ID
from pag.data.synthetic.writer import MODALITIES, relative_path, split_counts
from pag.errors import DataError, PagError

PARAMS = SynthParams(seed=7)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate(root / "synthetic", 20, PARAMS, progress=False)
    return root


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_same_seed_gives_byte_identical_files(data_root, tmp_path):
    generate(tmp_path / "again", 20, PARAMS, progress=False)
    assert _files(tmp_path / "again") == _files(data_root / "synthetic")
    again = json.loads((tmp_path / "again" / "manifest.json").read_text())
    first = json.loads((data_root / "synthetic" / "manifest.json").read_text())
    assert again == first


def test_other_seed_gives_other_images(data_root, tmp_path):
    generate(tmp_path / "other", 2, SynthParams(seed=8), progress=False)
    ours = _files(data_root / "synthetic")
    assert (tmp_path / "other" / relative_path(0, "rgb")).read_bytes() != ours[
        relative_path(0, "rgb")
    ]


def test_images_i_to_j_alone_equal_those_of_a_larger_run(data_root, tmp_path):
    generate(tmp_path / "part", 4, PARAMS, start=7, progress=False)
    part, full = _files(tmp_path / "part"), _files(data_root / "synthetic")
    assert len(part) == 4 * len(MODALITIES)
    assert all(full[name] == data for name, data in part.items())


def test_workers_and_chunks_give_the_same_dataset(data_root, tmp_path):
    out = tmp_path / "chunks"
    generate(out, 12, PARAMS, workers=2, progress=False)
    generate(out, 8, PARAMS, start=12, progress=False)  # extends the manifest
    assert _files(out) == _files(data_root / "synthetic")
    assert json.loads((out / "manifest.json").read_text()) == json.loads(
        (data_root / "synthetic" / "manifest.json").read_text()
    )


def test_manifest_records_split_digest_and_generator(data_root):
    manifest = json.loads((data_root / "synthetic" / "manifest.json").read_text())
    assert manifest["params"] == {
        "generator": "pag.synthetic",
        "version": "1",
        "seed": 7,
        "height": 96,
        "width": 128,
        "focal_ratio": 0.8,
    }
    assert split_counts(manifest) == {"train": 16, "val": 2, "test": 2}
    entry = manifest["images"][9]
    assert entry["split"] == "test" and entry["files"]["depth"]["path"] == "test/000009_depth.png"
    assert len(entry["files"]["rgb"]["sha256"]) == 64
    assert manifest["intrinsics"] == [[102.4, 0.0, 64.0], [0.0, 102.4, 48.0], [0.0, 0.0, 1.0]]


def test_split_depends_on_index_only():
    assert [split_of(i) for i in range(10)] == ["train"] * 8 + ["val", "test"]
    assert split_of(1238) == "val" and split_of(99) == "test"


def test_extending_with_other_parameters_is_refused(data_root):
    with pytest.raises(PagError, match=r"seed: 7 there vs 8 now"):
        generate(data_root / "synthetic", 1, SynthParams(seed=8), progress=False)


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="must be even"):
        SynthParams(seed=0, height=95)
    with pytest.raises(ValueError, match="seed"):
        SynthParams(seed=-1)


def _backproject(depth: np.ndarray, k: np.ndarray) -> np.ndarray:
    h, w = depth.shape
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    return np.stack([(u - k[0, 2]) / k[0, 0] * depth, (v - k[1, 2]) / k[1, 1] * depth, depth], -1)


def planar_angles(sample) -> tuple[np.ndarray, np.ndarray]:
    """(mask, degrees) over interior pixels: the angle between the stored normal and the normal
    from central differences of the back-projected depth, where the 3x3 neighbourhood is one
    planar face (same instance, same stored normal, valid depth)."""
    depth, normals = sample["depth"].numpy(), sample["normals"].numpy().transpose(1, 2, 0)
    instance = sample["instance"][0].numpy()
    points = _backproject(depth, sample["intrinsics"].numpy())
    fd = np.cross(points[1:-1, 2:] - points[1:-1, :-2], points[2:, 1:-1] - points[:-2, 1:-1])
    with np.errstate(invalid="ignore"):  # zero vectors where depth is invalid
        fd /= np.linalg.norm(fd, axis=-1, keepdims=True)
    fd *= -np.sign(np.einsum("ijk,ijk->ij", fd, points[1:-1, 1:-1]))[..., None]  # face camera
    h, w = depth.shape
    same = np.ones(fd.shape[:2], dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            window = (slice(1 + dy, h - 1 + dy), slice(1 + dx, w - 1 + dx))
            same &= instance[window] == instance[1:-1, 1:-1]
            same &= (normals[window] == normals[1:-1, 1:-1]).all(-1)
            same &= depth[window] > 0
    cosine = np.clip(np.einsum("ijk,ijk->ij", fd, normals[1:-1, 1:-1]), -1, 1)
    return same, np.degrees(np.arccos(cosine))


def test_normals_agree_with_depth_on_planar_regions(data_root):
    """Normals from central differences of back-projected (decoded, quantised) depth match the
    stored normals within 2 degrees wherever the 3x3 neighbourhood is one planar face."""
    dataset = get_dataset("synthetic", data_root, "train")
    checked = 0
    for index in range(6):
        same, angle = planar_angles(dataset[index])
        assert same.mean() > 0.5, "most of a room image is planar"
        assert angle[same].max() < 2.0, (
            f"image {index}: worst planar angle {angle[same].max():.2f} deg"
        )
        checked += int(same.sum())
    assert checked > 30_000


def test_ground_truth_is_consistent_by_construction():
    for index in range(8):
        r = render_index(PARAMS, index)
        assert (r.boundary == boundaries_from_regions(r.instance)).all()
        # one class per instance; windows are the only invalid depth/normal pixels
        for inst in np.unique(r.instance):
            assert len(np.unique(r.semantic[r.instance == inst])) == 1
        window = r.semantic == CLASS_ID["window"]
        assert ((r.depth == 0) == window).all()
        norm = np.linalg.norm(r.normals, axis=-1)
        np.testing.assert_allclose(norm[~window], 1.0, atol=1e-9)
        assert (norm[window] == 0).all()
        # camera-frame normals face the camera: n . (ray through the pixel) < 0
        h, w = r.depth.shape
        v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
        rays = np.stack([(u - 64) / 102.4, (v - 48) / 102.4, np.ones_like(u)], -1)
        assert (np.einsum("ijk,ijk->ij", r.normals, rays)[~window] < 0).all()
        assert r.depth[~window].min() > 0.5 and r.depth.max() < 12.0


def test_boundaries_are_one_pixel_wide_on_a_hand_computed_case():
    regions = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 3, 3]])
    expected = np.array([[0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(boundaries_from_regions(regions), expected)


def test_every_class_appears_in_every_split_of_200_images():
    present = {split: set() for split in ("train", "val", "test")}
    for index in range(200):
        present[split_of(index)].update(
            np.unique(render_index(SynthParams(seed=0), index).semantic).tolist()
        )
    for split, labels in present.items():
        assert set(range(len(CLASSES))) <= labels, (
            f"{split} lacks {set(range(len(CLASSES))) - labels}"
        )
        assert 255 in labels  # unlabelled clutter exists


def test_loaded_samples_follow_the_contract(data_root):
    for split in ("train", "val", "test"):
        dataset = get_dataset("synthetic", data_root, split)
        sample = dataset[0]
        validate_sample(sample, num_classes=len(CLASSES))
        assert sample["id"] == f"{split}/{dataset.entries[0]['id']}"
        assert sample["boundary"].shape == (1, 96, 128) and sample["boundary"].max() == 1
        assert torch.equal(
            sample["intrinsics"], torch.tensor([[102.4, 0, 64], [0, 102.4, 48], [0, 0, 1]])
        )


def test_decoded_depth_equals_rendered_depth_to_the_encoding_step(data_root):
    sample = get_dataset("synthetic", data_root, "train")[3]
    rendered = render_index(PARAMS, 3)
    np.testing.assert_allclose(sample["depth"].numpy(), rendered.depth, atol=0.5 / 4000 + 1e-6)
    np.testing.assert_array_equal(sample["semantic"].numpy(), rendered.semantic)


def test_check_passes_then_names_a_corrupted_file(data_root, tmp_path):
    report = CheckReport("synthetic", data_root / "synthetic")
    SyntheticScenes.check(data_root / "synthetic", report)
    assert report.ok and report.checked == 20
    copy = tmp_path / "synthetic"
    generate(copy, 2, PARAMS, progress=False)
    target = copy / relative_path(1, "normals")
    target.write_bytes(target.read_bytes()[:100])  # truncated
    report = CheckReport("synthetic", copy)
    SyntheticScenes.check(copy, report)
    # the checksum, then what decoding it says
    assert len(report.problems) == 2 and "000001_normals.png: sha256" in report.problems[0]
    assert "000001_normals.png: cannot decode image (truncated" in report.problems[1]


def test_truncated_file_gives_an_error_naming_it(tmp_path):
    generate(tmp_path / "synthetic", 1, PARAMS, progress=False)
    target = tmp_path / "synthetic" / relative_path(0, "depth")
    target.write_bytes(target.read_bytes()[:200])
    with pytest.raises(DataError, match=r"000000_depth\.png: cannot decode"):
        get_dataset("synthetic", tmp_path, "train")[0]


def test_missing_manifest_or_split_is_a_clear_error(tmp_path):
    (tmp_path / "synthetic").mkdir()
    with pytest.raises(DataError, match=r"manifest\.json: manifest not found"):
        get_dataset("synthetic", tmp_path, "train")
    generate(tmp_path / "synthetic", 2, PARAMS, progress=False)
    with pytest.raises(DataError, match="split 'val' has no images"):
        get_dataset("synthetic", tmp_path, "val")
    with pytest.raises(
        PagError, match=r"no split 'valid'; expected one of \['train', 'val', 'test'\]"
    ):
        get_dataset("synthetic", tmp_path, "valid")


def test_geometry_is_sensible_in_the_metric_sense():
    r = render_index(PARAMS, 0)
    # the floor is below the camera: its camera-frame normal points up, i.e. negative y
    floor = r.semantic == CLASS_ID["floor"]
    assert floor.any() and (r.normals[floor][:, 1] < -0.5).all()
    assert math.isclose(float(np.linalg.norm(r.normals[floor][0])), 1.0, abs_tol=1e-9)


def test_pruned_shadow_test_equals_brute_force():
    """The light-centred projection may only skip rays that no primitive blocks."""
    from pag.data.synthetic.render import _occluded
    from pag.data.synthetic.scene import sample_scene

    for index in range(6):
        scene = sample_scene(np.random.default_rng([3, index]), 48, 64, 51.2)
        rng = np.random.default_rng(index)
        points = rng.uniform([0, 0, 0], scene.room, size=(4000, 3))
        for light, _ in scene.lights:
            fast = _occluded(scene, points, light)
            brute = np.zeros(len(points), dtype=bool)
            for prim in scene.primitives:
                if prim.casts_shadow:
                    brute |= prim.intersect(points, light - points, surface=False).t < 1 - 1e-6
            np.testing.assert_array_equal(fast, brute)
            assert brute.any()


def test_written_files_are_readable_by_others_like_a_plain_open(data_root):
    mask = os.umask(0)
    os.umask(mask)
    for path in [
        data_root / "synthetic" / "manifest.json",
        *sorted((data_root / "synthetic").rglob("*.png"))[:3],
    ]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("images"), r"manifest\.json: images: Field required"),
        (
            lambda m: m.update(params=[]),
            r"manifest\.json: params: Input should be a valid dictionary",
        ),
        (
            lambda m: m["images"][0].pop("split"),
            r"manifest\.json: images\.0\.split: Field required",
        ),
        (lambda m: m["images"][1]["files"].pop("depth"), r"image 000001 lists no \['depth'\]"),
        (
            lambda m: m["images"][0]["files"]["rgb"].update(path="../x.png"),
            r"images\.0\.files\.rgb\.path",
        ),
        (lambda m: m["params"].update(generator="other"), r"params\.generator"),
    ],
)
def test_malformed_manifest_is_a_data_error_naming_the_key(tmp_path, edit, message):
    generate(tmp_path / "synthetic", 2, PARAMS, progress=False)
    path = tmp_path / "synthetic" / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=message):
        get_dataset("synthetic", tmp_path, "train")
    report = CheckReport("synthetic", path.parent)
    SyntheticScenes.check(path.parent, report)
    assert len(report.problems) == 1 and "manifest.json" in report.problems[0]


def test_transforms_keep_depth_and_normals_consistent(data_root):
    """The depth-vs-normals oracle still holds after a flip, a crop and a resize, so the
    transforms move normals and intrinsics consistently with the pixels."""
    from pag.data.transforms import CenterCrop, HorizontalFlip, Resize

    sample = get_dataset("synthetic", data_root, "train")[2]
    for transform in (HorizontalFlip(), CenterCrop((64, 96)), Resize((192, 256))):
        same, angle = planar_angles(transform(sample))
        assert same.sum() > 1000 and np.median(angle[same]) < 1.0, type(transform).__name__
