"""Sparse execution speed: the model's dense PyTorch forward versus `pag.sparse.SparseExecutor`.

For each trunk (the synthetic default: ResNet-26 at width 0.25, output stride 8, on 96 x 128
images; ResNet-50 at output stride 8 on 512 x 512), each PAG gating mode and each activity
rate, every gated block is forced to a blob-shaped random mask with exactly that fraction
of active pixels (`pag.sparse.forcing`; the weights are freshly initialised, BatchNorm
statistics warmed on random inputs, so there are no trained masks), on both paths alike.
Timed is the trunk (`model.features` against `SparseExecutor.features`), batch 1, with
the threads available; the heads are dense in every method and left out. Repetitions of
the three paths are interleaved and medians taken, so that other load on the machine
affects all alike:

* `dense_ms`: the model's own eval forward (masked dense: every conv runs everywhere), as
  built (NCHW);
* `dense_cl_ms`: the same forward with model and input in channels-last memory (PyTorch's
  faster CPU layout for convolutions);
* `sparse_ms`: the executor, computing only active positions;
* `engine_dense_ms`: the executor with every layer run dense (its kernels and BatchNorm
  folding without the sparsity), to separate the two effects.

`ideal_speedup` = dense / effective MACs of the trunk as `pag.flops` counts them for those
masks; `measured_speedup` = best dense / sparse_ms, the best dense being the faster of
dense_ms and dense_cl_ms; `fraction_of_ideal` = measured / ideal;
`saving_fraction_of_ideal` = (1 - sparse_ms / best dense) / (1 - effective / dense), the
share of the ideal time saving realised (undefined at 100 %); `speedup_vs_engine_dense` and
`fraction_of_ideal_vs_engine` the same against the executor's own dense run. Goal (issue 8):
at rates of 70 % and below, measured >= 0.7 x ideal; at 100 %, at most 5 % slower than
dense.

`--run RUN_DIR ...` adds, for trained runs (PAG or any method with decisions), one line each:
every path on each of the first `--images` evaluation images with the model's own decisions,
so masks and active counts change from image to image as in real use (`rate` is then the
mean fraction of pixels the PAG gates compute). Times are of a second pass over the images:
the first (`sparse_first_pass_ms`) includes oneDNN building a kernel for each new bucketed
row count, which a long evaluation amortises. `--trunks` with no names skips the forced
configurations.

One JSON line per configuration after a header line (machine, threads, torch). Defaults take
about 5 minutes on 2 cores.

On a machine shared with other jobs, `--threads 1 --clock cpu` times each path by the CPU
time of its one thread, which waiting for the CPU does not inflate.

Run: python benchmarks/sparse_speed.py [--trunks synthetic resnet50] [--modes conv3x3 residual]
     [--rates 1 0.9 0.7 0.5 0.3] [--repeats 15 2] [--dense-above F] [--full-model]
     [--threads N] [--clock wall|cpu] [--device cpu|cuda]
     [--run RUN_DIR ... [--images 20] [--data-root DIR]]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time

import torch

from pag.flops import measure_macs
from pag.models import build_model
from pag.sparse import Policy, SparseExecutor
from pag.sparse.forcing import blob_masks, force_gates

TRUNKS = {
    "synthetic": {
        "model": {"depth": 26, "width_multiplier": 0.25, "output_stride": 8, "head_hidden": 32},
        "tasks": {"semantic": 10, "boundary": None, "depth": None, "normals": None},
        "size": (96, 128),
    },
    "resnet50": {
        "model": {"depth": 50, "width_multiplier": 1.0, "output_stride": 8, "head_hidden": 256},
        "tasks": {"semantic": 40},
        "size": (512, 512),
    },
}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def warm_batchnorm(model: torch.nn.Module, size: tuple[int, int], seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics (two training-mode forwards on random images at a
    quarter of the size), so that folding them is exercised as with a trained model."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 3, size[0] // 2, size[1] // 2, generator=g))
    model.eval()


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
DEVICE = torch.device("cpu")  # --device


def timed(fn, clock) -> tuple[float, torch.Tensor]:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    start = clock()
    out = fn()
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    return (clock() - start) * 1e3, out


def trunk_macs(model, x) -> tuple[float, float]:
    report = measure_macs(model, x, strict=False)
    dense = sum(m.dense for k, m in report.modules.items() if k.startswith("trunk."))
    effective = sum(
        float(m.effective[0]) for k, m in report.modules.items() if k.startswith("trunk.")
    )
    return dense, effective


def full_macs(model, x) -> tuple[float, float]:
    report = measure_macs(model, x, strict=False)
    return report.dense, float(report.effective[0])


def benchmark_trunk(name: str, mode: str, args) -> None:
    spec = TRUNKS[name]
    torch.manual_seed(0)
    model = build_model("pag", 0.5, tasks=spec["tasks"], gate_mode=mode, **spec["model"])
    warm_batchnorm(model, spec["size"])
    model.to(DEVICE)
    x = torch.randn(1, 3, *spec["size"], generator=torch.Generator().manual_seed(1)).to(DEVICE)
    sparse = SparseExecutor(model, policy=policy_of(args))
    engine_dense = SparseExecutor(model, policy=Policy.always_dense())
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    repeats = args.repeats[0] if name == "synthetic" else args.repeats[-1]
    if args.full_model:
        paths = {
            "dense": lambda: model(x)["pred"],
            "dense_cl": lambda: model_cl(x_cl)["pred"],
            "sparse": lambda: sparse(x)["pred"],
            "engine_dense": lambda: engine_dense(x)["pred"],
        }
        count = full_macs
    else:
        paths = {
            "dense": lambda: model.features(x),
            "dense_cl": lambda: model_cl.features(x_cl),
            "sparse": lambda: sparse.features(x),
            "engine_dense": lambda: engine_dense.features(x),
        }
        count = trunk_macs
    warmed = False
    for rate in args.rates:
        masks = blob_masks(model, x, rate, seed=2)
        sparse.forced = engine_dense.forced = masks
        with force_gates(model, masks), force_gates(model_cl, masks), torch.no_grad():
            dense_macs, effective_macs = count(model, x)
            if not warmed:  # tables, packed weights, allocator: once per model
                for fn in paths.values():
                    fn()
                warmed = True
            else:  # the sparse products' shapes change with the masks (oneDNN kernels)
                paths["sparse"]()
            times: dict[str, list[float]] = {key: [] for key in paths}
            outputs = {}
            for _ in range(repeats):
                for key, fn in paths.items():
                    ms, outputs[key] = timed(fn, CLOCKS[args.clock])
                    times[key].append(ms)
        median = {key: statistics.median(values) for key, values in times.items()}
        best_dense = min(median["dense"], median["dense_cl"])
        ideal = dense_macs / effective_macs
        measured = best_dense / median["sparse"]
        versus_engine = median["engine_dense"] / median["sparse"]
        ideal_saving = 1 - effective_macs / dense_macs
        row = {
            "trunk": name,
            "gate_mode": mode,
            "input": list(spec["size"]),
            "rate": rate,
            "timed": "model" if args.full_model else "trunk",
            "dense_macs": dense_macs,
            "effective_macs": effective_macs,
            "ideal_speedup": round(ideal, 4),
            "dense_ms": round(median["dense"], 3),
            "dense_cl_ms": round(median["dense_cl"], 3),
            "sparse_ms": round(median["sparse"], 3),
            "engine_dense_ms": round(median["engine_dense"], 3),
            "measured_speedup": round(measured, 4),
            "fraction_of_ideal": round(measured / ideal, 4),
            "saving_fraction_of_ideal": (
                round((1 - median["sparse"] / best_dense) / ideal_saving, 4)
                if ideal_saving > 1e-9
                else None
            ),
            "speedup_vs_engine_dense": round(versus_engine, 4),
            "fraction_of_ideal_vs_engine": round(versus_engine / ideal, 4),
            "max_rel_diff": max_rel_diff(outputs["sparse"], outputs["dense"]),
            "repeats": repeats,
        }
        print(json.dumps(row), flush=True)


def benchmark_run(run_dir: str, args) -> None:
    """A trained run's model on its evaluation images, every path on every image with the
    model's own decisions (no forced masks): the activity the gates chose, masks that
    change from image to image."""
    from pag.data.transforms import Normalize
    from pag.training.evaluate import load_model, load_run, open_split

    params, final = load_run(run_dir)
    model = load_model(params, final, DEVICE)
    dataset = open_split(params, args.split, args.data_root)
    sparse = SparseExecutor(model, policy=policy_of(args))
    engine_dense = SparseExecutor(model, policy=Policy.always_dense())
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    clock = CLOCKS[args.clock]
    totals = dict.fromkeys(("dense", "dense_cl", "sparse", "engine_dense"), 0.0)
    dense_macs = effective_macs = 0.0
    rates, diffs = [], []
    count = min(args.images, len(dataset))
    images = [
        Normalize()({"image": dataset[i]["image"]})["image"][None].to(DEVICE) for i in range(count)
    ]
    cold = 0.0
    with torch.no_grad():
        for x in images:  # first pass: oneDNN builds the kernels of the bucketed shapes
            ms, _ = timed(lambda x=x: sparse.features(x), clock)
            cold += ms
        for index in range(-1, count):  # image 0 once more untimed: the dense paths' warm-up
            x = images[max(index, 0)]
            x_cl = x.contiguous(memory_format=torch.channels_last)
            paths = {
                "dense": lambda x=x: model.features(x),
                "dense_cl": lambda x_cl=x_cl: model_cl.features(x_cl),
                "sparse": lambda x=x: sparse.features(x),
                "engine_dense": lambda x=x: engine_dense.features(x),
            }
            outputs = {}
            for key, fn in paths.items():
                ms, outputs[key] = timed(fn, clock)
                if index >= 0:
                    totals[key] += ms
            if index < 0:
                continue
            dense, effective = trunk_macs(model, x)
            dense_macs, effective_macs = dense_macs + dense, effective_macs + effective
            gates = sparse(x)["aux"].get("gates", {})
            if gates:
                rates.append(float(torch.stack([g[:, 1].mean() for g in gates.values()]).mean()))
            diffs.append(max_rel_diff(outputs["sparse"], outputs["dense"]))
    best_dense = min(totals["dense"], totals["dense_cl"])
    ideal = dense_macs / effective_macs
    measured = best_dense / totals["sparse"]
    versus_engine = totals["engine_dense"] / totals["sparse"]
    row = {
        "run": str(run_dir),
        "method": params.method,
        "budget": params.budget,
        "gate_mode": params.model.gate_mode if params.method == "pag" else None,
        "images": count,
        "rate": round(sum(rates) / len(rates), 4) if rates else None,
        "timed": "trunk",
        "ideal_speedup": round(ideal, 4),
        **{f"{key}_ms": round(value / count, 3) for key, value in totals.items()},
        "sparse_first_pass_ms": round(cold / count, 3),
        "measured_speedup": round(measured, 4),
        "fraction_of_ideal": round(measured / ideal, 4),
        "speedup_vs_engine_dense": round(versus_engine, 4),
        "fraction_of_ideal_vs_engine": round(versus_engine / ideal, 4),
        "max_rel_diff": max(diffs),
    }
    print(json.dumps(row), flush=True)


def policy_of(args) -> Policy:
    return Policy(args.dense_above, args.rows_dense_above, args.small_conv_macs)


def max_rel_diff(sparse, dense) -> float:
    """max |sparse - dense| / max |dense|, over every output tensor."""
    if isinstance(dense, dict):
        return max(max_rel_diff(sparse[k], v) for k, v in dense.items())
    scale = float(dense.abs().max()) or 1.0
    return float((sparse - dense).abs().max()) / scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trunks", nargs="*", choices=sorted(TRUNKS), default=list(TRUNKS))
    parser.add_argument("--modes", nargs="+", default=["conv3x3", "residual"])
    parser.add_argument("--rates", nargs="+", type=float, default=[1.0, 0.9, 0.7, 0.5, 0.3])
    parser.add_argument(
        "--repeats",
        nargs="+",
        type=int,
        default=[15, 2],
        help="timed repetitions per path: synthetic [resnet50]",
    )
    default = Policy()
    parser.add_argument("--dense-above", type=float, default=default.dense_above)
    parser.add_argument("--rows-dense-above", type=float, default=default.rows_dense_above)
    parser.add_argument("--small-conv-macs", type=float, default=default.small_conv_macs)
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument(
        "--full-model", action="store_true", help="time the whole model, heads included"
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: this thread's CPU time, which time-sharing with other "
        "processes does not inflate (needs --threads 1)",
    )
    parser.add_argument(
        "--run",
        nargs="*",
        default=[],
        help="trained run directories: also time them on their own evaluation images",
    )
    parser.add_argument("--split", default="val", help="--run: the split to read images from")
    parser.add_argument("--data-root", default=None, help="--run: the data root")
    parser.add_argument("--images", type=int, default=20, help="--run: images per run")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (timed with synchronisation)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and (torch.get_num_threads() != 1 or DEVICE.type != "cpu"):
        parser.error("--clock cpu measures one CPU thread: use it with --threads 1 on the CPU")
    header = {
        "machine": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "onednn": torch.backends.mkldnn.is_available(),
        "device": str(DEVICE)
        + (f" ({torch.cuda.get_device_name(DEVICE)})" if DEVICE.type == "cuda" else ""),
        "policy": vars(policy_of(args)),
        "clock": args.clock,
    }
    print(json.dumps(header), flush=True)
    for name in args.trunks:
        for mode in args.modes:
            benchmark_trunk(name, mode, args)
    for run_dir in args.run:
        benchmark_run(run_dir, args)


if __name__ == "__main__":
    main()
