"""The storage contract: what every backend of the StepStore seam must do.

Each test runs once per backend (tests/storage/backends.py). Several store objects on
one location stand for several processes; the race tests use real processes too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from backends import new_record, object_root
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbstep.core.record import RECORD_COLUMNS, Record
from nbstep.errors import StepReplayError
from nbstep.storage.reports import HISTORY_COLUMNS

BIG = bytes(range(256)) * 1024  # 256 KiB: above any inline limit used here


def test_an_empty_store_has_nothing(stores):
    store = stores()
    assert store.lookup("nb", "k", 1) is None
    assert store.current("nb") == []
    admin = store.admin()
    assert admin.namespaces() == [] and admin.summary() == []
    assert list(admin.history("nb").columns) == list(HISTORY_COLUMNS)
    assert admin.history("nb").empty


def test_an_appended_record_is_found_read_and_kept_across_reopening(stores):
    store = stores()
    record, inserted = store.append(new_record("nb", "k", 1, {"rows": [1, 2]}, input=5), None)
    assert inserted
    assert (record.namespace, record.key, record.sequence) == ("nb", "k", 1)
    assert record.reason == "first" and record.duration_s == 0.25
    assert store.lookup("nb", "k", 1) == record
    assert store.read(record) == {"rows": [1, 2]}
    store.close()
    again = stores()
    found = again.lookup("nb", "k", 1)
    assert found is not None and found.event_id == record.event_id
    assert found.input_hash == record.input_hash and found.identity == record.identity
    assert again.read(found) == {"rows": [1, 2]}


def test_values_small_and_large_read_back_equal_and_fresh(stores):
    store = stores(inline_limit=1024)
    small, _ = store.append(new_record("nb", "small", 1, (1, "a", None)), None)
    big, _ = store.append(new_record("nb", "big", 1, BIG), None)
    assert small.stored == "inline" and big.stored == "object"
    assert store.read(small) == (1, "a", None)
    first, second = store.read(big), store.read(big)
    assert first == BIG and second == BIG


def test_arrays_and_frames_large_and_small_read_back_and_check_clean(stores):
    """Arrays and frames are written from their own memory (large ones hashed while
    their file is synced): what comes back is equal, and verify finds every file whole."""
    import numpy as np
    import pandas as pd

    store = stores(inline_limit=1024)
    rng = np.random.default_rng(7)
    big = rng.random((1000, 800))  # 6.4 MB: above the size written first, hashed after
    values = {
        "array": big,
        "fortran": np.asfortranarray(big[:, :300]),
        "strided": big[::2, ::3],  # not contiguous: copied once
        "small-array": np.arange(500.0),
        "frame": pd.DataFrame(big[:, :100], columns=[f"c{i}" for i in range(100)]),
        "small-frame": pd.DataFrame({"a": np.arange(300), "b": ["x"] * 300}),
        "bytes": bytes(6_000_000),
    }
    records = {key: store.append(new_record("nb", key, 1, value), None)[0]
               for key, value in values.items()}
    for key, value in values.items():
        back = store.read(records[key])
        if isinstance(value, np.ndarray):
            assert type(back) is np.ndarray and back.dtype == value.dtype
            assert np.array_equal(back, value) and back.flags.writeable
        elif isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(back, value, check_exact=True)
        else:
            assert back == value
    report = store.admin().check(decode=True)
    assert report.ok and not report.problems, report
    assert report.object_files == sum(r.stored == "object" for r in records.values())


def test_append_is_a_compare_and_set_on_the_slot(stores):
    store = stores()
    first, inserted = store.append(new_record("nb", "k", 1, "first"), None)
    assert inserted
    # Someone who looked before `first` existed loses, and gets `first` back.
    seen, inserted = store.append(new_record("nb", "k", 1, "late"), None)
    assert not inserted and seen.event_id == first.event_id
    # Someone who saw `first` replaces it: a new version, the old one kept as earlier.
    second, inserted = store.append(new_record("nb", "k", 1, "second", reason="rerun"),
                                    first.event_id)
    assert inserted and second.event_id > first.event_id
    assert store.lookup("nb", "k", 1).event_id == second.event_id
    # Someone who saw `first` but comes after `second` loses too.
    stale, inserted = store.append(new_record("nb", "k", 1, "stale"), first.event_id)
    assert not inserted and stale.event_id == second.event_id
    history = store.admin().history("nb")
    assert list(zip(history["event_id"], history["status"], strict=True)) == [
        (first.event_id, "earlier"), (second.event_id, "current")]


def test_two_store_objects_race_for_one_slot(stores):
    a, b = stores(), stores()
    assert a.lookup("nb", "k", 1) is None and b.lookup("nb", "k", 1) is None
    won, inserted = a.append(new_record("nb", "k", 1, "a"), None)
    lost, lost_inserted = b.append(new_record("nb", "k", 1, "b"), None)
    assert inserted and not lost_inserted
    assert lost.event_id == won.event_id and b.read(lost) == "a"


RACER = textwrap.dedent(
    """
    import json, os, sys, time
    sys.path.insert(0, sys.argv[1])
    from backends import new_record, object_root, open_store

    backend, location, me, go, slots = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
    store = open_store(backend, location)
    while not os.path.exists(go):
        time.sleep(0.001)
    results = []
    for i in range(slots):
        record, inserted = store.append(new_record("race", "slot", i + 1, me), None)
        results.append([i + 1, record.event_id, inserted, store.read(record)])
    store.close()
    print(json.dumps(results))
    """
)


@pytest.mark.slow
def test_processes_racing_for_the_same_slots_record_each_once(backend, location, tmp_path):
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    go = tmp_path / "go"
    here = str(Path(__file__).parent)
    racers = [subprocess.Popen([sys.executable, str(script), here, backend, location, f"p{n}",
                                str(go), "40"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
              for n in range(4)]
    time.sleep(1.0)  # let them all start and open the store
    go.write_text("")
    outcomes = []
    for racer in racers:
        out, err = racer.communicate(timeout=300)
        assert racer.returncode == 0, err[-3000:]
        outcomes.append(json.loads(out))
    for i in range(40):
        rows = [results[i] for results in outcomes]
        winners = [row for row in rows if row[2]]
        assert len(winners) == 1, f"slot {i + 1}: {rows}"
        # Every loser got the winner's record and value back.
        assert {row[1] for row in rows} == {winners[0][1]}
        assert {row[3] for row in rows} == {winners[0][3]}


def test_forget_drops_current_records_and_a_forgotten_slot_takes_a_new_one(stores):
    store = stores()
    kept, _ = store.append(new_record("nb", "keep", 1, 1), None)
    old, _ = store.append(new_record("nb", "drop", 1, 2), None)
    store.append(new_record("nb", "drop", 2, 3), None)
    store.append(new_record("other", "drop", 1, 4), None)
    assert store.forget("nb", "drop") == 2
    assert store.forget("nb", "drop") == 0  # nothing current is left to forget
    assert store.lookup("nb", "drop", 1) is None
    assert [r.key for r in store.current("nb")] == ["keep"]
    assert store.lookup("other", "drop", 1) is not None
    statuses = dict(zip(store.admin().history("nb")["event_id"],
                        store.admin().history("nb")["status"], strict=True))
    assert statuses[old.event_id] == "forgotten" and statuses[kept.event_id] == "current"
    # A step that saw the old record before it was forgotten still records its value.
    new, inserted = store.append(new_record("nb", "drop", 1, "new"), old.event_id)
    assert inserted and store.read(store.lookup("nb", "drop", 1)) == "new"
    assert store.forget(None) == 3  # every namespace
    assert store.current("nb") == [] and store.current("other") == []


def test_current_is_in_append_order_and_history_reads_as_records(stores):
    store = stores()
    for key in ("c", "a", "b"):
        store.append(new_record("nb", key, 1, key * 3), None)
    assert [r.key for r in store.current("nb")] == ["c", "a", "b"]
    history = store.admin().history("nb")
    records = [Record.from_row(row) for row in history[list(RECORD_COLUMNS)].itertuples(
        index=False)]
    assert [store.read(r) for r in records] == ["ccc", "aaa", "bbb"]
    bare = store.admin().history("nb", values=False)
    assert bare["result_json"].isna().all() and list(bare["key"]) == ["c", "a", "b"]


def test_namespaces_and_summary(stores):
    store = stores(inline_limit=1024, keep_versions=1)
    first, _ = store.append(new_record("b.ipynb", "k", 1, "x"), None)
    store.append(new_record("b.ipynb", "k", 1, "y"), first.event_id)
    store.append(new_record("b.ipynb", "big", 1, BIG), None)
    store.append(new_record("a.ipynb", "k", 1, "z"), None)
    admin = store.admin()
    assert admin.namespaces() == ["a.ipynb", "b.ipynb"]
    summary = {s.namespace: s for s in admin.summary()}
    assert (summary["b.ipynb"].steps, summary["b.ipynb"].keys) == (2, 2)
    assert summary["b.ipynb"].size_bytes >= len(BIG)
    assert summary["b.ipynb"].old_bytes > 0 and summary["a.ipynb"].old_bytes == 0
    assert summary["a.ipynb"].last_recorded_us <= time.time_ns() // 1000


def test_gc_drops_old_versions_and_unreferenced_files(stores):
    store = stores(inline_limit=1024, keep_versions=1)
    old, _ = store.append(new_record("nb", "k", 1, BIG), None)
    store.append(new_record("nb", "k", 1, BIG[::-1]), old.event_id)
    store.append(new_record("nb", "gone", 1, BIG + b"!"), None)
    store.forget("nb", "gone")
    admin = store.admin()
    planned = admin.gc(dry_run=True, grace_seconds=0)
    assert planned.events_dropped == 3 and planned.objects_removed == 2
    assert len(admin.history("nb")) == 3  # a dry run changes nothing
    done = admin.gc(grace_seconds=0)
    assert (done.events_dropped, done.objects_removed) == (3, 2)
    assert done.bytes_freed >= 2 * len(BIG)
    (current,) = store.current("nb")
    assert store.read(current) == BIG[::-1]
    assert admin.check().ok


def test_gc_keeps_young_unreferenced_files(stores):
    store = stores(inline_limit=1024, keep_versions=1)
    old, _ = store.append(new_record("nb", "k", 1, BIG), None)
    store.append(new_record("nb", "k", 1, "small now"), old.event_id)
    report = store.admin().gc(grace_seconds=3600)
    assert report.events_dropped == 1
    assert report.objects_removed == 0 and report.young_kept == 1


def _versions(store, n, namespace="nb", key="k", big=False):
    """Record n versions of one slot (inputs 1..n); their records, oldest first."""
    made, expected = [], None
    for i in range(1, n + 1):
        value = BIG + bytes([i]) if big else f"v{i}"
        record, inserted = store.append(new_record(namespace, key, 1, value, input=i),
                                        expected)
        assert inserted
        made.append(record)
        expected = record.event_id
    return made


def test_versions_are_the_earlier_records_newest_first(stores):
    store = stores(keep_versions=3)
    assert store.versions("nb", "k", 1) == []  # no record at all
    (v1,) = _versions(store, 1)
    assert store.versions("nb", "k", 1) == []  # only a current one
    v2, _ = store.append(new_record("nb", "k", 1, "v2", input=2), v1.event_id)
    v3, _ = store.append(new_record("nb", "k", 1, "v3", input=3), v2.event_id)
    earlier = store.versions("nb", "k", 1)
    assert [r.event_id for r in earlier] == [v2.event_id, v1.event_id]
    assert [store.read(r) for r in earlier] == ["v2", "v1"]
    assert earlier[1].input_hash == v1.input_hash != v2.input_hash
    # At most keep_versions - 1: the oldest falls out.
    v4, _ = store.append(new_record("nb", "k", 1, "v4", input=4), v3.event_id)
    assert [r.event_id for r in store.versions("nb", "k", 1)] == [v3.event_id, v2.event_id]
    # Another object on the same store sees the same (another process).
    assert [r.event_id for r in stores(keep_versions=3).versions("nb", "k", 1)] == [
        v3.event_id, v2.event_id]
    # Other slots are their own.
    assert store.versions("nb", "k", 2) == [] and store.versions("nb", "other", 1) == []
    assert stores(keep_versions=1).versions("nb", "k", 1) == []
    history = store.admin().history("nb")
    assert list(zip(history["event_id"], history["status"], strict=True)) == [
        (v1.event_id, "superseded"), (v2.event_id, "earlier"), (v3.event_id, "earlier"),
        (v4.event_id, "current")]


def test_forget_makes_the_earlier_versions_unreplayable(stores):
    store = stores(keep_versions=5)
    v1, v2, v3 = _versions(store, 3)
    assert len(store.versions("nb", "k", 1)) == 2
    assert store.forget("nb", "k") == 1
    assert store.versions("nb", "k", 1) == [] and store.lookup("nb", "k", 1) is None
    statuses = dict(zip(store.admin().history("nb")["event_id"],
                        store.admin().history("nb")["status"], strict=True))
    assert statuses == {v1.event_id: "superseded", v2.event_id: "superseded",
                        v3.event_id: "forgotten"}
    # A new record after the forget starts the slot's versions afresh.
    n1, _ = store.append(new_record("nb", "k", 1, "n1", input=1), None)
    assert store.versions("nb", "k", 1) == []
    n2, _ = store.append(new_record("nb", "k", 1, "n2", input=2), n1.event_id)
    assert [r.event_id for r in store.versions("nb", "k", 1)] == [n1.event_id]


def test_summary_counts_only_what_gc_frees(stores):
    store = stores(inline_limit=1024, keep_versions=2)
    _versions(store, 3, big=True)  # v1 superseded; v2 earlier, kept
    _versions(store, 1, namespace="a.ipynb")
    summary = {s.namespace: s for s in store.admin().summary()}
    assert summary["nb"].steps == 1
    assert len(BIG) < summary["nb"].old_bytes < 2 * len(BIG)  # v1 only, not v2
    assert summary["a.ipynb"].old_bytes == 0
    bigger = {s.namespace: s for s in stores(inline_limit=1024, keep_versions=3).admin().summary()}
    assert bigger["nb"].old_bytes == 0  # with three kept, nothing is for gc


def test_gc_keeps_keep_versions_per_slot(stores):
    store = stores(inline_limit=1024, keep_versions=2)
    v1, v2, v3 = _versions(store, 3, big=True)
    gone = _versions(store, 2, key="gone", big=False)
    store.forget("nb", "gone")
    admin = store.admin()
    planned = admin.gc(dry_run=True, grace_seconds=0)
    # v1, and both records of `gone` with its forget mark.
    assert planned.events_dropped == 4 and planned.objects_removed == 1
    done = admin.gc(grace_seconds=0)
    assert (done.events_dropped, done.objects_removed) == (4, 1)
    history = admin.history("nb")
    assert list(zip(history["event_id"], history["status"], strict=True)) == [
        (v2.event_id, "earlier"), (v3.event_id, "current")]
    (earlier,) = store.versions("nb", "k", 1)
    assert earlier.event_id == v2.event_id and store.read(earlier) == BIG + bytes([2])
    assert store.read(store.lookup("nb", "k", 1)) == BIG + bytes([3])
    assert store.lookup("nb", "gone", 1) is None and gone
    assert admin.gc(grace_seconds=0).events_dropped == 0
    assert admin.check().ok


def test_event_ids_are_never_reused_after_gc(stores):
    store = stores()
    store.append(new_record("nb", "a", 1, 1), None)
    last, _ = store.append(new_record("nb", "b", 1, 2), None)
    store.forget("nb", "b")
    store.admin().gc(grace_seconds=0)
    store.close()
    again = stores()
    new, _ = again.append(new_record("nb", "c", 1, 3), None)
    assert new.event_id > last.event_id + 1  # beyond b's record and its forget mark


def test_check_finds_damaged_and_missing_values(stores, location):
    store = stores(inline_limit=1024)
    damaged, _ = store.append(new_record("nb", "damaged", 1, BIG), None)
    missing, _ = store.append(new_record("nb", "missing", 1, BIG + b"x"), None)
    store.append(new_record("nb", "fine", 1, "ok"), None)
    assert store.admin().check().ok
    damaged_path = _object_file(location, damaged)
    data = bytearray(damaged_path.read_bytes())
    data[100] ^= 0xFF
    damaged_path.write_bytes(bytes(data))
    _object_file(location, missing).unlink()
    report = store.admin().check()
    assert not report.ok and report.records == 3
    problems = {p.record.key: p for p in report.problems}
    assert set(problems) == {"damaged", "missing"}
    assert "missing" in problems["missing"].what and problems["missing"].current
    with pytest.raises(StepReplayError, match="step `damaged` occurrence 1"):
        store.read(store.lookup("nb", "damaged", 1))
    assert store.read(store.lookup("nb", "fine", 1)) == "ok"


def test_an_unreadable_value_is_a_replay_error(stores, location):
    store = stores(inline_limit=1024)
    record, _ = store.append(new_record("nb", "big", 1, BIG), None)
    path = _object_file(location, record)
    data = path.read_bytes()
    path.unlink()
    path.mkdir()  # not even a file
    with pytest.raises(StepReplayError, match="step `big` occurrence 1.*cannot be read"):
        store.read(record)
    path.rmdir()
    path.write_bytes(data)
    assert store.read(record) == BIG


def test_a_value_file_this_user_cannot_read_is_a_replay_error(stores, location):
    store = stores(inline_limit=1024)
    record, _ = store.append(new_record("nb", "big", 1, BIG), None)
    path = _object_file(location, record)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("this user reads files whatever their mode (root)")
        with pytest.raises(StepReplayError, match="cannot be read"):
            store.read(record)
    finally:
        path.chmod(0o644)


def test_usage_counts_the_store(stores):
    store = stores(inline_limit=1024)
    store.append(new_record("nb", "big", 1, BIG), None)
    store.release()
    usage = store.admin().usage()
    assert usage.total_bytes >= len(BIG)


def _object_file(location: str, record: Record) -> Path:
    """Where a backend keeps a large value on disk (the tests' one look inside)."""
    matches = [p for p in object_root(location).rglob(record.object_sha256 or "-")
               if p.is_file()]
    assert len(matches) == 1, matches
    return matches[0]


def test_a_closed_store_refuses_work(stores):
    store = stores()
    store.append(new_record("nb", "k", 1, 1), None)
    store.close()
    with pytest.raises(Exception, match="closed"):
        store.lookup("nb", "k", 1)




# Operations on one slot-set by two store objects ("processes"): look a slot up (and
# remember what was seen), record it against what was last seen, or forget it.
_OPS = st.lists(st.tuples(st.sampled_from(["look", "append", "forget"]),
                          st.integers(0, 1), st.integers(1, 3)), min_size=1, max_size=25)


def test_append_and_forget_follow_the_compare_and_set_model(stores):
    """Property: whatever two writers do, in any order, each append inserts exactly
    when the slot's current record is the one its writer last saw (or there is none),
    and every lookup agrees with the model."""
    pair = [stores(), stores()]
    examples = iter(range(10**6))

    @settings(max_examples=25, deadline=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(_OPS)
    def run(ops):
        namespace = f"model-{next(examples)}"  # a fresh set of slots per example
        current: dict[int, int | None] = {}
        seen: list[dict[int, int | None]] = [{}, {}]
        for op, who, slot in ops:
            store = pair[who]
            if op == "look":
                found = store.lookup(namespace, "k", slot)
                assert (found.event_id if found else None) == current.get(slot)
                seen[who][slot] = current.get(slot)
            elif op == "append":
                expected = seen[who].get(slot)
                record, inserted = store.append(new_record(namespace, "k", slot, who),
                                                expected)
                now = current.get(slot)
                assert inserted == (now is None or now == expected), (op, who, slot)
                if inserted:
                    assert now is None or record.event_id > now
                    current[slot] = record.event_id
                else:
                    assert record.event_id == now
                seen[who][slot] = current[slot]
            else:
                pair[who].forget(namespace, "k")
                current = dict.fromkeys(current)
        for slot, event_id in current.items():
            for store in pair:
                found = store.lookup(namespace, "k", slot)
                assert (found.event_id if found else None) == event_id

    run()
