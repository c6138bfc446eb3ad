"""Synthetic-scene generation speed: images per second, per core, including PNG writing.

Goal (issue 2): at 96 x 128, at least 50 images/s per core. Prints one JSON line per
configuration. Run: python benchmarks/synth_speed.py [--num 300] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

from pag.data.synthetic.writer import SynthParams, generate, render_index


def measure(num: int, workers: int, height: int, width: int, repeats: int) -> dict:
    params = SynthParams(seed=0, height=height, width=width)
    render_index(params, 0)  # warm-up: imports, allocator
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            generate(out, num, params, workers=workers, progress=False)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    result = {
        "height": height,
        "width": width,
        "num": num,
        "workers": workers,
        "images_per_s": round(num / best_wall, 1),
        "images_per_s_per_core": round(num / best_wall / workers, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.processor() or '?'}",
        "python": platform.python_version(),
    }
    if workers == 1:  # the parent does all the work: CPU time is a load-independent check
        result["images_per_cpu_s"] = round(num / best_cpu, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num", type=int, default=300)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs")
    args = parser.parse_args()
    for workers in args.workers:
        print(
            json.dumps(measure(args.num, workers, args.height, args.width, args.repeats)),
            flush=True,
        )


if __name__ == "__main__":
    main()
