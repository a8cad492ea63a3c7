"""The exceptions and warnings nbstep raises.

Library code raises these; the magic turns them into ``UsageError`` where a
traceback would only be noise. Every message says what was expected, what came,
and how to fix it.
"""

from __future__ import annotations


class NbstepError(Exception):
    """Base class of every error nbstep raises on purpose."""


class StepInputMismatch(NbstepError, ValueError):
    """A recorded step's deterministic input differs from the current one."""


class StepReplayError(NbstepError):
    """A recorded step exists but its value cannot be read back."""


class StoreBusy(NbstepError):
    """Another process held the store for longer than the configured timeout."""


class NotFound(NbstepError, LookupError):
    """A store, notebook, key or occurrence named by the user does not exist."""


class StoreNotFound(NotFound):
    """A command that only reads was pointed at a store that does not exist."""


class StoreFormatError(NbstepError):
    """The store on disk was written in a format this nbstep cannot read."""


class ConfigError(NbstepError, ValueError):
    """A setting (argument, environment variable or pyproject.toml) is invalid."""


class NotHashable(NbstepError, TypeError):
    """A step input, or a part of it, has no stable canonical encoding to hash."""

    def __init__(
        self, message: str, *, path: str = "input", type_name: str = "", reason: str = ""
    ) -> None:
        super().__init__(message)
        self.path = path
        self.type_name = type_name
        self.reason = reason


class NotPersistable(NbstepError):
    """A value has no codec that can write it and read it back faithfully."""


class StepNotPersistedWarning(UserWarning):
    """A step's result was returned but could not be recorded."""
