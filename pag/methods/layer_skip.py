"""Layer skipping (ConvNet-AIG-style): a per-image gate decides whether each block runs."""

from pag.methods.registry import (
    COLORBLIND,
    GATE_RULES,
    Budget,
    Method,
    Style,
    gated_blocks,
    register,
)


def apply_layer_skip(model, budget, *, budget_source, **_) -> None:
    from pag.models.layer_skip import apply_layer_skip as attach

    attach(model, budget, budget_source)


register(
    Method(
        "layer_skip",
        Style("Layer skip", COLORBLIND[2], "^", "-."),
        apply=apply_layer_skip,
        budget=Budget("target fraction of images executing each block", 0.0, 1.0, low_open=True),
        model_keys=("budget_source",),
        gate_rules=GATE_RULES,
        controlled_blocks=gated_blocks,
        sparse=True,
        decision_params=(".gate.",),
        dynamic=True,
        showcase=3,
        order=7,
    )
)
