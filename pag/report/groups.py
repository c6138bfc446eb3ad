"""Which methods the report knows and how it groups them (no matplotlib: the plan reads these
through `pag.report.outputs`)."""

from __future__ import annotations

# the order of legends and of table rows
METHODS = (
    "dense",
    "dense_ft",
    "multipool_avg",
    "mp_pag",
    "pag",
    "random_gate",
    "truncation",
    "layer_skip",
    "sact",
)
# curves; the others are points
SWEPT = frozenset({"pag", "random_gate", "truncation", "layer_skip", "sact"})
# methods with a per-pixel (or per-image) ponder map
DYNAMIC = ("pag", "random_gate", "layer_skip", "sact")
MULTIPOOL = ("multipool_avg", "mp_pag")
REFERENCE = "dense_ft"  # the accuracy reference: dense with the fine-tune the others get
# methods whose run at full budget is the reference run itself (truncation keeping every
# block is the dense model with the same fine-tune): their curves end in it at 100 %
FULL_MODEL_IS_REFERENCE = ("truncation",)
