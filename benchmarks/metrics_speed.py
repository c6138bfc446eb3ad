"""Metric speed on realistic synthetic inputs. Prints one JSON line per measurement.

Goals (issue 4):

* boundary: BSDS500-size evaluation, 200 images at 321 x 481 with 5 annotators each and
  99 thresholds, in under 10 minutes on 2 cores (images evaluated in parallel);
* dense: segmentation + depth + normal metrics over 654 images at 480 x 640 (the NYUv2 test
  set) in under 10 seconds.

Inputs are synthetic but shaped like real ones. Boundaries: a random warped-Voronoi
segmentation per image; each of the 5 annotators merges a few regions and shifts by up to one
pixel; the soft map is the blurred annotator agreement, plus weaker "texture" edges that no
annotator marked, plus smooth noise, quantised to k / 255 like the benchmark's PNG input.
Dense: 16 distinct images (labels with 40 classes and ignore pixels, depth with holes,
noisy normals with invalid pixels) cycled to 654; generating them is not timed.

* real: a trained model's predictions on the real BSDS500 test images, scored against every
  annotator (`--real-run RUN_DIR --data-root ../shared/data`): one model in at most 2 minutes
  on 2 cores (issue 15), model and metric timed apart.

Run: python benchmarks/metrics_speed.py [--images 200] [--workers 2] [--dense-images 654]
     python benchmarks/metrics_speed.py --real-run runs/bsds500-cpu/dense-s0 \
         --data-root ../shared/data --skip dense --skip boundary
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import numpy as np
from scipy import ndimage as ndi

from pag.metrics import (
    BoundaryAccumulator,
    DepthAccumulator,
    NormalAccumulator,
    SegmentationAccumulator,
)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}"


def _boundaries(labels: np.ndarray) -> np.ndarray:
    b = np.zeros(labels.shape, dtype=bool)
    b[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    b[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return b


def _warped_voronoi(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    h, w = shape
    seeds = rng.random((n, 2)) * [h, w]
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    warp = 80.0
    yy += warp * ndi.gaussian_filter(rng.standard_normal(shape), 10).astype(np.float32)
    xx += warp * ndi.gaussian_filter(rng.standard_normal(shape), 10).astype(np.float32)
    best = np.full(shape, np.inf, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.int32)
    for k, (sy, sx) in enumerate(seeds):
        d = (yy - sy) ** 2 + (xx - sx) ** 2
        closer = d < best
        best[closer] = d[closer]
        labels[closer] = k
    return labels


def boundary_sample(
    seed: int, shape: tuple[int, int] = (321, 481), annotators: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """A soft boundary map in [0, 1] (multiples of 1/255) and K x H x W annotator maps."""
    rng = np.random.default_rng(seed)
    regions = 25
    labels = _warped_voronoi(rng, shape, regions)
    gts = []
    for _ in range(annotators):
        lab = labels.copy()
        for r in rng.choice(regions, 5, replace=False):  # each annotator merges 5 regions
            lab[lab == r] = (r + 1) % regions
        shift = tuple(int(s) for s in rng.integers(-1, 2, 2))
        gts.append(_boundaries(np.roll(lab, shift, axis=(0, 1))))
    gt = np.stack(gts)
    texture = _boundaries(_warped_voronoi(rng, shape, 60))  # edges nobody annotated
    strength = ndi.gaussian_filter(gt.mean(0) + 0.35 * texture, 1.5)
    noise = ndi.gaussian_filter(rng.random(shape), 2.0)
    prob = strength / strength.max() * 0.9 + 0.25 * noise * rng.random()
    prob = np.round(np.clip(prob, 0, 1) * 255) / 255
    return prob, gt


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the metric's worker pool)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _scored(probs, gts, workers: int, thresholds: int = 99) -> tuple[dict, float, float]:
    """The boundary metrics of (probs, gts) with their wall and CPU seconds."""
    acc = BoundaryAccumulator(thresholds=thresholds)
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    acc.update(probs, gts, workers=workers)
    result = acc.compute()
    return result, time.perf_counter() - wall0, _cpu_seconds() - cpu0


def measure_real(run_dir: str, data_root: str, split: str, images: int, workers: int) -> dict:
    """A trained run's predictions on real BSDS500 images (as `pag evaluate` makes them:
    at the run's input scale, resized back), scored against every annotator."""
    import torch

    from pag.data import get_dataset
    from pag.data.transforms import Normalize
    from pag.training.evaluate import (
        _prediction_arrays,
        at_image_size,
        load_model,
        load_run,
        model_input,
    )

    params, final = load_run(run_dir)
    torch.set_num_threads(workers)
    model = load_model(params, final, torch.device("cpu"))
    dataset = get_dataset(params.dataset, data_root, split=split)
    count = min(images, len(dataset))
    probs, gts = [], []
    model_s = 0.0
    for index in range(count):
        sample = dataset[index]
        start = time.perf_counter()
        with torch.no_grad():
            x = model_input(sample["image"], Normalize(), params.input_scale)
            output = at_image_size(model(x), sample["image"].shape[-2:])
        probs.append(_prediction_arrays(output["pred"])["boundary"])
        model_s += time.perf_counter() - start
        gts.append(sample["boundary"].numpy())
    result, wall, cpu = _scored(probs, gts, workers)
    return {
        "measurement": "boundary, real predictions",
        "run": str(run_dir),
        "split": split,
        "images": count,
        "annotators": f"{min(len(g) for g in gts)}-{max(len(g) for g in gts)}",
        "workers": workers,
        "model_s": round(model_s, 1),
        "metric_wall_s": round(wall, 1),
        "metric_cpu_s": round(cpu, 1),
        "total_s": round(model_s + wall, 1),
        "goal_s": 120,
        "foreground_at_0.5": round(float(np.mean([(p >= 0.5).mean() for p in probs])), 3),
        "ods": round(result["ods"], 4),
        "ois": round(result["ois"], 4),
        "ap": round(result["ap"], 4),
        "machine": machine(),
    }


def measure_boundary(images: int, workers: int, thresholds: int) -> dict:
    t0 = time.perf_counter()
    data = [boundary_sample(i) for i in range(images)]
    gen_s = time.perf_counter() - t0
    result, wall, cpu = _scored([p for p, _ in data], [g for _, g in data], workers, thresholds)
    return {
        "measurement": "boundary",
        "images": images,
        "size": "321x481",
        "annotators": 5,
        "thresholds": thresholds,
        "workers": workers,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "s_per_image_per_worker": round(wall * workers / images, 2),
        "goal_s": 600,
        "ods": round(result["ods"], 4),
        "ois": round(result["ois"], 4),
        "ap": round(result["ap"], 4),
        "generate_s": round(gen_s, 1),
        "machine": machine(),
    }


def dense_sample(seed: int, shape: tuple[int, int] = (480, 640)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, w = shape
    gt_sem = rng.integers(0, 40, size=(h // 16, w // 16)).repeat(16, 0).repeat(16, 1)
    gt_sem[rng.random(shape) < 0.1] = 255
    pred_sem = np.where(rng.random(shape) < 0.7, gt_sem, rng.integers(0, 40, shape))
    pred_sem[pred_sem == 255] = 0
    yy, xx = np.mgrid[:h, :w]
    gt_depth = (1.0 + 5.0 * (yy / h) + 2.0 * np.sin(xx / 50.0) ** 2).astype(np.float32)
    gt_depth[rng.random(shape) < 0.05] = 0.0  # holes
    pred_depth = (gt_depth * np.exp(0.1 * rng.standard_normal(shape))).astype(np.float32)
    gt_n = rng.standard_normal((3, h, w)).astype(np.float32)
    gt_n /= np.linalg.norm(gt_n, axis=0, keepdims=True)
    gt_n[:, rng.random(shape) < 0.05] = 0.0
    pred_n = (gt_n + 0.3 * rng.standard_normal((3, h, w))).astype(np.float32)
    return {
        "pred_sem": pred_sem.astype(np.int64),
        "gt_sem": gt_sem.astype(np.int64),
        "pred_depth": pred_depth,
        "gt_depth": gt_depth,
        "pred_n": pred_n,
        "gt_n": gt_n,
    }


def measure_dense(images: int, distinct: int) -> dict:
    pool = [dense_sample(i) for i in range(distinct)]
    seg = SegmentationAccumulator(40, 255)
    depth = DepthAccumulator(max_depth=10.0, eigen_crop=True)
    normals = NormalAccumulator()
    times = {"segmentation": 0.0, "depth": 0.0, "normals": 0.0}
    wall0 = time.perf_counter()
    for i in range(images):
        s = pool[i % distinct]
        t = time.perf_counter()
        seg.update(s["pred_sem"], s["gt_sem"])
        t1 = time.perf_counter()
        depth.update(s["pred_depth"], s["gt_depth"])
        t2 = time.perf_counter()
        normals.update(s["pred_n"], s["gt_n"])
        t3 = time.perf_counter()
        times["segmentation"] += t1 - t
        times["depth"] += t2 - t1
        times["normals"] += t3 - t2
    t = time.perf_counter()
    seg_out, depth_out, normal_out = seg.compute(), depth.compute(), normals.compute()
    compute_s = time.perf_counter() - t
    wall = time.perf_counter() - wall0
    return {
        "measurement": "segmentation+depth+normals",
        "images": images,
        "size": "480x640",
        "wall_s": round(wall, 2),
        "update_s": {k: round(v, 2) for k, v in times.items()},
        "compute_s": round(compute_s, 2),
        "goal_s": 10,
        "miou": round(seg_out["miou"], 4),
        "abs_rel": round(depth_out["abs_rel"], 4),
        "normal_median": round(normal_out["median"], 3),
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=200, help="boundary images")
    parser.add_argument("--workers", type=int, default=2, help="boundary processes")
    parser.add_argument("--thresholds", type=int, default=99)
    parser.add_argument("--dense-images", type=int, default=654)
    parser.add_argument("--distinct", type=int, default=16, help="distinct dense images")
    parser.add_argument("--skip", choices=["boundary", "dense"], action="append", default=[])
    parser.add_argument("--real-run", help="a trained bsds500 run directory to time")
    parser.add_argument("--data-root", default=None, help="holding bsds500/ (real run)")
    parser.add_argument("--split", default="test", help="real run: the split scored")
    args = parser.parse_args()
    if args.real_run:
        real = measure_real(args.real_run, args.data_root, args.split, args.images, args.workers)
        print(json.dumps(real), flush=True)
    if "dense" not in args.skip:
        print(json.dumps(measure_dense(args.dense_images, args.distinct)), flush=True)
    if "boundary" not in args.skip:
        print(json.dumps(measure_boundary(args.images, args.workers, args.thresholds)), flush=True)


if __name__ == "__main__":
    main()
