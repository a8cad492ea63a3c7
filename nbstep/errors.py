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


class StoreWriteError(NbstepError):
    """Writing to the store failed (a full disk, a read-only store): nothing was recorded."""

    def __init__(self, path: object, error: OSError) -> None:
        import errno

        reason = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
                  errno.EACCES: "permission denied", errno.EDQUOT: "the disk quota is used up",
                  errno.EPERM: "permission denied"}.get(error.errno or 0,
                                                        error.strerror or str(error))
        super().__init__(
            f"could not write {path}: {reason}; nothing was recorded. Free disk space or "
            "fix the permissions, then run the step again (or point NBSTEP_STORE elsewhere)."
        )
        self.errno = error.errno


class StoreFormatError(NbstepError):
    """The store on disk was written in a format this nbstep cannot read."""


class TeamServerError(NbstepError):
    """The team store's server cannot be used: unreachable, a refused login, a missing
    privilege, no schema, or a schema of a newer nbstep."""


class UntrustedValue(StepReplayError):
    """A pickled value was recorded by someone not listed in the ``trust`` setting."""


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


class StoreOfflineWarning(UserWarning):
    """The team store's server cannot be reached: steps replay from the local mirror and
    new records wait in the local journal until ``nbstep push``."""


class StoreDamagedWarning(UserWarning):
    """Part of the store was damaged; it was set aside and everything intact kept."""
