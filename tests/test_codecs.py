"""Encodings, the sample contract, atomic writes and the data root."""

import numpy as np
import pytest
import torch

from pag.data.codecs import (
    decode_depth,
    decode_normals,
    encode_depth,
    encode_normals,
    read_image,
    write_png,
)
from pag.data.sample import collate_samples, make_sample, validate_sample
from pag.errors import DataError
from pag.fileio import atomic_write, file_digest
from pag.paths import data_root


def test_depth_round_trip_and_invalid_codes():
    depth = np.array([[0.0, 1.0], [2.5, np.nan]])
    raw = encode_depth(depth, scale=512, invalid=65535)
    assert raw.tolist() == [[65535, 512], [1280, 65535]]
    np.testing.assert_array_equal(decode_depth(raw, 512, 65535), [[0, 1.0], [2.5, 0]])
    assert encode_depth(np.array([[0.001]]), 1000, 0).tolist() == [[1]]
    with pytest.raises(ValueError, match="encodable range"):
        encode_depth(np.array([[200.0]]), 512, 65535)
    # the Stanford authors also drop raw values <= 1
    assert decode_depth(np.array([[1, 2]], np.uint16), 512, 65535, min_raw=2).tolist() == [
        [0, 2 / 512]
    ]


def test_normals_round_trip_within_quantisation_and_invalid_is_128():
    n = np.array([[[0.0, 0.0, -1.0], [0.6, -0.8, 0.0]]])
    rgb = encode_normals(n, valid=np.array([[True, False]]))
    assert rgb.tolist() == [[[128, 128, 0], [128, 128, 128]]]
    decoded, valid = decode_normals(rgb)
    assert valid.tolist() == [[True, False]]
    np.testing.assert_allclose(decoded[0, 0], [0.0039, 0.0039, -1.0], atol=1e-3)
    assert (decoded[0, 1] == 0).all()


def test_png_round_trip_keeps_dtype(tmp_path):
    rng = np.random.default_rng(0)
    for array, mode in (
        (rng.integers(0, 65535, (5, 7), dtype=np.uint16), "I;16"),
        (rng.integers(0, 255, (5, 7, 3), dtype=np.uint8), "RGB"),
        (rng.integers(0, 255, (5, 7), dtype=np.uint8), "L"),
    ):
        write_png(tmp_path / "x.png", array)
        back = read_image(tmp_path / "x.png", mode=mode)
        assert back.dtype == array.dtype
        np.testing.assert_array_equal(back, array)


def test_read_image_names_the_file_and_the_problem(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.png: file not found"):
        read_image(tmp_path / "nothere.png")
    write_png(tmp_path / "gray.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"gray\.png: expected an RGB image, got PIL mode L"):
        read_image(tmp_path / "gray.png", mode="RGB")
    data = (tmp_path / "gray.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.png: cannot decode image"):
        read_image(tmp_path / "cut.png")


def _sample(h=4, w=5):
    return make_sample(
        "x",
        np.zeros((h, w, 3), np.uint8),
        semantic=np.zeros((h, w), np.uint8),
        depth=np.ones((h, w), np.float32),
        normals=np.tile(np.array([0, 0, -1.0], np.float32), (h, w, 1)),
        boundary=np.zeros((h, w), bool),
        instance=np.ones((h, w), np.int32),
        intrinsics=np.eye(3),
    )


def test_make_sample_layout_and_validation():
    s = _sample()
    assert s["image"].shape == (3, 4, 5) and s["normals"].shape == (3, 4, 5)
    assert s["boundary"].shape == (1, 4, 5) and s["instance"].dtype == torch.int32
    validate_sample(s, num_classes=3)
    bad = dict(s, semantic=torch.full((4, 5), 7))
    with pytest.raises(DataError, match=r"'semantic' has labels \[7\] outside 0..2"):
        validate_sample(bad, num_classes=3)
    with pytest.raises(DataError, match=r"'depth' is \(4, 4\), image is \(4, 5\)"):
        validate_sample(dict(s, depth=torch.ones(4, 4)))
    with pytest.raises(DataError, match="'normals' are not unit vectors"):
        validate_sample(dict(s, normals=torch.ones(3, 4, 5)))
    with pytest.raises(DataError, match="'depth' must be finite"):
        validate_sample(dict(s, depth=torch.full((4, 5), float("nan"))))
    with pytest.raises(DataError, match="unknown sample keys"):
        validate_sample(dict(s, label=1))


def test_collate_stacks_equal_shapes_and_lists_the_rest():
    a, b = _sample(), _sample()
    b["boundary"] = torch.zeros(3, 4, 5, dtype=torch.uint8)  # three annotators
    batch = collate_samples([a, b])
    assert batch["image"].shape == (2, 3, 4, 5)
    assert isinstance(batch["boundary"], list) and batch["id"] == ["x", "x"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"partial")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with atomic_write(target) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new"
    assert file_digest(target, "md5") == "22af645d1859cb5ca6da0c484f1f37ea"


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("PAG_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "cli") == tmp_path / "cli"
    assert data_root(None) == tmp_path / "env"
    monkeypatch.delenv("PAG_DATA")
    assert data_root(None).name == "data"


def test_write_bytes_atomic_creates_folders_and_leaves_nothing_on_failure(tmp_path):
    from pag.fileio import write_bytes_atomic

    write_bytes_atomic(tmp_path / "a" / "b" / "x.bin", b"data", durable=False)
    assert (tmp_path / "a" / "b" / "x.bin").read_bytes() == b"data"
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "inside").write_text("keep")
    with pytest.raises(OSError):
        write_bytes_atomic(tmp_path / "dir", b"data")  # cannot replace a non-empty folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "dir"]
