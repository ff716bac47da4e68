"""Training: ``fit`` and ``evaluate``; ``FitSettings``; losses, optimizers, schedules and metrics by name;
callbacks, history, progress; checkpointing inside ``fit`` (``CheckpointSettings``); and the seams
fine-tuning and multi-process training plug into (regularizers, parameter groups, mode policies,
process strategies).

The modules, in the order a run uses them: ``settings`` (the options) → ``fit`` (assembly) →
``batches`` (data feeding) → ``loop`` (epochs, steps, ``LoopState``) → ``evaluation`` →
``checkpointing`` → ``result``.
"""
from .batches import epoch_permutation
from .callbacks import Callback, CallbackList, EarlyStopping, Stateful
from .checkpointing import CheckpointSettings, set_aside_checkpoints
from .evaluation import evaluate
from .fit import fit
from .history import History, plot_history
from .incremental import FolderStream, update_stream
from .loop import LoopState
from .losses import LOSSES, make_loss
from .metrics import MetricAccumulator, compute_metrics
from .modes import FrozenBatchNorm, KeepEval, ModePolicy, set_mode
from .optimizers import OPTIMIZERS, make_optimizer
from .param_groups import GroupRule, ParameterGroups, resolve_groups
from .regularizers import L2Toward, Regularizer
from .result import FitResult
from .runtime import seed_everything
from .schedules import SCHEDULES, Schedule, make_schedule
from .settings import FitSettings
from .strategy import ProcessStrategy, SingleProcess

__all__ = [
    "Callback", "CallbackList", "CheckpointSettings", "EarlyStopping", "FitResult", "FitSettings", "FolderStream",
    "FrozenBatchNorm",
    "GroupRule", "History", "KeepEval", "L2Toward", "LOSSES", "LoopState", "MetricAccumulator", "ModePolicy",
    "OPTIMIZERS", "ParameterGroups", "ProcessStrategy", "Regularizer", "SCHEDULES", "Schedule", "SingleProcess",
    "Stateful", "compute_metrics", "epoch_permutation", "evaluate", "fit", "make_loss", "make_optimizer",
    "make_schedule", "plot_history", "resolve_groups", "seed_everything", "set_aside_checkpoints", "set_mode", "update_stream",
]
