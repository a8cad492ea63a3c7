"""``nbstep run -p NAME VALUE``: a parameters cell injected as papermill injects it.

- ``-p NAME VALUE`` parses VALUE as papermill does: ``True``/``False``, ``None``, an
  int, a float, else the text itself; ``-r NAME VALUE`` keeps VALUE as text;
  ``-f/--parameters-file`` reads a JSON or YAML mapping. Files first, then ``-p``,
  then ``-r`` (papermill's order); the last of one name wins.
- The cell ``# Parameters`` + one assignment per name goes right after the cell tagged
  ``parameters``, tagged ``injected-parameters``. An injected cell already there (a
  notebook written by an earlier ``nbstep run -p`` or papermill) is replaced, not
  added to. A notebook without a ``parameters`` cell gets the injected cell first,
  with a note (papermill warns the same way).
- The written notebook (``-o``/``--inplace``) keeps the injected cell, as papermill's.

A name must be a Python identifier (not a keyword): anything else is a usage error
before any notebook runs, since the cell would not even compile.
"""

from __future__ import annotations

import json
import keyword
from pathlib import Path
from typing import Any

from nbstep.errors import NbstepError

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
INJECTED_ID = "injected-parameters"


class ParameterError(NbstepError):
    """A parameter that cannot be given to a notebook (its name, its file)."""


def parse_value(text: str) -> Any:
    """A ``-p`` value as papermill reads it: ``True``/``False``/``None``, int, float,
    else the text (``-r`` keeps the text as it is)."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def check_name(name: str) -> str:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ParameterError(
            f"parameter name {name!r} is not a Python variable name: expected letters, "
            "digits and underscores, not starting with a digit, and not a keyword "
            f"(such as `{name + '_' if keyword.iskeyword(name) else _fixed(name)}`). "
            "The injected cell assigns "
            "`NAME = VALUE`, so rename the variable in the notebook's parameters cell "
            "and pass that name."
        )
    return name


def _fixed(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "value"
    return cleaned if cleaned[0].isalpha() or cleaned[0] == "_" else f"p_{cleaned}"


def read_file(path: Path) -> dict[str, Any]:
    """A parameters file: JSON, or YAML (``.yaml``/``.yml``, needs PyYAML)."""
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ParameterError(f"cannot read the parameters file {path}: {e}") from e
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]  # noqa: TID253
        except ImportError:
            raise ParameterError(
                f"the parameters file {path} is YAML, and PyYAML is not installed here: "
                "`pip install pyyaml`, or write the parameters as JSON"
            ) from None
        try:
            data = yaml.safe_load(content)
        except yaml.YAMLError as e:
            raise ParameterError(f"the parameters file {path} is not valid YAML: {e}") from e
    else:
        try:
            data = json.loads(content)
        except ValueError as e:
            raise ParameterError(
                f"the parameters file {path} is not valid JSON ({e}); name a .yaml file "
                "for YAML"
            ) from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParameterError(
            f"the parameters file {path} holds a {type(data).__name__}; expected a mapping "
            "of names to values, such as {\"N\": 20}"
        )
    for name in data:
        check_name(str(name))
    return {str(k): v for k, v in data.items()}


def collect(files: tuple[Path, ...], parsed: tuple[tuple[str, str], ...],
            raw: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The parameters: files first, then ``-p``, then ``-r`` (papermill's order); a
    later one of the same name wins."""
    values: dict[str, Any] = {}
    for path in files:
        values.update(read_file(path))
    for name, text in parsed:
        values[check_name(name)] = parse_value(text)
    for name, text in raw:
        values[check_name(name)] = text
    source(values)  # every value must be a literal: say so before any notebook runs
    return values


def _literal(name: str, value: Any) -> str:
    text = repr(value)
    try:
        import ast

        ast.literal_eval(text)
    except (ValueError, SyntaxError, RecursionError):
        raise ParameterError(
            f"parameter `{name}` has a value of type {type(value).__name__} that cannot be "
            "written as a Python literal; use numbers, text, booleans, null, lists and "
            "mappings of them"
        ) from None
    return text


def source(values: dict[str, Any]) -> str:
    """The injected cell's code: ``# Parameters`` then ``NAME = VALUE`` per line."""
    return "\n".join(["# Parameters"] + [f"{n} = {_literal(n, v)}" for n, v in values.items()])


def inject(nb: Any, values: dict[str, Any]) -> str | None:
    """Put the parameters cell into ``nb`` (in memory); return a note, or None.

    After the cell tagged ``parameters``; an earlier injected cell is replaced (its
    place kept when there is no ``parameters`` cell); else first.
    """
    from nbformat.v4 import new_code_cell  # noqa: TID253

    cells = nb.cells
    old = [i for i, c in enumerate(cells) if INJECTED_TAG in c.get("metadata", {}).get("tags", [])]
    old_id = cells[old[0]].get("id") if old else None
    place = old[0] if old else None
    for i in reversed(old):
        del cells[i]
    tagged = [i for i, c in enumerate(cells)
              if c.cell_type == "code" and PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])]
    cell = new_code_cell(source(values))
    cell.metadata["tags"] = [INJECTED_TAG]
    taken = {c.get("id") for c in cells}
    cell_id = old_id or (INJECTED_ID if INJECTED_ID not in taken else None)
    if nb.get("nbformat_minor", 5) < 5:
        cell.pop("id", None)  # nbformat 4.4 and older: cells have no id
    elif cell_id:
        cell["id"] = cell_id
    note = None
    if tagged:
        place = tagged[0] + 1
    elif place is None:
        place = 0
        note = ("the notebook has no cell tagged `parameters`; the parameters cell goes "
                "first (tag the cell that sets the defaults `parameters` to put it after "
                "that one)")
    cells.insert(place, cell)
    return note


def describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{n} = {v!r}" for n, v in values.items())
