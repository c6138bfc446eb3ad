"""Training on joined splits, at an input scale, with scale and quarter-turn augmentation; and
evaluation at that scale with predictions resized back to the image (issue 15's CPU profile)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_real import make_bsds, write_bsds_mat

from pag.data import collate_samples, get_dataset
from pag.data.base import JoinedSplits
from pag.data.sample import make_sample
from pag.data.transforms import Normalize, RandomRotate90, RandomScale, Resize, rescale
from pag.errors import DataError
from pag.models.losses import boundary_loss
from pag.params import Augmentation, load_profile
from pag.pipeline.plan import load_plan, run_params
from pag.training.data import AugmentedSplit, SampleCache
from pag.training.evaluate import at_image_size, model_input
from pag.training.run_params import RunParams, validate_run_params


@pytest.fixture
def bsds_root(tmp_path):
    make_bsds(tmp_path / "bsds500")
    return tmp_path


def test_a_downscaled_boundary_keeps_every_line_pixel_covered():
    boundary = torch.zeros(1, 8, 8, dtype=torch.uint8)
    boundary[0, :, 3] = 1  # a vertical line in column 3
    sample = make_sample("x", torch.zeros(8, 8, 3, dtype=torch.uint8).numpy(), boundary=boundary)
    half = Resize((4, 4))(sample)
    # column 3 falls in output column 1 (input columns 2-3): marked in every row, nowhere else
    expected = torch.zeros(1, 4, 4, dtype=torch.uint8)
    expected[0, :, 1] = 1
    assert torch.equal(half["boundary"], expected)
    # nearest would have kept columns 0, 2, 4, 6 and lost the line
    assert half["boundary"].dtype == torch.uint8


def test_rescale_rounds_sizes_and_is_identity_at_one():
    sample = make_sample("x", np.zeros((321, 481, 3), np.uint8), boundary=np.zeros((1, 321, 481)))
    assert rescale(sample, 1.0) is sample
    assert tuple(rescale(sample, 0.5)["image"].shape) == (3, 160, 240)  # round(160.5) = 160
    assert tuple(rescale(sample, 0.5)["boundary"].shape) == (1, 160, 240)


def test_one_choice_draws_no_random_number():
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    sample = make_sample("x", np.zeros((4, 6, 3), np.uint8), boundary=np.zeros((1, 4, 6)))
    RandomScale([1.0], 1.0, generator=generator)(sample)
    RandomRotate90([0], generator=generator)(sample)
    assert torch.equal(generator.get_state(), state)


def test_quarter_turns_rotate_image_and_targets_together_and_refuse_normals():
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    boundary = np.zeros((2, 4, 6), np.uint8)
    boundary[:, 0, 5] = 1  # top-right corner
    sample = make_sample("x", image, boundary=boundary)
    turned = RandomRotate90([1])(sample)  # counter-clockwise: top-right goes to top-left
    assert tuple(turned["image"].shape) == (3, 6, 4)
    assert turned["boundary"][:, 0, 0].tolist() == [1, 1]
    assert int(turned["boundary"].sum()) == 2
    assert torch.equal(turned["image"], torch.rot90(sample["image"], 1, dims=(-2, -1)))
    normals = np.zeros((4, 6, 3), np.float32)
    normals[..., 2] = 1
    with pytest.raises(DataError, match="normals"):
        RandomRotate90([1])(make_sample("x", image, normals=normals))


def test_joined_splits_read_both_in_order(bsds_root):
    joined = get_dataset("bsds500", bsds_root, split=["train", "val"])
    assert isinstance(joined, JoinedSplits)
    train = get_dataset("bsds500", bsds_root, split="train")
    val = get_dataset("bsds500", bsds_root, split="val")
    assert len(joined) == len(train) + len(val) == 3
    assert joined.split == "train+val"
    ids = [joined.load(i)["id"] for i in range(len(joined))]
    assert ids == [train.load(0)["id"], train.load(1)["id"], val.load(0)["id"]]
    with pytest.raises(IndexError):
        joined.load(3)


def test_images_with_different_annotator_counts_batch_and_train(bsds_root):
    """The real release has 4 to 9 annotators per image: a batch of such images must train
    on their agreement (the fixtures had 5 everywhere, and training on real files failed)."""
    from fixtures_real import BSDS_DATA, bsds_annotations

    segments, boundaries = bsds_annotations(5, 4, seed=2092)
    path = bsds_root / "bsds500" / BSDS_DATA / "groundTruth" / "train" / "2092.mat"
    write_bsds_mat(path, segments[:3], boundaries[:3])  # 3 annotators here, 5 on the other
    dataset = get_dataset("bsds500", bsds_root, split=["train", "val"])
    split = AugmentedSplit(dataset, (4, 4), {"boundary": None}, seed=0, epoch=0)
    batch = collate_samples([split[i] for i in range(3)])
    assert tuple(batch["boundary"].shape) == (3, 1, 4, 4)
    first = dataset.load(0)["boundary"].float().mean(0)
    assert set(np.unique(batch["boundary"][0].numpy())) <= set(np.unique(first.numpy()))
    logits = torch.zeros(3, 1, 4, 4, requires_grad=True)
    boundary_loss(logits, batch["boundary"]).backward()
    assert torch.isfinite(logits.grad).all()


def test_the_sample_cache_returns_what_reading_returns(bsds_root):
    dataset = get_dataset("bsds500", bsds_root, split="train")
    cache = SampleCache(dataset, ("image", "boundary"))
    for _ in range(2):
        for index in range(len(dataset)):
            cached = cache.validated(index)
            read = dataset.validated(index)
            assert set(cached) == {"image", "boundary"}
            assert torch.equal(cached["image"], read["image"])
            assert torch.equal(cached["boundary"], read["boundary"])
    assert len(cache._kept) == len(dataset)
    small = SampleCache(dataset, ("image",), limit=1)
    small.validated(0)
    assert small._kept == {}  # past the limit: read each time
    augmented = [
        AugmentedSplit(source, (4, 4), {"boundary": None}, seed=1, epoch=2)[0]
        for source in (dataset, cache)
    ]
    assert all(torch.equal(augmented[0][k], augmented[1][k]) for k in ("image", "boundary"))


def test_predictions_come_back_at_the_image_size():
    image = torch.rand(3, 21, 31)
    x = model_input(image, Normalize(), 0.5)
    assert tuple(x.shape) == (1, 3, 10, 16)  # round(10.5) = 10, round(15.5) = 16
    normals = torch.randn(1, 3, 10, 16)
    output = {
        "pred": {"boundary": torch.randn(1, 1, 10, 16), "normals": normals},
        "aux": {"ponder": torch.full((1, 1, 10, 16), 3.0)},
    }
    full = at_image_size(output, (21, 31))
    assert tuple(full["pred"]["boundary"].shape) == (1, 1, 21, 31)
    assert torch.allclose(full["pred"]["normals"].norm(dim=1), torch.ones(1, 21, 31), atol=1e-5)
    assert torch.equal(full["aux"]["ponder"], torch.full((1, 1, 21, 31), 3.0))
    assert at_image_size(full, (21, 31)) is full


def _run(**extra):
    return {
        "name": "r",
        "dataset": "bsds500",
        "tasks": {"boundary": None},
        "input_size": [8, 8],
        "training": {"epochs": 1, "batch_size": 2, "lr": 0.1},
        **extra,
    }


def test_new_input_keys_at_their_defaults_leave_params_and_hash_as_before():
    plain = validate_run_params(_run(), "run.yaml")
    assert "input_scale" not in plain.resolved() and "augmentation" not in plain.resolved()
    assert plain.resolved()["train_split"] == "train"
    explicit = validate_run_params(_run(input_scale=1.0, augmentation=None), "run.yaml")
    assert explicit.digest() == plain.digest()
    scaled = validate_run_params(_run(input_scale=0.5), "run.yaml")
    assert scaled.resolved()["input_scale"] == 0.5 and scaled.digest() != plain.digest()
    reread = RunParams.model_validate(scaled.resolved())
    assert reread.digest() == scaled.digest()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"train_split": ["train", "train"]}, "train_split must list distinct splits"),
        ({"input_scale": 0}, "input_scale"),
        ({"augmentation": {"scales": [0.01]}}, r"scales must lie in \[0.1, 4\]"),
        ({"augmentation": {"rotations": [45]}}, "augmentation.rotations"),
    ],
)
def test_bad_input_keys_are_refused_by_name(extra, message):
    with pytest.raises(Exception, match=message):
        validate_run_params(_run(**extra), "run.yaml")


def test_rotations_are_refused_with_normals():
    run = _run(augmentation={"rotations": [0, 90]})
    run["dataset"], run["tasks"] = "synthetic", {"normals": None}
    with pytest.raises(Exception, match="normals would need rotating"):
        validate_run_params(run, "run.yaml")


def test_the_cpu_profile_passes_its_input_keys_to_every_run_and_tracks_them():
    profile = load_profile("params/bsds500-cpu.yaml")
    params = run_params(profile, "pag-0.5-s1")
    assert params["train_split"] == ["train", "val"]
    assert params["input_scale"] == 1.0  # the pilot's choice; set, so tracked
    assert params["augmentation"]["rotations"] == [0, 90, 180, 270]
    plan = load_plan("bsds500-cpu")
    train = plan.job("train-pag-0.5-s1")
    assert {"train_split", "input_scale", "augmentation"} <= set(train.params)
    synthetic = load_plan("synthetic").job("train-dense-s0")
    assert not {"train_split", "input_scale", "augmentation"} & set(synthetic.params)


def test_augmentation_defaults_change_nothing():
    assert Augmentation().scales == [1.0] and Augmentation().rotations == [0]


def test_resolved_params_keep_their_key_order():
    """Checkpoints pickle the resolved params: their key order is part of a checkpoint's
    bytes, and so of the digest a fine-tune records of its starting weights."""
    params = validate_run_params(_run(input_scale=0.5), "run.yaml")
    keys = list(params.resolved())
    assert keys[:6] == ["name", "experiment", "dataset", "data_root", "train_split", "tasks"]
    assert keys[-1] == "input_scale"
