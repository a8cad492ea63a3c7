"""What a ``%%step`` cell needs from the extension that runs it (:mod:`.extension`)."""

from __future__ import annotations

from typing import Any, Protocol

from nbstep.engine.runtime import Runtime


class Host(Protocol):
    """The shell, the runtime, and this kernel's memory of its steps."""

    shell: Any
    runtime: Runtime
    cell_id: str | None
    body_depth: int  # > 0 while a %%step body runs

    def remember_outputs(self, slot: Any, names: Any) -> None:
        """Note which objects the step of ``slot`` (namespace, key, sequence) left."""

    def produced(self, record: Any) -> dict[str, Any]:
        """``{name: object}`` this kernel's run or replay of the record's step left."""

    def note_products(self, identity: str, names: Any) -> None:
        """Remember the objects a step (its record's identity) left under ``names``."""

    def product_part(self, obj: Any) -> str | None:
        """The part of an object a step left, if nothing changed it since."""
