"""What the store commands print: tables, values, a cell's variables, reports."""

from __future__ import annotations

import io
import json
import pprint
import shutil
from typing import Any

from nbstep.codecs.cell_unpickle import ModuleName
from nbstep.core.record import Record
from nbstep.storage.reports import CheckReport, GcReport, NamespaceSummary, RepairReport, Usage

from . import text


def notebooks_table(rows: list[NamespaceSummary], files: dict[str, Any] | None = None) -> str:
    files = files or {}
    body = [
        [r.namespace, r.steps, text.size(r.size_bytes),
         text.size(r.old_bytes) if r.old_bytes else "-", text.timestamp(r.last_recorded_us),
         _file(files.get(r.namespace), r.namespace)]
        for r in rows
    ]
    return text.table(
        ["NOTEBOOK", "STEPS", "SIZE", "OLD", "LAST RECORDED (UTC)", "FILE"], body,
        right=(1, 2, 3),
    )


def _file(whose: Any, namespace: str) -> str:
    """The FILE column: the notebook's path (``-`` when it is the namespace itself and
    present, or unknown), and ORPHANED when it is gone."""
    if whose is None:
        return "-"
    shown = whose.path if whose.path and whose.path != namespace else ""
    if whose.orphaned:
        return f"{shown} ORPHANED".strip()
    return shown or "-"


def notebooks_json(rows: list[NamespaceSummary], files: dict[str, Any] | None = None) -> str:
    files = files or {}
    return json.dumps([
        {"notebook": r.namespace, "steps": r.steps, "keys": r.keys, "size_bytes": r.size_bytes,
         "old_bytes": r.old_bytes, "last_recorded": text.timestamp(r.last_recorded_us),
         "path": getattr(files.get(r.namespace), "path", None),
         "orphaned": bool(getattr(files.get(r.namespace), "orphaned", False))}
        for r in rows
    ], indent=2)


def steps_table(records: list[Record]) -> str:
    # A team store says who recorded each step; a local store has only one writer.
    by = any(r.recorded_by for r in records)
    body = [
        [r.key, r.sequence, text.size(r.size_bytes), text.seconds(r.duration_s),
         text.timestamp(r.occurred_at_us), r.reason or "-", r.codec, r.stored]
        + ([r.recorded_by or "(pending)"] if by else [])
        for r in records
    ]
    return text.table(
        ["KEY", "OCC", "SIZE", "TOOK", "RECORDED (UTC)", "REASON", "CODEC", "STORED"]
        + (["BY"] if by else []),
        body, right=(1, 2, 3),
    )



def steps_json(records: list[Record]) -> str:
    return json.dumps([
        {"key": r.key, "occurrence": r.sequence, "size_bytes": r.size_bytes,
         "duration_s": r.duration_s, "recorded_at_us": r.occurred_at_us,
         "reason": r.reason, "codec": r.codec, "stored": r.stored,
         "recorded_by": r.recorded_by}
        for r in records
    ], indent=2)


TABLE_COLUMNS = ["event_id", "key", "sequence", "status", "occurred_at", "duration_s",
                 "size_bytes", "stored", "codec", "reason", "result"]

# The default frame's columns, as the table heads them.
READABLE_HEADERS = {"key": "KEY", "occurrence": "OCC", "status": "STATUS",
                    "recorded_at": "RECORDED (UTC)", "duration": "TOOK", "saved": "SAVED",
                    "value": "VALUE", "result": "RESULT"}


def render_inspect(frame: Any, fmt: str, all_columns: bool = False) -> str:
    """``nbstep inspect``'s output: the frame of ``step.inspect()`` with the same
    options, as a table (values summarized), csv or json (durations in seconds)."""
    if fmt == "table":
        if frame.empty:
            return "(no records)"
        if all_columns:
            return _full_table(frame)
        return _readable_table(frame)
    if fmt not in ("csv", "json"):
        raise ValueError(f"unknown format {fmt!r}")
    time_column = "occurred_at" if all_columns else "recorded_at"
    if fmt == "csv":
        out = frame.copy()
        out[time_column] = [t.isoformat() for t in out[time_column]]
        if "result" in out.columns:
            out["result"] = [_csv_value(v) for v in out["result"]]
        buffer = io.StringIO()
        pd_frame(out).to_csv(buffer, index=False)
        return buffer.getvalue().rstrip("\n")
    records = []
    for row in pd_frame(frame).to_dict(orient="records"):
        row[time_column] = row[time_column].isoformat()
        if "result" in row:
            row["result"] = _json_value(row["result"])
        records.append({k: _plain(v) for k, v in row.items()})
    return json.dumps(records, indent=2, ensure_ascii=False)


def _readable_table(frame: Any) -> str:
    shown = frame.formatters() if hasattr(frame, "formatters") else {}
    columns = list(frame.columns)
    rows = []
    for values in frame.itertuples(index=False):
        row = []
        for column, value in zip(columns, values, strict=True):
            if column in shown:
                row.append(shown[column](value) or "-")
            elif column == "result":
                row.append(text.describe(value, 40))
            else:
                row.append(value)
        rows.append(row)
    headers = [READABLE_HEADERS.get(c, c.upper()) for c in columns]
    right = [i for i, c in enumerate(columns) if c in ("occurrence", "duration", "saved")]
    return text.table(headers, rows, right=right)


def _full_table(frame: Any) -> str:
    results = "result" in frame.columns
    rows = [
        [r.event_id, r.key, r.sequence, r.status,
         r.occurred_at.strftime("%Y-%m-%d %H:%M:%S"), text.seconds(_float(r.duration_s)),
         text.size(r.size_bytes), r.stored, r.codec, r.reason or "-",
         text.describe(r.result, 40) if results else "-"]
        for r in frame.itertuples(index=False)
    ]
    headers = [c.upper() for c in TABLE_COLUMNS]
    headers[4] = "OCCURRED_AT (UTC)"
    if not results:  # --no-results: no column of dashes
        headers, rows = headers[:-1], [row[:-1] for row in rows]
    return text.table(headers, rows, right=(0, 2, 5, 6))


def pd_frame(frame: Any) -> Any:
    """A plain pandas frame (``step.inspect()``'s shows itself its own way)."""
    import pandas as pd

    return pd.DataFrame(frame)


def _json_value(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return text.describe(value, 200)


def _csv_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    plain = _json_value(value)
    return plain if isinstance(plain, str) else json.dumps(plain)


def _plain(value: Any) -> Any:
    """numpy scalars and NaN as JSON-able Python values."""
    if _na(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value


def _na(value: Any) -> bool:
    """A missing cell of a query result: None, NaN, NaT or pd.NA."""
    if value is None:
        return True
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        return False
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # an array-like cell is a value
        return False


def _float(value: Any) -> float | None:
    return None if _na(value) else float(value)


def record_header(record: Record) -> str:
    where = "object file" if record.stored == "object" else "inline"
    took = f", took {text.seconds(record.duration_s)}" if record.duration_s is not None else ""
    return (
        f"step `{record.key}` occurrence {record.sequence} in `{record.namespace}`\n"
        f"recorded {record.occurred_at}{took} ({record.reason or 'first'})"
        f"{f' by {record.recorded_by}' if record.recorded_by else ''}; "
        f"{text.size(record.size_bytes)} as {record.codec}, {where}"
    )


def render_value(value: Any, rows: int = 10, width: int | None = None) -> str:
    """A value for a terminal: a DataFrame shows its shape, dtypes and head."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    module = type(value).__module__.split(".")[0]
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if module == "pandas" and hasattr(value, "dtypes") and hasattr(value, "head"):
        import pandas as pd

        with pd.option_context("display.width", width, "display.max_columns", 50,
                               "display.max_colwidth", 60):
            if isinstance(value, pd.DataFrame):
                n, m = value.shape
                dtypes = value.dtypes.to_string()
                head = value.head(rows).to_string()
                return (
                    f"{kind}: {n} rows × {m} columns\n\ndtypes:\n{dtypes}\n\n"
                    f"first {min(rows, n)} rows:\n{head}"
                )
            if isinstance(value, pd.Series):
                head = value.head(rows).to_string()
                return (
                    f"{kind}: {len(value)} rows, dtype {value.dtype}, name {value.name!r}\n\n"
                    f"first {min(rows, len(value))} rows:\n{head}"
                )
    if module == "numpy" and hasattr(value, "shape") and hasattr(value, "dtype"):
        import numpy as np

        with np.printoptions(threshold=rows * 10, linewidth=width):
            return f"{kind}: shape {value.shape}, dtype {value.dtype}\n\n{value!r}"
    body = pprint.pformat(value, width=width, compact=True)
    return f"{kind}\n\n{body}"


def render_cell(cell: Any, width: int | None = None) -> str:
    """A ``%%step`` record for a terminal: its variables, result and outputs."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    rows = [[name, _kind(value), summary(value, max(20, width - 50))]
            for name, value in cell.variables.items()]
    lines = [f"a %%step cell: {text.plural(len(rows), 'variable')}, "
             f"{text.plural(len(cell.outputs), 'recorded output')}"]
    if rows:
        lines += ["", text.table(["VARIABLE", "TYPE", "VALUE"], rows)]
    modules = getattr(cell, "modules", {})
    if modules:  # imported again on replay; not variables
        lines += ["", "imports: " + ", ".join(
            name if name == module else f"{name} ({module})" for name, module in modules.items())]
    if cell.deleted:
        lines += ["", "deletes: " + ", ".join(cell.deleted)]
    if cell.has_result:
        lines += ["", f"result (Out): {_kind(cell.result)}: "
                      f"{summary(cell.result, max(20, width - 30))}"]
    else:
        lines += ["", "result (Out): none"]
    if cell.variables:
        lines += ["", "`nbstep export NOTEBOOK KEY PATH --var NAME` writes one variable to a file."]
    return "\n".join(lines)


def _kind(value: Any) -> str:
    from types import ModuleType

    if isinstance(value, (ModuleType, ModuleName)):
        return "module"
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def summary(value: Any, width: int = 60) -> str:
    """One line about a value: a frame's or array's shape, a container's length, its repr."""
    from types import ModuleType

    if isinstance(value, (ModuleType, ModuleName)):
        return value.__name__
    shape = getattr(value, "shape", None)
    module = type(value).__module__.split(".")[0]
    if isinstance(shape, tuple) and module in ("pandas", "numpy", "pyarrow", "polars"):
        if module == "pandas" and len(shape) == 2:
            return f"{shape[0]} rows × {shape[1]} columns"
        if module == "pandas" and len(shape) == 1:
            return f"{shape[0]} rows, dtype {value.dtype}"
        dtype = f", dtype {value.dtype}" if hasattr(value, "dtype") else ""
        return f"shape {shape}{dtype}"
    try:
        shown = repr(value)
    except Exception as e:  # a value's own __repr__ raising
        shown = f"<repr failed: {type(e).__name__}>"
    shown = " ".join(shown.split())
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        shown = f"len {len(value)}: {shown}"
    return text.shorten(shown, width)


def gc_text(report: GcReport, dry_run: bool, before: Usage, after: Usage | None,
            grace_seconds: float) -> str:
    """The gc report: the object and temp files removed and the bytes they freed, and
    apart from them the events' own storage (where dropped inline values lived)."""
    would = "would " if dry_run else ""
    lines = [
        f"{would}drop {text.plural(report.events_dropped, 'event')} "
        "(superseded records beyond the kept versions, forgotten ones, and the marks "
        "that forgot them)",
        f"{would}remove {text.plural(report.objects_removed, 'unreferenced object file')}"
        f" and {text.plural(report.tmp_removed, 'stale temp file')}"
        f" ({'would free' if dry_run else 'freed'} {text.size(report.bytes_freed)}"
        " of object files)",
    ]
    if report.young_kept:
        lines.append(
            f"kept {text.plural(report.young_kept, 'unreferenced object file')} "
            f"({text.size(report.young_kept_bytes)}) younger than "
            f"{text.seconds(grace_seconds)}: a running kernel may be about to record one. A "
            "later `nbstep gc` frees them (or --grace 0 when no kernel runs)."
        )
    if before.database_bytes is not None:
        database = f"{before.database_name}: {text.size(before.database_bytes)}"
        if after is not None and after.database_bytes is not None:
            database += f" -> {text.size(after.database_bytes)}"
        lines.append(database)
    if after is None:
        lines.append(f"store size: {text.size(before.total_bytes)}")
    else:
        lines.append(f"store size: {text.size(before.total_bytes)} -> "
                     f"{text.size(after.total_bytes)}")
    if dry_run:
        lines.append("(dry run: nothing was changed; run `nbstep gc` to do it)")
    return "\n".join(lines)


def verify_text(report: CheckReport) -> str:
    lines = [
        f"checked {text.plural(report.records, 'record')}: {report.inline} inline, "
        f"{report.records - report.inline} in {text.plural(report.object_files, 'object file')} "
        f"({text.size(report.object_bytes)})"
    ]
    if report.unreferenced:
        lines.append(
            f"{text.plural(report.unreferenced, 'object file')} no record references "
            "(harmless; `nbstep gc` removes them)"
        )
    for damage in report.damage:
        lines.append(f"DAMAGED LOG: {damage}")
    if report.damage:
        lines.append("Damaged bytes are skipped (every intact record around them is kept); "
                     "`nbstep verify --repair` writes the logs again without them.")
    if not report.problems and not report.damage:
        lines.append("all values are intact")
        return "\n".join(lines)
    if not report.problems:
        return "\n".join(lines)
    lines.append(f"DAMAGED: {text.plural(len(report.problems), 'record')}")
    for p in report.problems:
        status = "current" if p.current else "not current"
        lines.append(
            f"  `{p.record.namespace}` step `{p.record.key}` occurrence {p.record.sequence} "
            f"({status}, recorded {text.timestamp(p.record.occurred_at_us)} UTC): {p.what}"
        )
    fixes = sorted({(p.record.namespace, p.record.key) for p in report.problems if p.current})
    if fixes:
        lines.append("To recompute the damaged steps on the next run (or all of them at "
                     "once: nbstep verify --repair):")
        lines += [f"  nbstep forget {_quote(ns)} {_quote(key)}" for ns, key in fixes]
    if any(not p.current for p in report.problems):
        lines.append("A damaged record that is not current replays only when a step's input "
                     "goes back to its own (an earlier version), and then fails saying how "
                     "to recompute; `nbstep forget` the step to drop it now.")
    return "\n".join(lines)


def _quote(word: str) -> str:
    import shlex

    return shlex.quote(word)


def repair_text(report: RepairReport) -> str:
    lines = [
        f"repair: rewrote {text.plural(report.logs_rewritten, 'log')} without "
        f"{text.size(report.damaged_bytes)} of damaged bytes",
        f"repair: moved {text.plural(report.objects_quarantined, 'damaged value file')} "
        "into quarantine/",
        f"repair: forgot {text.plural(report.records_forgotten, 'record')} whose value was "
        "lost (those steps recompute on the next run)",
    ]
    if report.table_rebuilt:
        lines.append("repair: rebuilt the query table from the records")
    return "\n".join(lines)
