"""What the store commands do (``ls``, ``inspect``, ``show``, ``export``, ``forget``,
``gc``, ``verify``), without click: each function takes a :class:`Store` and returns
text or data, and raises :class:`NbstepError` subclasses that ``cli.py`` turns into
exit codes. Everything goes through the Store's public methods and ``query_df``.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import os
import pprint
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cli_text as text
from . import config
from .errors import NbstepError, StepReplayError
from .store import DB_NAME, RECORDED, Record, Store


class NotFound(NbstepError):
    """A store, notebook, key or occurrence named on the command line does not exist."""


class Damaged(NbstepError):
    """``nbstep verify`` found records whose values cannot be read back."""


# -- the store and the names in it ---------------------------------------------


def store_dir(explicit: str | os.PathLike[str] | None) -> Path:
    """``--store`` if given, else the engine's own resolution (NBSTEP_STORE, pyproject, ...)."""
    if explicit is not None and str(explicit).strip():
        return Path(explicit).expanduser().resolve()
    return config.resolve_store_dir()


def open_store(root: Path) -> Store:
    """The store at ``root``; a missing one is an error, never created by a reader."""
    if not (root / DB_NAME).is_file():
        where = "(from --store / NBSTEP_STORE)" if os.environ.get("NBSTEP_STORE") else ""
        raise NotFound(
            f"no nbstep store at {root} {where}".rstrip()
            + f" (no {DB_NAME} there). Pass --store DIR or set NBSTEP_STORE to the store "
            "directory (the `.nbstep` folder); a store is created by the first recorded step."
        )
    start = Path.cwd()
    return Store(
        root,
        busy_timeout=config.setting("busy_timeout", 60.0, start),
        inline_limit=config.setting("inline_limit", 64 * 1024, start),
    )


def resolve_namespace(store: Store, notebook: str) -> str:
    """A NOTEBOOK argument (a path or a stored namespace) as a namespace in the store."""
    known = store.namespaces()
    candidates = []
    by_path = config.namespace_for_path(notebook, store.root.parent)
    if Path(notebook).expanduser().is_file():
        candidates.append(by_path)  # the file the shell completed wins over a same-named namespace
    candidates += [notebook, by_path]
    for candidate in candidates:
        if candidate in known:
            return candidate
    hint = _close(notebook, known) or _close(by_path, known)
    lines = [f"no notebook `{notebook}` in the store {store.root}"]
    if by_path != notebook:
        lines[0] += f" (as a path it is the namespace `{by_path}`)"
    if hint:
        lines.append(f"Did you mean {hint}?")
    if known:
        shown = ", ".join(f"`{ns}`" for ns in known[:8]) + (" ..." if len(known) > 8 else "")
        lines.append(f"Notebooks in this store: {shown} (`nbstep ls` lists them).")
    else:
        lines.append("The store has no records yet.")
    raise NotFound("\n".join(lines))


def _close(name: str, choices: list[str]) -> str:
    matches = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    base = os.path.basename(name)
    matches += [c for c in choices if os.path.basename(c) == base and c not in matches]
    return " or ".join(f"`{m}`" for m in matches[:3])


def resolve_records(
    store: Store, namespace: str, key: str, occurrence: int | None = None
) -> list[Record]:
    """The current records of one key (all occurrences, or the one asked for)."""
    current = store.current(namespace)
    records = [r for r in current if r.key == key]
    if not records:
        keys = sorted({r.key for r in current})
        history = store.query_df(
            "SELECT count(*) AS n FROM {events} WHERE namespace = ? AND key = ?",
            [namespace, key],
        )
        if int(history["n"].iloc[0]):
            raise NotFound(
                f"step `{key}` in `{namespace}` has no current record (it was forgotten); "
                "it records again the next time the notebook runs. `nbstep inspect "
                f"{namespace} --all --key {key}` shows its history."
            )
        hint = _close(key, keys)
        message = f"no step `{key}` in `{namespace}`."
        if hint:
            message += f" Did you mean {hint}?"
        if keys:
            shown = ", ".join(f"`{k}`" for k in keys[:12]) + (" ..." if len(keys) > 12 else "")
            message += f" Steps recorded there: {shown}."
        else:
            message += " That notebook has no current records."
        raise NotFound(message)
    if occurrence is not None:
        chosen = [r for r in records if r.sequence == occurrence]
        if not chosen:
            have = ", ".join(str(r.sequence) for r in records)
            raise NotFound(
                f"step `{key}` in `{namespace}` has no occurrence {occurrence}; "
                f"its occurrences: {have}."
            )
        return chosen
    return records


def pick_one(records: list[Record], occurrence: int | None) -> tuple[Record, str]:
    """The record to show or export, and a note when there were several to pick from."""
    record = records[0]
    note = ""
    if occurrence is None and len(records) > 1:
        note = (
            f"occurrence {record.sequence} of {len(records)} "
            f"({', '.join(str(r.sequence) for r in records)}); choose with --occurrence N"
        )
    return record, note


# -- ls ---------------------------------------------------------------------------

_LS_SQL = f"""
SELECT namespace,
    count(*) FILTER (WHERE is_current) AS steps,
    count(DISTINCT key) FILTER (WHERE is_current) AS keys,
    coalesce(sum(size_bytes) FILTER (WHERE is_current), 0) AS size_bytes,
    coalesce(sum(size_bytes) FILTER (WHERE kind = '{RECORDED}' AND NOT is_current), 0)
        AS old_bytes,
    max(occurred_at_us) FILTER (WHERE kind = '{RECORDED}') AS last_us
FROM (
    SELECT namespace, key, kind, size_bytes, epoch_us(occurred_at) AS occurred_at_us,
        kind = '{RECORDED}'
            AND event_id = max(event_id) OVER (PARTITION BY namespace, key, sequence)
            AS is_current
    FROM {{events}}
)
GROUP BY namespace
ORDER BY namespace
"""


def list_notebooks(store: Store) -> list[dict[str, Any]]:
    frame = store.query_df(_LS_SQL)
    return [
        {
            "notebook": row.namespace,
            "steps": int(row.steps),
            "keys": int(row.keys),
            "size_bytes": int(row.size_bytes),
            "old_bytes": int(row.old_bytes),
            "last_recorded": text.timestamp(None if _na(row.last_us) else row.last_us),
        }
        for row in frame.itertuples(index=False)
    ]


def notebooks_table(rows: list[dict[str, Any]]) -> str:
    body = [
        [r["notebook"], r["steps"], text.size(r["size_bytes"]),
         text.size(r["old_bytes"]) if r["old_bytes"] else "-", r["last_recorded"]]
        for r in rows
    ]
    return text.table(
        ["NOTEBOOK", "STEPS", "SIZE", "OLD", "LAST RECORDED (UTC)"], body, right=(1, 2, 3)
    )


def list_steps(store: Store, namespace: str) -> list[Record]:
    return store.current(namespace)


def steps_table(records: list[Record]) -> str:
    body = [
        [r.key, r.sequence, text.size(r.size_bytes), text.seconds(r.duration_s),
         text.timestamp(r.occurred_at_us), r.reason or "-", r.codec,
         "object" if r.object_sha256 else "inline"]
        for r in records
    ]
    return text.table(
        ["KEY", "OCC", "SIZE", "TOOK", "RECORDED (UTC)", "REASON", "CODEC", "STORED"],
        body, right=(1, 2, 3),
    )


# -- inspect ------------------------------------------------------------------------

TABLE_COLUMNS = ["event_id", "key", "sequence", "status", "occurred_at", "duration_s",
                 "size_bytes", "stored", "codec", "reason", "result"]


def inspect_frame(
    store: Store, namespace: str, key: str | None, include_all: bool, results: bool
) -> Any:
    from .inspect_frame import records_frame

    frame = records_frame(store, namespace, results=results)
    # records_frame tests the sha for `is None`, but pandas 3 reads NULL as NaN, so
    # every record says "object"; take the answer from the table instead.
    inline = store.query_df(
        "SELECT event_id, object_sha256 IS NULL AS inline FROM {events} WHERE namespace = ?",
        [namespace],
    )
    where = dict(zip(inline["event_id"], inline["inline"], strict=True))
    frame["stored"] = ["inline" if where.get(e, False) else "object" for e in frame["event_id"]]
    if key is not None:
        if not (frame["key"] == key).any():
            resolve_records(store, namespace, key)  # raises with close matches
        frame = frame[frame["key"] == key]
    if not include_all:
        frame = frame[frame["status"] == "current"]
    return frame.reset_index(drop=True)


def render_inspect(frame: Any, fmt: str, results: bool) -> str:
    if fmt == "table":
        if frame.empty:
            return "(no records)"
        rows = [
            [r.event_id, r.key, r.sequence, r.status,
             r.occurred_at.strftime("%Y-%m-%d %H:%M:%S"), text.seconds(_float(r.duration_s)),
             text.size(r.size_bytes), r.stored, r.codec, r.reason or "-",
             text.describe(r.result, 40) if results else "-"]
            for r in frame.itertuples(index=False)
        ]
        headers = [c.upper() for c in TABLE_COLUMNS]
        headers[4] = "OCCURRED_AT (UTC)"
        return text.table(headers, rows, right=(0, 2, 5, 6))
    if fmt == "csv":
        out = frame.copy()
        out["occurred_at"] = [t.isoformat() for t in out["occurred_at"]]
        out["result"] = [_csv_value(v) if results else "" for v in out["result"]]
        buffer = io.StringIO()
        out.to_csv(buffer, index=False)
        return buffer.getvalue().rstrip("\n")
    if fmt == "json":
        records = []
        for row in frame.to_dict(orient="records"):
            row["occurred_at"] = row["occurred_at"].isoformat()
            row["result"] = _json_value(row["result"]) if results else None
            records.append({k: _plain(v) for k, v in row.items()})
        return json.dumps(records, indent=2, ensure_ascii=False)
    raise ValueError(f"unknown format {fmt!r}")


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


# -- show -----------------------------------------------------------------------------


def record_header(record: Record) -> str:
    where = "object file" if record.object_sha256 else "inline"
    took = f", took {text.seconds(record.duration_s)}" if record.duration_s is not None else ""
    return (
        f"step `{record.key}` occurrence {record.sequence} in `{record.namespace}`\n"
        f"recorded {record.occurred_at}{took} ({record.reason or 'first'}); "
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


def load_one(
    store: Store, notebook: str, key: str, occurrence: int | None
) -> tuple[Record, str, Any, Any]:
    """The record `show` and `export` act on, its note, its value, and its cell view."""
    namespace = resolve_namespace(store, notebook)
    records = resolve_records(store, namespace, key, occurrence)
    record, note = pick_one(records, occurrence)
    value = store.load_value(record)
    return record, note, value, cell_record(value)


def cell_record(value: Any) -> Any:
    """The contents of a ``%%step`` record's value, or None for a ``step.run`` value."""
    from .cellstep import is_cell_record, read_cell

    return read_cell(value) if is_cell_record(value) else None


def render_cell(cell: Any, width: int | None = None) -> str:
    """A ``%%step`` record for a terminal: its variables, result and outputs."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    rows = [[name, _kind(value), summary(value, max(20, width - 50))]
            for name, value in cell.variables.items()]
    lines = [f"a %%step cell: {text.plural(len(rows), 'variable')}, "
             f"{text.plural(len(cell.outputs), 'recorded output')}"]
    if rows:
        lines += ["", text.table(["VARIABLE", "TYPE", "VALUE"], rows)]
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

    from .cellstep import ModuleName

    if isinstance(value, (ModuleType, ModuleName)):
        return "module"
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def summary(value: Any, width: int = 60) -> str:
    """One line about a value: a frame's or array's shape, a container's length, its repr."""
    from types import ModuleType

    from .cellstep import ModuleName

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


def cell_variable(cell: Any, name: str | None, key: str) -> tuple[str, Any]:
    """The variable of a ``%%step`` record that ``nbstep export --var NAME`` writes."""
    from .cellstep import Unavailable

    names = list(cell.variables)
    if name is None:
        if len(names) != 1:
            listed = ", ".join(f"`{n}`" for n in names) or "none"
            raise NotFound(
                f"step `{key}` is a %%step cell that bound "
                f"{text.plural(len(names), 'variable')} ({listed}); choose one with "
                "--var NAME" + ("." if names else " (it has no variable to export).")
            )
        name = names[0]
    if name not in cell.variables:
        hint = _close(name, names)
        raise NotFound(
            f"the %%step cell `{key}` has no variable `{name}`"
            + (f"; did you mean {hint}?" if hint else ".")
            + f" Its variables: {', '.join(f'`{n}`' for n in names) or 'none'}."
        )
    value = cell.variables[name]
    if isinstance(value, Unavailable) or (isinstance(value, type)
                                          and issubclass(value, Unavailable)):
        raise NbstepError(
            f"cannot export `{name}`: its class `{type(value).__qualname__}` is defined in "
            "the notebook, so it can be read only there (step.inspect() in the notebook)."
        )
    return name, value


# -- export ---------------------------------------------------------------------------

FRAME_FORMATS = (".parquet", ".csv", ".pkl", ".pickle")
ARRAY_FORMATS = (".npy", ".pkl", ".pickle")
OTHER_FORMATS = (".json", ".pkl", ".pickle")


def export_value(value: Any, path: Path) -> str:
    """Write ``value`` to ``path`` in the format its extension names; returns the format.

    The file appears complete or not at all (written beside it, then renamed).
    """
    suffix = path.suffix.lower()
    frame = _as_frame(value)
    array = type(value).__module__ == "numpy" and type(value).__name__ == "ndarray"
    allowed = FRAME_FORMATS if frame is not None else ARRAY_FORMATS if array else OTHER_FORMATS
    if suffix not in allowed:
        raise NbstepError(
            f"cannot export this {type(value).__name__} to `{path.name}`: the extension "
            f"must be one of {', '.join(allowed)}."
        )
    if not path.parent.is_dir():
        raise NbstepError(f"cannot export to {path}: the folder {path.parent} does not exist")
    with replacing(path) as tmp:
        if suffix in (".pkl", ".pickle"):
            import pickle

            with open(tmp, "wb") as f:
                try:
                    pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
                except (pickle.PicklingError, TypeError, AttributeError) as e:
                    raise NbstepError(
                        f"cannot export this {type(value).__name__} as a pickle ({e}); a "
                        "function or class defined in a notebook can be read only there."
                    ) from e
            fmt = "pickle"
        elif suffix == ".parquet":
            assert frame is not None
            try:
                frame.to_parquet(tmp)
            except Exception as e:
                raise NbstepError(
                    f"cannot write this DataFrame as Parquet ({type(e).__name__}: {e}); "
                    "export to .csv or .pkl instead."
                ) from e
            fmt = "parquet"
        elif suffix == ".csv":
            assert frame is not None
            import pandas as pd

            # A default 0..n-1 index carries no information; any other index is data.
            plain_index = isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 \
                and frame.index.step == 1 and frame.index.name is None
            frame.to_csv(tmp, index=not plain_index)
            fmt = "csv"
        elif suffix == ".npy":
            import numpy as np

            with open(tmp, "wb") as f:
                # allow_pickle=False: an object array cannot be read back without
                # trusting the file; say so rather than write a pickle in disguise.
                try:
                    np.save(f, value, allow_pickle=False)
                except ValueError as e:
                    raise NbstepError(
                        f"cannot write this {value.dtype} array as .npy ({e}); export it "
                        "to .pkl instead."
                    ) from e
            fmt = "npy"
        else:
            try:
                data = json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError) as e:
                raise NbstepError(
                    f"cannot export this {type(value).__name__} as JSON ({e}); "
                    "export it to .pkl instead."
                ) from e
            tmp.write_text(data + "\n", encoding="utf-8")
            fmt = "json"
    return fmt


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed over it if the block succeeds.

    So a file appears complete or not at all. It gets the mode of the file it
    replaces, else the mode of any new file (0666 less the umask), not mkstemp's 0600.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def _as_frame(value: Any) -> Any:
    module = type(value).__module__.split(".")[0]
    if module != "pandas":
        return None
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return value
    if isinstance(value, pd.Series):
        return value.to_frame()
    return None


# -- gc ---------------------------------------------------------------------------------


def store_bytes(root: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                pass
    return total


def young_unreferenced(store: Store, grace_seconds: float) -> tuple[int, int]:
    """Object files that no current record references but gc keeps for being younger
    than ``grace_seconds`` (a running kernel may be about to record one): count, bytes."""
    import time

    live = set(store.query_df(
        "SELECT DISTINCT object_sha256 AS sha FROM {events} WHERE object_sha256 IS NOT NULL "
        "AND kind = ? QUALIFY event_id = max(event_id) OVER (PARTITION BY namespace, key, "
        "sequence)", [RECORDED],
    )["sha"])
    cutoff = time.time() - grace_seconds
    count = size = 0
    for path in _object_files(store):
        if path.name in live:
            continue
        stat = path.stat()
        if stat.st_mtime >= cutoff:
            count += 1
            size += stat.st_size
    return count, size


def db_bytes(root: Path) -> int | None:
    """The size of the store's DuckDB file (not its WAL), None if it is not there."""
    try:
        return (root / DB_NAME).stat().st_size
    except FileNotFoundError:
        return None


def gc_text(report: dict[str, int], dry_run: bool, before: int, after: int | None,
            kept: tuple[int, int], grace_seconds: float,
            db_before: int | None = None, db_after: int | None = None) -> str:
    """The gc report. The store's bytes freed are the object and temp files gc removed;
    the DuckDB file, where dropped inline values lived, is reported on its own line,
    since DuckDB decides whether it shrinks (it keeps freed blocks for reuse)."""
    would = "would " if dry_run else ""
    lines = [
        f"{would}drop {text.plural(report['events_dropped'], 'event')} "
        "(superseded and forgotten records, and the marks that forgot them)",
        f"{would}remove {text.plural(report['objects_removed'], 'unreferenced object file')}"
        f" and {text.plural(report['tmp_removed'], 'stale temp file')}"
        f" ({'would free' if dry_run else 'freed'} {text.size(report['bytes_freed'])}"
        " of object files)",
    ]
    if kept[0]:
        lines.append(
            f"kept {text.plural(kept[0], 'unreferenced object file')} ({text.size(kept[1])}) "
            f"younger than {text.seconds(grace_seconds)}: a running kernel may be about to "
            "record one. A later `nbstep gc` frees them (or --grace 0 when no kernel runs)."
        )
    if db_before is not None:
        database = f"database {DB_NAME}: {text.size(db_before)}"
        if db_after is not None:
            database += f" -> {text.size(db_after)}"
            if db_after > db_before:
                database += (" (DuckDB rewrote its tables; it keeps the freed space in the "
                             "file and reuses it for new records)")
        lines.append(database)
    if after is None:
        lines.append(f"store size: {text.size(before)}")
    else:
        lines.append(f"store size: {text.size(before)} -> {text.size(after)}")
    if dry_run:
        lines.append("(dry run: nothing was changed; run `nbstep gc` to do it)")
    return "\n".join(lines)


# -- verify -------------------------------------------------------------------------------

_VERIFY_SQL = f"""
SELECT event_id, namespace, key, sequence, identity, deterministic_inputs_hash, codec,
    result_json, result_blob, object_sha256, size_bytes, duration_s,
    epoch_us(occurred_at) AS occurred_at_us, reason,
    event_id = max(event_id) OVER (PARTITION BY namespace, key, sequence) AS is_current
FROM {{events}}
WHERE kind = '{RECORDED}'
ORDER BY event_id
"""


@dataclass
class Problem:
    record: Record
    current: bool
    what: str


@dataclass
class VerifyReport:
    records: int = 0
    inline: int = 0
    object_files: int = 0
    object_bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    unreferenced: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(store: Store, decode: bool = False) -> VerifyReport:
    """Check every recorded value: object files exist with the recorded size and
    sha256, inline values decode (and, with ``decode``, object values too)."""
    frame = store.query_df(_VERIFY_SQL)
    report = VerifyReport()
    by_object: dict[str, list[tuple[Record, bool]]] = {}
    for row in frame.itertuples(index=False):
        record = _record(row)
        current = bool(row.is_current)
        report.records += 1
        if record.object_sha256 is None:
            report.inline += 1
            problem = _decode_problem(store, record)
            if problem:
                report.problems.append(Problem(record, current, problem))
        else:
            by_object.setdefault(record.object_sha256, []).append((record, current))
    for sha256, users in by_object.items():
        path = store.object_path(sha256)
        report.object_files += 1
        problem = _object_problem(path, sha256, users[0][0].size_bytes)
        if problem is None:
            report.object_bytes += users[0][0].size_bytes
            if decode:
                for record, current in users:
                    decoded = _decode_problem(store, record)
                    if decoded:
                        report.problems.append(Problem(record, current, decoded))
            continue
        for record, current in users:
            report.problems.append(Problem(record, current, problem.format(path=path)))
    report.unreferenced = sum(1 for p in _object_files(store) if p.name not in by_object)
    return report


def _record(row: Any) -> Record:
    return Record(
        event_id=int(row.event_id), namespace=row.namespace, key=row.key,
        sequence=int(row.sequence), identity=row.identity,
        input_hash=row.deterministic_inputs_hash, codec=row.codec,
        result_json=None if _na(row.result_json) else row.result_json,
        result_blob=None if _na(row.result_blob) else bytes(row.result_blob),
        object_sha256=None if _na(row.object_sha256) else row.object_sha256,
        size_bytes=int(row.size_bytes), duration_s=_float(row.duration_s),
        occurred_at_us=int(row.occurred_at_us), reason=None if _na(row.reason) else row.reason,
        details=None,
    )


def _decode_problem(store: Store, record: Record) -> str | None:
    try:
        store.load_value(record)
    except StepReplayError as e:
        cause = e.__cause__ or e
        return f"the value does not decode as {record.codec} ({type(cause).__name__}: {cause})"
    return None


def _object_problem(path: Path, sha256: str, size: int) -> str | None:
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return "its object file {path} is missing"
    digest = hashlib.sha256()
    actual = 0
    with f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            actual += len(chunk)
    if actual != size:
        return f"its object file {{path}} has {actual} bytes, the record says {size}"
    if digest.hexdigest() != sha256:
        return "its object file {path} does not match its sha256 (damaged)"
    return None


def _object_files(store: Store) -> Iterator[Path]:
    if not store.objects.is_dir():
        return
    for folder in store.objects.iterdir():
        if folder.is_dir() and folder.name != "tmp":
            yield from (p for p in folder.iterdir() if p.is_file())


def verify_text(report: VerifyReport) -> str:
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
    if report.ok:
        lines.append("all values are intact")
        return "\n".join(lines)
    lines.append(f"DAMAGED: {text.plural(len(report.problems), 'record')}")
    for p in report.problems:
        status = "current" if p.current else "superseded, not replayed"
        lines.append(
            f"  `{p.record.namespace}` step `{p.record.key}` occurrence {p.record.sequence} "
            f"({status}, recorded {text.timestamp(p.record.occurred_at_us)} UTC): {p.what}"
        )
    fixes = sorted({(p.record.namespace, p.record.key) for p in report.problems if p.current})
    if fixes:
        lines.append("To recompute the damaged steps on the next run:")
        lines += [f"  nbstep forget {_quote(ns)} {_quote(key)}" for ns, key in fixes]
    if any(not p.current for p in report.problems):
        lines.append("Damaged superseded records are never replayed; `nbstep gc` drops them.")
    return "\n".join(lines)


def _quote(word: str) -> str:
    import shlex

    return shlex.quote(word)
