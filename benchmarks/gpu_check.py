"""GPU readiness: one short check of what the real-data profiles need on CUDA.

    python benchmarks/gpu_check.py                        # on a GPU machine, about 5 minutes
    python benchmarks/gpu_check.py --write-readme         # and put the table in README.md
    python benchmarks/gpu_check.py --device cpu --quick   # the same code paths at toy sizes (CI)

One JSON line per check, after a header line (device name, torch, CUDA):

* `tests`: the tests marked `cuda` (`pytest -m cuda`): model forward and backward of every
  method, MAC counting, the sparse executor's exactness, resume. They run on `--device`
  (`PAG_TEST_DEVICE`); without a GPU and without `--device cpu` they skip.
* `train`: for every method of the `nyuv2` profile (one budget each), training steps of its
  model (ResNet-50, output stride 8) at the profile's crop size and batch, through the
  pipeline's own step (`pag.training.step.train_step`: bfloat16 autocast on CUDA, as every
  run): images per second and peak GPU memory.
* `resume`: a short run killed after its first checkpoint and resumed ends with the same
  weights as an uninterrupted one (bit for bit, or the largest difference).
* `sparse`: the sparse executor against the model's dense forward at several activity rates
  (PAG gates forced to blob masks, as `benchmarks/sparse_speed.py`): largest relative
  difference, both times, measured and ideal speedup.
* `gpu_hours`: per real profile, the training GPU hours its sweep needs at the measured
  speeds (every run's epochs over its training images; a crop size other than nyuv2's scales
  the time by its pixel count), with `--write-readme` written into the README's profile table.

`--quick` shrinks every size (the tiny profile's trunk and crop, a few steps), so that CI
runs these code paths in well under a minute; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import sparse_speed  # noqa: E402  (its timing and MAC helpers)

from pag.methods import registry  # noqa: E402
from pag.pipeline.plan import Run, load_plan, run_params  # noqa: E402
from pag.training.run_params import validate_run_params  # noqa: E402

REAL_PROFILES = ("nyuv2", "cityscapes", "stanford2d3d", "bsds500")
EXACT = 1e-4  # the sparse executor against the dense forward: largest relative difference
README_START = "<!-- gpu_check: start -->"
README_END = "<!-- gpu_check: end -->"


FAILED: list[str] = []  # the checks that failed: the command exits 1 naming them


def emit(record: dict) -> None:
    if record.get("ok") is False:
        FAILED.append(record["check"])
    print(json.dumps(record), flush=True)


def check_tests(device: str) -> dict:
    env = {**os.environ, "PAG_TEST_DEVICE": device, "PAG_TRACKING": "0"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    counts = dict.fromkeys(("passed", "failed", "skipped", "error"), 0)
    for number, word in re.findall(r"(\d+) (passed|failed|skipped|error)", done.stdout):
        counts[word] = int(number)
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    return {
        "check": "tests",
        "device": device,
        **counts,
        "ok": done.returncode == 0 and counts["passed"] > 0,
        "failures": failed[:10],
        "seconds": round(time.perf_counter() - start, 1),
    }


def profile_runs(name: str) -> list[Run]:
    """One run per method of the profile: its middle budget, seed 0."""
    profile = load_plan(name).profile
    runs = []
    for method, budgets in profile.methods.items():
        runs.append(Run(method, budgets[len(budgets) // 2], 0))
    return runs


def run_params_of(profile_name: str, run: Run, device: str, quick: bool):
    """The run's params as the pipeline gives them, without ImageNet weights or a dense
    checkpoint (random initialisation costs the same), at toy sizes with `quick`."""
    plan = load_plan(profile_name)
    raw = run_params(plan.profile, run)
    raw.pop("pretrained", None)
    raw.pop("init_from", None)
    raw["device"] = device
    if quick:
        raw["model"].update(depth=26, width_multiplier=0.125, head_hidden=16)
        raw["input_size"] = [48, 64]
        raw["training"]["batch_size"] = 2
        budget = registry.get(run.method).budget
        if budget is not None and budget.at_most_blocks:  # the toy trunk has 8 blocks
            raw["budget"] = min(raw["budget"], 6)
    return validate_run_params(raw, f"{profile_name} (run {run.name})", check_files=False)


def random_batch(params, device: torch.device, generator: torch.Generator) -> dict:
    n, (h, w) = params.training.batch_size, params.input_size
    batch = {"image": torch.rand(n, 3, h, w, generator=generator)}
    for task, classes in params.tasks.items():
        if task == "semantic":
            batch[task] = torch.randint(0, classes, (n, h, w), generator=generator)
        elif task == "depth":
            batch[task] = 0.5 + 5 * torch.rand(n, h, w, generator=generator)
        elif task == "normals":
            normals = torch.randn(n, 3, h, w, generator=generator)
            batch[task] = normals / normals.norm(dim=1, keepdim=True)
        else:  # boundary: annotator agreement
            batch[task] = (torch.rand(n, 1, h, w, generator=generator) > 0.9).float()
    return {k: v.to(device) for k, v in batch.items()}


def check_train(run: Run, device: str, quick: bool, steps: int) -> dict:
    from pag.training.distributed import World
    from pag.training.optimization import make_optimizer
    from pag.training.state import Training
    from pag.training.step import StepSettings, train_step

    params = run_params_of("nyuv2", run, device, quick)
    dev = torch.device(device)
    torch.manual_seed(0)
    model = params.build_model().to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats(dev)
    model.train()
    optimizer = make_optimizer(params, model)
    training = Training(params, model, model, optimizer, None, dev, World())
    settings = StepSettings.of(params, model)
    batch = random_batch(params, dev, torch.Generator().manual_seed(0))
    train_step(training, settings, batch, 0)  # warm-up: kernels chosen, memory allocated
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        train_step(training, settings, batch, step)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    return {
        "check": "train",
        "profile": "nyuv2",
        "method": run.method,
        "budget": params.budget,
        "input_size": list(params.input_size),
        "batch": params.training.batch_size,
        "autocast": "bfloat16" if dev.type == "cuda" else "none (float32 on CPU)",
        "images_per_s": round(params.training.batch_size * steps / seconds, 2),
        "peak_memory_gib": None if peak is None else round(peak, 2),
    }


def check_resume(device: str) -> dict:
    """Uninterrupted against killed-after-the-first-checkpoint-and-resumed, same command."""
    from pag.data.synthetic.writer import SynthParams, generate

    with tempfile.TemporaryDirectory(prefix="pag-gpu-check-") as tmp:
        tmp = Path(tmp)
        generate(
            tmp / "data/synthetic", 20, SynthParams(seed=0, height=48, width=64), progress=False
        )
        params = tmp / "run.yaml"
        params.write_text(
            json.dumps(
                {
                    "name": "resume",
                    "dataset": "synthetic",
                    "data_root": str(tmp / "data"),
                    "tasks": {"semantic": 10, "depth": None},
                    "input_size": [48, 64],
                    "model": {"depth": 26, "width_multiplier": 0.125, "head_hidden": 16},
                    "method": "pag",
                    "budget": 0.5,
                    "training": {
                        "epochs": 3,
                        "batch_size": 4,
                        "lr": 0.01,
                        "checkpoint_every": 2,
                        "log_every": 2,
                    },
                    "device": device,
                    "threads": 1,
                }
            )
        )
        env = {**os.environ, "PAG_TRACKING": "0"}
        command = [sys.executable, "-m", "pag", "-q", "train", "--params", str(params)]
        quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        subprocess.run([*command, "--out", str(tmp / "whole")], check=True, **quiet)
        killed = subprocess.Popen([*command, "--out", str(tmp / "resumed")], **quiet)
        last = tmp / "resumed/checkpoints/last.pt"
        while killed.poll() is None and not last.exists():
            time.sleep(0.02)
        interrupted = killed.poll() is None
        if interrupted:
            killed.send_signal(signal.SIGKILL)
        killed.wait()
        subprocess.run([*command, "--out", str(tmp / "resumed")], check=True, **quiet)
        diff = _largest_difference(tmp / "whole", tmp / "resumed")
        repeat = 0.0
        if device == "cuda":  # CUDA kernels need not repeat bit for bit: how far apart are two
            subprocess.run([*command, "--out", str(tmp / "again")], check=True, **quiet)
            repeat = _largest_difference(tmp / "whole", tmp / "again")
    return {
        "check": "resume",
        "device": device,
        "interrupted": interrupted,
        "identical": diff == 0.0,
        "max_abs_difference": diff,
        # two uninterrupted runs (CUDA only): nonzero means the device itself does not repeat
        "repeat_max_abs_difference": repeat,
        "ok": interrupted and (diff == 0.0 or diff <= 10 * repeat),
    }


def _largest_difference(run: Path, other: Path) -> float:
    """The largest absolute difference between two runs' final weights."""
    from pag.run_layout import final_checkpoint
    from pag.training import checkpoint

    mine = checkpoint.model_weights(final_checkpoint(run))
    theirs = checkpoint.model_weights(final_checkpoint(other))
    return max(float((mine[k].float() - theirs[k].float()).abs().max()) for k in mine)


def check_sparse(device: str, quick: bool, rates: list[float], repeats: int) -> list[dict]:
    from pag.models import build_model
    from pag.sparse import SparseExecutor
    from pag.sparse.forcing import blob_masks, force_gates

    dev = torch.device(device)
    sparse_speed.DEVICE = dev
    if quick:
        sizes, kwargs = (48, 64), {"depth": 26, "width_multiplier": 0.125, "head_hidden": 16}
    else:
        sizes, kwargs = (512, 512), {"depth": 50}
    torch.manual_seed(0)
    model = build_model("pag", 0.5, tasks={"semantic": 40}, output_stride=8, **kwargs)
    sparse_speed.warm_batchnorm(model, sizes)
    model = model.to(dev).eval()
    x = torch.randn(1, 3, *sizes, generator=torch.Generator().manual_seed(1)).to(dev)
    executor = SparseExecutor(model)
    records = []
    clock = time.perf_counter
    for rate in rates:
        masks = blob_masks(model, x, rate, seed=2)
        dense_ms, sparse_ms = [], []
        with torch.no_grad(), force_gates(model, masks):
            executor.forced = masks
            model.features(x), executor.features(x)  # kernels and buffers for these shapes
            for _ in range(repeats):
                ms, dense = sparse_speed.timed(lambda: model.features(x), clock)
                dense_ms.append(ms)
                ms, sparse = sparse_speed.timed(lambda: executor.features(x), clock)
                sparse_ms.append(ms)
            executor.forced = {}
            macs_dense, macs_effective = sparse_speed.trunk_macs(model, x)
        dense_t, sparse_t = statistics.median(dense_ms), statistics.median(sparse_ms)
        records.append(
            {
                "check": "sparse",
                "device": device,
                "rate": rate,
                "max_rel_diff": sparse_speed.max_rel_diff(sparse, dense),
                "dense_ms": round(dense_t, 3),
                "sparse_ms": round(sparse_t, 3),
                "measured_speedup": round(dense_t / sparse_t, 3),
                "ideal_speedup": round(macs_dense / macs_effective, 3),
                "ok": sparse_speed.max_rel_diff(sparse, dense) < EXACT,
            }
        )
    return records


def train_images(profile) -> int:
    """Training images per epoch of a profile (its training split or splits)."""
    from pag.data import dataset_class
    from pag.data.stanford2d3d import AUTHORS_SPLIT_COUNTS

    splits = [profile.train_split] if isinstance(profile.train_split, str) else profile.train_split
    known = {"nyuv2": {"train": 795}, "stanford2d3d": AUTHORS_SPLIT_COUNTS}
    counts = known.get(profile.dataset) or dataset_class(profile.dataset).expected_counts
    return sum(counts[split] for split in splits)


def gpu_hours(speeds: dict[str, float]) -> list[dict]:
    """Training GPU hours of each real profile's sweep at the measured images per second
    (per method; a method not measured takes dense's speed)."""
    reference = load_plan("nyuv2").profile
    reference_pixels = reference.input_size[0] * reference.input_size[1]
    records = []
    for name in REAL_PROFILES:
        profile = load_plan(name).profile
        scale = reference_pixels / (profile.input_size[0] * profile.input_size[1])
        images = train_images(profile)
        seconds = 0.0
        for run in load_plan(name).runs():
            method = profile.base_method(run.method)
            speed = speeds.get(method, speeds["dense"]) * scale
            seconds += profile.training_of(run.method).epochs * images / speed
        records.append(
            {
                "check": "gpu_hours",
                "profile": name,
                "runs": len(load_plan(name).runs()),
                "train_images": images,
                "training_gpu_hours": round(seconds / 3600, 1),
            }
        )
    return records


def write_readme(device_name: str, hours: list[dict]) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"{readme}: no {README_START} ... {README_END} block to fill")
    day = time.strftime("%Y-%m-%d")
    lines = [
        README_START,
        f"Training GPU hours per profile, estimated by `python benchmarks/gpu_check.py` on one "
        f"{device_name} ({day}) from its measured images per second:",
        "",
        "| profile | runs | training images | GPU hours (training) |",
        "|---|---:|---:|---:|",
        *(
            f"| {h['profile']} | {h['runs']} | {h['train_images']} | {h['training_gpu_hours']} |"
            for h in hours
        ),
        README_END,
    ]
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    readme.write_text(text[:start] + "\n".join(lines) + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--quick", action="store_true", help="toy sizes (CI)")
    parser.add_argument("--write-readme", action="store_true", help="fill README's table")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here; use --device cpu --quick for the code paths")
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    emit({"device": name, "torch": torch.__version__, "cuda": torch.version.cuda})
    emit(check_tests(args.device))
    speeds = {}
    for run in profile_runs("nyuv2"):
        record = check_train(run, args.device, args.quick, steps=2 if args.quick else 10)
        speeds[run.method] = record["images_per_s"]
        emit(record)
    emit(check_resume(args.device))
    rates = [1.0, 0.5] if args.quick else [1.0, 0.7, 0.5, 0.3]
    for record in check_sparse(args.device, args.quick, rates, repeats=2 if args.quick else 10):
        emit(record)
    hours = gpu_hours(speeds)
    for record in hours:
        emit(record)
    if FAILED:
        sys.exit(f"failed checks: {', '.join(FAILED)}")
    if args.write_readme:
        if args.quick or args.device != "cuda":
            sys.exit("--write-readme needs a full run on a GPU (no --quick, --device cuda)")
        write_readme(name, hours)


if __name__ == "__main__":
    main()
