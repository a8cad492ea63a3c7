"""The commands that change a store: ``forget``, ``gc``, ``verify``."""

from __future__ import annotations

import click  # noqa: TID253

from nbstep.engine.lookup import resolve_namespace, resolve_records
from nbstep.storage.reports import check_grace

from . import text, views
from .state import CONTEXT, State, confirm


class GraceSeconds(click.ParamType):
    """A finite number of seconds, at least 0 (click's FloatRange lets nan through)."""

    name = "seconds"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.fail(f"expected a number of seconds, got {value!r}", param, ctx)
        try:
            return check_grace(seconds)
        except ValueError as e:
            self.fail(str(e), param, ctx)


@click.command(context_settings=CONTEXT)
@click.argument("notebook")
@click.argument("keys", nargs=-1)
@click.option("-y", "--yes", is_flag=True, help="Do not ask before forgetting a whole notebook.")
@click.pass_obj
def forget(state: State, notebook: str, keys: tuple[str, ...], yes: bool) -> None:
    """Make steps recompute the next time their notebook runs.

    With KEYs, forgets those steps (every occurrence); without, every step of the
    notebook, after asking. The records stay until `nbstep gc` drops them.

    \b
    Examples:
      nbstep forget analysis.ipynb train evaluate
      nbstep forget analysis.ipynb --yes
    """
    store = state.store()
    namespace = resolve_namespace(store, state.namespace_root(), notebook)
    if keys:
        for key in keys:
            resolve_records(store, namespace, key)  # all known before any forget
        counts = {key: store.forget(namespace, key) for key in dict.fromkeys(keys)}
        total = sum(counts.values())
        click.echo(
            f"forgot {text.plural(total, 'record')} of `{namespace}` "
            f"({', '.join(f'{k}: {n}' for k, n in counts.items())}); "
            "they recompute on the next run. `nbstep gc` reclaims their space."
        )
        return
    current = store.current(namespace)
    if not current:
        click.echo(f"`{namespace}` has no current steps; nothing to forget")
        return
    store.release()  # do not hold the store while a person reads the question
    if not yes and not confirm(
        f"Forget all {text.plural(len(current), 'step')} of `{namespace}`? "
        "They recompute on the next run",
        f"forgetting every step of `{namespace}` needs a confirmation, and no answer came "
        "(stdin is not a terminal). Pass --yes to forget them all, or name the steps: "
        "nbstep forget NOTEBOOK KEY...",
    ):
        click.echo(f"nothing forgotten; `{namespace}` keeps its steps", err=True)
        click.get_current_context().exit(1)
    total = store.forget(namespace)
    click.echo(
        f"forgot {text.plural(total, 'record')} of `{namespace}`; they recompute on the "
        "next run. `nbstep gc` reclaims their space."
    )


@click.command(context_settings=CONTEXT)
@click.option("--dry-run", is_flag=True, help="Report what would be freed; change nothing.")
@click.option("--grace", "grace_seconds", type=GraceSeconds(), default=3600.0,
              show_default=True, metavar="SECONDS",
              help="Keep unreferenced files younger than this: a running kernel may be "
                   "about to record one. 0 only when no notebook is running.")
@click.option("--orphans", is_flag=True,
              help="Remove the records of notebooks that are gone (`nbstep ls` marks them "
                   "ORPHANED), after asking; with --dry-run, list them.")
@click.option("-y", "--yes", is_flag=True, help="With --orphans: do not ask.")
@click.pass_obj
def gc(state: State, dry_run: bool, grace_seconds: float, orphans: bool, yes: bool) -> None:
    """Drop old and forgotten records and unreferenced object files.

    Current records are never touched, nor the earlier versions kept with them
    (keep_versions per step, the current one included: NBSTEP_KEEP_VERSIONS or
    [tool.nbstep] keep_versions, default 5). Reports the events dropped, the object files
    removed and the bytes they freed, and the size of the database file (steps.duckdb,
    where small values live) and of the whole store before and after.

    \b
    Examples:
      nbstep gc --dry-run
      nbstep gc
      nbstep gc --grace 0      # no notebook is running: free everything now
      nbstep gc --orphans --dry-run
    """
    if orphans:
        from .identity import gc_orphans

        gc_orphans(state, dry_run, yes)
        return
    store = state.store()
    admin = store.admin()
    store.release()  # the files as they are with nothing attached
    before = admin.usage()
    report = admin.gc(dry_run=dry_run, grace_seconds=grace_seconds)
    after = None
    if not dry_run:
        store.release()
        after = admin.usage()
    click.echo(views.gc_text(report, dry_run, before, after, grace_seconds))


@click.command(context_settings=CONTEXT)
@click.option("--decode", is_flag=True,
              help="Also decode every value stored in an object file (slower).")
@click.option("--repair", is_flag=True,
              help="Rebuild what can be rebuilt and set the rest aside (see above).")
@click.pass_context
def verify(ctx: click.Context, decode: bool, repair: bool) -> None:
    """Check that every record and value can be read back; exit 1 on damage.

    Every log frame must be intact, every object file must exist with the recorded
    size and sha256, and every inline value must decode. Damaged steps are listed with
    the `nbstep forget` line that makes them recompute.

    With --repair: logs are written again without their damaged bytes, value files
    that do not match their hash are moved into the store's quarantine/ folder, current
    records whose value is lost are forgotten (so they recompute instead of failing),
    and the query table is rebuilt; then the store is checked again. Nothing is
    deleted: damaged bytes and files stay in quarantine/.

    \b
    Examples:
      nbstep verify
      nbstep verify --decode
      nbstep verify --repair
    """
    state: State = ctx.obj
    admin = state.store().admin()
    report = admin.check(decode=decode)
    click.echo(views.verify_text(report))
    if repair and not report.ok:
        click.echo("")
        click.echo(views.repair_text(admin.repair()))
        report = admin.check(decode=decode)
        click.echo(views.verify_text(report))
    if not report.ok:
        ctx.exit(1)
