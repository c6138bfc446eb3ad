"""What the pipeline adds to a training run: profile runs from the CLI, stale run directories
replaced, ImageNet initialisation, the decision parameters' learning rate, fetched weights."""

import io
import subprocess
import sys

import pytest
import torch

from pag.data.synthetic import SynthParams, generate
from pag.errors import ChecksumError, PagError
from pag.models.resnet import resnet
from pag.training import checkpoint, train
from pag.training.optimization import make_optimizer
from pag.training.run_params import validate_run_params

BASE = {
    "name": "run",
    "dataset": "synthetic",
    "tasks": {"semantic": 10, "depth": None},
    "input_size": [40, 56],
    "model": {"depth": 18, "width_multiplier": 0.125, "head_hidden": 8},
    "training": {"epochs": 1, "batch_size": 2, "lr": 0.01, "log_every": 1000},
    "seed": 0,
    "threads": 1,
}


def params(**changes):
    raw = {**BASE, **changes}
    raw["training"] = {**BASE["training"], **changes.get("training", {})}
    return validate_run_params(raw, "test")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate(root / "synthetic", 10, SynthParams(seed=0, height=48, width=64), progress=False)
    return root


def test_a_stale_run_directory_is_replaced_only_when_asked(tmp_path, data_root, caplog):
    run_dir = tmp_path / "run"
    train(params(), run_dir, data_root=data_root, stream=io.StringIO())
    other = params(seed=1)
    with pytest.raises(PagError, match=r"other params \(seed differ"):
        train(other, run_dir, data_root=data_root, stream=io.StringIO())
    train(other, run_dir, data_root=data_root, stream=io.StringIO(), replace_stale=True)
    assert "held a run with other inputs: starting over" in caplog.text
    fresh = tmp_path / "fresh"
    train(other, fresh, data_root=data_root, stream=io.StringIO())
    replaced = checkpoint.model_weights(run_dir / "checkpoints/final.pt")
    for key, value in checkpoint.model_weights(fresh / "checkpoints/final.pt").items():
        assert torch.equal(replaced[key], value), key  # exactly a fresh run of the new params


def test_imagenet_weights_initialise_the_trunk(tmp_path, data_root):
    torch.manual_seed(5)
    imagenet = resnet(18, width_multiplier=0.125)  # with fc, as torchvision saves it
    weights = tmp_path / "resnet18.pth"
    torch.save(imagenet.state_dict(), weights)
    run_dir = tmp_path / "run"
    start = params(pretrained=str(weights), training={"lr": 1e-12, "weight_decay": 0.0})
    train(start, run_dir, data_root=data_root, stream=io.StringIO())
    trained = checkpoint.model_weights(run_dir / "checkpoints/final.pt")
    conv = "trunk.layer3.1.conv2.weight"
    assert torch.allclose(trained[conv], imagenet.state_dict()["layer3.1.conv2.weight"])
    torch.save({"conv1.weight": torch.zeros(1)}, weights)
    with pytest.raises(PagError, match="not a torchvision ResNet checkpoint"):
        train(start, tmp_path / "other", data_root=data_root, stream=io.StringIO())


def test_decision_parameters_get_their_own_learning_rate():
    p = params(method="pag", budget=0.5, training={"decision_lr_mult": 10.0})
    model = p.build_model()
    optimizer = make_optimizer(p, model)
    rest, decision = optimizer.param_groups
    assert rest["lr"] == 0.01 and decision["lr"] == pytest.approx(0.1)
    gates = [param for name, param in model.named_parameters() if ".gate." in name]
    assert len(decision["params"]) == len(gates) > 0
    total = sum(1 for param in model.parameters() if param.requires_grad)
    assert len(rest["params"]) + len(decision["params"]) == total
    dense = params()
    assert len(make_optimizer(dense, dense.build_model()).param_groups) == 1


def pag_train(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pag", "train", *args]
    return subprocess.run(command, capture_output=True, text=True)


def test_cli_trains_a_run_of_a_profile_and_refuses_mixed_arguments(tmp_path):
    out = str(tmp_path / "r")
    both = pag_train("--params", "x.yaml", "--profile", "tiny", "--run", "dense-s0", "--out", out)
    assert both.returncode == 2 and "give either --params FILE, or --profile" in both.stderr
    unknown = pag_train("--profile", "params/tiny.yaml", "--run", "pag-0.9-s0", "--out", out)
    assert unknown.returncode == 1
    assert "no run named 'pag-0.9-s0'; its runs are dense-s0" in unknown.stderr
    assert not (tmp_path / "r").exists()


def test_weights_are_renamed_into_place_only_with_the_right_hash(tmp_path, monkeypatch):
    import hashlib

    from pag import weights

    payload = b"not really a checkpoint"
    digest = hashlib.sha256(payload).hexdigest()

    def fake_download(url, dest, **kwargs):
        dest.write_bytes(payload)
        return dest

    monkeypatch.setattr("pag.data.download.download", fake_download)
    out = tmp_path / "w" / "resnet18.pth"
    with pytest.raises(ChecksumError, match=f"sha256 {digest} does not start with f37072fd"):
        weights.fetch_imagenet(18, out)
    assert list(out.parent.iterdir()) == []
    monkeypatch.setitem(weights.IMAGENET_FILES, 18, f"resnet18-{digest[:8]}.pth")
    assert weights.fetch_imagenet(18, out) == out and out.read_bytes() == payload
    with pytest.raises(PagError, match="no ImageNet weights for ResNet-26"):
        weights.fetch_imagenet(26, out)
