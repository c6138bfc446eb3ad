"""MultiPool (the paper's Section 3.3): one block's 3x3 conv replaced by branches at several
dilations, chosen per pixel by attention (MP-PAG) or averaged (the MultiPool control)."""

from pag.methods.registry import COLORBLIND, Method, Style, register

_MODEL_KEYS = ("multipool_block", "dilations")


def multipool_blocks(model) -> list[str]:
    return [name for name, block in model.blocks() if hasattr(block.conv2, "multipool")]


def multipool(average: bool):
    """The `apply` of a MultiPool method: attention chooses a branch per pixel, or averages."""

    def apply(model, budget, *, multipool_block, dilations, **_) -> None:
        from pag.models.multipool import apply_multipool

        apply_multipool(model, multipool_block, dilations, average=average)

    return apply


register(
    Method(
        "mp_pag",
        Style("MP-PAG", COLORBLIND[4], "D", "none"),
        apply=multipool(average=False),
        model_keys=_MODEL_KEYS,
        controlled_blocks=multipool_blocks,
        sparse=True,
        decision_params=(".multipool.attention.",),
        multipool=True,
        branch_maps=True,
        showcase=1,
        paper_label="MP-PAG",
        order=3,
    )
)
register(
    Method(
        "multipool_avg",
        Style("MultiPool (avg)", COLORBLIND[5], "s", "none"),
        apply=multipool(average=True),
        model_keys=_MODEL_KEYS,
        multipool=True,
        order=2,
    )
)
