"""The storage contract for moving and removing namespaces (``StoreAdmin.move`` and
``StoreAdmin.remove``): a renamed notebook's records follow it. Runs on every backend."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from backends import new_record

from nbstep.errors import NbstepError
from nbstep.hashing import step_identity

BIG = bytes(range(256)) * 1024


def _fill(store):
    small, _ = store.append(new_record("Untitled.ipynb", "a", 1, {"x": 1}, input=3), None)
    old, _ = store.append(new_record("Untitled.ipynb", "a", 2, "old"), None)
    store.append(new_record("Untitled.ipynb", "a", 2, "new"), old.event_id)
    big, _ = store.append(new_record("Untitled.ipynb", "big", 1, BIG), None)
    return small, big


def test_move_takes_every_current_record_to_the_target(stores):
    store = stores(inline_limit=1024)
    small, big = _fill(store)
    assert store.admin().move("Untitled.ipynb", "nb:" + "0" * 32) == 3
    target = "nb:" + "0" * 32
    moved = store.lookup(target, "a", 1)
    assert moved is not None and store.read(moved) == {"x": 1}
    assert moved.input_hash == small.input_hash
    assert moved.identity == step_identity(target, "a", 1, small.input_hash) != small.identity
    assert moved.details["moved_from"] == {"namespace": "Untitled.ipynb",
                                           "event_id": small.event_id}
    assert store.read(store.lookup(target, "a", 2)) == "new"
    assert store.read(store.lookup(target, "big", 1)) == BIG
    assert store.current("Untitled.ipynb") == []
    assert target in store.admin().namespaces()
    summary = {s.namespace: s.steps for s in store.admin().summary()}
    assert summary[target] == 3 and summary.get("Untitled.ipynb", 0) == 0
    fresh = stores(inline_limit=1024)
    assert fresh.read(fresh.lookup(target, "big", 1)) == BIG
    assert fresh.lookup("Untitled.ipynb", "a", 1) is None
    assert store.admin().check(decode=True).problems == []


def test_move_refuses_a_target_with_records_of_its_own_and_changes_nothing(stores):
    store = stores()
    _fill(store)
    store.append(new_record("analysis.ipynb", "z", 1, 9), None)
    with pytest.raises(NbstepError, match=r"`analysis.ipynb` already has 1 records of its "
                                          r"own.*nbstep forget analysis.ipynb"):
        store.admin().move("Untitled.ipynb", "analysis.ipynb")
    assert len(store.current("Untitled.ipynb")) == 3
    assert [r.key for r in store.current("analysis.ipynb")] == ["z"]
    with pytest.raises(NbstepError, match="onto itself"):
        store.admin().move("Untitled.ipynb", "Untitled.ipynb")


def test_moving_an_empty_namespace_moves_nothing_and_twice_is_harmless(stores):
    store = stores()
    assert store.admin().move("nothing.ipynb", "else.ipynb") == 0
    _fill(store)
    assert store.admin().move("Untitled.ipynb", "b.ipynb") == 3
    assert store.admin().move("Untitled.ipynb", "b.ipynb") == 3  # already done: no copies
    assert len(store.current("b.ipynb")) == 3
    # ... and back: a moved record moves again.
    assert store.admin().move("b.ipynb", "Untitled.ipynb") == 3
    assert len(store.current("Untitled.ipynb")) == 3 and store.current("b.ipynb") == []


def test_a_move_takes_the_kept_earlier_versions_along_in_order(stores):
    """A notebook's adoption of its path namespace (or `nbstep mv`) keeps what a step
    goes back to: N=10, N=20, then N=10 again replays N=10's record in the target."""
    store = stores(keep_versions=3, inline_limit=1024)
    source, target = "Untitled.ipynb", "nb:" + "1" * 32
    first, _ = store.append(new_record(source, "k", 1, "ten", input=10), None)
    second, _ = store.append(new_record(source, "k", 1, "twenty", input=20), first.event_id)
    third, _ = store.append(new_record(source, "k", 1, "thirty", input=30), second.event_id)
    gone, _ = store.append(new_record(source, "f", 1, "x", input=1), None)
    store.append(new_record(source, "f", 1, "y", input=2), gone.event_id)
    store.forget(source, "f")  # a forgotten slot has no versions: nothing of it moves
    previous = None
    for value in "abcd":  # "a" is beyond keep_versions: not kept, not moved
        previous, _ = store.append(new_record(source, "old", 1, value, input=value),
                                   None if previous is None else previous.event_id)

    assert store.admin().move(source, target) == 2  # current records: k and old
    assert store.read(store.lookup(target, "k", 1)) == "thirty"
    versions = store.versions(target, "k", 1)
    assert [store.read(r) for r in versions] == ["twenty", "ten"]
    assert [r.input_hash for r in versions] == [second.input_hash, first.input_hash]
    assert [r.details["moved_from"]["event_id"] for r in versions] == [
        second.event_id, first.event_id]
    assert all(r.identity == step_identity(target, "k", 1, r.input_hash) for r in versions)
    assert [store.read(r) for r in store.versions(target, "old", 1)] == ["c", "b"]
    assert store.lookup(target, "f", 1) is None and store.versions(target, "f", 1) == []
    assert store.versions(source, "k", 1) == []  # the source forgot them
    history = store.admin().history(target, values=False)
    assert sorted(history["status"]) == ["current", "current", "earlier", "earlier",
                                         "earlier", "earlier"]
    # Again: nothing copied twice, and a fresh reader sees the same versions.
    assert store.admin().move(source, target) == 2
    assert len(store.admin().history(target, values=False)) == 6
    fresh = stores(keep_versions=3, inline_limit=1024)
    assert [fresh.read(r) for r in fresh.versions(target, "k", 1)] == ["twenty", "ten"]


KILLED_MOVE = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from backends import open_store
from nbstep.storage.local import namespace_log
from nbstep.storage.team import sql
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9 after the copies, before the forget
namespace_log.NamespaceLog.forget = die
sql.forget = die
store = open_store({backend!r}, {location!r})
store.admin().move("Untitled.ipynb", "renamed.ipynb")
"""


def test_a_move_killed_midway_loses_nothing_and_running_it_again_finishes_it(
        stores, backend, location):
    store = stores(inline_limit=1024)
    _fill(store)
    store.close()
    tests = str(Path(__file__).parent)
    script = textwrap.dedent(KILLED_MOVE.format(tests=tests, backend=backend,
                                                location=location))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr.decode()
    after = stores(inline_limit=1024)
    left = after.current("Untitled.ipynb")
    copied = after.current("renamed.ipynb")
    if backend == "local":
        # The copies were written (one append), the forget not: both hold them.
        assert len(left) == 3 and len(copied) == 3
    else:
        # One transaction on the server, rolled back when the mover died.
        assert len(left) == 3 and copied == []
    assert after.admin().move("Untitled.ipynb", "renamed.ipynb") == 3
    assert after.current("Untitled.ipynb") == []
    records = after.current("renamed.ipynb")
    assert sorted((r.key, r.sequence) for r in records) == [("a", 1), ("a", 2), ("big", 1)]
    assert after.read(after.lookup("renamed.ipynb", "big", 1)) == BIG


def test_remove_drops_a_namespace_and_new_records_start_afresh(stores):
    store = stores()
    _fill(store)
    store.append(new_record("kept.ipynb", "k", 1, 1), None)
    highest = max(r.event_id for r in store.current("Untitled.ipynb"))
    assert store.admin().remove("Untitled.ipynb") == 3
    assert store.admin().remove("never.ipynb") == 0
    assert store.current("Untitled.ipynb") == []
    assert store.admin().namespaces() == ["kept.ipynb"]
    assert [s.namespace for s in store.admin().summary()] == ["kept.ipynb"]
    fresh = stores()
    assert fresh.lookup("Untitled.ipynb", "a", 1) is None
    again, inserted = fresh.append(new_record("Untitled.ipynb", "a", 1, "again"), None)
    assert inserted and again.event_id > highest  # event ids are never reused
    assert json.dumps(fresh.read(again)) == '"again"'
