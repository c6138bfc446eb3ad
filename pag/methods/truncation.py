"""Truncation: keep the first k residual blocks (a static baseline at the same compute)."""

from pag.methods.registry import COLORBLIND, Budget, Method, Style, register


def apply_truncation(model, budget, *, truncation_mode, **_) -> None:
    from pag.models.model import apply_truncation as truncate

    truncate(model, budget, truncation_mode)


def side_outputs_need_shortcut(model) -> str | None:
    if model.boundary_head == "side_outputs" and model.truncation_mode == "rebuild_heads":
        return (
            "truncation_mode 'rebuild_heads' removes stages the side-output boundary head "
            "reads; use truncation_mode 'shortcut'"
        )
    return None


register(
    Method(
        "truncation",
        Style("Truncation", COLORBLIND[1], "v", "--"),
        apply=apply_truncation,
        budget=Budget(
            "number of residual blocks kept, counted from the first",
            1,
            None,
            integer=True,
            at_most_blocks=True,
        ),
        model_keys=("truncation_mode",),
        full_model_is_reference=True,
        showcase=5,
        order=6,
        check_model=side_outputs_need_shortcut,
    )
)
