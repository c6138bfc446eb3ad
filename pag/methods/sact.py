"""Spatially adaptive computation time (SACT): per-pixel halting within each stage, with a
ponder cost weighted by tau."""

from pag.methods.registry import COLORBLIND, Budget, Method, Style, all_blocks, register


def apply_sact(model, budget, **_) -> None:
    from pag.models.sact import apply_sact as attach

    attach(model, budget)


register(
    Method(
        "sact",
        Style("SACT", COLORBLIND[3], "P", ":"),
        apply=apply_sact,
        budget=Budget("ponder-cost weight tau", 0.0, None),
        controlled_blocks=all_blocks,
        sparse=True,
        decision_params=(".halting.",),
        dynamic=True,
        showcase=4,
        order=8,
    )
)
