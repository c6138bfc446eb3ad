"""Time the whole default pipeline from a fresh copy of the project, data generation included.

    python benchmarks/pipeline_time.py [--profile synthetic] [--cores 2] [--keep DIR]

Copies the project's files (git's tracked and untracked-but-not-ignored ones, as a fresh clone
of the working tree would have them, minus the committed results of the profile) into a
temporary directory, runs `snakemake --cores N --config profile=P` there with MLflow tracking
on (as a user's run), and prints one JSON line: wall seconds, job count, and whether every
result file equals the committed one byte for byte. The goal for the default profile is at
most 15 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def project_files() -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [name for name in listing.stdout.split("\0") if name and (ROOT / name).is_file()]


def result_files(project: Path, profile: str) -> dict[str, bytes]:
    files = {}
    for folder in (f"results/{profile}", f"paper_figures/{profile}"):
        for path in sorted((project / folder).rglob("*")):
            if path.is_file() and not path.name.endswith(".lock"):  # pag.locking's lock files
                files[str(path.relative_to(project))] = path.read_bytes()
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="synthetic")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="run here and keep it")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="pag-pipeline-"))
    committed = result_files(ROOT, args.profile)
    for name in project_files():
        if name.startswith((f"results/{args.profile}/", f"paper_figures/{args.profile}/")):
            continue
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.setdefault("PAG_TRACKING", "1")
    command = ["snakemake", "--cores", str(args.cores), "--config", f"profile={args.profile}"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed in {work}:\n{done.stderr[-4000:]}")
    produced = result_files(work, args.profile)
    differing = sorted(
        name
        for name in produced.keys() | committed.keys()
        if produced.get(name) != committed.get(name)
    )
    jobs = done.stderr.count("Finished jobid")
    print(
        json.dumps(
            {
                "profile": args.profile,
                "cores": args.cores,
                "wall_s": round(seconds, 1),
                "jobs": jobs,
                "results_equal_committed": not differing,
                "differing": differing[:20],
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor()}",
            }
        )
    )
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
