"""Synthetic-scene generation speed: images per second, per core, including PNG writing.

Goal (issue 2): at 96 x 128, at least 50 images/s per core. Prints one JSON line per
configuration. Run: python benchmarks/synth_speed.py [--num 300] [--workers 1 2]

Outputs of every repeat are kept until all timing is done: deleting thousands of files on a
filesystem mounted with `discard` (as on our machines) slows the next run's file creation.
`compute_images_per_s` is the same work without the disk (render + PNG encode), which tells
CPU speed apart from the shared disk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from pag.data.synthetic.writer import SynthParams, encode_rendering, generate, render_index


def measure(num: int, workers: int, height: int, width: int, repeats: int, scratch: Path) -> dict:
    params = SynthParams(seed=0, height=height, width=width)
    render_index(params, 0)  # warm-up: imports, allocator
    best_wall = best_cpu = best_compute = float("inf")
    for repeat in range(repeats):
        out = scratch / f"w{workers}-r{repeat}"
        wall0, cpu0 = time.perf_counter(), time.process_time()
        generate(out, num, params, workers=workers, progress=False)
        best_wall = min(best_wall, time.perf_counter() - wall0)
        best_cpu = min(best_cpu, time.process_time() - cpu0)
        if workers == 1:
            start = time.perf_counter()
            for index in range(num):
                encode_rendering(render_index(params, index))
            best_compute = min(best_compute, time.perf_counter() - start)
    result = {
        "height": height,
        "width": width,
        "num": num,
        "workers": workers,
        "images_per_s": round(num / best_wall, 1),
        "images_per_s_per_core": round(num / best_wall / workers, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "python": platform.python_version(),
    }
    if workers == 1:  # the parent does all the work: CPU time is a load-independent check
        result["images_per_cpu_s"] = round(num / best_cpu, 1)
        result["compute_images_per_s"] = round(num / best_compute, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num", type=int, default=300)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        for workers in args.workers:
            result = measure(
                args.num, workers, args.height, args.width, args.repeats, Path(scratch)
            )
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
