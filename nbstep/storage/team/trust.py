"""Whose pickled values this machine loads from a team store.

Loading a pickle runs code its writer chose: a team store would let any writer run
code on every reader's machine. So values of the safe codecs (JSON, Arrow, npy,
bytes) always load, and a pickled value (``pickle``, ``cloudpickle``; a ``%%step``
cell's record is one) loads only when its writer is trusted: this machine's own
user, a name in the ``trust`` setting, or anyone with ``trust = ["*"]``. The writer is
the record's ``recorded_by``, which the server sets to its ``current_user`` and which
a writer cannot set itself (docs/team-store.md, "Roles").
"""

from __future__ import annotations

from nbstep.core.record import Record
from nbstep.errors import UntrustedValue
from nbstep.storage.values import recompute_hint

PICKLED = ("pickle", "cloudpickle")


class Trust:
    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = frozenset(names)

    def allows(self, record: Record, me: str | None) -> bool:
        who = record.recorded_by
        return (record.codec not in PICKLED or who is None or who == me
                or who in self.names or "*" in self.names)

    def check(self, record: Record, me: str | None) -> None:
        if self.allows(record, me):
            return
        who = record.recorded_by
        raise UntrustedValue(
            f"will not replay {record.where}: it was recorded by `{who}` as a "
            f"{record.codec}, and loading a pickle runs code its writer chose. If you trust "
            f"`{who}`, add them to the `trust` setting ([tool.nbstep] trust = [\"{who}\"] in "
            "pyproject.toml, or NBSTEP_TRUST); otherwise "
            f"{recompute_hint(record)[0].lower()}{recompute_hint(record)[1:]} to compute it "
            "here."
        )
