"""Real Jupyter kernels for the tests: start one, run cells in it, read what it showed.

A :class:`Kernel` is an ipykernel process started by jupyter_client as a notebook
server starts one: its working directory is the notebook's folder and
``JPY_SESSION_NAME`` is the notebook's path (so nbstep knows which notebook it
runs); ``NBSTEP_STORE`` points at a store under the test's tmp_path. Each cell is
one ``execute_request`` with its ``cellId``, as JupyterLab sends it. What the kernel
published for a cell comes back as a list of :class:`Output`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager


@dataclass
class Output:
    kind: str  # stream, display_data, execute_result, error, clear_output
    name: str = ""  # stdout / stderr for a stream
    text: str = ""  # a stream's text, text/plain of a display, ename: evalue of an error
    data: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_notice(self) -> bool:
        """One of nbstep's own lines (replayed, recomputing, note), not the cell's."""
        return self.kind == "display_data" and "nbstep" in self.metadata


@dataclass
class Cell:
    """What one cell execution showed, and whether it succeeded."""

    outputs: list[Output]
    ok: bool

    def stream(self, name: str = "stdout") -> str:
        return "".join(o.text for o in self.outputs if o.kind == "stream" and o.name == name)

    def lines(self, name: str = "stdout") -> list[str]:
        return self.stream(name).splitlines()

    def rich(self, kind: str) -> list[dict[str, Any]]:
        """The cell's own rich outputs of ``kind`` (nbstep's notices left out)."""
        return [o.data for o in self.outputs if o.kind == kind and not o.is_notice]

    def notices(self) -> list[str]:
        """nbstep's own lines, as text (``nbstep ⟲ replayed `key` ...``)."""
        return [o.text for o in self.outputs if o.is_notice]

    def kinds(self) -> list[str]:
        """The outputs in order, consecutive chunks of one stream merged; nbstep's own
        lines are ``nbstep-notice``."""
        merged: list[str] = []
        for o in self.outputs:
            label = (f"{o.kind}:{o.name}" if o.kind == "stream"
                     else "nbstep-notice" if o.is_notice else o.kind)
            if not (merged and label == merged[-1] and o.kind == "stream"):
                merged.append(label)
        return merged

    def errors(self) -> list[str]:
        return [o.text for o in self.outputs if o.kind == "error"]


def kernel_env(notebook: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NBSTEP_") and k not in ("JPY_SESSION_NAME", "MPLBACKEND",
                                                          "PYTHONHASHSEED")}
    env.update(JPY_SESSION_NAME=str(notebook), NBSTEP_STORE=str(notebook.parent / ".nbstep"))
    env.update(extra)
    return env


class Kernel:
    """One running kernel for the notebook at ``notebook`` (see the module docstring)."""

    def __init__(self, notebook: Path, **env: str) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=str(notebook.parent), env=kernel_env(notebook, **env))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.count = 0

    def run(self, source: str, cell_id: str | None = None, timeout: float = 120) -> Cell:
        """Execute one cell (``cell_id``: the notebook cell's id, as JupyterLab sends
        it; the same cell keeps its id when run again)."""
        outputs: list[Output] = []

        def hook(message: dict[str, Any]) -> None:
            kind = message["header"]["msg_type"]
            content = message["content"]
            if kind == "stream":
                outputs.append(Output("stream", content["name"], content["text"]))
            elif kind in ("display_data", "execute_result", "update_display_data"):
                data = dict(content.get("data", {}))
                outputs.append(Output(kind, text=data.get("text/plain", ""), data=data,
                                      metadata=dict(content.get("metadata") or {})))
            elif kind == "error":
                outputs.append(Output("error", text=f"{content['ename']}: {content['evalue']}"))
            elif kind == "clear_output":
                outputs.append(Output("clear_output"))

        self.count += 1
        client = self.client
        request = client.session.msg("execute_request", {
            "code": source, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True,
        })
        request["metadata"]["cellId"] = cell_id or f"cell-{self.count}"
        client.shell_channel.send(request)
        msg_id = request["header"]["msg_id"]
        deadline = time.monotonic() + timeout
        while True:
            message = client.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.1))
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            if (message["header"]["msg_type"] == "status"
                    and message["content"]["execution_state"] == "idle"):
                break
            hook(message)
        while True:
            reply = client.get_shell_msg(timeout=max(deadline - time.monotonic(), 0.1))
            if reply["parent_header"].get("msg_id") == msg_id:
                return Cell(outputs, reply["content"]["status"] == "ok")

    def run_all(self, sources: list[str]) -> list[Cell]:
        return [self.run(source, cell_id=f"cell-{i}") for i, source in enumerate(sources)]

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run_notebook(notebook: Path, sources: list[str], **env: str) -> list[Cell]:
    """Run cells in a new kernel (a restart, then "Run All"); what each one showed."""
    with Kernel(notebook, **env) as kernel:
        return kernel.run_all(sources)


def plain(sources: list[str]) -> list[str]:
    """The same cells without nbstep: ``%%step`` lines and ``%load_ext nbstep`` dropped."""
    out = []
    for source in sources:
        lines = source.splitlines()
        if lines and lines[0].startswith("%%step"):
            lines = lines[1:]
        lines = [line for line in lines if line.strip() != "%load_ext nbstep"]
        out.append("\n".join(lines))
    return out
