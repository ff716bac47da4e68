"""Training: ``fit`` and ``evaluate``, losses and optimizers by name, history and progress."""
from .fit import Callback, FitResult, TrainState, evaluate, fit
from .history import History
from .losses import LOSSES, make_loss
from .optimizers import OPTIMIZERS, make_optimizer

__all__ = [
    "Callback", "FitResult", "History", "LOSSES", "OPTIMIZERS", "TrainState",
    "evaluate", "fit", "make_loss", "make_optimizer",
]
