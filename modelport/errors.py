"""Typed errors for user mistakes: each names the bad value and says what to do."""

from __future__ import annotations


class ModelportError(Exception):
    """Base class; the CLI prints ``message`` and ``hint`` without a traceback."""

    exit_code = 2
    # What to do, where the raising site has nothing more specific to say: every error about a file the user
    # gave carries a hint (README, "Untrusted files and errors").
    default_hint = ""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class WeightsNotFoundError(ModelportError, FileNotFoundError):
    """A weights file or artifact path does not exist."""

    default_hint = "check the path: modelport downloads nothing, so the file must be there"


class UnknownArchitectureError(ModelportError, ValueError):
    """A model name (given or inferred from a file name) is not in the zoo."""


class CorruptFileError(ModelportError, ValueError):
    """A file is truncated, corrupted or not the kind of file expected."""

    default_hint = "the file is incomplete or of another kind: copy it again, or give the file modelport wrote"


class NotACheckpointError(ModelportError, ValueError):
    """A file loads but holds no state dict."""

    default_hint = "give the checkpoint torch.save wrote: a state dict, or a trainer checkpoint holding one"


class WeightsMismatchError(ModelportError, ValueError):
    """A state dict does not fit the architecture (missing/unexpected keys or wrong shapes)."""


class MissingRuntimeError(ModelportError, ImportError):
    """An optional runtime package is not installed or cannot run on the device."""

    default_hint = "install what the message names (the optional ones: pip install 'modelport[EXTRA]')"


class UnsupportedFormatError(ModelportError, ValueError):
    """A format id or artifact suffix is not one modelport knows."""

    default_hint = "modelport export --help lists the formats; artifacts keep the names modelport gave them"


class ExportError(ModelportError, RuntimeError):
    """Writing an artifact failed."""


class VerificationError(ModelportError, RuntimeError):
    """An artifact does not compute what the PyTorch model computes."""

    exit_code = 1


class RandomWeightsNotAllowedError(ModelportError, ValueError):
    """No weights were given and random initialisation was not asked for."""


class CalibrationError(ModelportError, ValueError):
    """INT8 calibration data is missing, empty or unreadable."""


class UnsafeCheckpointError(NotACheckpointError):
    """A checkpoint's pickle names a Python global that a file of its kind does not legitimately hold."""


class RandomWeightsWarning(UserWarning):
    """Raised (as a warning) whenever a model runs with untrained weights."""


class ConfigError(ModelportError, ValueError):
    """A config file (or the arguments standing for one) that cannot be used as written."""
