"""Provenance: what a checkpoint, a run's metrics and an evaluation were made from.

Every result records it, and every step that takes a result as given checks it against what
it is asked for: resuming a run (`last.pt`), skipping a finished one (`final.pt`), evaluating
(`final.pt` against `params.yaml`), summarising and reporting (each evaluation against the
profile). A mismatch is refused with one line naming the file and the differing keys.

* `params`: the resolved run params without the location keys (`LOCATION_KEYS`), and their
  sha256 (`RunParams.digest`);
* `data`: the training dataset's fingerprint (`DenseDataset.fingerprint`: the synthetic
  manifest's sha256, the archives' checksums of a fetched dataset), None when it has none;
* `init`: the sha256 of the checkpoint the run started from (a fine-tune's dense weights,
  ImageNet weights), so that a retrained dense baseline makes every fine-tune from it stale;
* `code`: the `pag` version. Recorded, not enforced: results files stay byte-identical across
  commits that do not change them, and the pipelines' own dependency tracking reruns what a
  code change affects (the git commit goes to tracking instead).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pag import __version__
from pag.data import dataset_class
from pag.errors import PagError
from pag.fileio import file_digest
from pag.training import checkpoint
from pag.training.run_params import (  # noqa: F401  (comparable_params: re-exported)
    LOCATION_KEYS,
    RunParams,
    comparable_params,
    differing_keys,
)

CODE_VERSION = f"pag {__version__}"


@dataclass(frozen=True)
class Provenance:
    params_hash: str
    params: dict[str, Any]
    data: str | None
    init: str | None
    code: str = CODE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "params_hash": self.params_hash,
            "params": self.params,
            "data": self.data,
            "init": self.init,
            "code": self.code,
        }

    def brief(self) -> dict[str, Any]:
        """Without the params themselves (their hash stands for them)."""
        return {k: v for k, v in self.to_dict().items() if k != "params"}

    @classmethod
    def from_dict(cls, value: Any, source: str | os.PathLike) -> Provenance:
        """Read back what `to_dict` wrote; anything else is a PagError naming `source`."""
        if not isinstance(value, dict):
            raise PagError(
                f"{source}: records no provenance (written by an older pag, or not by "
                "`pag train`); train the run again"
            )
        try:
            made = cls(
                params_hash=str(value["params_hash"]),
                params=dict(value["params"]),
                data=value["data"],
                init=value["init"],
                code=str(value.get("code", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PagError(f"{source}: malformed provenance ({exc!r})") from None
        for key in ("data", "init"):
            if getattr(made, key) is not None and not isinstance(getattr(made, key), str):
                raise PagError(f"{source}: malformed provenance ({key} is not a digest)")
        return made

    def differences(self, other: Provenance) -> list[str]:
        """What differs, as dotted params keys and "data" / "init" (the code version is not
        compared, see the module docstring)."""
        keys = differing_keys(self.params, other.params)
        if not keys and self.params_hash != other.params_hash:
            keys = ["params_hash"]
        keys += [k for k in ("data", "init") if getattr(self, k) != getattr(other, k)]
        return keys


def recorded_provenance(path: str | os.PathLike) -> Provenance:
    """The provenance a checkpoint records (a PagError names a checkpoint without one)."""
    return Provenance.from_dict(checkpoint.load(path).get("provenance"), path)


def data_fingerprint(dataset: str, root: str | os.PathLike) -> str | None:
    return dataset_class(dataset).fingerprint(root)


def init_digest(params: RunParams) -> str | None:
    path = params.init_from or params.pretrained
    return file_digest(path) if path is not None and Path(path).is_file() else None


def of_run(params: RunParams, data_root: str | os.PathLike) -> Provenance:
    """The provenance of training `params` on the dataset at `data_root` now."""
    return Provenance(
        params_hash=params.digest(),
        params=comparable_params(params),
        data=data_fingerprint(params.dataset, data_root),
        init=init_digest(params),
    )


def describe(keys: list[str]) -> str:
    """The differing keys for a message, a few at most."""
    shown = ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")
    return shown + (" differ" if len(keys) > 1 else " differs")


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's keys, dtypes, shapes and values (not of the file's bytes, which
    depend on the serialiser)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
