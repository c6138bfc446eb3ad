"""The dense baseline, trained from scratch, and the same model fine-tuned on the schedule
every other method gets: the accuracy reference, so fine-tuning itself is not credited to a
method."""

from pag.methods.registry import COLORBLIND, Method, Style, register

register(
    Method(
        "dense",
        Style("Dense", COLORBLIND[7], "*", "none"),
        from_scratch=True,
        showcase=0,
        paper_label="dense",
        order=0,
    )
)
register(
    Method(
        "dense_ft",
        Style("Dense + fine-tune", "#000000", "X", "none"),
        reference=True,
        order=1,
    )
)
