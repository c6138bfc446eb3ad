"""ImageNet weights for the trunk: torchvision's ResNet checkpoints, fetched on request only.

torchvision names each file `<arch>-<first 8 hex digits of its sha256>.pth` and checks that
prefix after downloading; we do the same before the file takes its final name. Nothing here
runs at import or test time without being asked.
"""

from __future__ import annotations

import os
from pathlib import Path

from pag.errors import ChecksumError, PagError
from pag.fileio import file_digest

# torchvision's ImageNet (V1) checkpoints of the depths that have one
IMAGENET_FILES = {
    18: "resnet18-f37072fd.pth",
    34: "resnet34-b627a593.pth",
    50: "resnet50-0676ba61.pth",
    101: "resnet101-63fe2227.pth",
}
IMAGENET_URL = "https://download.pytorch.org/models/"


def imagenet_file(depth: int) -> str:
    if depth not in IMAGENET_FILES:
        raise PagError(
            f"no ImageNet weights for ResNet-{depth}; torchvision has depths "
            f"{sorted(IMAGENET_FILES)}"
        )
    return IMAGENET_FILES[depth]


def expected_prefix(filename: str) -> str:
    return Path(filename).stem.rsplit("-", 1)[1]


def fetch_imagenet(depth: int, out: str | os.PathLike, *, progress: bool = False) -> Path:
    """Download ResNet-`depth`'s ImageNet checkpoint to `out`, checked against the sha256
    prefix in its name before it is renamed into place (an existing good file is kept)."""
    from pag.data.download import download

    filename = imagenet_file(depth)
    out = Path(out)
    prefix = expected_prefix(filename)
    if out.is_file() and file_digest(out).startswith(prefix):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(out.name + ".download")
    download(IMAGENET_URL + filename, staging, progress=progress, echo=lambda _line: None)
    digest = file_digest(staging)
    if not digest.startswith(prefix):
        staging.unlink(missing_ok=True)
        raise ChecksumError(
            f"{IMAGENET_URL + filename}: sha256 {digest} does not start with {prefix}"
        )
    os.replace(staging, out)
    return out
