"""Training-engine overhead: `pag.training.train` versus a minimal plain-PyTorch loop.

Both train the default synthetic model (params/synthetic.yaml's model: ResNet-26 at width
0.25, output stride 8, four task heads; dense; 96 x 128 images; batch 8) on the same generated
images, with the same data pipeline (the engine's `AugmentedSplit` and batch order), optimizer,
learning-rate schedule and thread count. Each side's images/s counts the training loop only
(data loading included, set-up excluded). Goal (issue 5): overhead at most 5 %.

Run: python benchmarks/train_overhead.py [--images 64] [--epochs 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pag.data import collate_samples
from pag.data.synthetic import SynthParams, generate
from pag.models.losses import task_losses
from pag.params import load_profile
from pag.training import train
from pag.training.data import AugmentedSplit, epoch_batches, open_train_split
from pag.training.optimization import make_optimizer, make_scheduler
from pag.training.run_params import resolve_threads, validate_run_params
from pag.training.seeds import seed_everything

PROFILE = Path(__file__).resolve().parent.parent / "params" / "synthetic.yaml"


def run_params(epochs: int, batch: int):
    profile = load_profile(PROFILE)
    raw = {
        "name": "overhead",
        "dataset": "synthetic",
        "tasks": dict(profile.tasks),
        "input_size": list(profile.input_size),
        "model": profile.model.model_dump(mode="json"),
        "method": "dense",
        "budget": None,
        "seed": 0,
        "training": {"epochs": epochs, "batch_size": batch, "lr": 0.01},
    }
    return validate_run_params(raw, "benchmark")


def engine_rate(params, data_root: Path, scratch: Path) -> float:
    run_dir = Path(tempfile.mkdtemp(dir=scratch))
    metrics = train(params, run_dir, data_root=data_root, stream=io.StringIO(), tty=False)
    return metrics["images_per_s"]


def plain_rate(params, data_root: Path) -> float:
    """The same training, written as the shortest correct PyTorch loop."""
    torch.set_num_threads(resolve_threads(params.threads))
    seed_everything(params.seed)
    model = params.build_model()
    optimizer = make_optimizer(params, model)
    t = params.training
    dataset = open_train_split(params, data_root)
    total = t.epochs * (len(dataset) // t.batch_size)
    scheduler = make_scheduler(optimizer, total, t.poly_power)
    images, seconds = 0, 0.0
    model.train()
    for epoch in range(t.epochs):
        loader = DataLoader(
            AugmentedSplit(dataset, params.input_size, params.tasks, params.seed, epoch),
            batch_sampler=epoch_batches(len(dataset), t.batch_size, params.seed, epoch),
            collate_fn=collate_samples,
        )
        start = time.perf_counter()
        for batch in loader:
            out = model(batch["image"])
            losses = task_losses(out["pred"], batch)
            loss = sum(losses.values()) + model.budget_loss(out["aux"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            images += batch["image"].shape[0]
        seconds += time.perf_counter() - start
    return images / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=64, help="synthetic images generated")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="best of N, alternating")
    args = parser.parse_args()
    params = run_params(args.epochs, args.batch)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        generate(scratch / "data" / "synthetic", args.images, SynthParams(seed=0), progress=False)
        engine, plain = [], []
        for _ in range(args.repeats):  # alternate, so drifts in machine speed hit both
            engine.append(engine_rate(params, scratch / "data", scratch))
            plain.append(plain_rate(params, scratch / "data"))
    best_engine, best_plain = max(engine), max(plain)
    print(
        json.dumps(
            {
                "model": "synthetic default (ResNet-26 x0.25, OS 8, 4 heads), 96x128, batch "
                f"{args.batch}",
                "engine_images_per_s": round(best_engine, 2),
                "plain_images_per_s": round(best_plain, 2),
                "overhead": round(best_plain / best_engine - 1, 4),
                "runs": {
                    "engine": [round(r, 2) for r in engine],
                    "plain": [round(r, 2) for r in plain],
                },
                "threads": resolve_threads(None),
                "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
            }
        )
    )


if __name__ == "__main__":
    main()
