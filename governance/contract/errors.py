"""Every error governance raises on purpose, with the fix the user should apply.

    GovernanceError                 base: ``str(err)`` is the problem, ``err.hint`` the fix
    ├── ConfigError                 bad option, unknown method name, invalid method config
    ├── PluginError                 a plugin failed to import or broke the hook contract
    ├── ModelResolutionError        the model URI names nothing that exists
    ├── ModelLoadError              the model files exist but cannot be loaded or run
    ├── DataError                   missing, unreadable or incompatible input data
    ├── TrackingError               the MLflow tracking server/store cannot be reached or written
    ├── MethodError                 a method refused its inputs; the message goes to users as is
    └── ReportError                 rendering or verifying a report failed

The CLI turns these into a one-line message plus ``hint`` and a documented exit code; anything that is not
a GovernanceError is a bug and is shown with its traceback. Two exit codes are outcomes, not errors:
:data:`EXIT_METHODS_FAILED` (the run finished but some methods failed) and :data:`EXIT_POLICY_FAILED`.
"""

from __future__ import annotations


EXIT_METHODS_FAILED = 10
EXIT_POLICY_FAILED = 11


class GovernanceError(Exception):
    """Base class. ``hint`` tells the user what to do about it."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:  # message, then the fix on its own line
        base = super().__str__()
        return f"{base}\n  hint: {self.hint}" if self.hint else base


class ConfigError(GovernanceError):
    exit_code = 2


class PluginError(GovernanceError):
    exit_code = 3


class ModelResolutionError(GovernanceError):
    exit_code = 4


class ModelLoadError(GovernanceError):
    exit_code = 4


class DataError(GovernanceError):
    exit_code = 5


class TrackingError(GovernanceError):
    exit_code = 6


class MethodError(GovernanceError):
    """Raised by a method when its inputs do not suit it. The message is shown to users verbatim."""

    exit_code = 7


class ReportError(GovernanceError):
    exit_code = 8
