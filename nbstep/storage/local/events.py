"""An event of a namespace log as JSON, and back to a Record.

The JSON names are the columns of ``nbstep.core.record.RECORD_COLUMNS`` (an inline
value's bytes follow the JSON in the frame), plus ``kind``, ``pid`` and ``host``.
Every event names its namespace, so a log whose header was damaged still says whose
it is. docs/record-format.md lists them.
"""

from __future__ import annotations

import os
import time
from typing import Any

from nbstep.core.record import FORGOTTEN, RECORDED, NewRecord, Record
from nbstep.storage.values import Placed

HOST = os.uname().nodename  # what socket.gethostname() says, without importing socket
# Values up to this size stay in memory with their record; larger inline values are
# read from the log when replayed, so a namespace of big values does not fill memory.
CACHED_VALUE_LIMIT = 4096


def recorded(event_id: int, new: NewRecord, placed: Placed) -> dict[str, Any]:
    return {
        "event_id": event_id, "kind": RECORDED, "namespace": new.namespace, "key": new.key,
        "sequence": new.sequence,
        "identity": new.identity, "deterministic_inputs_hash": new.input_hash,
        "codec": new.codec, "result_json": placed.result_json,
        "object_sha256": placed.object_sha256, "size_bytes": placed.size,
        "duration_s": new.duration_s, "occurred_at_us": time.time_ns() // 1000,
        "reason": new.reason, "details": new.details, "checksum": placed.checksum,
        "pid": os.getpid(), "host": HOST,
    }


def forgotten(event_id: int, namespace: str, key: str, sequence: int, reason: str = "forget"
              ) -> dict[str, Any]:
    return {
        "event_id": event_id, "kind": FORGOTTEN, "namespace": namespace, "key": key,
        "sequence": sequence,
        "occurred_at_us": time.time_ns() // 1000, "reason": reason, "pid": os.getpid(),
        "host": HOST,
    }


def to_record(namespace: str, event: dict[str, Any], blob: bytes | None) -> Record:
    """A recorded event's Record; ``blob`` is its inline value when it is kept in memory.

    Built field by field (not through ``Record.from_row``): every namespace log event
    becomes a Record when a process first reads the log, so this is on the path of
    the first replay after a restart. JSON gives the fields their types already.
    """
    get = event.get
    return Record(
        event["event_id"], namespace, event["key"], event["sequence"], get("identity"),
        get("deterministic_inputs_hash"), get("codec"), get("result_json"), blob,
        get("object_sha256"), get("size_bytes") or 0, get("duration_s"),
        event["occurred_at_us"], get("reason"), get("details"), get("checksum"),
    )


def slot(event: dict[str, Any]) -> tuple[str, int]:
    return event["key"], event["sequence"]
