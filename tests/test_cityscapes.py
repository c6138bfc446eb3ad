"""Cityscapes loader against a tiny tree unzipped from the official packages' formats."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from fixtures_real import (
    CS_CAMERA,
    CS_FRAMES,
    CS_HEIGHT,
    CS_WIDTH,
    make_cityscapes,
    truncate_file,
    write_png,
)

from pag.data import CheckReport, dataset_class, validate_sample
from pag.data.cityscapes import LABEL_TO_TRAIN_ID, Cityscapes, train_ids
from pag.errors import DataError

BASELINE = CS_CAMERA["extrinsic"]["baseline"]
FX = CS_CAMERA["intrinsic"]["fx"]


@pytest.fixture
def cityscapes(tmp_path):
    return make_cityscapes(tmp_path / "cityscapes")


def gt_file(root, split, index, kind):
    city, frame = CS_FRAMES[split][index]
    return root / "gtFine" / split / city / f"{city}_{frame}_gtFine_{kind}.png"


def test_registered_under_its_name():
    assert dataset_class("cityscapes") is Cityscapes
    assert Cityscapes.tasks == ("semantic",)
    assert len(Cityscapes.class_names) == 19


def test_frames_in_city_then_name_order(cityscapes):
    dataset = Cityscapes(cityscapes, "train")
    ids = [dataset[i]["id"] for i in range(len(dataset))]
    assert ids == ["aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000313"]


def test_label_ids_map_to_train_ids(cityscapes):
    semantic = Cityscapes(cityscapes, "val")[0]["semantic"]
    # label ids 7 (road), 26 (car), 33 (bicycle), 9 (parking: ignored), 0 (void), 23 (sky)
    assert semantic[0].tolist() == [0, 13, 18, 255, 255, 10]
    assert semantic.dtype == torch.int64


def test_train_id_table_matches_cityscapesscripts():
    """The 19 trained label ids and their order, as in cityscapesscripts' labels.py."""
    assert list(LABEL_TO_TRAIN_ID) == [
        7,
        8,
        11,
        12,
        13,
        17,
        19,
        20,
        21,
        22,
        23,
        24,
        25,
        26,
        27,
        28,
        31,
        32,
        33,
    ]
    assert list(LABEL_TO_TRAIN_ID.values()) == list(range(19))
    every_id = np.arange(34, dtype=np.uint8)[None]
    ignored = [i for i in range(34) if train_ids(every_id)[0, i] == 255]
    assert ignored == [0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30]
    assert Cityscapes.class_names[13] == "car" and Cityscapes.class_names[18] == "bicycle"


def test_instances_keep_only_object_ids(cityscapes):
    instance = Cityscapes(cityscapes, "train")[0]["instance"]
    assert instance.shape == (1, CS_HEIGHT, CS_WIDTH) and instance.dtype == torch.int32
    # 26001, 26002: two cars; 24: a crowd of persons; 7: road; 0: void; 33000: a bicycle
    assert instance[0, 0].tolist() == [26001, 26002, 0, 0, 0, 33000]
    assert instance[0, 1:].eq(0).all()


def test_depth_from_disparity_and_camera(cityscapes):
    depth = Cityscapes(cityscapes, "train")[0]["depth"]
    # PNG values 0, 1, 257, 513, 129, 25601 -> disparity -, 0, 1, 2, 0.5, 100 pixels
    expected = [0.0, 0.0, BASELINE * FX, BASELINE * FX / 2, BASELINE * FX * 2, BASELINE * FX / 100]
    np.testing.assert_allclose(depth[0].numpy(), expected, rtol=1e-6)
    assert depth[0, 2].item() == pytest.approx(473.57485, rel=1e-6)


def test_intrinsics_from_camera_json(cityscapes):
    k = Cityscapes(cityscapes, "val")[0]["intrinsics"]
    intrinsic = CS_CAMERA["intrinsic"]
    expected = [
        [intrinsic["fx"], 0, intrinsic["u0"]],
        [0, intrinsic["fy"], intrinsic["v0"]],
        [0, 0, 1],
    ]
    np.testing.assert_allclose(k.numpy(), expected, rtol=1e-6)


def test_without_optional_packages_only_image_semantic_instance(tmp_path):
    root = make_cityscapes(tmp_path / "cityscapes", camera=False, disparity=False)
    sample = Cityscapes(root, "test")[0]
    assert set(sample) == {"id", "image", "semantic", "instance"}


def test_camera_without_disparity_gives_intrinsics_but_no_depth(tmp_path):
    root = make_cityscapes(tmp_path / "cityscapes", disparity=False)
    sample = Cityscapes(root, "val")[0]
    assert "intrinsics" in sample and "depth" not in sample


def test_disparity_without_camera_is_a_layout_error(tmp_path):
    root = make_cityscapes(tmp_path / "cityscapes", camera=False)
    with pytest.raises(DataError, match=r"disparity/train: depth needs .* camera/train/"):
        Cityscapes(root, "train")


def test_every_sample_satisfies_the_contract(cityscapes):
    for split in Cityscapes.splits:
        dataset = Cityscapes(cityscapes, split)
        for index in range(len(dataset)):
            validate_sample(dataset[index], num_classes=dataset.num_classes)


@pytest.mark.parametrize("kind", ["labelIds", "instanceIds"])
def test_image_without_gtfine_names_the_file(cityscapes, kind):
    path = gt_file(cityscapes, "train", 1, kind)
    path.unlink()
    with pytest.raises(DataError, match=re.escape(f"{path.name}: missing")):
        Cityscapes(cityscapes, "train")


def test_missing_camera_json_names_the_file(cityscapes):
    city, frame = CS_FRAMES["val"][0]
    (cityscapes / "camera" / "val" / city / f"{city}_{frame}_camera.json").unlink()
    with pytest.raises(DataError, match=re.escape(f"{city}_{frame}_camera.json: missing")):
        Cityscapes(cityscapes, "val")


def test_broken_camera_json_names_the_file(cityscapes):
    city, frame = CS_FRAMES["val"][0]
    path = cityscapes / "camera" / "val" / city / f"{city}_{frame}_camera.json"
    path.write_text(json.dumps({"intrinsic": {"fx": 1.0}}))
    with pytest.raises(DataError, match=re.escape(f"{path.name}: expected JSON")):
        Cityscapes(cityscapes, "val")[0]


def test_truncated_png_names_the_file(cityscapes):
    path = gt_file(cityscapes, "val", 0, "instanceIds")
    truncate_file(path, keep=0.5)
    dataset = Cityscapes(cityscapes, "val")
    with pytest.raises(DataError, match=re.escape(path.name)):
        dataset[0]


def test_label_png_of_another_size_names_the_file(cityscapes):
    path = gt_file(cityscapes, "val", 0, "labelIds")
    write_png(path, np.zeros((CS_HEIGHT + 1, CS_WIDTH), dtype=np.uint8))
    with pytest.raises(DataError, match=re.escape(f"{path.name}: is ")):
        Cityscapes(cityscapes, "val")[0]


def test_wrong_layout_names_the_folder(tmp_path):
    root = tmp_path / "cityscapes"
    (root / "leftImg8bit_trainvaltest" / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"cityscapes/leftImg8bit/train: folder not found"):
        Cityscapes(root, "train")


def test_empty_split_names_the_folder(cityscapes):
    for path in (cityscapes / "leftImg8bit" / "test").rglob("*.png"):
        path.unlink()
    with pytest.raises(DataError, match=r"leftImg8bit/test: no \*_leftImg8bit\.png images"):
        Cityscapes(cityscapes, "test")


def test_check_passes_on_a_good_fixture(cityscapes, monkeypatch):
    monkeypatch.setattr(Cityscapes, "expected_counts", {s: len(v) for s, v in CS_FRAMES.items()})
    report = CheckReport("cityscapes", cityscapes)
    Cityscapes.check(cityscapes, report)
    assert report.problems == []
    assert report.checked == sum(len(v) for v in CS_FRAMES.values())


def test_check_holds_the_real_counts(cityscapes):
    report = CheckReport("cityscapes", cityscapes)
    Cityscapes.check(cityscapes, report)
    assert report.problems == [
        "train: 3 images, expected 2975",
        "val: 1 images, expected 500",
        "test: 1 images, expected 1525",
    ]


def test_check_reports_every_image_without_gtfine(cityscapes, monkeypatch):
    monkeypatch.setattr(Cityscapes, "expected_counts", {s: len(v) for s, v in CS_FRAMES.items()})
    first, second = (
        gt_file(cityscapes, "train", 0, "labelIds"),
        gt_file(cityscapes, "train", 2, "instanceIds"),
    )
    first.unlink()
    second.unlink()
    report = CheckReport("cityscapes", cityscapes)
    Cityscapes.check(cityscapes, report)
    text = "\n".join(report.problems)
    assert f"{first.name}: missing" in text and f"{second.name}: missing" in text


def test_fetch_spec_is_manual_and_names_the_packages():
    manual = Cityscapes.fetch_spec.manual
    assert not Cityscapes.fetch_spec.files
    for package in ("gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip",
                    "camera_trainvaltest.zip", "disparity_trainvaltest.zip"):  # fmt: skip
        assert package in manual
    assert "https://www.cityscapes-dataset.com/downloads/" in manual
