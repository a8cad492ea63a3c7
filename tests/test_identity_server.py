"""A real Jupyter server with nbstep's server extension, driven as JupyterLab drives it:
its REST contents API creates, saves, renames, moves and copies notebooks; its
sessions API starts their kernels, and cells run through jupyter_client on the
kernel's connection file. One server for the module (it costs seconds).

What must hold: a renamed or moved notebook replays its records; a new
``Untitled.ipynb`` made after another was renamed never replays them; a copy gets an
id of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from jupyter_client import BlockingKernelClient

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parent.parent
TOKEN = "nbstep-test-token"
STEP = """
import nbstep
def compute():
    with open({log!r}, "a") as f:
        f.write({label!r} + "\\n")
    return {label!r}
print("value", nbstep.step.run("k", compute))
"""


class Server:
    def __init__(self, root: Path, home: Path) -> None:
        self.root = root
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = home / "config"
        # The config file the package installs (etc/jupyter/jupyter_server_config.d/):
        # an editable install does not put data files in place, so it is given here.
        (config / "jupyter_server_config.d").mkdir(parents=True)
        shutil.copy(REPO / "jupyter-config" / "jupyter_server_config.d" / "nbstep.json",
                    config / "jupyter_server_config.d" / "nbstep.json")
        self.runtime = home / "runtime"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NBSTEP_", "JPY_"))}
        env.update(JUPYTER_CONFIG_DIR=str(config), JUPYTER_RUNTIME_DIR=str(self.runtime),
                   JUPYTER_DATA_DIR=str(home / "data"))
        self.log = open(home / "server.log", "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}",
             "--ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}", "--allow-root",
             f"--ServerApp.root_dir={root}"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.api("GET", "/api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError((home / "server.log").read_text()) from None
                time.sleep(0.2)

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            self.url + urllib.parse.quote(path), method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            data = response.read()
        return json.loads(data) if data else {}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()

    # -- what JupyterLab does ----------------------------------------------------------

    def new_notebook(self, folder: str = "") -> str:
        return self.api("POST", f"/api/contents/{folder}", {"type": "notebook"})["path"]

    def rename(self, old: str, new: str) -> None:
        self.api("PATCH", f"/api/contents/{old}", {"path": new})
        for session in self.api("GET", "/api/sessions"):
            if session["path"] == old:
                self.api("PATCH", f"/api/sessions/{session['id']}",
                         {"path": new, "name": Path(new).name})

    def file_id(self, path: str) -> str:
        return json.loads((self.root / path).read_text())["metadata"]["nbstep"]["id"]

    def open_kernel(self, path: str) -> Kernel:
        session = self.api("POST", "/api/sessions", {
            "path": path, "name": Path(path).name, "type": "notebook",
            "kernel": {"name": "python3"}})
        return Kernel(self, session["id"], session["kernel"]["id"])


class Kernel:
    def __init__(self, server: Server, session_id: str, kernel_id: str) -> None:
        self.server, self.session_id, self.kernel_id = server, session_id, kernel_id
        self.client = self._connect()

    def _connect(self) -> BlockingKernelClient:
        client = BlockingKernelClient(
            connection_file=str(self.server.runtime / f"kernel-{self.kernel_id}.json"))
        client.load_connection_file()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        self.client = client
        self.run("%load_ext nbstep")  # each cell then starts new occurrence counters
        return client

    def run(self, code: str) -> str:
        out: list[str] = []

        def keep(message: dict) -> None:
            if message["msg_type"] == "stream":
                out.append(message["content"]["text"])
            elif message["msg_type"] == "error":
                out.append("\n".join(message["content"]["traceback"]))

        reply = self.client.execute_interactive(code, output_hook=keep, timeout=120)
        assert reply["content"]["status"] == "ok", "".join(out)
        return "".join(out)

    def restart(self) -> None:
        self.client.stop_channels()
        self.server.api("POST", f"/api/kernels/{self.kernel_id}/restart")
        self.client = self._connect()

    def close(self) -> None:
        self.client.stop_channels()
        self.server.api("DELETE", f"/api/sessions/{self.session_id}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    (root / "pyproject.toml").write_text("[project]\nname = 'lab'\n")
    running = Server(root, tmp_path_factory.mktemp("jupyter-home"))
    yield running
    running.stop()


def computed(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_a_new_notebook_gets_an_id_and_a_save_keeps_it(server):
    path = server.new_notebook()
    the_id = server.file_id(path)
    assert len(the_id) == 32
    model = server.api("GET", f"/api/contents/{path}")
    server.api("PUT", f"/api/contents/{path}", {"type": "notebook", "format": "json",
                                                "content": model["content"]})
    assert server.file_id(path) == the_id
    # A notebook saved without one (written by another tool, then saved) gets one.
    content = model["content"]
    del content["metadata"]["nbstep"]
    server.api("PUT", "/api/contents/plain.ipynb", {"type": "notebook", "format": "json",
                                                    "content": content})
    assert server.file_id("plain.ipynb") not in (None, the_id)


def test_rename_and_move_replay_and_a_new_untitled_never_does(server, tmp_path):
    log = tmp_path / "computed.txt"
    folder = server.api("POST", "/api/contents", {"type": "directory"})["path"]
    first = server.new_notebook(folder)
    kernel = server.open_kernel(first)
    assert "value first" in kernel.run(STEP.format(log=str(log), label="first"))
    # Rename (JupyterLab: the file, then the session), in the running kernel and after
    # a restart (which gets the new name).
    renamed = f"{folder}/analysis.ipynb"
    server.rename(first, renamed)
    assert "value first" in kernel.run(STEP.format(log=str(log), label="again"))
    kernel.restart()
    assert "value first" in kernel.run(STEP.format(log=str(log), label="again"))
    kernel.close()
    # A new Untitled.ipynb in the same folder: the old name, a new notebook.
    new = server.new_notebook(folder)
    assert new == first
    other = server.open_kernel(new)
    assert "value second" in other.run(STEP.format(log=str(log), label="second"))
    other.close()
    # Moved to a subfolder: still its records.
    server.api("POST", f"/api/contents/{folder}", {"type": "directory"})
    sub = next(item["path"] for item in server.api("GET", f"/api/contents/{folder}")["content"]
               if item["type"] == "directory")
    moved = f"{sub}/analysis.ipynb"
    server.rename(renamed, moved)
    again = server.open_kernel(moved)
    assert "value first" in again.run(STEP.format(log=str(log), label="third"))
    again.close()
    assert computed(log) == ["first", "second"]


def test_a_duplicate_gets_an_id_of_its_own_and_its_own_records(server, tmp_path):
    log = tmp_path / "computed.txt"
    original = server.new_notebook()
    kernel = server.open_kernel(original)
    kernel.run(STEP.format(log=str(log), label="original"))
    kernel.close()
    folder = str(Path(original).parent).replace(".", "")
    copy = server.api("POST", f"/api/contents/{folder}", {"copy_from": original})["path"]
    assert copy != original
    assert server.file_id(copy) != server.file_id(original)
    twin = server.open_kernel(copy)
    assert "value copy" in twin.run(STEP.format(log=str(log), label="copy"))
    twin.close()
    assert computed(log) == ["original", "copy"]
