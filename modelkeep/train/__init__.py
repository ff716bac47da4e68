"""Training: ``fit`` and ``evaluate``; losses, optimizers, schedules and metrics by name; callbacks, history, progress;
checkpointing inside ``fit`` (``CheckpointSettings``)."""
from .callbacks import Callback, CallbackList, EarlyStopping, Stateful
from .checkpointing import CheckpointSettings, set_aside_checkpoints
from .fit import FitResult, TrainState, epoch_permutation, evaluate, fit, seed_everything
from .history import History, plot_history
from .losses import LOSSES, make_loss
from .metrics import MetricAccumulator, compute_metrics
from .optimizers import OPTIMIZERS, make_optimizer
from .schedules import SCHEDULES, Schedule, make_schedule

__all__ = [
    "Callback", "CallbackList", "CheckpointSettings", "EarlyStopping", "FitResult", "History", "LOSSES",
    "MetricAccumulator", "OPTIMIZERS", "SCHEDULES", "Schedule", "Stateful", "TrainState", "compute_metrics",
    "epoch_permutation", "evaluate", "fit", "make_loss", "make_optimizer", "make_schedule", "plot_history",
    "seed_everything", "set_aside_checkpoints",
]
