"""The training loop: exact, resumable determinism by construction.

* **Data.** There is no hidden random state in the data pipeline. Epoch `e` visits the training
  split in the order `torch.randperm` gives with a generator seeded from (seed, e); sample `i`
  of epoch `e` is cropped and flipped with a generator seeded from (seed, e, i). A run resumed
  at step k of an epoch rebuilds the same order and skips the k batches already done, and
  DataLoader workers (`training.num_workers`) change nothing.
* **Model.** Gumbel noise (and anything else random in a forward) uses the global torch
  generator. It is seeded once, before the model is built, and its state, with numpy's and
  Python's, is saved in every checkpoint and restored on resumption.
* **Arithmetic.** On CPU, `torch.use_deterministic_algorithms(True)` and a fixed thread count.

So a run killed at any point and started again ends with the same weights and metrics, bit for
bit, as one that was never interrupted (on the same machine and thread count).

Under `torchrun` each process trains on its slice of every global batch (see
`pag.training.distributed` for the design and where it equals one process).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from pag.data import collate_samples, get_dataset
from pag.data.transforms import (
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRotate90,
    RandomScale,
)
from pag.errors import PagError
from pag.fileio import (
    atomic_write,
    foreign_entries,
    names_shown,
    read_json,
    remove_temporaries,
    write_json_atomic,
)
from pag.locking import locked
from pag.models.losses import task_losses
from pag.params import Augmentation
from pag.training import checkpoint, distributed
from pag.training.distributed import World
from pag.training.progress import Progress
from pag.training.provenance import (
    Provenance,
    comparable_params,
    describe,
    of_run,
    recorded_provenance,
)
from pag.training.run_params import (
    RunParams,
    differing_keys,
    resolve_threads,
    validate_run_params,
)
from pag.yamlio import load_yaml

PARAMS_FILE = "params.yaml"
METRICS_FILE = "metrics.json"
BUDGET_TERM = "budget"


# -- seeds and data ----------------------------------------------------------------------------


def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence: well spread, platform-free)."""
    words = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


_ORDER, _AUGMENT, _RANK = 1, 2, 3  # stream tags, so the two kinds of seeds never coincide


def epoch_order(num_samples: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(derived_seed(seed, _ORDER, epoch))
    return torch.randperm(num_samples, generator=generator).tolist()


def epoch_batches(num_samples: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's batches of sample indices; the last incomplete batch is dropped, so every
    step sees `batch_size` images (BatchNorm statistics) and the step count is fixed."""
    order = epoch_order(num_samples, seed, epoch)
    count = num_samples // batch_size
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(count)]


# bytes of training samples a run keeps decoded in memory (`SampleCache`)
SAMPLE_CACHE_BYTES = 2 * 1024**3


class SampleCache:
    """A training split's validated samples, restricted to the run's keys, kept in memory
    until they fill `limit` bytes, so that later epochs skip reading and decoding them: on
    BSDS500, reading one ground-truth .mat file takes longer than a CPU step spends on its
    crop. Samples past the limit are read each time; what a run computes is unchanged."""

    def __init__(self, base, keys: tuple[str, ...], limit: int = SAMPLE_CACHE_BYTES):
        self.base, self.keys, self.limit = base, keys, limit
        self._kept: dict[int, dict] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self.base)

    def validated(self, index: int, num_classes: int | None = None) -> dict:
        if index in self._kept:
            return dict(self._kept[index])
        sample = self.base.validated(index, num_classes)
        sample = {k: sample[k] for k in self.keys}  # type: ignore[literal-required]
        size = sum(v.nbytes for v in sample.values() if isinstance(v, torch.Tensor))
        if self._bytes + size <= self.limit:
            self._kept[index] = sample
            self._bytes += size
        return dict(sample)


class AugmentedSplit(Dataset):
    """Training samples of one epoch: resized by the run's input scale (and a random scale),
    rotated by a random quarter turn where the run asks, a random crop to `size` and a random
    horizontal flip,
    each sample with its own generator seeded from (seed, epoch, index), then normalisation.
    Only the image and the run's targets are kept. Every sample is checked against the
    sample contract first (labels within the run's classes), so a broken file stops the run
    with a DataError naming it."""

    def __init__(
        self,
        base,
        size: tuple[int, int],
        tasks,
        seed: int,
        epoch: int,
        *,
        input_scale: float = 1.0,
        augmentation: Augmentation | None = None,
    ):
        self.base, self.size, self.keys = base, tuple(size), ("image", *tasks)
        self.num_classes = tasks.get("semantic")
        self.seed, self.epoch = seed, epoch
        self.input_scale = input_scale
        self.augmentation = augmentation or Augmentation()
        self.normalize = Normalize()

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(
            derived_seed(self.seed, _AUGMENT, self.epoch, index)
        )
        sample = self.base.validated(index, self.num_classes)
        sample = {k: sample[k] for k in self.keys}  # type: ignore[literal-required]
        scale = RandomScale(self.augmentation.scales, self.input_scale, generator=generator)
        sample = scale(sample)  # type: ignore[arg-type]
        turns = [degrees // 90 for degrees in self.augmentation.rotations]
        sample = RandomRotate90(turns, generator=generator)(sample)
        sample = RandomCrop(self.size, generator=generator)(sample)  # type: ignore[arg-type]
        sample = RandomHorizontalFlip(generator=generator)(sample)
        if "boundary" in sample:  # images have 4 to 9 annotators (BSDS500): batch what agrees
            sample["boundary"] = sample["boundary"].float().mean(0, keepdim=True)
        return self.normalize(sample)  # type: ignore[return-value]


def open_train_split(params: RunParams, data_root: str | os.PathLike | None):
    root = data_root if data_root is not None else params.data_root
    dataset = get_dataset(params.dataset, root, split=params.train_split)
    missing = sorted(set(params.tasks) - set(dataset.tasks))
    if missing:
        raise PagError(f"dataset '{params.dataset}' has no targets for tasks {missing}")
    classes = params.tasks.get("semantic")
    if "semantic" in params.tasks and dataset.num_classes and classes != dataset.num_classes:
        raise PagError(
            f"tasks.semantic is {classes} but dataset '{params.dataset}' has "
            f"{dataset.num_classes} classes"
        )
    if len(dataset) < params.training.batch_size:
        raise PagError(
            f"split '{params.train_split}' of '{params.dataset}' has {len(dataset)} images, "
            f"fewer than training.batch_size {params.training.batch_size}"
        )
    return dataset


# -- environment -------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PagError("device: cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


@contextlib.contextmanager
def compute_settings(threads: int, device: torch.device) -> Iterator[None]:
    """Thread count and deterministic algorithms for the run, restored afterwards (the
    settings are process-wide and tests train in-process)."""
    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (the global state others may draw from)
    random.seed(seed)


# -- state -------------------------------------------------------------------------------------


@dataclass
class RunState:
    """Where a run is: `step` optimizer steps done in all; `position` of them in `epoch`."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    sums: dict[str, float] = field(default_factory=dict)  # loss sums over the epoch so far
    peaks: dict[str, float] = field(default_factory=dict)  # gradient-norm maxima, likewise
    history: list[dict[str, float]] = field(default_factory=list)  # per-epoch means
    images: int = 0  # images trained on, all processes of the run together
    seconds: float = 0.0  # time spent in training steps, likewise

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "sums": dict(self.sums),
            "peaks": dict(self.peaks),
            "history": [dict(h) for h in self.history],
            "images": self.images,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        return cls(**data)


# parameters a method adds to decide what to compute (PAG and layer-skip gates, SACT halting
# heads, the MultiPool attention): `training.decision_lr_mult` scales their learning rate
DECISION_PARAMS = (".gate.", ".halting.", ".multipool.attention.")


def make_optimizer(params: RunParams, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = params.training
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decision = [p for n, p in named if any(part in n for part in DECISION_PARAMS)]
    rest = [p for n, p in named if not any(part in n for part in DECISION_PARAMS)]
    groups: list[dict[str, Any]] = [{"params": rest}]
    if decision:
        groups.append({"params": decision, "lr": t.lr * t.decision_lr_mult})
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return torch.optim.Adam(groups, lr=t.lr, weight_decay=t.weight_decay)


def make_scheduler(optimizer, total_steps: int, power: float):
    """Poly schedule over the run's steps: lr * (1 - step / total) ** power."""

    def factor(step: int) -> float:
        return (1.0 - min(step, total_steps) / total_steps) ** power

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# -- the run directory ---------------------------------------------------------------------------


def read_run_params(run_dir: Path) -> RunParams | None:
    path = run_dir / PARAMS_FILE
    if not path.is_file():
        return None
    return validate_run_params(load_yaml(path, "run params"), path, check_files=False)


def check_same_params(
    run_dir: Path, params: RunParams, source: str, *, replace_stale: bool = False
) -> bool | None:
    """True when `run_dir` was started with these params, False when it holds no run; other
    params are refused, or with `replace_stale` give None (the caller discards that run)."""
    try:
        recorded = read_run_params(run_dir)
    except PagError:
        if not replace_stale:
            raise
        return None
    if recorded is None:
        return False
    differing = differing_keys(comparable_params(recorded), comparable_params(params))
    if differing and replace_stale:
        return None
    if differing:
        raise PagError(
            f"{run_dir} was started with other params ({', '.join(differing)} differ from "
            f"{source}); use another --out, or the same params to resume"
        )
    return True


# what `pag train` writes into a run directory, and what evaluation and tracking add to it
RUN_DIR_ENTRIES = (PARAMS_FILE, METRICS_FILE, checkpoint.CHECKPOINTS, "figures")


def check_run_dir(run_dir: Path) -> None:
    """`run_dir` is new, or a run directory: anything else there means --out points at another
    command's folder (a results or data folder), whose files a run would write over."""
    foreign = foreign_entries(run_dir, _in_run_dir, "a run directory (--out)")
    if foreign:
        raise PagError(
            f"{run_dir}: holds files that are not a training run's ({names_shown(foreign)}); "
            "--out must be a new folder or a `pag train` run directory"
        )


def _in_run_dir(path: Path) -> bool:
    if path.name == METRICS_FILE:
        return _is_training_metrics(path)
    return path.name in RUN_DIR_ENTRIES or path.name.startswith("eval_")


def _is_training_metrics(path: Path) -> bool:
    """Whether `path` is what `pag train` writes (not an evaluation's or a summary's); a
    damaged one beside its run's params.yaml counts (reading it names the damage)."""
    try:
        return {"steps", "history", "params_hash"} <= set(read_json(path))
    except PagError:
        return (path.parent / PARAMS_FILE).is_file()


# a training crop may be up to this many times an image's area (padded with ignore/invalid)
MAX_CROP_TO_IMAGE = 4


def check_input_size(params: RunParams, dataset) -> None:
    """Training crops far larger than the images would be mostly padding, and a typo such as
    an extra digit would exhaust memory before the first step: refused before anything runs."""
    height, width = (int(n) for n in dataset.load(0)["image"].shape[-2:])
    crop_h, crop_w = params.input_size
    scaled_area = height * width * params.input_scale**2
    if crop_h * crop_w > MAX_CROP_TO_IMAGE * scaled_area:
        raise PagError(
            f"input_size {list(params.input_size)} is larger than the images of split "
            f"'{params.train_split}' of '{params.dataset}' (its first is {height} x {width}"
            f"{'' if params.input_scale == 1 else f' before input_scale {params.input_scale}'}); "
            f"a training crop may be at most {MAX_CROP_TO_IMAGE} times an image's area"
        )


def discard_run(run_dir: Path) -> None:
    """Remove a run's training state (params, checkpoints, metrics) so it can start over."""
    import shutil

    shutil.rmtree(checkpoint.checkpoint_dir(run_dir), ignore_errors=True)
    for name in (METRICS_FILE, PARAMS_FILE):
        (run_dir / name).unlink(missing_ok=True)


def write_params(run_dir: Path, params: RunParams) -> None:
    text = (
        "# Resolved run params, written by `pag train` (defaults filled in). Resuming this run\n"
        "# needs the same params.\n" + yaml.safe_dump(params.resolved(), sort_keys=False)
    )
    with atomic_write(run_dir / PARAMS_FILE, "w") as handle:
        handle.write(text)


class StartingWeights:
    """The weights a new run starts from (`init_from` or `pretrained`), read once before the
    run directory is touched, so that a checkpoint the safe loader refuses writes nothing."""

    def __init__(self, path: str | None):
        self._weights = checkpoint.model_weights(path) if path is not None else None

    def weights(self) -> dict[str, torch.Tensor]:
        if self._weights is None:
            raise PagError("no starting checkpoint was given")
        return self._weights


def finished_metrics(run_dir: Path, provenance: Provenance) -> dict[str, Any]:
    """A finished run's training metrics, checked to be of the run its final.pt holds."""
    path = run_dir / METRICS_FILE
    metrics = read_json(path, "training metrics")
    if metrics.get("params_hash") != provenance.params_hash:
        raise PagError(
            f"{path}: not the training metrics of {run_dir}'s final.pt (params_hash "
            f"{metrics.get('params_hash')!r}, final.pt's {provenance.params_hash!r})"
        )
    return metrics


# -- training ------------------------------------------------------------------------------------


def _means(sums: dict[str, float], steps: int) -> dict[str, float]:
    return {k: v / steps for k, v in sums.items()} if steps else {}


def _check_finite(step: int, values: dict[str, float]) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            kind = "nan" if math.isnan(value) else "inf"
            raise PagError(f"step {step}: loss term '{name}' is {kind}")


def _check_finite_weights(model: torch.nn.Module, step: int, path: Path) -> None:
    """Weights (or BatchNorm statistics) can turn NaN or Inf while the loss is still finite,
    after an overflowing gradient: such a state is never saved over the last good one. Every
    rank holds the same weights, so every rank stops here."""
    for name, value in model.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise PagError(
                f"step {step}: '{name}' is not finite after the optimizer step; nothing was "
                f"saved over {path}, which holds the last good state"
            )


def train(
    params: RunParams,
    run_dir: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    source: str = "the given params",
    stream: TextIO | None = None,
    tty: bool | None = None,
    replace_stale: bool = False,
) -> dict[str, Any]:
    """Train `params` in `run_dir`, resuming from `run_dir/checkpoints/last.pt` when present,
    and return the metrics written to `run_dir/metrics.json`.

    A run dir started with other params, or whose checkpoints were made from other inputs
    (params, dataset, the checkpoint it started from: `pag.training.provenance`), is refused,
    or with `replace_stale` (what pipelines want after a profile changed) discarded and started
    over. The run directory is locked while this runs (`pag.locking`). Everything that can be
    checked is checked before anything is written or discarded."""
    run_dir = Path(run_dir)
    world = distributed.world_from_env()
    dataset = open_train_split(params, data_root)
    check_input_size(params, dataset)
    provenance = of_run(params, dataset.root)
    start = StartingWeights(params.init_from or params.pretrained)  # read (and refused) now
    check_run_dir(run_dir)
    hint = "two trainings into one run directory would mix their files; use another --out"
    guard = locked(run_dir, "run directory", hint=hint) if world.rank == 0 else nullcontext()
    with guard:
        return _train_locked(
            params, run_dir, world, dataset, provenance, start, source, stream, tty, replace_stale
        )


def _train_locked(
    params: RunParams,
    run_dir: Path,
    world: World,
    dataset,
    provenance: Provenance,
    start: StartingWeights,
    source: str,
    stream: TextIO | None,
    tty: bool | None,
    replace_stale: bool,
) -> dict[str, Any]:
    resuming_dir = check_same_params(run_dir, params, source, replace_stale=replace_stale)
    stale = resuming_dir is None
    last_path = checkpoint.checkpoint_dir(run_dir) / checkpoint.LAST
    final_path = checkpoint.checkpoint_dir(run_dir) / checkpoint.FINAL
    device = resolve_device(params.device)
    threads = resolve_threads(params.threads)
    finished = False
    if resuming_dir:
        recorded = final_path if final_path.is_file() else last_path
        if recorded.is_file():
            try:
                differing = recorded_provenance(recorded).differences(provenance)
                finished = recorded == final_path and (run_dir / METRICS_FILE).is_file()
                if finished and not differing:
                    metrics = finished_metrics(run_dir, provenance)
            except PagError:
                if not replace_stale:
                    raise
                differing = ["provenance"]
            if differing and not replace_stale:
                raise PagError(
                    f"{recorded} was made from other inputs than {source} now "
                    f"({describe(differing)}); train it again with --replace-stale, or use "
                    "another --out"
                )
            if differing:
                stale, resuming_dir, finished = True, False, False
        if finished:
            return metrics  # finished with these inputs: nothing left to do

    t = params.training
    distributed.per_rank_batch(t.batch_size, world)
    if stale and world.rank == 0:
        (stream or sys.stderr).write(f"{run_dir} held a run with other inputs: starting over\n")
        discard_run(run_dir)

    with distributed.process_group(world, device), compute_settings(threads, device):
        device = distributed.device_for(device, world)
        metrics = _train_in_group(
            params,
            run_dir,
            dataset,
            device,
            world,
            bool(resuming_dir),
            last_path,
            stream,
            tty,
            provenance,
            start,
        )
        distributed.barrier(world)  # rank 0 has written everything when any rank returns
    return metrics


def _train_in_group(
    params: RunParams,
    run_dir: Path,
    dataset,
    device: torch.device,
    world: World,
    resuming_dir: bool,
    last_path: Path,
    stream: TextIO | None,
    tty: bool | None,
    provenance: Provenance,
    start: StartingWeights,
) -> dict[str, Any]:
    t = params.training
    steps_per_epoch = len(dataset) // t.batch_size
    total_steps = steps_per_epoch * t.epochs
    final_path = checkpoint.checkpoint_dir(run_dir) / checkpoint.FINAL
    metrics_path = run_dir / METRICS_FILE
    seed_everything(params.seed)
    model = params.build_model()
    if world.distributed:  # each rank its own stream of forward noise
        torch.manual_seed(derived_seed(params.seed, _RANK, world.rank))
    resume = checkpoint.load(last_path) if resuming_dir and last_path.is_file() else None
    if resume is not None:
        if resume.get("params_hash") != params.digest():
            raise PagError(f"{last_path} was written with other params than {run_dir}")
        written_by = resume.get("world_size", 1)
        if written_by != world.size:
            raise PagError(
                f"{last_path} was written by {written_by} process(es); resume it with the "
                f"same number (now {world.size})"
            )
        with checkpoint.reading(last_path):
            model.load_state_dict(resume["model"])
    elif params.init_from is not None:
        from pag.models import load_dense_weights

        load_dense_weights(model, start.weights())
    elif params.pretrained is not None:
        from pag.models.resnet import load_imagenet_weights

        load_imagenet_weights(model.trunk, start.weights())
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(params, model)
    scheduler = make_scheduler(optimizer, total_steps, t.poly_power)
    state = RunState()
    if resume is not None:
        with checkpoint.reading(last_path):
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            state = RunState.from_dict(resume["state"])
            rng = resume["rng_ranks"][world.rank] if world.distributed else resume["rng"]
            checkpoint.set_rng_states(rng)
    net = distributed.wrap(model, world, device, params.method)

    # nothing was written until here
    if world.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resuming_dir:
            write_params(run_dir, params)
        checkpoint.remove_stale_temporaries(run_dir)
        for name in (PARAMS_FILE, METRICS_FILE):
            remove_temporaries(run_dir / name)
    else:
        stream, tty = open(os.devnull, "w"), False  # noqa: SIM115  (closed below)
    progress = Progress(t.epochs, steps_per_epoch, t.log_every, stream=stream, tty=tty)
    if resume is not None:
        progress.write(f"resuming {run_dir} at step {state.step}/{total_steps}")
    saver = _Saver(last_path, params, model, optimizer, scheduler, world, provenance)
    try:
        _run_epochs(
            params,
            net,
            model,
            optimizer,
            scheduler,
            dataset,
            state,
            device,
            progress,
            saver,
            world,
        )
    finally:
        progress.close()
        if not world.main:
            stream.close()  # type: ignore[union-attr]
    saver(state)

    if world.main:
        checkpoint.save(
            final_path,
            {
                "format": checkpoint.FORMAT,
                "model": _cpu_state(model),
                "step": state.step,
                "params_hash": provenance.params_hash,
                "provenance": provenance.to_dict(),
            },
        )
    metrics = {
        "train": state.history[-1]["train"] if state.history else {},
        "steps": state.step,
        "epochs": state.epoch,
        "images_per_s": state.images / state.seconds if state.seconds else None,
        "history": state.history,
        "method": params.method,
        "budget": params.budget,
        "params_hash": params.digest(),
        "provenance": provenance.brief(),
    }
    if world.main:
        write_json_atomic(metrics_path, metrics)
    return metrics


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_last(
    path,
    params,
    model,
    optimizer,
    scheduler,
    state: RunState,
    world: World | None = None,
    provenance: Provenance | None = None,
) -> None:
    """Write `last.pt` (collective under torchrun: every rank calls it, rank 0 writes)."""
    world = world or World()
    _check_finite_weights(model, state.step, Path(path))
    rng = checkpoint.rng_states()
    every_rng = distributed.gather_objects(rng, world)
    if not world.main:
        return
    payload = {
        "format": checkpoint.FORMAT,
        "params_hash": params.digest(),
        "model": _cpu_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": state.to_dict(),
        "rng": rng,
    }
    if provenance is not None:
        payload["provenance"] = provenance.to_dict()
    if world.distributed:
        payload["world_size"] = world.size
        payload["rng_ranks"] = every_rng
    checkpoint.save(path, payload)


@dataclass
class _Saver:
    path: Path
    params: RunParams
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    world: World
    provenance: Provenance

    def __call__(self, state: RunState) -> None:
        save_last(
            self.path,
            self.params,
            self.model,
            self.optimizer,
            self.scheduler,
            state,
            self.world,
            self.provenance,
        )


def decision_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters a method added to decide what to compute (`DECISION_PARAMS`)."""
    return [
        p
        for n, p in model.named_parameters()
        if p.requires_grad and any(part in n for part in DECISION_PARAMS)
    ]


def _gradient_norms(model, decision, clip: float | None) -> dict[str, float]:
    """The global gradient norm before clipping (the gradients are then clipped to `clip`
    when set), and that of the decision parameters alone after clipping: how the gates'
    gradients grow as the temperature falls."""
    params = [p for p in model.parameters() if p.grad is not None]
    if clip is not None:
        total = torch.nn.utils.clip_grad_norm_(params, clip)
    else:
        total = torch.nn.utils.get_total_norm([p.grad for p in params])
    norms = {"grad_norm": float(total)}
    grads = [p.grad for p in decision if p.grad is not None]
    if grads:
        norms["decision_grad_norm"] = float(torch.nn.utils.get_total_norm(grads))
    return norms


def _train_step(
    net,
    model,
    optimizer,
    batch,
    weights,
    budget_weight,
    device,
    step,
    world: World | None = None,
    *,
    decision: list | None = None,
    clip: float | None = None,
) -> dict:
    """One optimizer step; the loss terms (unweighted) and the weighted total as floats
    (averaged over ranks under torchrun), and the gradient norms (`_gradient_norms`; the
    decision parameters' after clipping). A term that is not finite stops the run, on every
    rank, before the weights change. `net` is `model` or its DDP wrapper."""
    cuda = device.type == "cuda"
    images = batch["image"].to(device, non_blocking=True)
    if cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = {task: batch[task].to(device, non_blocking=True) for task in weights}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    with autocast:
        out = net(images)
    terms = task_losses({k: v.float() for k, v in out["pred"].items()}, targets)
    terms[BUDGET_TERM] = model.budget_loss(out["aux"]).float()
    loss = sum(weights[k] * terms[k] for k in weights) + budget_weight * terms[BUDGET_TERM]
    values = torch.stack([v.detach() for v in (*terms.values(), loss)])
    values = distributed.average(values, world or World()).tolist()  # one sync
    named = dict(zip([*terms, "total"], values, strict=True))
    _check_finite(step, named)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norms = _gradient_norms(model, decision or [], clip)
    optimizer.step()
    named["loss"] = named.pop("total")
    return {**named, **norms}


def _batches(loader: DataLoader) -> Iterator[dict]:
    """The loader's batches. A PagError raised in a DataLoader worker arrives with the worker's
    traceback in its message: it is raised again with its own message alone (one CLI line)."""
    try:
        yield from loader
    except PagError as exc:
        text = str(exc)
        marker = f"\n{type(exc).__module__}.{type(exc).__qualname__}: "
        if not text.startswith("Caught ") or marker not in text:
            raise
        raise type(exc)(text.rpartition(marker)[2].strip()) from None


def _run_epochs(
    params, net, model, optimizer, scheduler, dataset, state, device, progress, saver, world
):
    t = params.training
    weights = {task: t.loss_weights.get(task, 1.0) for task in params.tasks}
    steps_per_epoch = len(dataset) // t.batch_size
    decision = decision_parameters(model)
    samples = SampleCache(dataset, ("image", *params.tasks))
    while state.epoch < t.epochs:
        epoch = state.epoch
        temperature = t.temperature.at(epoch) if t.temperature is not None else None
        if temperature is not None:
            model.set_temperature(temperature)
        batches = distributed.shard(
            epoch_batches(len(dataset), t.batch_size, params.seed, epoch), world
        )
        loader = DataLoader(
            AugmentedSplit(
                samples,
                params.input_size,
                params.tasks,
                params.seed,
                epoch,
                input_scale=params.input_scale,
                augmentation=params.augmentation,
            ),
            batch_sampler=batches[state.position :],
            num_workers=t.num_workers,
            collate_fn=collate_samples,
            generator=torch.Generator(),  # DataLoader would otherwise draw from the global one
        )
        net.train()
        progress.start_epoch(epoch, state.position)
        started = time.perf_counter()
        for batch in _batches(loader):
            step = state.step + 1
            values = _train_step(
                net,
                model,
                optimizer,
                batch,
                weights,
                t.budget_weight,
                device,
                step,
                world,
                decision=decision,
                clip=t.grad_clip,
            )
            scheduler.step()
            state.step, state.position = step, state.position + 1
            for name, value in values.items():
                state.sums[name] = state.sums.get(name, 0.0) + value
                if name.endswith("grad_norm"):
                    state.peaks[name] = max(state.peaks.get(name, 0.0), value)
            images = int(batch["image"].shape[0]) * world.size
            state.images += images
            now = time.perf_counter()
            state.seconds += now - started
            progress.step(step, state.position, images, values["loss"])
            if step % t.checkpoint_every == 0:
                saver(state)
            started = time.perf_counter()
        summary = _means(state.sums, steps_per_epoch)
        record: dict[str, Any] = {"epoch": epoch + 1, "train": summary}
        record["train_max"] = dict(state.peaks)
        record["lr"] = scheduler.get_last_lr()[0]
        if temperature is not None:
            record["temperature"] = temperature
        state.history.append(record)
        progress.end_epoch(summary)
        state.epoch, state.position, state.sums, state.peaks = epoch + 1, 0, {}, {}
