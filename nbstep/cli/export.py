"""``nbstep export``: a recorded value, or one variable of a cell, written to a file."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nbstep.codecs.cell import CellRecord
from nbstep.codecs.cell_unpickle import Unavailable
from nbstep.engine.lookup import close_matches
from nbstep.errors import NbstepError, NotFound

from . import text


def cell_variable(cell: CellRecord, name: str | None, key: str) -> tuple[str, Any]:
    """The variable of a ``%%step`` record that ``nbstep export --var NAME`` writes.

    Without ``--var``: the cell's one data variable (its functions and classes do not
    count; its modules are never variables).
    """
    names = list(cell.variables)
    if name is None:
        data = [n for n in names if not _is_code(cell.variables[n])]
        if len(data) != 1:
            listed = ", ".join(f"`{n}`" for n in names) or "none"
            raise NotFound(
                f"step `{key}` is a %%step cell that bound "
                f"{text.plural(len(names), 'variable')} ({listed}); choose one with "
                "--var NAME" + ("." if names else " (it has no variable to export).")
            )
        name = data[0]
    if name not in cell.variables:
        if name in cell.modules:
            raise NotFound(
                f"`{name}` of the %%step cell `{key}` is the module `{cell.modules[name]}`, "
                "imported again on replay, not a recorded value. Its variables: "
                f"{', '.join(f'`{n}`' for n in names) or 'none'}."
            )
        hint = close_matches(name, names)
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


def _is_code(value: Any) -> bool:
    """A function or class: part of a cell's code, not the data it made."""
    import types

    return isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType))


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
    fmt, write = _WRITERS[suffix]
    with replacing(path) as tmp:
        write(frame if fmt in ("parquet", "csv") else value, tmp)
    return fmt


def _write_pickle(value: Any, tmp: Path) -> None:
    import pickle

    with open(tmp, "wb") as f:
        try:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            raise NbstepError(
                f"cannot export this {type(value).__name__} as a pickle ({e}); a "
                "function or class defined in a notebook can be read only there."
            ) from e


def _write_parquet(frame: Any, tmp: Path) -> None:
    try:
        frame.to_parquet(tmp)
    except Exception as e:
        raise NbstepError(
            f"cannot write this DataFrame as Parquet ({type(e).__name__}: {e}); "
            "export to .csv or .pkl instead."
        ) from e


def _write_csv(frame: Any, tmp: Path) -> None:
    import pandas as pd

    # A default 0..n-1 index carries no information; any other index is data.
    plain_index = isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 \
        and frame.index.step == 1 and frame.index.name is None
    frame.to_csv(tmp, index=not plain_index)


def _write_npy(array: Any, tmp: Path) -> None:
    import numpy as np

    with open(tmp, "wb") as f:
        # allow_pickle=False: an object array cannot be read back without trusting
        # the file; say so rather than write a pickle in disguise.
        try:
            np.save(f, array, allow_pickle=False)
        except ValueError as e:
            raise NbstepError(
                f"cannot write this {array.dtype} array as .npy ({e}); export it "
                "to .pkl instead."
            ) from e


def _write_json(value: Any, tmp: Path) -> None:
    try:
        data = json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise NbstepError(
            f"cannot export this {type(value).__name__} as JSON ({e}); "
            "export it to .pkl instead."
        ) from e
    tmp.write_text(data + "\n", encoding="utf-8")


# Extension -> (format name, writer).
_WRITERS: dict[str, tuple[str, Callable[[Any, Path], None]]] = {
    ".pkl": ("pickle", _write_pickle),
    ".pickle": ("pickle", _write_pickle),
    ".parquet": ("parquet", _write_parquet),
    ".csv": ("csv", _write_csv),
    ".npy": ("npy", _write_npy),
    ".json": ("json", _write_json),
}


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
