"""The training loop: exact, resumable determinism by construction.

* **Data** (`pag.training.data`): no hidden random state; each epoch's order and each
  sample's augmentation come from generators seeded from the run's seed (`pag.training.seeds`).
* **Model** (`pag.training.state`): the global generators are seeded once, before the model
  is built, and saved and restored with every checkpoint.
* **Arithmetic** (`pag.training.device`): on CPU, deterministic algorithms and a fixed thread
  count.

So a run killed at any point and started again ends with the same weights and metrics, bit for
bit, as one that was never interrupted (on the same machine and thread count).

`train` checks everything it can before it writes anything (the run directory's checks are
`pag.training.run_dir`'s, its files `pag.run_layout`'s), then builds or restores the run
(`_train_in_group`) and runs its epochs (`_run_epochs`), one step at a time
(`pag.training.step`). Under `torchrun` each process trains on its slice of every global batch
(see `pag.training.distributed` for the design and where it equals one process).
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from pag import run_layout as layout
from pag.errors import PagError
from pag.fileio import remove_temporaries, write_json_atomic
from pag.locking import locked
from pag.training import checkpoint, distributed
from pag.training.data import (
    SampleCache,
    batches_of,
    check_input_size,
    epoch_batches,
    epoch_loader,
    open_train_split,
)
from pag.training.device import compute_settings, resolve_device
from pag.training.distributed import World
from pag.training.observer import NO_OBSERVER, TrainingObserver, TrainingStart
from pag.training.optimization import make_optimizer, make_scheduler
from pag.training.progress import Progress
from pag.training.provenance import Provenance, describe, of_run, recorded_provenance
from pag.training.run_dir import (
    adopt_legacy_metrics,
    check_run_dir,
    check_same_params,
    discard_run,
    finished_metrics,
    train_metrics_of,
    write_params,
)
from pag.training.run_params import RunParams, resolve_threads
from pag.training.seeds import RANK, derived_seed, seed_everything
from pag.training.state import (
    RunState,
    Saver,
    StartingWeights,
    Training,
    save_final,
)
from pag.training.step import StepSettings, train_step

log = logging.getLogger(__name__)


@dataclass
class TrainingJob:
    """One `train` call: what it trains, from what, where, and how it reports."""

    params: RunParams
    run_dir: Path
    world: World
    dataset: Any  # the training split (`open_train_split`)
    provenance: Provenance
    start: StartingWeights
    source: str  # where the params came from, for messages
    stream: TextIO | None
    tty: bool | None
    replace_stale: bool
    observer: TrainingObserver = NO_OBSERVER  # told what happens, on rank 0 (tracking)


def train(
    params: RunParams,
    run_dir: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    source: str = "the given params",
    stream: TextIO | None = None,
    tty: bool | None = None,
    replace_stale: bool = False,
    observer: TrainingObserver = NO_OBSERVER,
) -> dict[str, Any]:
    """Train `params` in `run_dir`, resuming from `run_dir/checkpoints/last.pt` when present,
    and return the metrics written to `run_dir/train_metrics.json`, with `images_per_s` from
    `run_dir/timing.json` (timings are kept apart: `pag.run_layout`).

    A run dir started with other params, or whose checkpoints were made from other inputs
    (params, dataset, the checkpoint it started from: `pag.training.provenance`), is refused,
    or with `replace_stale` (what pipelines want after a profile changed) discarded and started
    over. The run directory is locked while this runs (`pag.locking`). Everything that can be
    checked is checked before anything is written or discarded. `observer` (rank 0) is told
    of the start, every step and epoch and the end (`pag.training.observer`); a run that is
    finished already does not start, so it is told nothing."""
    run_dir = Path(run_dir)
    world = distributed.world_from_env()
    dataset = open_train_split(params, data_root)
    check_input_size(params, dataset)
    provenance = of_run(params, dataset.root)
    start = StartingWeights(params.init_from or params.pretrained)  # read (and refused) now
    check_run_dir(run_dir)
    job = TrainingJob(
        params, run_dir, world, dataset, provenance, start, source, stream, tty, replace_stale
    )
    job.observer = observer
    hint = "two trainings into one run directory would mix their files; use another --out"
    guard = locked(run_dir, "run directory", hint=hint) if world.rank == 0 else nullcontext()
    with guard:
        return _train_locked(job)


def _train_locked(job: TrainingJob) -> dict[str, Any]:
    params, run_dir, world, provenance = job.params, job.run_dir, job.world, job.provenance
    replace_stale = job.replace_stale
    resuming_dir = check_same_params(run_dir, params, job.source, replace_stale=replace_stale)
    if resuming_dir and world.rank == 0:
        adopt_legacy_metrics(run_dir)
    stale = resuming_dir is None
    last_path = layout.last_checkpoint(run_dir)
    final_path = layout.final_checkpoint(run_dir)
    device = resolve_device(params.device)
    threads = resolve_threads(params.threads)
    finished = False
    if resuming_dir:
        recorded = final_path if final_path.is_file() else last_path
        if recorded.is_file():
            try:
                differing = recorded_provenance(recorded).differences(provenance)
                finished = recorded == final_path and train_metrics_of(run_dir) is not None
                if finished and not differing:
                    metrics = finished_metrics(run_dir, provenance)
            except PagError:
                if not replace_stale:
                    raise
                differing = ["provenance"]
            if differing and not replace_stale:
                raise PagError(
                    f"{recorded} was made from other inputs than {job.source} now "
                    f"({describe(differing)}); train it again with --replace-stale, or use "
                    "another --out"
                )
            if differing:
                stale, resuming_dir, finished = True, False, False
        if finished:
            return metrics  # finished with these inputs: nothing left to do

    distributed.per_rank_batch(params.training.batch_size, world)
    if stale and world.rank == 0:
        log.warning("%s held a run with other inputs: starting over", run_dir)
        discard_run(run_dir)

    with distributed.process_group(world, device), compute_settings(threads, device):
        device = distributed.device_for(device, world)
        metrics = _train_in_group(job, device, bool(resuming_dir))
        distributed.barrier(world)  # rank 0 has written everything when any rank returns
    return metrics


def _train_in_group(job: TrainingJob, device: torch.device, resuming_dir: bool) -> dict[str, Any]:
    params, run_dir, world, provenance = job.params, job.run_dir, job.world, job.provenance
    stream, tty = job.stream, job.tty
    t = params.training
    steps_per_epoch = len(job.dataset) // t.batch_size
    total_steps = steps_per_epoch * t.epochs
    last_path = layout.last_checkpoint(run_dir)
    seed_everything(params.seed)
    model = params.build_model()
    if world.distributed:  # each rank its own stream of forward noise
        torch.manual_seed(derived_seed(params.seed, RANK, world.rank))
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

        load_dense_weights(model, job.start.weights())
    elif params.pretrained is not None:
        from pag.models.resnet import load_imagenet_weights

        load_imagenet_weights(model.trunk, job.start.weights())
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
    training = Training(params, model, net, optimizer, scheduler, device, world)

    # nothing was written until here
    if world.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resuming_dir:
            write_params(run_dir, params)
        checkpoint.remove_stale_temporaries(run_dir)
        for path in (
            layout.params_file(run_dir),
            layout.train_metrics_file(run_dir),
            layout.timing_file(run_dir),
        ):
            remove_temporaries(path)
    else:
        stream, tty = open(os.devnull, "w"), False  # noqa: SIM115  (closed below)
    observer = job.observer if world.main else NO_OBSERVER
    observer.on_start(
        TrainingStart(
            params,
            run_dir,
            provenance.brief(),
            Path(job.dataset.root),
            len(job.dataset),
            total_steps,
            state.step,
        )
    )
    progress = Progress(t.epochs, steps_per_epoch, t.log_every, stream=stream, tty=tty)
    if resume is not None:
        progress.write(f"resuming {run_dir} at step {state.step}/{total_steps}")
    saver = Saver(training, last_path, provenance)
    try:
        _run_epochs(training, job.dataset, state, progress, saver, observer)
    finally:
        progress.close()
        if not world.main:
            stream.close()  # type: ignore[union-attr]
    saver(state)

    if world.main:
        save_final(layout.final_checkpoint(run_dir), model, state.step, provenance)
    metrics = {
        "train": state.history[-1]["train"] if state.history else {},
        "steps": state.step,
        "epochs": state.epoch,
        "history": state.history,
        "method": params.method,
        "budget": params.budget,
        "params_hash": params.digest(),
        "provenance": provenance.brief(),
    }
    # wall-clock time goes to its own file, which no front-end tracks: train_metrics.json
    # holds only what the params and seed decide, so an identical rerun leaves dvc.lock alone
    timing = {
        "images_per_s": state.images / state.seconds if state.seconds else None,
        "images": state.images,
        "seconds": state.seconds,
    }
    if world.main:
        write_json_atomic(layout.timing_file(run_dir), timing)
        write_json_atomic(layout.train_metrics_file(run_dir), metrics)
    reported = {**metrics, "images_per_s": timing["images_per_s"]}
    if world.main:
        observer.on_end(reported)
    return reported


def _run_epochs(
    training: Training,
    dataset,
    state: RunState,
    progress: Progress,
    saver: Saver,
    observer: TrainingObserver = NO_OBSERVER,
) -> None:
    params, model, world = training.params, training.model, training.world
    t = params.training
    steps_per_epoch = len(dataset) // t.batch_size
    settings = StepSettings.of(params, model)
    samples = SampleCache(dataset, ("image", *params.tasks))
    while state.epoch < t.epochs:
        epoch = state.epoch
        temperature = t.temperature.at(epoch) if t.temperature is not None else None
        if temperature is not None:
            model.set_temperature(temperature)
        batches = distributed.shard(
            epoch_batches(len(dataset), t.batch_size, params.seed, epoch), world
        )
        loader = epoch_loader(params, samples, epoch, batches, state.position)
        training.net.train()
        progress.start_epoch(epoch, state.position)
        started = time.perf_counter()
        for batch in batches_of(loader):
            step = state.step + 1
            lr = training.scheduler.get_last_lr()[0]  # this step's
            values = train_step(training, settings, batch, step)
            training.scheduler.step()
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
            observer.on_step(step, values, lr, temperature)
            if step % t.checkpoint_every == 0:
                saver(state)
            started = time.perf_counter()
        summary = _means(state.sums, steps_per_epoch)
        record: dict[str, Any] = {"epoch": epoch + 1, "train": summary}
        record["train_max"] = dict(state.peaks)
        record["lr"] = training.scheduler.get_last_lr()[0]
        if temperature is not None:
            record["temperature"] = temperature
        state.history.append(record)
        progress.end_epoch(summary)
        observer.on_epoch(record)
        state.epoch, state.position, state.sums, state.peaks = epoch + 1, 0, {}, {}


def _means(sums: dict[str, float], steps: int) -> dict[str, float]:
    return {k: v / steps for k, v in sums.items()} if steps else {}
