"""pag: Pixel-wise Attentional Gating for dense prediction, as a reproducible pipeline."""

__version__ = "0.1.0"
