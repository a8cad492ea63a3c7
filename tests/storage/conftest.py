"""Fixtures of the storage contract suite: each test runs once per backend."""

from __future__ import annotations

import pytest
from backends import BACKENDS, open_store, team_location


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def location(backend, tmp_path, request):
    if backend == "postgresql":
        url = request.getfixturevalue("team_url")
        (tmp_path / "machines").mkdir()
        return team_location(url, str(tmp_path / "shared"), str(tmp_path / "machines"))
    return str(tmp_path / "store")


@pytest.fixture
def stores(backend, location):
    """``stores()`` opens one more store object on the test's location (another
    "process"); all are closed after the test."""
    opened = []

    def open_one(**options):
        store = open_store(backend, location, **options)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()
