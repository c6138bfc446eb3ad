"""BSDS500 loader against a tiny extracted BSR tree with v5 groundTruth .mat files."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch
from fixtures_real import (
    BSDS_ANNOTATORS,
    BSDS_DATA,
    BSDS_IMAGES,
    flip_bytes,
    make_bsds,
    truncate_file,
    write_bsds_mat,
)

from pag.data import CheckReport, collate_samples, dataset_class, validate_sample
from pag.data.bsds500 import BSDS500
from pag.errors import DataError


@pytest.fixture
def bsds(tmp_path):
    root = tmp_path / "bsds500"
    return root, make_bsds(root)


def gt_path(root, split, image_id):
    return root / BSDS_DATA / "groundTruth" / split / f"{image_id}.mat"


def image_path(root, split, image_id):
    return root / BSDS_DATA / "images" / split / f"{image_id}.jpg"


def test_registered_under_its_name():
    assert dataset_class("bsds500") is BSDS500


def test_splits_list_jpgs_in_name_order_and_skip_other_files(bsds):
    root, _truth = bsds
    for split, images in BSDS_IMAGES.items():
        dataset = BSDS500(root, split)
        ids = [dataset[i]["id"] for i in range(len(dataset))]
        assert ids == sorted(image_id for image_id, _h, _w in images)  # Thumbs.db ignored


def test_one_boundary_and_segment_map_per_annotator(bsds):
    root, truth = bsds
    dataset = BSDS500(root, "val")
    sample = dataset[0]
    segments, boundaries = truth[sample["id"]]
    assert sample["boundary"].shape == (BSDS_ANNOTATORS, 4, 6)
    assert sample["boundary"].dtype == torch.uint8
    np.testing.assert_array_equal(sample["boundary"].numpy(), boundaries.astype(np.uint8))
    np.testing.assert_array_equal(sample["instance"].numpy(), segments.astype(np.int32))
    assert set(np.unique(sample["boundary"].numpy())) <= {0, 1}
    assert not np.array_equal(boundaries[0], boundaries[1])  # annotators stay apart


def test_portrait_images_are_not_transposed(bsds):
    root, truth = bsds
    sample = next(s for s in BSDS500(root, "train") if s["id"] == "2092")
    assert sample["image"].shape == (3, 5, 4)
    np.testing.assert_array_equal(sample["instance"].numpy(), truth["2092"][0])


def test_every_sample_satisfies_the_contract_and_batches(bsds):
    root, _truth = bsds
    for split in BSDS500.splits:
        dataset = BSDS500(root, split)
        for index in range(len(dataset)):
            validate_sample(dataset[index])
    batch = collate_samples([BSDS500(root, "train")[i] for i in range(2)])
    assert isinstance(batch["boundary"], list)  # portrait and landscape do not stack


def test_missing_ground_truth_names_the_mat_file(bsds):
    root, _truth = bsds
    gt_path(root, "train", "2092").unlink()
    with pytest.raises(DataError, match=r"groundTruth/train/2092\.mat: missing"):
        BSDS500(root, "train")


def test_mat_without_groundtruth_names_the_file(bsds):
    root, _truth = bsds
    scipy.io.savemat(gt_path(root, "val", "3096"), {"somethingElse": np.zeros((2, 2))})
    with pytest.raises(
        DataError, match=r"3096\.mat: expected MATLAB variable\(s\) \['groundTruth'\]"
    ):
        BSDS500(root, "val")[0]


def test_annotator_struct_without_boundaries_names_the_file(bsds):
    root, _truth = bsds
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = {"Segmentation": np.ones((4, 6), dtype=np.uint16)}
    scipy.io.savemat(gt_path(root, "val", "3096"), {"groundTruth": cell})
    with pytest.raises(DataError, match=r"3096\.mat: annotator 0 has fields"):
        BSDS500(root, "val")[0]


def test_annotator_size_differing_from_the_image_names_the_file(bsds):
    root, _truth = bsds
    segments = np.ones((2, 6, 4), dtype=np.uint16)  # transposed against the 4 x 6 image
    write_bsds_mat(gt_path(root, "val", "3096"), segments, segments == 0)
    with pytest.raises(DataError, match=r"3096\.mat: is 6 x 4, but the image 3096\.jpg is 4 x 6"):
        BSDS500(root, "val")[0]


def test_annotators_of_different_sizes_name_the_file(bsds):
    root, _truth = bsds
    cell = np.empty((1, 2), dtype=object)
    cell[0, 0] = {"Segmentation": np.ones((4, 6), np.uint16), "Boundaries": np.zeros((4, 6), bool)}
    cell[0, 1] = {"Segmentation": np.ones((4, 5), np.uint16), "Boundaries": np.zeros((4, 5), bool)}
    scipy.io.savemat(gt_path(root, "val", "3096"), {"groundTruth": cell})
    with pytest.raises(DataError, match=r"3096\.mat: annotator maps differ in size"):
        BSDS500(root, "val")[0]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_mat_names_the_file(bsds, damage):
    root, _truth = bsds
    path = gt_path(root, "test", "100007")
    if damage == "truncate":
        truncate_file(path, keep=0.5)
    else:
        flip_bytes(path, offset=128, count=64)  # the first variable's tag and header
    with pytest.raises(DataError, match=r"100007\.mat"):
        BSDS500(root, "test")[0]


def test_truncated_jpeg_names_the_file(bsds):
    root, _truth = bsds
    truncate_file(image_path(root, "val", "3096"), keep=0.5)
    with pytest.raises(DataError, match=r"3096\.jpg"):
        BSDS500(root, "val")[0]


def test_wrong_layout_names_the_folder(tmp_path):
    root = tmp_path / "bsds500"
    (root / "BSDS500" / "data" / "images" / "train").mkdir(parents=True)  # no BSR/ level
    with pytest.raises(DataError, match=r"BSR/BSDS500/data/images/train: folder not found"):
        BSDS500(root, "train")


def test_empty_split_names_the_folder(bsds):
    root, _truth = bsds
    for image_id, _h, _w in BSDS_IMAGES["test"]:
        image_path(root, "test", image_id).unlink()
    with pytest.raises(DataError, match=r"images/test: no \.jpg images"):
        BSDS500(root, "test")


def test_check_passes_on_a_good_fixture(bsds, monkeypatch):
    root, _truth = bsds
    monkeypatch.setattr(BSDS500, "expected_counts", {s: len(v) for s, v in BSDS_IMAGES.items()})
    report = CheckReport("bsds500", root)
    BSDS500.check(root, report)
    assert report.problems == []
    assert report.checked == sum(len(v) for v in BSDS_IMAGES.values())


def test_check_holds_the_real_counts(bsds):
    root, _truth = bsds
    report = CheckReport("bsds500", root)
    BSDS500.check(root, report)
    assert any("images/train: 2 images, expected 200" in p for p in report.problems)
    assert any("images/val: 1 images, expected 100" in p for p in report.problems)


def test_check_reports_a_broken_fixture(bsds, monkeypatch):
    root, _truth = bsds
    monkeypatch.setattr(BSDS500, "expected_counts", {s: len(v) for s, v in BSDS_IMAGES.items()})
    truncate_file(gt_path(root, "train", "100075"), keep=0.3)
    gt_path(root, "val", "3096").unlink()
    report = CheckReport("bsds500", root)
    BSDS500.check(root, report)
    text = "\n".join(report.problems)
    assert "100075.mat" in text and "3096.mat: missing" in text


def test_boundaries_of_a_segmentation_by_hand():
    """seg2bdry marks the pixels where the segment changes to the right or below, at the pixel
    or its half-pixel neighbour: an L along the top and left of the lower-right region (the last
    row and column copy their half-pixel neighbours). Thinning then removes the L's corner,
    whose arms stay 8-connected."""
    from pag.data.bsds500 import boundaries_of

    seg = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 2, 2], [1, 1, 2, 2]])
    expected = np.array([[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 0], [0, 1, 0, 0]], bool)
    assert np.array_equal(boundaries_of(seg), expected)
    assert not boundaries_of(np.ones((5, 7), int)).any()  # one segment: no boundary
