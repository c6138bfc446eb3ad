"""The real BSDS500 release (`../shared/data/bsds500`, the official archive's layout): every
image and every annotator's ground truth read through the loader, and the facts measured on
them asserted. Skipped when the folder is absent (it is never copied into the repository)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from faults import pag_cli

from pag.data import get_dataset
from pag.data.bsds500 import boundaries_of

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.skipif(
    not (DATA_ROOT / "bsds500").is_dir(), reason="the real BSDS500 is not beside the checkout"
)
SPLITS = {"train": 200, "val": 100, "test": 200}


@pytest.fixture(scope="module")
def every_sample() -> dict[str, list[dict]]:
    """Each split's samples, without the images' pixels (sizes kept)."""
    samples = {}
    for split in SPLITS:
        dataset = get_dataset("bsds500", DATA_ROOT, split=split)
        samples[split] = [
            {
                "id": sample["id"],
                "image_size": tuple(sample["image"].shape[-2:]),
                "boundary": sample["boundary"].numpy(),
                "instance": sample["instance"].numpy(),
            }
            for sample in (dataset.load(i) for i in range(len(dataset)))
        ]
    return samples


def test_the_splits_hold_200_100_200_distinct_images(every_sample):
    assert {split: len(samples) for split, samples in every_sample.items()} == SPLITS
    ids = [s["id"] for samples in every_sample.values() for s in samples]
    assert len(set(ids)) == 500


def test_every_image_has_four_to_nine_annotators(every_sample):
    """Measured: 3 images with 4 annotators, 345 with 5, 114 with 6, 30 with 7, 7 with 8 and 1
    with 9 (2,696 annotator maps in all)."""
    counts = Counter(s["boundary"].shape[0] for v in every_sample.values() for s in v)
    assert dict(counts) == {4: 3, 5: 345, 6: 114, 7: 30, 8: 7, 9: 1}


def test_boundary_maps_are_binary_at_the_images_size_portrait_or_landscape(every_sample):
    orientations = Counter()
    for samples in every_sample.values():
        for s in samples:
            assert s["boundary"].shape[1:] == s["image_size"] == s["instance"].shape[1:]
            assert set(np.unique(s["boundary"])) <= {0, 1}
            orientations[s["image_size"]] += 1
    assert orientations == {(321, 481): 348, (481, 321): 152}


def test_boundaries_are_the_thinned_seg2bdry_of_the_segmentations(every_sample):
    """The relation that holds on these files: each annotator's Boundaries is the benchmark's
    seg2bdry of their Segmentation, thinned (`boundaries_of`); not the plain 4-neighbour
    change map (which is wider on every map)."""
    for samples in every_sample.values():
        for s in samples:
            for boundary, segments in zip(s["boundary"], s["instance"], strict=True):
                assert np.array_equal(boundary.astype(bool), boundaries_of(segments)), s["id"]


def test_data_check_passes_on_the_real_files():
    result = pag_cli(["data", "check", "bsds500", "--data-root", DATA_ROOT])
    assert result.code == 0, result.err
    assert "bsds500: ok (500 samples checked" in result.out


def test_fetch_from_the_real_folder_installs_a_checked_copy(tmp_path):
    args = ["data", "fetch", "bsds500", "--root", tmp_path, "--from", DATA_ROOT / "bsds500"]
    result = pag_cli(args)
    assert result.code == 0, result.err
    assert "installed bsds500 from" in result.out and "(500 samples checked)" in result.out
    assert pag_cli(args).out.startswith("bsds500 is installed from")
    check = pag_cli(["data", "check", "bsds500", "--root", tmp_path])
    assert check.code == 0 and "500 samples checked" in check.out
