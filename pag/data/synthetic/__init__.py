"""The embedded default dataset: procedural indoor scenes with exact multi-task ground truth."""

from pag.data.synthetic.dataset import SyntheticScenes
from pag.data.synthetic.scene import CLASSES
from pag.data.synthetic.writer import SynthParams, generate, render_index, split_of

__all__ = ["CLASSES", "SynthParams", "SyntheticScenes", "generate", "render_index", "split_of"]
