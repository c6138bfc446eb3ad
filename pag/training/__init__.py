"""Training: validated run params, the resumable deterministic loop, checkpoints, progress."""

from pag.training.checkpoint import model_weights
from pag.training.loop import train
from pag.training.run_params import RunParams, load_run_params

__all__ = ["RunParams", "load_run_params", "model_weights", "train"]
