"""Where a record's value goes (inline or an object file), and reading it back.

Shared by every backend, so a value is placed and read, and a damaged one reported,
the same way whatever holds the events.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

from nbstep import codecs
from nbstep.codecs.streamed import Streamed
from nbstep.core.record import NewRecord, Record
from nbstep.errors import StepReplayError, StoreWriteError

from .objects import Damaged, ObjectFiles


class Placed(NamedTuple):
    """A new record's value as a store keeps it."""

    size: int
    result_json: str | None = None
    result_blob: bytes | None = None
    object_sha256: str | None = None
    checksum: str | None = None


def needs_object(new: NewRecord, inline_limit: int) -> bool:
    """Whether the value goes to an object file rather than into the record."""
    return new.codec != "json" and _size(new.data) > inline_limit


def place(new: NewRecord, inline_limit: int, objects: ObjectFiles) -> Placed:
    """JSON stays readable text; other values up to ``inline_limit`` bytes stay inline;
    larger ones go to an object file, durable before the record is written."""
    data = new.data
    if new.codec == "json":
        return Placed(len(data), result_json=bytes(data).decode("utf-8"))
    size = _size(data)
    if size > inline_limit:
        try:
            sha256, digest = objects.write(data)
        except OSError as e:
            raise StoreWriteError(objects.root, e) from e
        return Placed(size, object_sha256=sha256, checksum=digest)
    return Placed(size, result_blob=bytes(data))


def _size(data: Any) -> int:
    if type(data) is bytes:
        return len(data)
    return data.nbytes if isinstance(data, Streamed) else memoryview(data).nbytes


def recompute_hint(record: Record) -> str:
    return (f"Recompute it with rerun=True, or step.forget({record.key!r}, "
            f"namespace={record.namespace!r})")


def read(record: Record, objects: ObjectFiles,
         inline: Callable[[Record], tuple[str | None, bytes | None]]) -> Any:
    """Decode a record's value; ``inline(record)`` fetches an inline value the record
    was loaded without. Any failure is a :class:`StepReplayError` saying how to fix it."""
    try:
        result_json, result_blob = record.result_json, record.result_blob
        if result_json is None and result_blob is None and record.object_sha256 is None:
            result_json, result_blob = inline(record)
        if result_json is not None:
            return json.loads(result_json)
        if result_blob is not None:
            return codecs.decode(record.codec, result_blob)
    except StepReplayError:
        raise
    except Exception as e:
        raise StepReplayError(
            f"cannot replay {record.where} (recorded {record.occurred_at}, codec "
            f"{record.codec}): "
            f"{type(e).__name__}: {e}. {recompute_hint(record)}."
        ) from e
    return _read_object(record, objects)


def _read_object(record: Record, objects: ObjectFiles) -> Any:
    assert record.object_sha256 is not None
    where = f"{record.where} (recorded {record.occurred_at})"
    fix = f"{recompute_hint(record)}; `nbstep verify` checks every object file."
    try:
        mapped = objects.open(record.object_sha256, record.size_bytes, record.checksum)
    except Damaged as e:
        raise StepReplayError(f"cannot replay {where}: {e}. {fix}") from e
    try:
        return codecs.decode(record.codec, mapped)
    except Exception as e:
        path = objects.path(record.object_sha256)
        raise StepReplayError(
            f"cannot replay {where}: its object file {path} does not decode as "
            f"{record.codec} ({type(e).__name__}: {e}). {fix}"
        ) from e
