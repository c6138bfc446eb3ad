"""Evaluation: run a finished run's `final.pt` over a split and write its metrics.

`evaluate(run_dir, split)` reads `RUN_DIR/params.yaml` and `RUN_DIR/checkpoints/final.pt`,
builds the model, and runs every image of the split at full size, one image per forward (images
of a split may differ in size; BatchNorm is in eval mode, so the batch size changes nothing),
normalised as in training (`pag.data.transforms.Normalize`). Each forward is the one that
`pag.flops.measure_macs` runs (eval mode, no gradients, gates marking the positions they
compute), so predictions, effective MACs and layer activity come from the same pass.

`RUN_DIR/eval_<split>/metrics.json` (or `out`), written atomically, NaN written as null::

    {"split": "val", "num_images": 2, "dataset": "synthetic", "params_hash": "...",
     "method": "pag", "budget": 0.5,
     "provenance": {"training": {...},    # what final.pt records (pag.training.provenance)
                    "weights": "...",     # digest of the evaluated weights' tensors
                    "data": "..."},       # fingerprint of the evaluated dataset
     "semantic": {"miou", "pixel_acc", "mean_acc", "iou_per_class"},   # segmentation_metrics
     "depth": {"abs_rel", ..., "num_images", "num_skipped"},           # depth_metrics
     "normals": {"mean", "median", "rmse", "within_11_25", ...},       # normal_metrics
     "boundary": {"ods", "ois", "ap", "nms", "pr_curve": {...}},       # boundary_metrics
     "macs": {"dense", "effective", "effective_std", "unit": "MACs per image"},
     "activity": {"layer1.0": 0.83, ...},
     "gate_rule": "hard",
     "compute_allocation": {"near_boundary", "far_from_boundary", "ratio", ...},
     "gate_rules": {"hard": {task: {...}, "activity_mean": 0.8}, ...},  # extra rules only
     "latency": {...}}                                                  # with sparse=True only

Only the run's tasks appear. Semantic: argmax of the logits, `num_classes` from the params,
label 255 ignored. Depth: predicted metres against ground-truth metres where gt > 0
(`DEPTH_CAPS` gives a dataset's cap, NYUv2: 10 m; none otherwise). Normals: where the ground
truth is non-zero. Boundary: sigmoid of the logits against the sample's K annotator maps (the
BSDS500 protocol, 99 thresholds). `macs.dense` and `macs.effective` are means per image over
the split, `effective_std` the population standard deviation of the per-image effective MACs.

`activity`, for the methods that control blocks (`Method.controlled_blocks`), is per controlled
block (PAG and layer-skip gated blocks, MultiPool blocks, every SACT unit) the fraction of its
3x3 stage's output positions computed over the split: the effective over the dense MACs of that conv
(for a MultiPool, of its conv branches together, exactly one of which runs at a non-skipped
pixel). Empty for the other methods.

`gate_rule` is how learned gates (PAG, random gate, layer skip) decided in the pass that
everything above comes from: the noiseless argmax ("hard", the paper's) or one seeded
Gumbel-max sample of the policy ("sample"). `gate_rules` holds further passes, one per extra
rule (`pag.models.gating.GATE_RULES`), with the headline metrics and the mean activity.
`compute_allocation` (`ComputeAllocation`), for methods with a ponder map, is where the
compute went: the mean number of residual units computed per pixel within 2 px of a ground-
truth boundary and elsewhere, and their ratio.

`RUN_DIR/eval_<split>/samples.npz` (compressed) holds the first `save` images, for figures.
Spatial arrays are channel-last at the input size unless said otherwise:

* ``ids``: the saved sample ids, in order (a str array; keys below start with ``<id>/``);
* ``<id>/image``: uint8 H x W x 3, the RGB input before normalisation;
* ``<id>/semantic``: uint8 H x W predicted class (uint16 above 255 classes);
* ``<id>/depth``: float16 H x W predicted metres;
* ``<id>/normals``: float16 H x W x 3 predicted unit normals (camera frame);
* ``<id>/boundary``: uint8 H x W, round(255 x sigmoid(logit)) (the BSDS 8-bit soft map);
* ``<id>/ponder``: float16 H x W, residual units computed per pixel (PAG: gated blocks
  computing; layer skip: blocks executed; SACT: units executed), when the method has one;
* ``<id>/ponder_cost``: float16 H x W, SACT's ponder cost N + R;
* ``<id>/gate/<block>``: uint8 h x w, 1 where a PAG block computes (block resolution);
* ``<id>/multipool/<block>``: uint8 h x w, the MultiPool branch chosen per pixel (block
  resolution; index into `pag.models.multipool.branch_names`: dilations, original, skip).

With `sparse=True` (`pag evaluate --sparse`) the predictions, metrics and saved maps come from
`pag.sparse.SparseExecutor`, which computes only the positions the model's decisions
activate (MACs and activity still come from the measured dense forward), and `latency`
holds wall-clock milliseconds per image of the model's own eval forward and of the
executor, timed interleaved after one warm-up of each on the first image:
``{"dense_ms", "sparse_ms"`` (means), ``"dense_ms_median", "sparse_ms_median", "speedup"``
(of the medians), ``"threads", "device", "max_rel_diff": {task: max |sparse - dense| /
max |dense|}}``. A method without decisions (dense, truncation, multipool_avg) is an error.

Ground truth is not copied: read it from the dataset by id. Nothing is written unless the
whole evaluation succeeds; a missing run directory, an unfinished run (no `final.pt`), weights
trained with other params than the run's `params.yaml`, an unknown split, or an output path
holding another command's file (a run's own files, anything that is not an earlier
evaluation) is a `PagError`. The run directory is locked for reading while it is evaluated,
and the outputs while they are written (`pag.locking`).
"""

from __future__ import annotations

import io
import json
import math
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pag import run_layout as layout
from pag.data import get_dataset
from pag.data.transforms import Normalize
from pag.errors import PagError
from pag.fileio import atomic_write, read_json, remove_temporaries, write_json_atomic
from pag.flops import measure_macs
from pag.locking import locked
from pag.methods import registry
from pag.metrics import (
    NYU_MAX_DEPTH,
    BoundaryAccumulator,
    DepthAccumulator,
    NormalAccumulator,
    SegmentationAccumulator,
)
from pag.models.gating import GATE_RULES
from pag.models.gating import gate_rule as decide_by
from pag.training import checkpoint
from pag.training.device import compute_settings, resolve_device
from pag.training.provenance import (
    Provenance,
    comparable_params,
    data_fingerprint,
    describe,
    recorded_provenance,
    weights_digest,
)
from pag.training.run_dir import read_run_params
from pag.training.run_params import RunParams, differing_keys, resolve_threads
from pag.training.seeds import seed_everything

NEAR_BOUNDARY_PX = 2.0  # compute_allocation: "near" = within this distance of a boundary
DEPTH_CAPS: dict[str, float] = {"nyuv2": NYU_MAX_DEPTH}  # metres; other datasets: no cap
IGNORE_INDEX = 255
# a run directory's own files, which an evaluation's outputs must not replace (and the
# training metrics' older name: an evaluation there would make the run directory foreign)
RUN_FILES = (layout.PARAMS, layout.TRAIN_METRICS, layout.LEGACY_TRAIN_METRICS)


# -- loading -------------------------------------------------------------------------------------


def load_run(run_dir: str | os.PathLike) -> tuple[RunParams, Path]:
    """The run's params and its `final.pt`, or a PagError saying what is missing (see
    `checked_provenance` for whether they belong together)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PagError(f"{run_dir}: run directory not found")
    params = read_run_params(run_dir)
    if params is None:
        raise PagError(f"{run_dir}: no {layout.PARAMS}; not a `pag train` run directory")
    final = layout.final_checkpoint(run_dir)
    if not final.is_file():
        raise PagError(
            f"{run_dir}: run not finished (no {layout.CHECKPOINTS}/{layout.FINAL}); "
            "run `pag train` to completion first"
        )
    return params, final


def checked_provenance(params: RunParams, final: Path) -> Provenance:
    """What `final.pt` was trained from, checked against the run's `params.yaml`: weights of
    other params (a params.yaml edited after training) are refused, naming the keys."""
    recorded = recorded_provenance(final)
    if recorded.params_hash != params.digest():
        keys = differing_keys(recorded.params, comparable_params(params))
        raise PagError(
            f"{final} was trained with other params than {layout.params_file(final.parent.parent)} "
            f"({describe(keys or ['params_hash'])}); train the run again "
            "(`pag train --replace-stale`)"
        )
    return recorded


def check_outputs(run_dir: Path, metrics_path: Path, samples_path: Path) -> None:
    """The evaluation's files must not land on another command's: a run's own params,
    checkpoints or training metrics, a file that is not an earlier evaluation, each other."""
    if metrics_path.resolve() == samples_path.resolve():
        raise PagError(f"{metrics_path}: the metrics and the samples cannot be one file")
    for path, what in ((metrics_path, "evaluation metrics"), (samples_path, "samples")):
        parent = path.resolve().parent
        owner = parent.parent if parent.name == layout.CHECKPOINTS else parent
        if layout.params_file(owner).is_file() and (parent != owner or path.name in RUN_FILES):
            raise PagError(
                f"{path}: is a training run's own file (of {owner}); give --out/--samples a "
                f"path of their own (default {layout.eval_dir(run_dir, '<split>')})"
            )
        if path.is_dir():
            raise PagError(f"{path}: is a folder; the {what} go to a file")
    if metrics_path.is_file():
        existing = read_json(metrics_path, "file at --out")
        if not {"split", "macs", "params_hash"} <= set(existing):
            raise PagError(
                f"{metrics_path}: holds something other than an evaluation (keys "
                f"{sorted(existing)[:6]}); it would be overwritten: give another --out"
            )
    if samples_path.is_file() and not _is_samples(samples_path):
        raise PagError(
            f"{samples_path}: holds something other than saved samples; it would be "
            "overwritten: give another --samples"
        )


def _is_samples(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return "ids.npy" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def load_model(params: RunParams, final: Path, device: torch.device) -> torch.nn.Module:
    model = params.build_model()
    try:
        model.load_state_dict(checkpoint.model_weights(final))
    except RuntimeError as exc:  # keys or shapes that do not fit the params' model
        first = str(exc).strip().splitlines()[0]
        raise PagError(f"{final}: weights do not fit the run's model ({first})") from None
    return model.to(device).eval()


def open_split(params: RunParams, split: str, data_root: str | os.PathLike | None):
    root = data_root if data_root is not None else params.data_root
    dataset = get_dataset(params.dataset, root, split=split)
    missing = sorted(set(params.tasks) - set(dataset.tasks))
    if missing:
        raise PagError(f"dataset '{params.dataset}' has no targets for tasks {missing}")
    if len(dataset) == 0:
        raise PagError(f"split '{split}' of '{params.dataset}' has no images")
    return dataset


# -- accumulation --------------------------------------------------------------------------------


class TaskMetrics:
    """One accumulator per task of the run; `update` with one image's predictions."""

    def __init__(self, tasks: dict[str, int | None], dataset: str):
        self.acc: dict[str, Any] = {}
        if "semantic" in tasks:
            self.acc["semantic"] = SegmentationAccumulator(int(tasks["semantic"]), IGNORE_INDEX)
        if "depth" in tasks:
            self.acc["depth"] = DepthAccumulator(max_depth=DEPTH_CAPS.get(dataset))
        if "normals" in tasks:
            self.acc["normals"] = NormalAccumulator()
        if "boundary" in tasks:
            self.acc["boundary"] = BoundaryAccumulator()

    def update(self, pred: dict[str, np.ndarray], sample: dict) -> None:
        for task, acc in self.acc.items():
            if task == "semantic":
                acc.update(pred["semantic"], sample["semantic"].numpy())
            elif task == "depth":
                gt = sample["depth"].numpy()
                acc.update(pred["depth"], gt, gt > 0)
            elif task == "normals":
                gt = sample["normals"].numpy()
                acc.update(pred["normals"], gt, np.any(gt != 0, axis=0))
            else:
                acc.update([pred["boundary"]], [sample["boundary"].numpy()])

    def compute(self) -> dict[str, dict[str, Any]]:
        return {task: acc.compute() for task, acc in self.acc.items()}


def controlled_blocks(model: torch.nn.Module, method: str) -> list[str]:
    """Blocks whose 3x3 stage a dynamic method may skip, in trunk order (its description's
    `controlled_blocks`)."""
    return registry.get(method).controlled_blocks(model)


def _stage_convs(block: str, modules) -> list[str]:
    """The block's 3x3-stage convs in a MACs breakdown: conv2, and a MultiPool's branches."""
    conv2 = f"trunk.{block}.conv2"
    return [k for k in modules if k == conv2 or k.startswith(f"{conv2}.multipool.dilated.")]


def _prediction_arrays(pred: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """One image's predictions as the metrics take them (the batch dimension dropped)."""
    out = {}
    for task, value in pred.items():
        value = value.detach().float().cpu()[0]
        if task == "semantic":
            out[task] = value.argmax(0).numpy()
        elif task == "boundary":
            out[task] = torch.sigmoid(value[0]).numpy()
        elif task == "depth":
            out[task] = value[0].numpy()
        else:
            out[task] = value.numpy()
    return out


def model_input(image: torch.Tensor, normalize: Normalize, scale: float) -> torch.Tensor:
    """One image as the network sees it: normalised, resized by the run's input_scale
    (bilinear, antialiased, as training resizes it), with a batch dimension."""
    x = normalize({"image": image})["image"][None]
    if scale == 1.0:
        return x
    height, width = image.shape[-2:]
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def at_image_size(output: dict, size: tuple[int, int]) -> dict:
    """A forward's output with its predictions, ponder and ponder-cost maps resized back to
    the image's size (predictions bilinear, normals renormalised; counts nearest), so that
    metrics, compute allocation and saved samples are at full resolution whatever scale the
    network ran at. Unchanged when the sizes agree already."""
    pred = output["pred"]
    if all(tuple(value.shape[-2:]) == tuple(size) for value in pred.values()):
        return output
    resized = {}
    for task, value in pred.items():
        value = F.interpolate(value.float(), size=size, mode="bilinear", align_corners=False)
        resized[task] = F.normalize(value, dim=1) if task == "normals" else value
    aux = dict(output["aux"])
    for key in ("ponder", "ponder_cost"):
        if isinstance(aux.get(key), torch.Tensor):
            aux[key] = F.interpolate(aux[key].float(), size=size, mode="nearest-exact")
    return {**output, "pred": resized, "aux": aux}


def _saved_arrays(
    sid: str, image: torch.Tensor, pred: dict[str, np.ndarray], aux: dict, num_classes: int
) -> dict[str, np.ndarray]:
    """The `samples.npz` entries of one image (see the module docstring)."""
    rgb = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    out = {f"{sid}/image": rgb}
    if "semantic" in pred:
        dtype = np.uint8 if num_classes <= 256 else np.uint16
        out[f"{sid}/semantic"] = pred["semantic"].astype(dtype)
    if "depth" in pred:
        out[f"{sid}/depth"] = pred["depth"].astype(np.float16)
    if "normals" in pred:
        out[f"{sid}/normals"] = pred["normals"].transpose(1, 2, 0).astype(np.float16)
    if "boundary" in pred:
        out[f"{sid}/boundary"] = np.round(pred["boundary"] * 255).astype(np.uint8)
    for key in ("ponder", "ponder_cost"):
        if isinstance(aux.get(key), torch.Tensor):
            out[f"{sid}/{key}"] = aux[key][0, 0].float().cpu().numpy().astype(np.float16)
    for block, gate in aux.get("gates", {}).items():
        out[f"{sid}/gate/{block}"] = gate[0, 1].cpu().numpy().astype(np.uint8)
    for block, choice in aux.get("multipool", {}).items():
        if choice is not None:
            out[f"{sid}/multipool/{block}"] = choice[0].argmax(0).cpu().numpy().astype(np.uint8)
    return out


class LatencyTimer:
    """`evaluate(sparse=True)`: per image, the model's eval forward and the sparse
    executor's, timed interleaved; the executor's output replaces the dense one."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        from pag.sparse import SparseExecutor

        self.model, self.device = model, device
        self.executor = SparseExecutor(model)
        self.threads = torch.get_num_threads()  # the run's, set around the evaluation
        self.dense_ms: list[float] = []
        self.sparse_ms: list[float] = []
        self.max_rel_diff: dict[str, float] = {}
        self.warm = False

    def _timed(self, fn, x: torch.Tensor) -> tuple[float, Any]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        out = fn(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return (time.perf_counter() - start) * 1e3, out

    def run(self, x: torch.Tensor, measured: dict) -> dict:
        with torch.no_grad():
            if not self.warm:
                self.model(x)
                self.executor(x)
                self.warm = True
            dense_ms, _ = self._timed(self.model, x)
            sparse_ms, output = self._timed(self.executor, x)
        self.dense_ms.append(dense_ms)
        self.sparse_ms.append(sparse_ms)
        for task, reference in measured["pred"].items():
            scale = float(reference.abs().max()) or 1.0
            diff = float((output["pred"][task] - reference).abs().max()) / scale
            self.max_rel_diff[task] = max(self.max_rel_diff.get(task, 0.0), diff)
        return output

    def summary(self) -> dict[str, Any]:
        dense_median = float(np.median(self.dense_ms))
        sparse_median = float(np.median(self.sparse_ms))
        return {
            "dense_ms": float(np.mean(self.dense_ms)),
            "sparse_ms": float(np.mean(self.sparse_ms)),
            "dense_ms_median": dense_median,
            "sparse_ms_median": sparse_median,
            "speedup": dense_median / sparse_median,
            "threads": self.threads,
            "device": str(self.device),
            "max_rel_diff": dict(self.max_rel_diff),
        }


class ComputeAllocation:
    """Where a dynamic method spends its compute: the mean ponder value (residual units
    computed per pixel) at pixels within `radius` px (Euclidean) of a ground-truth boundary
    and at the other pixels, pooled over the split. Boundaries are the union of the
    sample's annotators' boundary maps, or, for datasets without them, where the semantic
    label changes between 4-neighbours (255 = ignore counts as a label here)."""

    def __init__(self, radius: float = NEAR_BOUNDARY_PX):
        self.radius = float(radius)
        self.sums = {"near": 0.0, "far": 0.0}
        self.counts = {"near": 0, "far": 0}
        self.source: str | None = None

    def update(self, ponder: np.ndarray, sample: dict) -> None:
        edges, source = boundary_map(sample)
        if edges is None:
            return
        self.source = source
        near = near_mask(edges, self.radius)
        for key, where in (("near", near), ("far", ~near)):
            self.sums[key] += float(ponder[where].astype(np.float64).sum())
            self.counts[key] += int(where.sum())

    def compute(self) -> dict[str, Any] | None:
        if self.source is None:
            return None
        near = self.sums["near"] / self.counts["near"] if self.counts["near"] else float("nan")
        far = self.sums["far"] / self.counts["far"] if self.counts["far"] else float("nan")
        total = self.counts["near"] + self.counts["far"]
        return {
            "near_boundary": near,
            "far_from_boundary": far,
            "ratio": near / far if far > 0 else float("nan"),
            "near_fraction": self.counts["near"] / total if total else float("nan"),
            "radius_px": self.radius,
            "boundary_source": self.source,
            "unit": "residual units computed per pixel",
        }


def boundary_map(sample: dict) -> tuple[np.ndarray | None, str | None]:
    """An H x W bool map of ground-truth boundaries and where it came from."""
    if "boundary" in sample:
        maps = np.asarray(sample["boundary"])
        return (maps.reshape(-1, *maps.shape[-2:]) != 0).any(0), "boundary"
    if "semantic" in sample:
        labels = np.asarray(sample["semantic"])
        edges = np.zeros(labels.shape, dtype=bool)
        dx = labels[:, 1:] != labels[:, :-1]
        dy = labels[1:, :] != labels[:-1, :]
        edges[:, 1:] |= dx
        edges[:, :-1] |= dx
        edges[1:, :] |= dy
        edges[:-1, :] |= dy
        return edges, "semantic"
    return None, None


def near_mask(edges: np.ndarray, radius: float) -> np.ndarray:
    """Pixels within `radius` (Euclidean, in pixels) of a True pixel of `edges`."""
    from scipy.ndimage import distance_transform_edt

    if not edges.any():
        return np.zeros(edges.shape, dtype=bool)
    return distance_transform_edt(~edges) <= radius


def _rule_pass(model, dataset, normalize, params, rule: str, device) -> dict[str, Any]:
    """One pass over the split with every gate deciding by `rule`: headline task metrics
    and the mean fraction of positions (or images) computing over the gated blocks."""
    tasks = TaskMetrics(params.tasks, params.dataset)
    fractions = []
    with decide_by(model, rule), torch.no_grad():
        for index in range(len(dataset)):
            sample = dataset[index]
            x = model_input(sample["image"], normalize, params.input_scale).to(device)
            output = at_image_size(model(x), sample["image"].shape[-2:])
            tasks.update(_prediction_arrays(output["pred"]), sample)
            aux = output["aux"]
            fractions.extend(float(g[:, 1].float().mean()) for g in aux.get("gates", {}).values())
            fractions.extend(float(g.float().mean()) for g in aux.get("block_gates", {}).values())
    metrics = tasks.compute()
    for section in metrics.values():
        for key in ("pr_curve", "iou_per_class"):
            section.pop(key, None)
    metrics["activity_mean"] = float(np.mean(fractions)) if fractions else None
    return metrics


# -- the evaluation --------------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """NaN and infinities as null; numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate(
    run_dir: str | os.PathLike,
    split: str = "val",
    *,
    out: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    save: int = 4,
    device: str = "cpu",
    samples: str | os.PathLike | None = None,
    sparse: bool = False,
    gate_rules: tuple[str, ...] = (),
    gate_rule: str = "hard",
) -> dict[str, Any]:
    """Evaluate `run_dir`'s final weights on `split`; write and return the metrics.

    `out` is the metrics file (default `RUN_DIR/eval_<split>/metrics.json`); the first `save`
    images' predictions and maps go to `samples` (default `RUN_DIR/eval_<split>/samples.npz`;
    none if 0).
    `data_root` overrides the params' data root. `sparse`: predict with the sparse executor
    and time it against the dense forward (see the module docstring). `gate_rule`: how the
    gates decide in the main pass; `gate_rules`: extra passes, one per rule
    (`pag.models.gating.GATE_RULES`), scored into `gate_rules`. Everything is checked,
    and the whole split evaluated, before anything is written."""
    if save < 0:
        raise PagError(f"save must be >= 0 images, got {save}")
    unknown = sorted((set(gate_rules) | {gate_rule}) - set(GATE_RULES))
    if unknown:
        raise PagError(f"unknown gate rules {unknown}; expected some of {list(GATE_RULES)}")
    run_dir = Path(run_dir)
    metrics_path = Path(out) if out is not None else layout.eval_metrics_file(run_dir, split)
    samples_path = Path(samples) if samples is not None else layout.samples_file(run_dir, split)
    params, final = load_run(run_dir)
    check_outputs(run_dir, metrics_path, samples_path)
    with locked(run_dir, "run directory", shared=True, hint="wait for its training to finish"):
        provenance = checked_provenance(params, final)
        return _evaluate(
            params,
            run_dir,
            final,
            provenance,
            split,
            metrics_path,
            samples_path,
            data_root=data_root,
            save=save,
            device=device,
            sparse=sparse,
            gate_rules=gate_rules,
            gate_rule=gate_rule,
        )


def _evaluate(
    params: RunParams,
    run_dir: Path,
    final: Path,
    provenance: Provenance,
    split: str,
    metrics_path: Path,
    samples_path: Path,
    *,
    data_root,
    save: int,
    device: str,
    sparse: bool,
    gate_rules: tuple[str, ...],
    gate_rule: str,
) -> dict[str, Any]:
    torch_device = resolve_device(device)
    dataset = open_split(params, split, data_root)
    normalize = Normalize()
    num_classes = int(params.tasks.get("semantic") or 0)

    with compute_settings(resolve_threads(params.threads), torch_device):
        seed_everything(params.seed)
        model = load_model(params, final, torch_device)
        if sparse and gate_rule != "hard":
            raise PagError(
                f"--sparse runs the gates' own decisions (the noiseless argmax); it cannot be "
                f"compared with an evaluation by the {gate_rule!r} rule"
            )
        if (gate_rules or gate_rule != "hard") and not registry.get(params.method).gated:
            gated = [m.name for m in registry.methods() if m.gated]
            raise PagError(
                f"{run_dir}: gate rules ({', '.join([gate_rule, *gate_rules])}) need a model "
                f"with gates ({', '.join(gated)}); this run is {params.method!r}"
            )
        timer = LatencyTimer(model, torch_device) if sparse else None
        blocks = controlled_blocks(model, params.method)
        tasks = TaskMetrics(params.tasks, params.dataset)
        allocation = ComputeAllocation()
        dense, effective = [], []
        computed = dict.fromkeys(blocks, 0.0)
        possible = dict.fromkeys(blocks, 0.0)
        saved: dict[str, np.ndarray] = {}
        saved_ids: list[str] = []
        captured: list[dict] = []
        checked: set[tuple[int, ...]] = set()
        hook = model.register_forward_hook(lambda _m, _a, output: captured.append(output))
        with decide_by(model, gate_rule):
            try:
                for index in range(len(dataset)):
                    sample = dataset[index]
                    image = sample["image"]
                    x = model_input(image, normalize, params.input_scale).to(torch_device)
                    captured.clear()
                    # the flop counter's module-by-module cross-check is the slow part of a
                    # measurement; the ops of a forward depend only on the input shape, so one
                    # check per shape proves the hooks' counts (the same for every image)
                    report = measure_macs(model, x, strict=tuple(x.shape) not in checked)
                    checked.add(tuple(x.shape))
                    output = captured[-1]
                    if timer is not None:
                        output = timer.run(x, output)
                    output = at_image_size(output, image.shape[-2:])
                    dense.append(report.dense)
                    effective.append(float(report.effective[0]))
                    for block in blocks:
                        for name in _stage_convs(block, report.modules):
                            computed[block] += float(report.modules[name].effective.sum())
                        possible[block] += report.modules[f"trunk.{block}.conv2"].dense
                    pred = _prediction_arrays(output["pred"])
                    tasks.update(pred, sample)
                    if blocks and isinstance(output["aux"].get("ponder"), torch.Tensor):
                        allocation.update(
                            output["aux"]["ponder"][0, 0].float().cpu().numpy(), sample
                        )
                    if len(saved_ids) < save:
                        sid = str(sample.get("id", index))
                        saved_ids.append(sid)
                        saved.update(
                            _saved_arrays(sid, sample["image"], pred, output["aux"], num_classes)
                        )
            finally:
                hook.remove()
        by_rule = {
            rule: _rule_pass(model, dataset, normalize, params, rule, torch_device)
            for rule in gate_rules
        }

    task_metrics = tasks.compute()
    result: dict[str, Any] = {
        "split": split,
        "num_images": len(dataset),
        "dataset": params.dataset,
        "method": params.method,
        "budget": params.budget,
        "params_hash": params.digest(),
        "provenance": {
            "training": provenance.to_dict(),
            "weights": weights_digest(model.state_dict()),
            "data": data_fingerprint(params.dataset, dataset.root),
        },
        "gate_rule": gate_rule,
        **task_metrics,
        "macs": {
            "dense": float(np.mean(dense)),
            "effective": float(np.mean(effective)),
            "effective_std": float(np.std(effective)),
            "unit": "MACs per image",
        },
        "activity": {b: computed[b] / possible[b] for b in blocks if possible[b] > 0},
    }
    allocated = allocation.compute()
    if allocated is not None:
        result["compute_allocation"] = allocated
    if by_rule:
        result["gate_rules"] = by_rule
    if timer is not None:
        result["latency"] = timer.summary()
    result = json_safe(result)
    json.dumps(result, allow_nan=False)  # valid JSON, or fail before writing

    with locked(metrics_path, "evaluation output", hint="wait for the other evaluation"):
        _write_outputs(metrics_path, samples_path, result, saved_ids, saved)
    return result


def _write_outputs(metrics_path: Path, samples_path: Path, result, saved_ids, saved) -> None:
    """metrics.json marks completion: it goes first and is written last, so a process killed
    in between leaves no metrics.json, never one beside samples of another checkpoint. The
    previous files are renamed aside (a rename needs no space), and a failed write (a full
    disk) renames them back."""
    outputs = (samples_path, metrics_path)
    for path in outputs:
        remove_temporaries(path)  # what an evaluation killed while writing left
    aside = {p: p.with_name(f".{p.name}.previous.tmp") for p in outputs if p.is_file()}
    for path in reversed(outputs):  # metrics.json first
        if path in aside:
            os.replace(path, aside[path])
    try:
        if saved_ids:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, ids=np.array(saved_ids, dtype=str), **saved)
            with atomic_write(samples_path, "wb") as handle:
                handle.write(buffer.getvalue())
        write_json_atomic(metrics_path, result)
    except BaseException:
        for path in outputs:  # metrics.json last
            if path in aside:
                os.replace(aside[path], path)
            else:
                path.unlink(missing_ok=True)
        raise
    for backup in aside.values():
        backup.unlink()
