"""PAG (a learned per-pixel gate before each residual block's 3x3 stage, with the KL sparsity
loss at a target rate) and its control: the same gates drawing their decisions at random at
the same rate, with no budget loss."""

from pag.methods.registry import (
    COLORBLIND,
    GATE_RULES,
    Budget,
    Method,
    Style,
    gated_blocks,
    register,
)

_GATE_BLOCKS = "all"


def apply_pag(
    model,
    budget,
    *,
    gate_mode,
    hard_gates,
    sparsity_scope,
    gate_bias,
    budget_source,
    gate_blocks=_GATE_BLOCKS,
    **_,
) -> None:
    from pag.models.model import apply_pag as attach

    attach(
        model,
        budget,
        mode=gate_mode,
        blocks=gate_blocks,
        hard=hard_gates,
        scope=sparsity_scope,
        bias=gate_bias,
        budget_source=budget_source,
    )


def apply_random_gate(model, budget, *, gate_mode, gate_blocks=_GATE_BLOCKS, **_) -> None:
    from pag.models.model import apply_random_gate as attach

    attach(model, budget, mode=gate_mode, blocks=gate_blocks)


register(
    Method(
        "pag",
        Style("PAG", COLORBLIND[0], "o", "-"),
        apply=apply_pag,
        budget=Budget(
            "target fraction of pixels computing in each gated block", 0.0, 1.0, low_open=True
        ),
        model_keys=("gate_mode", "sparsity_scope", "hard_gates", "gate_bias", "budget_source"),
        gate_rules=GATE_RULES,
        controlled_blocks=gated_blocks,
        sparse=True,
        decision_params=(".gate.",),
        dynamic=True,
        showcase=2,
        paper_label="PAG",
        order=4,
    )
)
register(
    Method(
        "random_gate",
        Style("Random gate", COLORBLIND[9], "x", (0, (5, 1, 1, 1, 1, 1))),
        apply=apply_random_gate,
        budget=Budget(
            "fraction of pixels computing in each gated block, drawn at random",
            0.0,
            1.0,
            low_open=True,
        ),
        model_keys=("gate_mode",),
        # it draws its positions whatever the rule, except "open" (every gate computing): the
        # other rules would score the same draws again
        gate_rules=("open",),
        controlled_blocks=gated_blocks,
        dynamic=True,
        order=5,
    )
)
