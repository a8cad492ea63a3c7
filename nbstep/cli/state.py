"""What every command shares: the ``--store`` choice, exit codes, colour, questions."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

# This package is loaded only by the `nbstep` command, never by `import nbstep`, and
# click's decorators need click at import time; the ruff ban on module-level click
# imports protects the package's cheap front door, which this is not.
import click  # noqa: TID253

from nbstep import settings as settings_module
from nbstep.storage import StepStore, open_store

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class CommandError(click.ClickException):
    """A ClickException with a chosen exit code (2 for "no such thing")."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code



class State:
    """The ``--store`` choice, and the store opened from it on first use."""

    def __init__(self, store: str | None) -> None:
        self.store_arg = store
        self._store: StepStore | None = None

    def settings(self) -> settings_module.Settings:
        """The project's settings, with ``--store`` (a directory or a team store's URL)."""
        settings = settings_module.load({})
        if self.store_arg is not None and str(self.store_arg).strip():
            settings = settings._replace(store=str(self.store_arg).strip())
        return settings

    def server(self) -> str | None:
        """The team store's URL, when the store is one."""
        store = self.settings().store
        return store if settings_module.is_server_url(store) else None

    def root(self) -> Path:
        """The store directory: ``--store`` if given, else found as the engine finds it
        (for a team store, the local directory of its mirror and journal)."""
        if self.store_arg is not None and str(self.store_arg).strip() and not self.server():
            return Path(self.store_arg).expanduser().resolve()
        return settings_module.store_dir(self.settings())

    def namespace_root(self) -> Path:
        """The folder namespaces are relative to (the store directory's parent)."""
        return self.root().parent

    def store(self, *, create: bool = False) -> StepStore:
        """The store; one that does not exist is an error, never created by a reader."""
        if self._store is None:
            self._store = open_store(self.root(), self.settings(), create=create)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def color(ctx: click.Context, stream: Any) -> bool:
    if ctx.color is not None:
        return bool(ctx.color)
    return bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"


def confirm(question: str, unanswerable: str) -> bool:
    """Ask on the terminal. Without one (CI, a pipe that ends), say what to pass
    instead of click's bare "Aborted!"; a piped answer still counts."""
    terminal = sys.stdin is not None and sys.stdin.isatty()
    try:
        answer = click.confirm(question, default=False, err=True)
    except click.Abort:
        if terminal:
            raise  # Ctrl-C or Ctrl-D at a terminal: a person stopped it
        click.echo("", err=True)  # end the unanswered question's line
        raise CommandError(unanswerable, 1) from None
    if not terminal:
        click.echo("", err=True)  # a piped answer is not echoed: end the line
    return answer
