"""NYU-Depth-v2 loader against tiny fixtures in the real formats (v7.3 .mat, v5 splits and
class mapping, Ladický normal PNGs)."""

from __future__ import annotations

import os
import pickle
import re

import h5py
import numpy as np
import pytest
import torch
from fixtures_real import (
    NYU_FRAMES,
    NYU_KNOWN_MAP,
    NYU_TEST,
    NYU_TRAIN,
    PIX_LAST,
    PIX_OTHER,
    PIX_UNLABELED,
    RAW_FLOOR,
    RAW_LAST,
    RAW_OTHER,
    RAW_WALL,
    flip_bytes,
    make_nyu,
    truncate_file,
)

from pag.data import CheckReport, collate_samples, dataset_class, validate_sample
from pag.data.nyuv2 import (
    FLOOR_CLASS,
    NYU_RGB_INTRINSICS,
    NYUDepthV2,
    decode_ladicky_normals,
)
from pag.errors import DataError
from pag.fileio import file_digest


@pytest.fixture
def nyu(tmp_path):
    return make_nyu(tmp_path / "nyuv2")


def test_fixture_is_a_matlab_v73_file(nyu):
    """The fixture must look like MATLAB's own output, or the other tests prove little."""
    head = nyu.mat_path.read_bytes()[:128]
    assert head.startswith(b"MATLAB 7.3 MAT-file") and head[-2:] == b"IM"
    with h5py.File(nyu.mat_path, "r") as handle:
        assert handle.userblock_size == 512
        assert handle["images"].shape == (NYU_FRAMES, 3, 8, 6)  # N x 3 x W x H, reversed


def test_registered_under_its_name():
    assert dataset_class("nyuv2") is NYUDepthV2


def test_splits_are_one_based_indices_into_the_mat(nyu):
    train, test = NYUDepthV2(nyu.root, "train"), NYUDepthV2(nyu.root, "test")
    assert [train[i]["id"] for i in range(len(train))] == [f"{n:05d}" for n in NYU_TRAIN]
    assert [test[i]["id"] for i in range(len(test))] == [f"{n:05d}" for n in NYU_TEST]
    first_train = NYU_TRAIN[0] - 1  # frame 2 is array index 1
    expected = torch.from_numpy(nyu.images[first_train].transpose(2, 0, 1)).float() / 255
    assert torch.equal(train[0]["image"], expected)


def test_reversed_h5py_axes_are_transposed_back(nyu):
    sample = NYUDepthV2(nyu.root, "test")[1]  # frame 3
    frame = NYU_TEST[1] - 1
    image = (sample["image"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(image, nyu.images[frame])
    np.testing.assert_array_equal(sample["depth"].numpy(), nyu.depths[frame])


def test_raw_labels_map_to_40_classes_with_255_for_unlabeled(nyu):
    semantic = NYUDepthV2(nyu.root, "train")[0]["semantic"]
    assert semantic[PIX_UNLABELED].item() == 255
    assert semantic[PIX_OTHER].item() == NYU_KNOWN_MAP[RAW_OTHER] - 1 == 4
    assert semantic[PIX_LAST].item() == NYU_KNOWN_MAP[RAW_LAST] - 1 == 39
    assert semantic[3, 3].item() == NYU_KNOWN_MAP[RAW_WALL] - 1 == 0
    assert semantic[5, 3].item() == NYU_KNOWN_MAP[RAW_FLOOR] - 1 == FLOOR_CLASS


def test_depth_in_metres_with_zero_invalid_and_the_nyu_intrinsics(nyu):
    sample = NYUDepthV2(nyu.root, "train")[0]
    frame = NYU_TRAIN[0] - 1
    assert sample["depth"][PIX_UNLABELED].item() == 0.0
    assert sample["depth"][2, 5].item() == pytest.approx(float(nyu.depths[frame, 2, 5]))
    k = sample["intrinsics"]
    assert k[0, 0].item() == pytest.approx(518.8579, abs=1e-4)
    assert k[1, 1].item() == pytest.approx(519.4696, abs=1e-4)
    assert k[0, 2].item() == pytest.approx(325.5824, abs=1e-4)
    assert k[1, 2].item() == pytest.approx(253.7362, abs=1e-4)
    assert NYU_RGB_INTRINSICS[2].tolist() == [0.0, 0.0, 1.0]


def test_instances_are_unique_per_raw_class(nyu):
    instance = NYUDepthV2(nyu.root, "train")[0]["instance"]
    assert instance.shape[0] == 1
    assert instance[0][PIX_UNLABELED].item() == 0  # unlabeled
    assert instance[0][PIX_OTHER].item() == 0  # labeled, but no instance
    assert instance[0][PIX_LAST].item() == RAW_LAST * 1000 + 2
    assert instance[0][3, 3].item() == RAW_WALL * 1000 + 1
    assert instance[0][5, 3].item() == RAW_FLOOR * 1000 + 1  # instance 1 of another class


def test_ladicky_normals_axis_and_sign_convention(nyu):
    normals = NYUDepthV2(nyu.root, "train")[0]["normals"]
    floor, wall, facing_right = (
        normals[:, 5, 3],
        normals[:, 3, 3],
        normals[:, PIX_OTHER[0], PIX_OTHER[1]],
    )
    torch.testing.assert_close(floor, torch.tensor([0.0, -1.0, 0.0]), atol=0.01, rtol=0)
    torch.testing.assert_close(wall, torch.tensor([0.0, 0.0, -1.0]), atol=0.01, rtol=0)
    torch.testing.assert_close(facing_right, torch.tensor([1.0, 0.0, 0.0]), atol=0.01, rtol=0)
    assert torch.equal(normals[:, 0, 0], torch.zeros(3))  # grey = invalid
    valid = normals.norm(dim=0) > 0
    torch.testing.assert_close(normals.norm(dim=0)[valid], torch.ones(int(valid.sum())))


def test_decoder_reads_blue_as_x_green_as_y_red_as_z():
    rgb = np.array([[[128, 128, 0], [128, 255, 128], [255, 128, 128]]], dtype=np.uint8)
    normals = decode_ladicky_normals(rgb)
    expected = torch.tensor([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(torch.from_numpy(normals[0]), expected, atol=0.01, rtol=0)


def test_normals_also_found_under_nyu_normals_gt(tmp_path):
    nyu = make_nyu(tmp_path / "nyuv2", normals_layout="nested")
    normals = NYUDepthV2(nyu.root, "test")[0]["normals"]
    torch.testing.assert_close(normals[:, 3, 3], torch.tensor([0.0, 0.0, -1.0]), atol=0.01, rtol=0)


def test_normals_can_be_left_out(tmp_path):
    nyu = make_nyu(tmp_path / "nyuv2", normals_layout="none")
    with pytest.raises(DataError, match="nyu_normals_gt"):
        NYUDepthV2(nyu.root, "train")
    sample = NYUDepthV2(nyu.root, "train", normals=False)[0]
    assert "normals" not in sample and "depth" in sample


def test_every_sample_satisfies_the_contract(nyu):
    for split in NYUDepthV2.splits:
        dataset = NYUDepthV2(nyu.root, split)
        for index in range(len(dataset)):
            validate_sample(dataset[index], num_classes=dataset.num_classes)
    assert dataset.num_classes == 40


def test_dataloader_workers_open_their_own_handle(nyu):
    dataset = NYUDepthV2(nyu.root, "train")
    direct = [dataset[i]["depth"] for i in range(len(dataset))]  # opens a handle here first
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=1, num_workers=2, collate_fn=collate_samples
    )
    loaded = [batch["depth"][0] for batch in loader]
    assert all(torch.equal(a, b) for a, b in zip(direct, loaded, strict=True))
    clone = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(clone[0]["depth"], direct[0])


class _HandleOwner(torch.utils.data.Dataset):
    """Reports which process opened the handle a worker used to load its sample."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        self.dataset[index]
        return self.dataset._handle_pid, os.getpid()


def test_each_worker_process_opens_the_mat_itself(nyu):
    dataset = NYUDepthV2(nyu.root, "train")
    dataset[0]  # the parent now holds a handle that forked workers inherit
    loader = torch.utils.data.DataLoader(
        _HandleOwner(dataset), batch_size=None, num_workers=2, multiprocessing_context="fork"
    )
    pairs = list(loader)
    assert all(opener == worker != os.getpid() for opener, worker in pairs)


def test_missing_labeled_mat_names_the_file(nyu):
    nyu.mat_path.unlink()
    with pytest.raises(DataError, match=r"nyu_depth_v2_labeled\.mat"):
        NYUDepthV2(nyu.root, "train")


def test_truncated_labeled_mat_names_the_file(nyu):
    truncate_file(nyu.mat_path, keep=0.5)
    with pytest.raises(DataError, match=r"nyu_depth_v2_labeled\.mat.*corrupt"):
        NYUDepthV2(nyu.root, "train")


def test_damaged_hdf5_superblock_names_the_file(nyu):
    flip_bytes(nyu.mat_path, offset=512, count=8)  # the HDF5 signature after the userblock
    with pytest.raises(DataError, match=r"nyu_depth_v2_labeled\.mat"):
        NYUDepthV2(nyu.root, "train")


def test_damaged_compressed_frame_names_the_file_on_load(nyu):
    with h5py.File(nyu.mat_path, "r") as handle:
        chunk = handle["images"].id.get_chunk_info(NYU_TRAIN[0] - 1)
    flip_bytes(nyu.mat_path, offset=chunk.byte_offset + 2, count=chunk.size - 4)
    dataset = NYUDepthV2(nyu.root, "train")  # headers are intact
    with pytest.raises(DataError, match=r"nyu_depth_v2_labeled\.mat.*'images'\[1\]"):
        dataset[0]


@pytest.mark.parametrize("name", ["splits.mat", "classMapping40.mat"])
def test_corrupt_v5_mat_names_the_file(nyu, name):
    truncate_file(nyu.root / name, keep=0.4)
    with pytest.raises(DataError, match=re.escape(name)):
        NYUDepthV2(nyu.root, "train")


def test_v5_mat_with_garbage_bytes_names_the_file(nyu):
    path = nyu.root / "classMapping40.mat"
    flip_bytes(path, offset=128, count=200)  # everything after the 128-byte header
    with pytest.raises(DataError, match=r"classMapping40\.mat"):
        NYUDepthV2(nyu.root, "train")


def test_split_index_beyond_the_frames_is_reported(nyu):
    import scipy.io

    scipy.io.savemat(nyu.root / "splits.mat", {"trainNdxs": [[2], [99]], "testNdxs": [[1]]})
    with pytest.raises(DataError, match=r"splits\.mat: index 99 exceeds"):
        NYUDepthV2(nyu.root, "train")


def test_missing_normal_map_names_the_frame(nyu):
    nyu.normal_paths[NYU_TRAIN[1]].unlink()
    with pytest.raises(DataError, match=re.escape(f"{NYU_TRAIN[1]:05d}.png")):
        NYUDepthV2(nyu.root, "train")


def test_truncated_normal_png_names_the_file(nyu):
    truncate_file(nyu.normal_paths[NYU_TRAIN[0]], keep=0.6)
    dataset = NYUDepthV2(nyu.root, "train")
    with pytest.raises(DataError, match=re.escape(f"{NYU_TRAIN[0]:05d}.png")):
        dataset[0]


def _fit_expectations_to_fixture(monkeypatch, nyu):
    """The real counts and md5s cannot come from a 5-frame fixture; everything else can."""
    monkeypatch.setattr(NYUDepthV2, "expected_images", NYU_FRAMES)
    monkeypatch.setattr(
        NYUDepthV2, "expected_split_sizes", {"train": len(NYU_TRAIN), "test": len(NYU_TEST)}
    )
    monkeypatch.setattr(
        NYUDepthV2,
        "expected_md5",
        {
            name: file_digest(nyu.root / name, "md5")
            for name in ("splits.mat", "classMapping40.mat")
        },
    )


def test_check_passes_on_a_good_fixture(nyu, monkeypatch):
    _fit_expectations_to_fixture(monkeypatch, nyu)
    report = CheckReport("nyuv2", nyu.root)
    NYUDepthV2.check(nyu.root, report)
    assert report.problems == []
    assert report.checked == NYU_FRAMES


def test_check_holds_the_real_counts_and_checksums(nyu):
    report = CheckReport("nyuv2", nyu.root)
    NYUDepthV2.check(nyu.root, report)
    text = "\n".join(report.problems)
    assert "expected 1449" in text and "expected 795" in text and "expected 654" in text
    assert "08e3c3aea27130ac7c01ffd739a4535f" in text and "e377c88729dd63af81205ac9a8634a19" in text


def test_check_reports_normals_in_another_convention(tmp_path, monkeypatch):
    nyu = make_nyu(tmp_path / "nyuv2", negate_normals=True)
    _fit_expectations_to_fixture(monkeypatch, nyu)
    report = CheckReport("nyuv2", nyu.root)
    NYUDepthV2.check(nyu.root, report)
    text = "\n".join(report.problems)
    assert "floor normals have mean y" in text and "face the camera" in text


def test_check_reports_missing_and_corrupt_files(nyu, monkeypatch):
    _fit_expectations_to_fixture(monkeypatch, nyu)
    truncate_file(nyu.normal_paths[NYU_TEST[0]], keep=0.5)
    report = CheckReport("nyuv2", nyu.root)
    NYUDepthV2.check(nyu.root, report)
    assert any(f"{NYU_TEST[0]:05d}.png" in problem for problem in report.problems)

    (nyu.root / "splits.mat").unlink()
    report = CheckReport("nyuv2", nyu.root)
    NYUDepthV2.check(nyu.root, report)
    assert len(report.problems) == 1 and "splits.mat: missing" in report.problems[0]


def test_fetch_spec_lists_the_four_downloads():
    files = {f.filename: f for f in NYUDepthV2.fetch_spec.files}
    assert set(files) == {
        "nyu_depth_v2_labeled.mat",
        "splits.mat",
        "classMapping40.mat",
        "nyu_normals_gt.zip",
    }
    assert files["splits.mat"].md5 == "08e3c3aea27130ac7c01ffd739a4535f"
    assert files["splits.mat"].url.startswith("https://raw.githubusercontent.com/VainF/")
    assert files["classMapping40.mat"].md5 == "e377c88729dd63af81205ac9a8634a19"
    assert files["nyu_normals_gt.zip"].extract
    assert files["nyu_depth_v2_labeled.mat"].md5 is None


def test_check_reports_class_names_that_differ(nyu, monkeypatch):
    import scipy.io

    names = np.empty((1, 40), dtype=object)
    names[0, :] = ["floor", "wall", *NYUDepthV2.class_names[2:]]
    map_class = nyu.map_class[None, :].astype(np.float64)
    scipy.io.savemat(nyu.root / "classMapping40.mat", {"mapClass": map_class, "className": names})
    _fit_expectations_to_fixture(monkeypatch, nyu)
    report = CheckReport("nyuv2", nyu.root)
    NYUDepthV2.check(nyu.root, report)
    assert len(report.problems) == 1 and "className" in report.problems[0]


def test_class_mapping_outside_1_to_40_names_the_file(nyu):
    import scipy.io

    map_class = nyu.map_class.copy()
    map_class[7] = 41
    scipy.io.savemat(nyu.root / "classMapping40.mat", {"mapClass": map_class[None, :]})
    with pytest.raises(
        DataError, match=r"classMapping40\.mat: 'mapClass' values must lie in 1\.\.40"
    ):
        NYUDepthV2(nyu.root, "train")
