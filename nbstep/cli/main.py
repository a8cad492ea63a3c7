"""The ``nbstep`` command line (also ``python -m nbstep``).

Thin click commands: :mod:`.run` (``nbstep run``), :mod:`.records` (``ls``, ``inspect``,
``show``, ``export``), :mod:`.upkeep` (``forget``, ``gc``, ``verify``) and :mod:`.team`
(``team status``, ``team init``, ``push``).
Exit codes: 0 success; 1 a notebook failed, ``verify`` found damage, a value cannot be
exported in that format, the store could not be used, or ``forget`` was not confirmed;
2 a usage error (bad option, unknown notebook, key, occurrence or kernel, no store);
130 ``run`` interrupted. See docs/cli.md.
"""

from __future__ import annotations

import os
from typing import Any

import click  # noqa: TID253

from nbstep.core.version import __version__
from nbstep.errors import NbstepError, NotFound

from . import identity, records, team, upkeep
from .outcomes import RunError
from .run import run
from .state import CONTEXT, CommandError, State


class _Group(click.Group):
    """Turns nbstep's own errors into clean one-message exits (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (NotFound, RunError) as e:
            raise CommandError(str(e), 2) from e
        except NbstepError as e:
            raise CommandError(str(e), 1) from e


@click.group(cls=_Group, context_settings=CONTEXT)
@click.option(
    "--store", metavar="DIR|URL", envvar="NBSTEP_STORE", show_envvar=True,
    help="The store directory (the `.nbstep` folder), or a team store's "
         "postgresql:// URL. Default: found as the engine finds it (pyproject.toml "
         "[tool.nbstep], then the nearest `.nbstep`).",
)
@click.version_option(__version__, "-V", "--version", prog_name="nbstep")
@click.pass_context
def cli(ctx: click.Context, store: str | None) -> None:
    """Run notebooks with durable steps, and look after the step store.

    \b
    Examples:
      nbstep run analysis.ipynb                  # compute once, replay after
      nbstep run notebooks/*.ipynb --inplace     # keep the executed outputs
      nbstep ls                                  # notebooks in the store
      nbstep show analysis.ipynb load            # one recorded value
      nbstep --store /data/.nbstep gc --dry-run  # what gc would free

    A NOTEBOOK argument is a notebook's path or its namespace as `nbstep ls` shows it.
    Set NO_COLOR to turn colour off on a terminal.
    """
    if os.environ.get("NO_COLOR"):
        ctx.color = False
    state = State(store)
    ctx.obj = state
    ctx.call_on_close(state.close)



for command in (run, records.ls, records.inspect, records.show, records.export, upkeep.forget,
                upkeep.gc, upkeep.verify, team.team, team.push, identity.mv):
    cli.add_command(command)


def main() -> None:
    """The console script's entry point."""
    cli(prog_name="nbstep")
