"""Stanford-2D-3D loader: exact decoding on synthetic fixtures in both on-disk layouts, the
authors' crop geometry, errors naming the file at fault, and the two real panoramas."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pag.data import CheckReport, dataset_class, get_dataset, validate_sample
from pag.data.codecs import decode_normals
from pag.data.sample import make_sample
from pag.data.stanford2d3d import (
    AREAS,
    AUTHORS_AREA_COUNTS,
    CLASS_NAMES,
    MISSING_INDEX,
    SPLIT_AREAS,
    AuthorsCrop,
    Stanford2D3D,
    authors_crop,
)
from pag.errors import DataError, PagError

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "stanford2d3d-sample"
A = 0.5 / 127.5  # a channel value of 128 decodes to this

# ------------------------------------------------------------------------------------------
# fixture writers (the exact on-disk formats)
# ------------------------------------------------------------------------------------------


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array) if mode is None else Image.fromarray(array, mode=mode)
    img.save(path, compress_level=1)


def index_to_rgb(index: np.ndarray) -> np.ndarray:
    index = np.asarray(index, dtype=np.int64)
    return np.stack([(index >> 16) & 255, (index >> 8) & 255, index & 255], axis=-1).astype(
        np.uint8
    )


def make_labels() -> list[str]:
    """70,000 entries so that indices use all three bytes; a few named entries."""
    labels = ["<UNK>_0_<UNK>_0_0"] + [f"clutter_{i}_office_1_3" for i in range(1, 70000)]
    labels[1] = "wall_1_office_1_3"
    labels[2] = "wall_2_office_1_3"
    labels[9] = "<UNK>_1_<UNK>_0_0"
    labels[258] = "beam_1_hallway_2_3"  # RGB (0, 1, 2)
    labels[66051] = "table_7_office_1_3"  # RGB (1, 2, 3)
    return labels


# A 2 x 4 panorama with hand-computed decodings.
SEM_INDEX = np.array([[1, 2, 258, 66051], [0, MISSING_INDEX, 9, 5]])
SEM_EXPECTED = np.array([[11, 11, 1, 10], [255, 255, 255, 0]])
INSTANCE_EXPECTED = np.array([[1, 2, 258, 66051], [0, 0, 0, 5]])
DEPTH_RAW = np.array([[65535, 0, 1, 2], [512, 1024, 65534, 700]], dtype=np.uint16)
DEPTH_EXPECTED = np.array([[0, 0, 0, 2 / 512], [1.0, 2.0, 65534 / 512, 700 / 512]])
NORMALS_RGB = np.array(
    [
        [[128, 128, 128], [128, 255, 128], [0, 128, 128], [200, 128, 128]],
        [[255, 255, 128], [128, 128, 0], [255, 128, 128], [128, 0, 128]],
    ],
    dtype=np.uint8,
)


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


ZERO = [0.0, 0.0, 0.0]
NORMALS_EXPECTED = np.array(
    [
        # #808080 missing; +y; -x; |n| = 0.57 < 0.8 -> invalid
        [ZERO, _unit([A, 1, A]), _unit([-1, A, A]), ZERO],
        # |n| = 1.41 > 1.1 -> invalid; -z; +x; -y
        [ZERO, _unit([A, A, -1]), _unit([1, A, A]), _unit([A, -1, A])],
    ]
)
RGB = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3) * 10


def write_official_pano(
    root: Path, area: str, key: str, rgb, depth_raw, normals_rgb, sem_index=None, sem_rgb=None
):
    pano = root / area / "pano"
    name = "{key}_frame_equirectangular_domain_{suffix}.png"
    write_png(pano / "rgb" / name.format(key=key, suffix="rgb"), rgb)
    write_png(pano / "depth" / name.format(key=key, suffix="depth"), depth_raw)
    write_png(pano / "normal" / name.format(key=key, suffix="normals"), normals_rgb)
    sem_rgb = index_to_rgb(sem_index) if sem_rgb is None else sem_rgb
    write_png(pano / "semantic" / name.format(key=key, suffix="semantic"), sem_rgb)


def official_path(root: Path, area: str, key: str, modality: str) -> Path:
    folder, suffix = {
        "rgb": ("rgb", "rgb"),
        "depth": ("depth", "depth"),
        "normals": ("normal", "normals"),
        "semantic": ("semantic", "semantic"),
    }[modality]
    return root / area / "pano" / folder / f"{key}_frame_equirectangular_domain_{suffix}.png"


@pytest.fixture(scope="module")
def labels_json(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "semantic_labels.json"
    path.write_text(json.dumps(make_labels()))
    return path


def make_official(root: Path, labels_json: Path) -> Path:
    """One 2 x 4 panorama per area; area_3 has two, written in reverse name order."""
    (root / "assets").mkdir(parents=True)
    shutil.copy(labels_json, root / "assets" / "semantic_labels.json")
    for area in AREAS:
        keys = (
            ["camera_bbb_office_2", "camera_aaa_WC_1"]
            if area == "area_3"
            else [f"camera_{area[5:]}x_office_1"]
        )
        for key in keys:
            write_official_pano(root, area, key, RGB, DEPTH_RAW, NORMALS_RGB, SEM_INDEX)
    return root


@pytest.fixture
def official(tmp_path, labels_json) -> Path:
    return make_official(tmp_path / "stanford2d3d", labels_json)


PROC_RGB = (np.arange(3 * 4 * 3, dtype=np.uint8).reshape(3, 4, 3) * 7).astype(np.uint8)
PROC_SEM = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 12, 255]], dtype=np.uint8)
PROC_DEPTH = np.array([[65535, 1, 2, 436], [4581, 512, 0, 3], [1000, 2000, 3000, 65534]], np.uint16)
PROC_NORMALS = np.full((3, 4, 3), 128, dtype=np.uint8)
PROC_NORMALS[0, 0] = [128, 0, 128]  # -y (floor in the authors' files)
PROC_NORMALS[1, 1] = [128, 128, 255]  # +z


def write_processed(split_dir: Path, key: str, rgb=PROC_RGB, depth=PROC_DEPTH, sem=PROC_SEM):
    write_png(split_dir / f"{key}_rgb.png", rgb)
    write_png(split_dir / f"{key}_depth.png", depth)
    write_png(split_dir / f"{key}_normals.png", PROC_NORMALS)
    write_png(split_dir / f"{key}_semantic.png", sem)


@pytest.fixture
def processed(tmp_path) -> Path:
    root = tmp_path / "stanford2d3d"
    for split in ("train", "val"):
        for key in ("b002", "a001"):
            write_processed(root / "processed" / split, key)
    return root


# ------------------------------------------------------------------------------------------
# official layout
# ------------------------------------------------------------------------------------------


def test_official_decodes_exactly(official):
    ds = Stanford2D3D(official, "val")
    assert ds.layout == "official"
    sample = ds[0]
    assert sample["id"] == "area_3/camera_aaa_WC_1"
    np.testing.assert_allclose(sample["image"].numpy(), RGB.transpose(2, 0, 1) / 255, atol=1e-7)
    assert sample["semantic"].dtype == torch.int64
    np.testing.assert_array_equal(sample["semantic"].numpy(), SEM_EXPECTED)
    assert sample["instance"].dtype == torch.int32
    np.testing.assert_array_equal(sample["instance"][0].numpy(), INSTANCE_EXPECTED)
    np.testing.assert_array_equal(sample["depth"].numpy(), DEPTH_EXPECTED.astype(np.float32))
    normals = sample["normals"].numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(normals, NORMALS_EXPECTED, atol=1e-6)
    np.testing.assert_allclose(normals[0, 1], [0.0039215, 0.9999846, 0.0039215], atol=1e-6)
    assert "intrinsics" not in sample
    validate_sample(sample, num_classes=13)


def test_official_semantic_byte_order_is_r_most_significant(official):
    sample = Stanford2D3D(official, "val").load(0)
    # RGB (1, 2, 3) = 66051 = table; (0, 1, 2) = 258 = beam; reversed bytes would differ.
    assert sample["semantic"][0, 3] == CLASS_NAMES.index("table")
    assert sample["semantic"][0, 2] == CLASS_NAMES.index("beam")


def test_official_splits_select_the_authors_areas_sorted(official):
    val = Stanford2D3D(official, "val")
    train = Stanford2D3D(official, "train")
    assert [e.sample_id for e in val.entries] == [
        "area_3/camera_aaa_WC_1",
        "area_3/camera_bbb_office_2",
        "area_4/camera_4x_office_1",
    ]
    assert [e.sample_id.split("/")[0] for e in train.entries] == list(SPLIT_AREAS["train"])
    assert val.group_counts == {"area_3": 2, "area_4": 1}
    assert len(train) == 5


def test_official_rgba_png_alpha_is_dropped(official):
    key = "camera_aaa_WC_1"
    rgba = np.concatenate([RGB, np.full((2, 4, 1), 7, np.uint8)], axis=-1)
    write_png(official_path(official, "area_3", key, "rgb"), rgba, mode="RGBA")
    sample = Stanford2D3D(official, "val").load(0)
    np.testing.assert_allclose(sample["image"].numpy(), RGB.transpose(2, 0, 1) / 255, atol=1e-7)


def test_official_index_beyond_labels_is_an_error(official):
    key = "camera_aaa_WC_1"
    bad = SEM_INDEX.copy()
    bad[0, 0] = 70000  # one past the list, and not #0D0D0D
    path = official_path(official, "area_3", key, "semantic")
    write_png(path, index_to_rgb(bad))
    with pytest.raises(DataError, match=r"70000") as err:
        Stanford2D3D(official, "val").load(0)
    assert str(path) in str(err.value)


def test_official_missing_modality_names_the_file(official):
    key = "camera_bbb_office_2"
    depth = official_path(official, "area_3", key, "depth")
    depth.unlink()
    with pytest.raises(DataError) as err:
        Stanford2D3D(official, "val")
    assert str(depth) in str(err.value)


def test_official_missing_rgb_is_found_from_other_modalities(official):
    rgb = official_path(official, "area_4", "camera_4x_office_1", "rgb")
    rgb.unlink()
    with pytest.raises(DataError) as err:
        Stanford2D3D(official, "val")
    assert str(rgb) in str(err.value)


def test_official_missing_labels_json(official):
    path = official / "assets" / "semantic_labels.json"
    path.unlink()
    with pytest.raises(DataError, match=r"semantic_labels\.json") as err:
        Stanford2D3D(official, "val")
    assert str(path) in str(err.value)


def test_official_unknown_class_in_labels_json(official):
    path = official / "assets" / "semantic_labels.json"
    path.write_text(json.dumps(["<UNK>_0_<UNK>_0_0", "lamp_1_office_1_3"]))
    with pytest.raises(DataError, match="lamp") as err:
        Stanford2D3D(official, "val")
    assert str(path) in str(err.value)


def test_official_missing_area_and_modality_folder(official):
    shutil.rmtree(official / "area_4")
    with pytest.raises(DataError, match="area_4: folder not found"):
        Stanford2D3D(official, "val")
    Stanford2D3D(official, "train")  # other split unaffected
    shutil.rmtree(official / "area_6" / "pano" / "normal")
    with pytest.raises(DataError) as err:
        Stanford2D3D(official, "train")
    assert str(official / "area_6" / "pano" / "normal") in str(err.value)


def test_official_nested_archive_folder_gets_a_hint(official):
    (official / "area_3").rename(official / "tmp")
    (official / "area_3_no_xyz").mkdir()
    (official / "tmp").rename(official / "area_3_no_xyz" / "area_3")
    with pytest.raises(DataError, match="move area_3 up one level"):
        Stanford2D3D(official, "val")


def test_official_truncated_png_names_the_file(official):
    path = official_path(official, "area_3", "camera_aaa_WC_1", "semantic")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ds = Stanford2D3D(official, "val")
    with pytest.raises(DataError) as err:
        ds.load(0)
    assert str(path) in str(err.value)


def test_official_check_reports_counts_against_the_authors(official):
    report = CheckReport("stanford2d3d", official)
    Stanford2D3D.check(official, report)
    assert report.checked == 8
    notes = report.notes
    for area in AREAS:
        found = 2 if area == "area_3" else 1
        expected = AUTHORS_AREA_COUNTS[area]
        assert any(
            f"{area} " in n and f"has {found} panoramas" in n and f"uses {expected}" in n
            for n in notes
        ), area
    assert sum("not 2048 x 4096" in n for n in notes) == 2  # one per split
    assert len(notes) == 9 and report.ok  # notes are not failures


def test_official_check_reports_decode_failures(official):
    path = official_path(official, "area_1", "camera_1x_office_1", "depth")
    path.write_bytes(b"not a png")
    report = CheckReport("stanford2d3d", official)
    Stanford2D3D.check(official, report)
    failures = report.problems
    assert len(failures) == 1 and str(path) in failures[0] and failures[0].startswith("train[0]")


# ------------------------------------------------------------------------------------------
# the authors' crop
# ------------------------------------------------------------------------------------------


def coded_panorama(height: int = 2048, width: int = 4096):
    """Official-format arrays whose values encode row and column (labels: indices 1, 2 =
    wall, 3 = clutter of `make_labels`)."""
    r = np.arange(height)[:, None]
    c = np.arange(width)[None, :]
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0] = r % 256
    rgb[..., 1] = c % 256
    rgb[..., 2] = (r // 256) * 16 + c // 256
    depth_raw = (2 + 16 * r + c % 16).astype(np.uint16)
    sem_rgb = np.zeros((height, width, 3), np.uint8)
    sem_rgb[..., 2] = (r // 64 + c // 512) % 3 + 1
    theta = 2 * np.pi * c / width
    tilt = 0.2 * np.sin(2 * np.pi * r / height)  # |n| stays in [1, 1.02]: all valid
    normals_rgb = np.empty((height, width, 3), np.uint8)
    for channel, value in enumerate((np.cos(theta), tilt, np.sin(theta))):
        normals_rgb[..., channel] = np.rint(value * 127.5 + 127.5)
    return rgb, depth_raw, sem_rgb, normals_rgb


def check_default_crop(sample, rgb, normals_rgb=None) -> None:
    """`sample` = authors_crop(a 2048 x 4096 `coded_panorama`): compare with hand-derived
    values: rows 2 * (160 + i), columns 2 * j, image averaged over each 2 x 2 block."""
    for key in ("image", "semantic", "depth", "instance"):
        assert tuple(sample[key].shape[-2:]) == (704, 2048), key
    # image: 2 x 2 area average of rows 320..321, columns 0..1 of the original
    np.testing.assert_allclose(
        sample["image"][:, 0, 0].numpy(), np.array([64.5, 0.5, 16.0]) / 255, atol=1e-7
    )
    expected_image = (
        rgb[320:1728].astype(np.float64).reshape(704, 2, 2048, 2, 3).mean(axis=(1, 3)) / 255
    )
    np.testing.assert_allclose(
        sample["image"].numpy(), expected_image.transpose(2, 0, 1), atol=1e-6
    )
    # depth, labels, normals: nearest = the top-left pixel of each 2 x 2 block
    assert sample["depth"][0, 0] == pytest.approx((2 + 16 * 320) / 512)
    assert sample["depth"][703, 2047] == pytest.approx((2 + 16 * 1726 + 4094 % 16) / 512)
    rows = 2 * (np.arange(704) + 160)
    cols = 2 * np.arange(2048)
    expected_depth = (2 + 16 * rows[:, None] + cols[None, :] % 16) / 512
    np.testing.assert_array_equal(sample["depth"].numpy(), expected_depth.astype(np.float32))
    expected_index = (rows[:, None] // 64 + cols[None, :] // 512) % 3 + 1
    np.testing.assert_array_equal(sample["semantic"].numpy(), np.where(expected_index == 3, 0, 11))
    np.testing.assert_array_equal(sample["instance"][0].numpy(), expected_index)
    if normals_rgb is not None:
        expected_normals, _ = decode_normals(normals_rgb[rows][:, cols])
        np.testing.assert_array_equal(
            sample["normals"].numpy(), expected_normals.transpose(2, 0, 1)
        )


def test_authors_crop_default_geometry():
    """2048 x 4096 -> 704 x 2048 = rows 160..863 of the 2x downsample (in memory)."""
    rgb, depth_raw, sem_rgb, _ = coded_panorama()
    index = sem_rgb[..., 2].astype(np.int64)  # indices < 256: blue byte only
    sample = make_sample(
        "area_3/camera_x_office_1",
        rgb,
        depth=depth_raw / 512,
        semantic=np.where(index == 3, 0, 11),
        instance=index,
    )
    out = authors_crop(sample)
    check_default_crop(out, rgb)
    assert out["id"] == sample["id"]
    assert sample["image"].shape == (3, 2048, 4096)  # input untouched


def test_authors_crop_on_small_official_fixture(official):
    """End to end on disk with a small geometry: 8 x 4 -> factor 2 -> rows 1..2 of 4."""
    key = "camera_aaa_WC_1"
    rgb, depth_raw, sem_rgb, normals_rgb = coded_panorama(8, 4)
    write_official_pano(official, "area_3", key, rgb, depth_raw, normals_rgb, sem_rgb=sem_rgb)
    ds = Stanford2D3D(official, "val", transform=AuthorsCrop(factor=2, top=1, height=2))
    out = ds[0]
    assert out["id"] == f"area_3/{key}"
    # kept: original rows 2 and 4 (nearest), blocks of rows 2..3 and 4..5 (image)
    np.testing.assert_array_equal(
        out["depth"].numpy(), (2 + 16 * np.array([[2, 2], [4, 4]]) + [[0, 2], [0, 2]]) / 512
    )
    # red = row, green = column: block means (2.5, 0.5) (2.5, 2.5) (4.5, 0.5) (4.5, 2.5)
    np.testing.assert_allclose(out["image"][0].numpy() * 255, [[2.5, 2.5], [4.5, 4.5]], atol=1e-4)
    np.testing.assert_allclose(out["image"][1].numpy() * 255, [[0.5, 2.5], [0.5, 2.5]], atol=1e-4)
    np.testing.assert_array_equal(out["semantic"].numpy(), [[11, 11], [11, 11]])
    np.testing.assert_array_equal(out["instance"][0].numpy(), [[1, 1], [1, 1]])
    expected_normals, _ = decode_normals(normals_rgb[[2, 4]][:, [0, 2]])
    np.testing.assert_array_equal(out["normals"].numpy(), expected_normals.transpose(2, 0, 1))
    validate_sample(out, num_classes=13)


@pytest.mark.slow
def test_authors_crop_full_size_official_panorama_on_disk(tmp_path, labels_json):
    """The default crop end to end on a 2048 x 4096 official-format panorama (~5 s)."""
    root = make_official(tmp_path / "stanford2d3d", labels_json)
    rgb, depth_raw, sem_rgb, normals_rgb = coded_panorama()
    key = "camera_000full_office_9"
    write_official_pano(root, "area_3", key, rgb, depth_raw, normals_rgb, sem_rgb=sem_rgb)
    ds = Stanford2D3D(root, "val", transform=authors_crop)
    assert ds.entries[0].sample_id == f"area_3/{key}"
    sample = ds[0]
    check_default_crop(sample, rgb, normals_rgb)
    validate_sample(sample, num_classes=13)


def test_authors_crop_small_exact():
    image = torch.arange(3 * 8 * 4, dtype=torch.float32).reshape(3, 8, 4)
    depth = torch.arange(32, dtype=torch.float32).reshape(8, 4)
    sample = {"id": "x", "image": image, "depth": depth}
    out = AuthorsCrop(factor=2, top=1, height=2)(sample)
    # pooled rows 1..2 = original rows 2..5; block (rows 2-3, cols 0-1) of channel 0
    assert out["image"][0, 0, 0] == pytest.approx((8 + 9 + 12 + 13) / 4)
    assert out["image"][2, 1, 1] == pytest.approx(64 + (18 + 19 + 22 + 23) / 4)
    assert out["image"].shape == (3, 2, 2)
    np.testing.assert_array_equal(out["depth"].numpy(), [[8, 10], [16, 18]])


def test_authors_crop_rejects_processed_size(processed):
    sample = Stanford2D3D(processed, "val")[0]
    with pytest.raises(DataError, match="authors_crop"):
        authors_crop(sample)


# ------------------------------------------------------------------------------------------
# processed layout
# ------------------------------------------------------------------------------------------


def test_processed_decodes_exactly(processed):
    ds = Stanford2D3D(processed, "val")
    assert ds.layout == "processed"
    assert [e.sample_id for e in ds.entries] == ["val/a001", "val/b002"]
    sample = ds[0]
    assert sample["id"] == "val/a001"
    np.testing.assert_allclose(
        sample["image"].numpy(), PROC_RGB.transpose(2, 0, 1) / 255, atol=1e-7
    )
    np.testing.assert_array_equal(sample["semantic"].numpy(), PROC_SEM.astype(np.int64))
    expected_depth = np.array(
        [
            [0, 0, 2 / 512, 436 / 512],
            [4581 / 512, 1.0, 0, 3 / 512],
            [1000 / 512, 2000 / 512, 3000 / 512, 65534 / 512],
        ]
    )
    np.testing.assert_array_equal(sample["depth"].numpy(), expected_depth.astype(np.float32))
    normals = sample["normals"].numpy()
    np.testing.assert_allclose(normals[:, 0, 0], _unit([A, -1, A]), atol=1e-6)
    np.testing.assert_allclose(normals[:, 1, 1], _unit([A, A, 1]), atol=1e-6)
    assert (normals[:, 2, 3] == 0).all() and (np.linalg.norm(normals, axis=0) > 0).sum() == 2
    assert "instance" not in sample
    validate_sample(sample, num_classes=13)


def test_processed_label_out_of_range_names_the_file(processed):
    path = processed / "processed" / "val" / "a001_semantic.png"
    sem = PROC_SEM.copy()
    sem[0, 0] = 13
    write_png(path, sem)
    with pytest.raises(DataError, match=r"\[13\]") as err:
        Stanford2D3D(processed, "val").load(0)
    assert str(path) in str(err.value)


def test_processed_missing_modality_names_the_file(processed):
    path = processed / "processed" / "val" / "b002_normals.png"
    path.unlink()
    with pytest.raises(DataError) as err:
        Stanford2D3D(processed, "val")
    assert str(path) in str(err.value)


def test_processed_truncated_png_names_the_file(processed):
    path = processed / "processed" / "train" / "a001_depth.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        Stanford2D3D(processed, "train").load(0)
    assert str(path) in str(err.value)


def test_processed_shape_mismatch_names_the_file(processed):
    path = processed / "processed" / "val" / "a001_depth.png"
    write_png(path, np.full((3, 5), 600, np.uint16))
    with pytest.raises(DataError, match="3 x 5") as err:
        Stanford2D3D(processed, "val").load(0)
    assert str(path) in str(err.value)


def test_processed_wrong_modes_are_errors(processed):
    path = processed / "processed" / "val" / "a001_semantic.png"
    write_png(path, np.stack([PROC_SEM] * 3, axis=-1))  # RGB labels
    with pytest.raises(DataError, match="expected a L image") as err:
        Stanford2D3D(processed, "val").load(0)
    assert str(path) in str(err.value)


def test_processed_empty_and_missing_split(tmp_path):
    root = tmp_path / "stanford2d3d"
    (root / "processed" / "val").mkdir(parents=True)
    with pytest.raises(DataError, match="empty split"):
        Stanford2D3D(root, "val")
    with pytest.raises(DataError, match=r"processed/train: folder not found"):
        Stanford2D3D(root, "train")


def test_processed_check_notes_counts_and_size(processed):
    report = CheckReport("stanford2d3d", processed)
    Stanford2D3D.check(processed, report)
    assert report.checked == 4
    assert any("train (train) has 2 panoramas" in p and "uses 1070" in p for p in report.notes)
    assert any("val (val) has 2 panoramas" in p and "uses 343" in p for p in report.notes)
    assert sum("not 704 x 2048" in p for p in report.notes) == 2
    assert len(report.notes) == 4 and report.ok


# ------------------------------------------------------------------------------------------
# layout detection, registry, fetch instructions
# ------------------------------------------------------------------------------------------


def test_wrong_layout_is_an_error(tmp_path):
    root = tmp_path / "stanford2d3d"
    (root / "pano" / "rgb").mkdir(parents=True)
    with pytest.raises(DataError, match="no Stanford-2D-3D layout found") as err:
        Stanford2D3D(root, "val")
    assert str(root) in str(err.value) and "area_N/pano" in str(err.value)
    assert "processed/{train,val}" in str(err.value)


def test_both_layouts_need_an_explicit_choice(official):
    write_processed(official / "processed" / "val", "v1")
    with pytest.raises(DataError, match="layout='official' or layout='processed'"):
        Stanford2D3D(official, "val")
    assert len(Stanford2D3D(official, "val", layout="official")) == 3
    assert len(Stanford2D3D(official, "val", layout="processed")) == 1


def test_explicit_layout_mismatch_and_bad_options(processed):
    with pytest.raises(DataError, match=r"semantic_labels\.json"):
        Stanford2D3D(processed, "val", layout="official")
    with pytest.raises(PagError, match="unknown layout"):
        Stanford2D3D(processed, "val", layout="matlab")
    with pytest.raises(PagError, match="no split 'test'"):
        Stanford2D3D(processed, "test")


def test_registered_and_reachable_by_name(processed):
    assert dataset_class("stanford2d3d") is Stanford2D3D
    ds = get_dataset("stanford2d3d", root=processed.parent, split="val", layout="processed")
    assert isinstance(ds, Stanford2D3D) and len(ds) == 2
    assert ds.num_classes == 13
    assert Stanford2D3D.tasks == ("semantic", "depth", "normals")


def test_fetch_spec_is_manual_with_exact_instructions():
    spec = Stanford2D3D.fetch_spec
    assert spec.files == ()
    text = spec.manual
    assert text is not None
    for needle in (
        "https://goo.gl/forms/2YSPaO2UKmn5Td5m2",
        "noXYZ",
        "area_5b_no_xyz.tar",
        "stanford2d3d/area_N/pano/rgb/",
        "pano/normal",
        "assets/semantic_labels.json",
        "github.com/alexsax/2D-3D-Semantics",
        "https://github.com/alexsax/2D-3D-Semantics/wiki/Checksum-Values-for-Data",
    ):
        assert needle in text, needle


def test_split_table_matches_the_authors():
    assert sum(AUTHORS_AREA_COUNTS[a] for a in SPLIT_AREAS["train"]) == 1070
    assert sum(AUTHORS_AREA_COUNTS[a] for a in SPLIT_AREAS["val"]) == 343
    assert sorted(SPLIT_AREAS["train"] + SPLIT_AREAS["val"]) == sorted(AREAS)


# ------------------------------------------------------------------------------------------
# the two real panoramas (authors' processed format), skipped when absent
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict[str, dict]:
    if not (SAMPLE_DIR / "val001_rgb.png").is_file():
        pytest.skip(f"real Stanford-2D-3D sample not found at {SAMPLE_DIR}")
    root = tmp_path_factory.mktemp("real") / "stanford2d3d"
    split_dir = root / "processed" / "val"
    split_dir.mkdir(parents=True)
    for path in sorted(SAMPLE_DIR.glob("val00*_*.png")):
        (split_dir / path.name).symlink_to(path)
    ds = Stanford2D3D(root, "val")
    assert ds.layout == "processed" and len(ds) == 2
    return {s["id"]: s for s in (ds[0], ds[1])}


def test_real_ids_shape_and_contract(real):
    assert sorted(real) == ["val/val001", "val/val002"]
    for sample in real.values():
        for key in ("image", "semantic", "depth", "normals"):
            assert tuple(sample[key].shape[-2:]) == (704, 2048), key
        validate_sample(sample, num_classes=13)


def test_real_depth_metres_and_invalid_fraction(real):
    depth = real["val/val001"]["depth"]
    valid = depth > 0
    assert 0.0010 < 1 - valid.float().mean().item() < 0.0025  # measured 0.163 %
    assert 0.84 < depth[valid].min().item() < 0.86  # measured 0.8516 m (raw 436)
    assert 31.0 < depth.max().item() < 31.5  # measured 31.277 m
    depth2 = real["val/val002"]["depth"]
    assert depth2[depth2 > 0].min().item() > 0.7 and depth2.max().item() < 32


def test_real_normals_unit_where_valid(real):
    normals = real["val/val001"]["normals"]
    norm = normals.norm(dim=0)
    valid = norm > 0
    assert 0.9975 < valid.float().mean().item() < 0.9990  # measured 99.837 %
    assert torch.allclose(norm[valid], torch.ones(()), atol=1e-5)
    # valid normals and valid depth coincide on this panorama
    assert torch.equal(valid, real["val/val001"]["depth"] > 0)


def test_real_labels_in_range(real):
    for sample in real.values():
        labels = sample["semantic"]
        assert labels.min() >= 0 and labels.max() <= 12
        assert len(labels.unique()) >= 11  # 12 of the 13 classes appear in each


def _row_height_spread(sample, cls: int, top: int) -> float:
    """Coefficient of variation across rows of the per-row median of depth * |sin(elev)|
    over class `cls`, placing row r at row r + top of a 1024-row, 180-degree grid."""
    depth = sample["depth"].numpy()
    mask = (sample["semantic"].numpy() == cls) & (depth > 0)
    elevation = np.radians((512 - (np.arange(704) + top) - 0.5) * 180 / 1024)
    height = depth * np.abs(np.sin(elevation))[:, None]
    per_row = np.array([np.median(height[r][mask[r]]) for r in range(704) if mask[r].sum() > 20])
    return float(per_row.std() / per_row.mean())


def test_real_rows_fit_the_authors_crop_geometry(real):
    """Evidence for AuthorsCrop: the camera height above the floor (and below the ceiling)
    is constant across rows only when row r lies at row r + 160 of 1024."""
    floor, ceiling = CLASS_NAMES.index("floor"), CLASS_NAMES.index("ceiling")
    for sample in real.values():

        def spread(top, sample=sample):
            return _row_height_spread(sample, floor, top) + _row_height_spread(sample, ceiling, top)

        assert spread(160) < 0.05
        assert spread(130) > 0.15 and spread(190) > 0.15


def test_real_normals_are_in_a_per_column_local_frame(real):
    """The demo files' normals turn with the column (-360 deg / 2048 per column) on walls,
    so they are the authors' local normals, not global ones (which are constant on a wall)."""
    wall = CLASS_NAMES.index("wall")
    for sample in real.values():
        n = sample["normals"].numpy()
        mask = (sample["semantic"].numpy() == wall) & (np.linalg.norm(n, axis=0) > 0)
        azimuth = np.degrees(np.arctan2(n[0], n[2]))
        per_col = np.array(
            [
                np.median(azimuth[:, c][mask[:, c]]) if mask[:, c].sum() > 50 else np.nan
                for c in range(2048)
            ]
        )
        step = 32
        diff = (per_col[step:] - per_col[:-step] + 180) % 360 - 180
        slope = np.nanmedian(diff) / step
        assert slope == pytest.approx(-360 / 2048, abs=0.01)
        # vertical axis: floor normals decode to y = -1
        valid = np.linalg.norm(n, axis=0) > 0
        floor = (sample["semantic"].numpy() == CLASS_NAMES.index("floor")) & valid
        assert np.median(n[1][floor]) < -0.95
