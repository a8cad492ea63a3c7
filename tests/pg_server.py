"""A throwaway PostgreSQL server for the team store's tests and benchmark.

Real PostgreSQL, no mocks: the system's ``initdb`` / ``pg_ctl`` when present (a
Debian ``postgresql`` package puts them under /usr/lib/postgresql/<v>/bin), else the
binaries the ``pgserver`` wheel ships (PostgreSQL 16, a ``[test]`` dependency, so a
clean checkout needs no manual install). PostgreSQL refuses to run as root; as root
the server runs as the ``postgres`` system user, or one made for it.

Logins need a password over TCP (scram-sha-256), so a wrong password really fails.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "nbstep_super"
PASSWORD = "super-secret-pw"


def _bin_dir() -> Path:
    if os.environ.get("NBSTEP_TEST_POSTGRES") == "pgserver":
        return _pgserver_bin()  # the wheel's binaries even where the system has some
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parent.parent.name))
    if versions:
        return Path(versions[-1]).parent
    return _pgserver_bin()


def _pgserver_bin() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("no PostgreSQL: install the `pgserver` wheel (pip install "
                           "'nbstep[test]') or the system's postgresql package")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _system_user() -> str | None:
    """The user the server runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nbstep-pg"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "nbstep-pg"], check=True,
                   capture_output=True)
    return "nbstep-pg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestServer:
    """One PostgreSQL cluster in a temporary directory, on a free localhost port."""

    __test__ = False  # not a pytest class

    def __init__(self, *, fsync: bool = False) -> None:
        self.bin = _bin_dir()
        self.user = _system_user()
        self.base = Path(tempfile.mkdtemp(prefix="nbstep-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = free_port()
        self.fsync = fsync
        self._databases = 0
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
            os.chmod(self.base, 0o700)
        pwfile = self.base / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.user is not None:
            os.chown(pwfile, pwd.getpwnam(self.user).pw_uid, -1)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                  "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        pwfile.unlink()
        self.start()

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.bin / tool), *args], user=self.user,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed: {done.stderr[-3000:]}\n{log}")
        return done

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={self.base} -c max_connections=120 "
                   f"-c fsync={'on' if self.fsync else 'off'} -c full_page_writes="
                   f"{'on' if self.fsync else 'off'}")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        return subprocess.run([str(self.bin / "pg_ctl"), "-D", str(self.data), "status"],
                              user=self.user, capture_output=True).returncode == 0

    def url(self, database: str = "postgres", user: str = SUPERUSER,
            password: str | None = PASSWORD) -> str:
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as con:
            cur = con.execute(sql)
            return cur.fetchall() if cur.description else []

    def new_database(self) -> str:
        self._databases += 1
        name = f"team_{os.getpid()}_{self._databases}"
        self.execute(f"CREATE DATABASE {name}")
        return name

    def close(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except RuntimeError:
                pass  # already stopping: the directory goes anyway
        shutil.rmtree(self.base, ignore_errors=True)


if __name__ == "__main__":
    started = time.perf_counter()
    server = TestServer()
    print(f"started in {time.perf_counter() - started:.2f} s: {server.url()}")
    print(server.execute("SELECT version()"))
    server.close()
