"""Fixtures shared by the test modules: a store under tmp_path, a fresh runtime."""

from __future__ import annotations

import pytest

from nbstep.engine.runtime import Runtime


@pytest.fixture(autouse=True)
def _fresh_nbstep_state(monkeypatch):
    """Every test starts with a runtime of its own (no settings, counters or open store)
    and leaves none behind.

    NBSTEP_STORE / NBSTEP_NAMESPACE / NBSTEP_AUTOLOAD from the developer's shell must
    not leak into tests (a test would write into their store).
    """
    for name in ("NBSTEP_STORE", "NBSTEP_NAMESPACE", "NBSTEP_AUTOLOAD"):
        monkeypatch.delenv(name, raising=False)
    Runtime.clear_instance()
    yield
    Runtime.clear_instance()


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    """A store directory of the test's own: ``tmp_path/.nbstep``, set as NBSTEP_STORE."""
    path = tmp_path / ".nbstep"
    monkeypatch.setenv("NBSTEP_STORE", str(path))
    return path


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the whole session (tests/pg_server.py), started on
    first use; each test that needs one takes a database of its own."""
    from pg_server import TestServer

    server = TestServer()
    yield server
    server.close()


@pytest.fixture
def team_url(pg_server):
    """A superuser URL to a fresh database of the session's server."""
    return pg_server.url(pg_server.new_database())
