"""The team store's commands: ``nbstep team status``, ``nbstep team init``, ``nbstep push``."""

from __future__ import annotations

import time

import click  # noqa: TID253

from nbstep.errors import NbstepError
from nbstep.storage.base import SharedAdmin, SharedStatus

from . import text
from .state import CONTEXT, State


def _shared(state: State, *, create: bool = False) -> SharedAdmin:
    if state.server() is None:
        raise NbstepError(
            f"the store {state.root()} is a local store; `nbstep team` and `nbstep push` "
            "are for a team store. Set [tool.nbstep] store = \"postgresql://...\" in "
            "pyproject.toml, NBSTEP_STORE, or --store (docs/team-store.md)."
        )
    admin = state.store(create=create).admin()
    assert isinstance(admin, SharedAdmin)
    return admin


@click.group(context_settings=CONTEXT)
def team() -> None:
    """The team store: one set of steps shared by several machines (PostgreSQL).

    \b
    Examples:
      nbstep --store postgresql://admin@db/steps team init    # once, as an admin
      nbstep team status                                      # server, lag, pending
    """


@team.command(context_settings=CONTEXT)
@click.pass_context
def status(ctx: click.Context) -> None:
    """The server, this machine's mirror and its lag, and records waiting to be pushed.

    Exit code 1 when the server cannot be used.

    \b
    Examples:
      nbstep team status
      nbstep --store postgresql://alice@db.example.com/steps team status
    """
    report = _shared(ctx.obj).status()
    click.echo(status_text(report))
    if not report.reachable:
        ctx.exit(1)


def status_text(report: SharedStatus) -> str:
    now_us = time.time_ns() // 1000
    lines = [f"server    {report.location}"]
    if report.reachable:
        lines.append(f"          reachable, as `{report.user}`, schema version "
                     f"{report.schema_version}")
    else:
        lines.append(f"          NOT USABLE: {report.problem}")
    lines.append(f"objects   {report.objects}")
    lines.append(f"mirror    {report.mirror}")
    if report.lag:
        rows = []
        for lag in report.lag:
            age = (text.seconds((now_us - lag.synced_at_us) / 1e6) + " ago"
                   if lag.synced_at_us else "never")
            behind = "unknown (server down)" if lag.behind is None else text.plural(
                lag.behind, "event")
            rows.append([lag.namespace, age, behind])
        lines.append(text.table(["namespace", "synced", "behind the server"], rows))
    else:
        lines.append("          no namespace mirrored yet (the first step or "
                     "`step.inspect()` in one adds it)")
    if report.pending:
        oldest = text.timestamp(report.oldest_pending_us)
        lines.append(f"pending   {text.plural(report.pending, 'record')} recorded while the "
                     f"server was unreachable (oldest {oldest}): `nbstep push` sends them")
    else:
        lines.append("pending   none: every record of this machine is on the server")
    return "\n".join(lines)


@team.command(context_settings=CONTEXT)
@click.option("--no-roles", is_flag=True,
              help="Create the tables only (the user may not create roles).")
@click.pass_obj
def init(state: State, no_roles: bool) -> None:
    """Set the server up for nbstep: its tables, and the roles nbstep_reader,
    nbstep_writer and nbstep_admin (docs/team-store.md). Safe to run again.

    \b
    Examples:
      nbstep --store postgresql://admin@db.example.com/steps team init
    """
    version = _shared(state, create=True).init(roles=not no_roles)
    roles = "" if no_roles else "; roles nbstep_reader, nbstep_writer, nbstep_admin"
    click.echo(f"team store ready on {state.store().location}: schema version {version}"
               f"{roles}. Grant people a role: GRANT nbstep_writer TO alice;")


@click.command(context_settings=CONTEXT)
@click.pass_context
def push(ctx: click.Context) -> None:
    """Send the records this machine made while the team store's server was down.

    Each is a compare-and-set against what its step saw: where another machine
    recorded the step meanwhile, that record stands and this one is dropped.
    Exit code 1 when records are left (the server is still unreachable).

    \b
    Examples:
      nbstep push
    """
    report = _shared(ctx.obj).push()
    click.echo(f"pushed {text.plural(report.pushed, 'record')}"
               + (f"; {report.superseded} superseded by another machine's record of the same "
                  "step (theirs stands)" if report.superseded else "")
               + (f"; {report.left} left: the server is still unreachable (or another "
                  "process of this machine is pushing)" if report.left else ""))
    if report.left:
        ctx.exit(1)
