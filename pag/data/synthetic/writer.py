"""Write a synthetic dataset to disk in the real datasets' conventions, with a manifest.

Image `i` is rendered from the random stream seeded by (seed, i) and its split is a function of
`i` alone, so a run over images i..j writes exactly the files a larger run writes for them, and
re-running with the same seed gives byte-identical files. Files are written atomically; the
manifest last, so an interrupted run is simply run again.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from tqdm import tqdm

from pag.data.codecs import encode_depth, encode_normals, encode_png
from pag.data.sample import IGNORE_INDEX
from pag.data.synthetic.render import Rendering, render
from pag.data.synthetic.scene import CLASSES, sample_scene
from pag.errors import DataError, DataMissing, PagError
from pag.fileio import (
    bytes_digest,
    foreign_entries,
    names_shown,
    read_json,
    write_bytes_atomic,
    write_json_atomic,
)
from pag.locking import locked

GENERATOR = "pag.synthetic"
GENERATOR_VERSION = "1"
MANIFEST = "manifest.json"
# what to run when the data is not there (a profile's own command is more exact: see
# `pag.cli_options.data_hint`)
SYNTH_HINT = "render it with `pag data synth --profile NAME` (or --out, --num, --seed)"
MODALITIES = ("rgb", "depth", "normals", "semantic", "instance", "boundary")
SPLITS = ("train", "val", "test")
# How each modality is stored: the same conventions as the real datasets' PNGs.
ENCODING: dict[str, dict[str, Any]] = {
    "rgb": {"format": "PNG RGB uint8"},
    "depth": {
        "format": "PNG uint16",
        # 1/4000 m: fine enough that finite differences of depth reproduce the normals within
        # 2 degrees at 0.5 m; up to 16.38 m, beyond any room diagonal the generator makes
        "unit": "1/4000 m along the optical axis",
        "scale": 4000,
        "invalid": 0,
    },
    "normals": {
        "format": "PNG RGB uint8",
        "decode": "n = (v - 127.5) / 127.5, camera frame x right, y down, z forward",
        "invalid": [128, 128, 128],
    },
    "semantic": {"format": "PNG L uint8", "ignore": IGNORE_INDEX},
    "instance": {"format": "PNG uint16", "none": 0},
    "boundary": {"format": "PNG L uint8", "on": 255, "off": 0},
}


class SynthParams(BaseModel):
    """Generator parameters that determine every image (recorded in the manifest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(ge=0)
    height: int = Field(default=96, ge=16, le=4096)
    width: int = Field(default=128, ge=16, le=4096)
    focal_ratio: float = Field(default=0.8, gt=0.1, le=5.0, description="focal length / width")

    @model_validator(mode="after")
    def _even(self) -> SynthParams:
        if self.height % 2 or self.width % 2:
            raise ValueError(f"height and width must be even, got {self.height} x {self.width}")
        return self

    @property
    def intrinsics(self) -> list[list[float]]:
        f = self.focal_ratio * self.width
        return [[f, 0.0, self.width / 2], [0.0, f, self.height / 2], [0.0, 0.0, 1.0]]


def split_of(index: int) -> str:
    """80/10/10 train/val/test by index, independent of how many images are generated."""
    return {8: "val", 9: "test"}.get(index % 10, "train")


def render_index(params: SynthParams, index: int) -> Rendering:
    rng = np.random.default_rng([params.seed, index])
    scene = sample_scene(rng, params.height, params.width, params.focal_ratio * params.width)
    return render(scene)


PNG_LEVEL = 1  # fast zlib level: generation speed matters more than ~15% of disk


def encode_rendering(r: Rendering) -> dict[str, bytes]:
    """PNG bytes per modality, in the encodings of `ENCODING`."""
    depth = encode_depth(r.depth, ENCODING["depth"]["scale"], ENCODING["depth"]["invalid"])
    arrays = {
        "rgb": r.rgb,
        "depth": depth,
        "normals": encode_normals(r.normals, r.valid),
        "semantic": r.semantic,
        "instance": r.instance,
        "boundary": r.boundary * np.uint8(255),
    }
    return {name: encode_png(array, PNG_LEVEL) for name, array in arrays.items()}


def relative_path(index: int, modality: str) -> str:
    return f"{split_of(index)}/{index:06d}_{modality}.png"


def _write_one(job: tuple[SynthParams, int, str]) -> dict[str, Any]:
    params, index, out = job
    files = {}
    for modality, data in encode_rendering(render_index(params, index)).items():
        rel = relative_path(index, modality)
        # no fsync per file: the manifest (written durably, last) records every digest
        write_bytes_atomic(Path(out) / rel, data, durable=False)
        files[modality] = {"path": rel, "sha256": bytes_digest(data)}
    return {"index": index, "id": f"{index:06d}", "split": split_of(index), "files": files}


def _manifest_params(params: SynthParams) -> dict[str, Any]:
    return {"generator": GENERATOR, "version": GENERATOR_VERSION, **params.model_dump()}


class _ManifestFile(BaseModel):
    path: str = Field(pattern=r"^(train|val|test)/[0-9]{6}_[a-z]+\.png$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class _ManifestImage(BaseModel):
    index: int = Field(ge=0)
    id: str
    split: Literal["train", "val", "test"]
    files: dict[str, _ManifestFile]

    @model_validator(mode="after")
    def _complete(self) -> _ManifestImage:
        missing = [m for m in MODALITIES if m not in self.files]
        if missing:
            raise ValueError(f"image {self.id} lists no {missing}")
        return self


class _ManifestParams(SynthParams):
    generator: Literal["pag.synthetic"]
    version: str


class _Manifest(BaseModel):
    """The manifest's schema: what a loader may rely on (extra keys are allowed)."""

    params: _ManifestParams
    classes: list[str]
    ignore_index: int
    intrinsics: list[list[float]] = Field(min_length=3, max_length=3)
    encoding: dict[str, dict[str, Any]]
    images: list[_ManifestImage]


def load_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a generated dataset, validated; errors name the file and the key."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DataMissing(f"{path}: manifest not found", SYNTH_HINT)
    try:
        manifest = read_json(path, "manifest")
    except PagError as exc:
        raise DataError(str(exc)) from None
    try:
        _Manifest.model_validate(manifest)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise DataError(f"{path}: {where}: {first['msg']}") from None
    return manifest


def split_counts(manifest: dict[str, Any]) -> dict[str, int]:
    return {s: sum(1 for e in manifest["images"] if e["split"] == s) for s in SPLITS}


def _existing_images(out: Path, params: SynthParams) -> dict[int, dict[str, Any]]:
    """Entries of an earlier run into the same folder, which must have the same parameters."""
    if not (out / MANIFEST).exists():
        return {}
    manifest = load_manifest(out)
    old, new = manifest["params"], _manifest_params(params)
    differing = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if differing:
        detail = ", ".join(f"{k}: {old.get(k)!r} there vs {new.get(k)!r} now" for k in differing)
        raise PagError(
            f"{out / MANIFEST} was generated with other parameters ({detail}); use another --out"
        )
    return {entry["index"]: entry for entry in manifest["images"]}


def generate(
    out: str | os.PathLike,
    num: int,
    params: SynthParams,
    *,
    start: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Render images start .. start+num-1 into `out` and write/extend its manifest."""
    if num < 1 or start < 0:
        raise PagError(f"need --num >= 1 and --start >= 0, got num={num}, start={start}")
    if workers < 1:
        raise PagError(f"--workers must be >= 1, got {workers}")
    out = Path(out)
    hint = "generate into one folder one command at a time (or give all images to one --num)"
    _check_dataset_folder(out)  # before the lock file goes beside it
    with locked(out, "dataset folder", hint=hint):
        _check_dataset_folder(out)
        images = _existing_images(out, params)
        jobs = [(params, index, str(out)) for index in range(start, start + num)]
        for entry in tqdm(
            _run(jobs, workers), total=num, desc="synth", unit="img", disable=not progress
        ):
            images[entry["index"]] = entry
        manifest = {
            "params": _manifest_params(params),
            "classes": list(CLASSES),
            "ignore_index": IGNORE_INDEX,
            "intrinsics": params.intrinsics,
            "encoding": ENCODING,
            "images": [images[i] for i in sorted(images)],
        }
        write_json_atomic(out / MANIFEST, manifest)
    return manifest


def _check_dataset_folder(out: Path) -> None:
    """`out` is new, or holds only what `generate` writes (splits, manifest): anything else
    means --out points at another command's folder."""
    ours = {*SPLITS, MANIFEST}
    foreign = foreign_entries(out, lambda path: path.name in ours, "a dataset folder (--out)")
    if foreign:
        raise PagError(
            f"{out}: holds files that `pag data synth` did not write ({names_shown(foreign)}); "
            "--out must be a new folder or a synthetic dataset's"
        )


def _run(jobs: list[tuple[SynthParams, int, str]], workers: int) -> Iterator[dict[str, Any]]:
    if workers == 1 or len(jobs) == 1:
        yield from map(_write_one, jobs)
        return
    # forkserver, not fork: torch and BLAS have started threads by now (Python 3.12+ warns);
    # the server imports the renderer once, so each worker starts without re-importing it
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with context.Pool(workers) as pool:
        yield from pool.imap_unordered(_write_one, jobs, chunksize=8)
