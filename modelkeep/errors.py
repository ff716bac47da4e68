"""Every error modelkeep raises on purpose.

One base class, ``ModelkeepError``; each specific error also subclasses the
built-in exception a Python user would expect (``FormatError`` is a
``ValueError``, ``ModelNotFoundError`` a ``FileNotFoundError``), so callers can
catch either. Messages say what was received and what to do about it.

This module imports nothing from the rest of the package and never imports torch.
"""
from __future__ import annotations


class ModelkeepError(Exception):
    """Base of every error modelkeep raises deliberately."""


class SpecError(ModelkeepError, ValueError):
    """A model spec is malformed: unknown layer kind, bad field, wrong shape, cycle."""


class ShapeError(SpecError):
    """A layer received an input shape it cannot accept."""


class FormatError(ModelkeepError, ValueError):
    """A file is not a valid modelkeep file: truncated, corrupt, foreign or hostile."""


class IntegrityError(FormatError):
    """A file parses but its contents do not match the hashes recorded in it."""


class UnsupportedVersionError(FormatError):
    """A file was written by a newer, incompatible format version."""


class TrustError(ModelkeepError, PermissionError):
    """Loading would need to import code named by the file, and the caller did not allow it."""


class SignatureError(TrustError):
    """A model's signature is missing, was made by another key, or no longer matches the file (tampered)."""


class ModelNotFoundError(ModelkeepError, FileNotFoundError):
    """A file, dataset or registered name does not exist."""


class ConfigError(ModelkeepError, ValueError):
    """A training configuration or argument is invalid."""


class DataError(ModelkeepError, ValueError):
    """A dataset cannot be read or does not fit the model."""


class TrainingError(ModelkeepError, RuntimeError):
    """Training cannot go on: for example the loss became NaN or infinite."""


class ExportError(ModelkeepError, RuntimeError):
    """A model could not be sent out to another format, or the exported copy does not compute what the model does
    (an ONNX file whose outputs in onnxruntime differ beyond the tolerance); nothing was written."""


class StorageError(ModelkeepError, OSError):
    """A file or folder could not be written where asked: a folder in the way, no permission, a folder in use.

    The message names the destination (never a temporary file), what was wrong and how to fix it;
    ``errno`` is the system's error number when there was one.
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class CheckpointError(ModelkeepError, OSError):
    """A checkpoint could not be written or no usable checkpoint could be read."""


class TrainingInterrupted(ModelkeepError, RuntimeError):
    """Training stopped on request (SIGTERM, SIGINT) after saving a checkpoint; running it again resumes.

    ``checkpoint`` is the name of the checkpoint saved at the stop (None if that save failed, in which
    case the previous checkpoint is the one a resume uses), ``directory`` the checkpoint folder,
    ``signal`` the signal's name and ``exit_code`` the conventional status (128 + signal number).
    """

    def __init__(self, message: str, *, checkpoint: str | None = None, directory: str | None = None,
                 signal: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.checkpoint, self.directory, self.signal, self.exit_code = checkpoint, directory, signal, exit_code

    def resume_message(self, resume_command: str) -> str:
        """One line: what happened and the exact command that continues the run."""
        saved = (f"checkpoint {self.checkpoint} saved" if self.checkpoint
                 else "the checkpoint could not be saved; a resume starts from the previous one")
        return f"modelkeep: received {self.signal or 'a stop request'}; {saved}. Resume with: {resume_command}"
