"""Training: the adaptive-batch loop (`Trainer`, `fit`), its callbacks, checkpoints, evaluation.

The loop is short and reads in the order of the data flow (see `adabatch.training.trainer`);
`adabatch.experiments` builds everything it needs from a typed configuration.
"""

from ..errors import DivergenceError
from .callbacks import Callback, JsonlLogger, ProgressBar, TensorBoardLogger
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .clock import TrainingClock
from .evaluate import evaluate
from .trainer import FitResult, Trainer

__all__ = [
    "Callback",
    "DivergenceError",
    "FitResult",
    "JsonlLogger",
    "ProgressBar",
    "TensorBoardLogger",
    "Trainer",
    "TrainingClock",
    "evaluate",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]
