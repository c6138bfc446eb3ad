"""Sparse execution of gated models: real wall-clock savings from skipped positions.

`SparseExecutor(model)` runs a trained model at inference computing only the positions its
own decisions activate (PAG in both gating modes, MP-PAG's chosen branch per pixel, SACT's
running positions, layer skipping's executed blocks), on channels-last rows with every
BatchNorm folded. Its output equals the model's masked dense eval forward to float rounding.
`pag.sparse.forcing` forces blob-shaped gate masks on both paths, for benchmarks at fixed
activity (`benchmarks/sparse_speed.py`).
"""

from pag.sparse.blocks import Policy
from pag.sparse.executor import SparseExecutor, sparse_methods

__all__ = ["Policy", "SparseExecutor", "sparse_methods"]
