"""Fixtures shared by the test modules: a store under tmp_path, clean process state."""

from __future__ import annotations

import pytest

from nbstep import config
from nbstep.api import runtime


def _reset_nbstep() -> None:
    rt = runtime()
    rt.drop_store()
    rt.reset()
    rt.user_ns = None
    for name in rt.stats:
        rt.stats[name] = type(rt.stats[name])()
    config.configure(**{name: None for name in list(config._configured.values)})


@pytest.fixture(autouse=True)
def _fresh_nbstep_state(monkeypatch):
    """Every test starts without settings, counters or an open store, and leaves none.

    NBSTEP_STORE / NBSTEP_NAMESPACE / NBSTEP_AUTOLOAD from the developer's shell must
    not leak into tests (a test would write into their store).
    """
    for name in ("NBSTEP_STORE", "NBSTEP_NAMESPACE", "NBSTEP_AUTOLOAD"):
        monkeypatch.delenv(name, raising=False)
    _reset_nbstep()
    yield
    _reset_nbstep()


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    """A store directory of the test's own: ``tmp_path/.nbstep``, set as NBSTEP_STORE."""
    path = tmp_path / ".nbstep"
    monkeypatch.setenv("NBSTEP_STORE", str(path))
    return path
