"""The local backend through the engine: formats, logs, damage, gc, processes, settings."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import pytest
from backends import new_record

import nbstep
from nbstep import StepReplayError, StoreBusy, StoreFormatError, step
from nbstep.engine import occurrence as occurrences
from nbstep.engine.runtime import Runtime
from nbstep.errors import ConfigError
from nbstep.settings import load, project_table, store_dir
from nbstep.storage.local import FORMAT_VERSION, LocalStore, frames, namespace_log, slots
from nbstep.storage.local.namespace_log import log_name
from nbstep.storage.objects import ObjectFiles


@pytest.fixture
def store(store_dir, tmp_path, monkeypatch):
    """A fresh store under tmp_path and the namespace `nb` (conftest resets all after)."""
    monkeypatch.chdir(tmp_path)
    nbstep.configure(namespace="nb")
    return store_dir


def _raw(path, sql, params=()):
    import duckdb

    con = duckdb.connect(str(path))
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def test_a_store_from_a_newer_format_is_refused_untouched(store):
    step.run("k", lambda: 1)
    Runtime.instance().drop_store()
    (store / "format").write_text(f"nbstep store {FORMAT_VERSION + 1}\n")
    log = store / "logs" / f"{log_name('nb')}.log"
    before = log.read_bytes()
    nbstep.reset()
    with pytest.raises(StoreFormatError, match=f"newer nbstep \\(store format {FORMAT_VERSION + 1}"):
        step.run("k", lambda: 2)
    assert log.read_bytes() == before


def test_a_garbled_format_file_is_a_clear_error(store):
    step.run("k", lambda: 1)
    Runtime.instance().drop_store()
    (store / "format").write_bytes(b"\x00\xffgarbage")
    nbstep.reset()
    with pytest.raises(StoreFormatError, match="should say `nbstep store 3` but says"):
        step.run("k", lambda: 2)


def test_a_duckdb_file_that_is_not_a_store_is_refused(store):
    store.mkdir()
    _raw(store / "steps.duckdb", "CREATE TABLE other (x INT)")
    with pytest.raises(StoreFormatError, match="not an nbstep store \\(tables: other\\)"):
        step.run("k", lambda: 1)


def test_missing_and_damaged_objects_are_clear_errors_that_spare_other_steps(store):
    nbstep.configure(inline_limit=10)
    step.run("a", lambda: b"a" * 100)
    step.run("b", lambda: b"b" * 100)
    step.run("c", lambda: b"c" * 100)
    files = {p.read_bytes()[:1]: p for p in (store / "objects").rglob("*") if p.is_file()}
    files[b"a"].unlink()
    files[b"b"].write_bytes(b"b" * 50)
    nbstep.reset()
    with pytest.raises(StepReplayError, match="step `a` occurrence 1 in namespace `nb`.*is missing.*rerun=True"):
        step.run("a", lambda: "x")
    with pytest.raises(StepReplayError, match="has 50 bytes, the record says 100"):
        step.run("b", lambda: "x")
    assert step.run("c", lambda: "x") == b"c" * 100
    assert step.run("a", lambda: "fixed", rerun=True) == "fixed"


def test_steps_of_a_killed_process_replay_and_never_touched_duckdb(store, tmp_path):
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(
        """
        import os, signal, sys
        import nbstep
        from nbstep import step
        nbstep.configure(namespace="nb", linger=3600)
        for i in range(20):
            step.run("k", i, lambda x: x * 2)
        print("done", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    ))
    result = subprocess.run([sys.executable, str(child)], env={**os.environ}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL and "done" in result.stdout
    # Recording wrote the namespace's log only: DuckDB was never opened.
    assert not (store / "steps.duckdb").exists()
    values = [step.run("k", i, lambda x: "recomputed") for i in range(20)]
    assert values == [i * 2 for i in range(20)]
    assert len(step.inspect()) == 20  # the table is built from the log when asked


def test_a_torn_log_tail_is_set_aside_and_the_frames_before_it_kept(store):
    from nbstep.hashing import input_hash

    step.run("k", 1, lambda x: x)
    Runtime.instance().drop_store()
    log = store / "logs" / f"{log_name('nb')}.log"

    def event(event_id, key):
        return {"event_id": event_id, "kind": "recorded", "key": key, "sequence": 1,
                "identity": "i", "deterministic_inputs_hash": input_hash(None), "codec": "json",
                "result_json": "1", "size_bytes": 1, "occurred_at_us": 0, "reason": "first"}

    # A process killed mid-append: one complete frame, then one cut short.
    torn = frames.encode(event(3, "torn"))
    with open(log, "ab") as f:
        f.write(frames.encode(event(2, "kept")) + torn[:-3])
    nbstep.reset()
    assert step.run("k", 1, lambda x: "again") == 1
    assert step.run("kept", lambda: "again") == 1
    assert step.run("torn", lambda: "recorded") == "recorded"  # appended after the cut
    assert step.inspect()["key"].tolist() == ["k", "kept", "torn"]
    assert list((store / "quarantine").iterdir())  # the torn bytes, kept aside


def test_steps_go_on_while_another_program_holds_the_table(store, tmp_path):
    step.run("k", lambda: 1)
    Runtime.instance().store().admin().namespaces()
    step.inspect()  # the table exists
    Runtime.instance().drop_store()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys, time
            con = duckdb.connect({str(store / 'steps.duckdb')!r})
            print("holding", flush=True)
            time.sleep(float(sys.argv[1]))
            con.close()
            """), "1.0"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        nbstep.configure(busy_timeout=0.2)
        nbstep.reset()
        started = time.monotonic()
        assert step.run("k", lambda: 2) == 1  # replay and record never wait for DuckDB
        assert step.run("new", lambda: 3) == 3
        assert time.monotonic() - started < 0.5
        with pytest.raises(StoreBusy, match=f"held by process {holder.pid} for more than 0.2 s"):
            step.inspect()
        nbstep.configure(busy_timeout=30)
        assert step.inspect()["key"].tolist() == ["k", "new"]  # waited for the holder
    finally:
        holder.wait(timeout=30)
        holder.stdout.close()


def test_gc_drops_superseded_and_forgotten_records_and_their_files(store):
    nbstep.configure(inline_limit=10, keep_versions=1)
    step.run("a", lambda: b"1" * 100)
    nbstep.reset()
    step.run("a", lambda: b"2" * 100, rerun=True)
    step.run("b", lambda: b"3" * 100)
    step.forget("b")
    s = Runtime.instance().store()
    planned = s.admin().gc(dry_run=True, grace_seconds=0)
    assert planned.events_dropped == 3  # a's first version, b's record, b's forget event
    assert planned.objects_removed == 2
    assert len(step.inspect(all_columns=True)) == 3  # a dry run changes nothing
    done = s.admin().gc(grace_seconds=0)
    assert done == planned and done.bytes_freed == 200
    frame = step.inspect(all_columns=True)
    assert frame["key"].tolist() == ["a"] and frame["result"].tolist() == [b"2" * 100]
    nbstep.reset()
    assert step.run("a", lambda: "x") == b"2" * 100
    assert step.run("b", lambda: "recomputed") == "recomputed"


def test_gc_keeps_young_unreferenced_files(store):
    s = Runtime.instance().store()
    sha, _ = s.objects.write(b"x" * 1000)
    report = s.admin().gc(grace_seconds=3600)
    assert report.objects_removed == 0 and report.young_kept == 1
    assert s.objects.path(sha).exists()


def test_store_directory_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("NBSTEP_STORE", raising=False)
    project = tmp_path / "proj"
    deep = project / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert store_dir(load({})) == deep / ".nbstep"  # nothing marks a project: cwd
    (project / ".git").mkdir()
    assert store_dir(load({})) == project / ".nbstep"
    (project / "a" / ".nbstep").mkdir()
    assert store_dir(load({})) == project / "a" / ".nbstep"  # an existing store wins
    (project / "pyproject.toml").write_text('[tool.nbstep]\nstore = "cache/steps"\n')
    assert store_dir(load({})) == project / "cache" / "steps"
    nbstep.configure(store=str(tmp_path / "configured"))
    try:
        assert store_dir(Runtime.instance().settings()) == tmp_path / "configured"
        monkeypatch.setenv("NBSTEP_STORE", str(tmp_path / "env"))
        assert store_dir(Runtime.instance().settings()) == tmp_path / "env"
    finally:
        nbstep.configure(store=None)


def test_bad_settings_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown setting `namespce`. Did you mean `namespace`"):
        nbstep.configure(namespce="x")
    with pytest.raises(ConfigError, match="`on_mismatch` must be one of `error`, `rerun`, got `skip`"):
        nbstep.configure(on_mismatch="skip")
    with pytest.raises(ConfigError, match="`busy_timeout` must be int or float, got str"):
        nbstep.configure(busy_timeout="10")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[tool.nbstep]\nquiet = 'yes'\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml \[tool.nbstep\]: `quiet` must be bool, got str"):
        project_table(tmp_path)


def test_an_unwritable_store_location_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    s = LocalStore(blocker / ".nbstep")
    with pytest.raises(nbstep.NbstepError, match="cannot create the store directory"):
        s.lookup("nb", "k", 1)


# (key, input or None, recorded value), in the order tests/stores/make_store.py ran them.
EXPECTED = [
    ("json", {"n": 1}, {"rows": [1, 2, 3], "label": "ok"}),
    ("tuple", None, (1, "a", None)),
    ("blob", None, bytes(range(256)) * 16),
    ("json", {"n": 2}, "second occurrence"),
]


@pytest.mark.parametrize("released", sorted(p.name for p in (
    __import__("pathlib").Path(__file__).parents[1] / "stores").glob("format-*")))
def test_committed_stores_of_every_released_format_still_open(released, tmp_path, monkeypatch):
    import datetime
    import shutil
    from pathlib import Path

    source = Path(__file__).parents[1] / "stores" / released
    copy = tmp_path / ".nbstep"
    shutil.copytree(source, copy)
    monkeypatch.setenv("NBSTEP_STORE", str(copy))
    nbstep.configure(namespace="analysis.ipynb")
    nbstep.reset()
    try:
        def never(*_):
            raise AssertionError(f"{released}: a recorded step recomputed")

        for key, value, expected in EXPECTED:
            if value is None:
                assert step.run(key, never) == expected
            else:
                assert step.run(key, value, never) == expected
        assert step.run("when", never) == datetime.datetime(2026, 11, 24, 12, tzinfo=datetime.UTC)
        assert len(step.inspect()) == 5
    finally:
        nbstep.configure(namespace=None)
        Runtime.instance().drop_store()
        nbstep.reset()


def test_a_store_path_that_is_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "store-file"
    blocker.write_text("x")
    with pytest.raises(nbstep.NbstepError, match="exists and is not a directory"):
        LocalStore(blocker).lookup("nb", "k", 1)


def test_a_damaged_object_of_the_right_size_is_caught_and_recording_again_repairs_it(store):
    nbstep.configure(inline_limit=10)
    step.run("arr", lambda: bytes(range(200)) * 1000)
    (path,) = [p for p in (store / "objects").rglob("*") if p.is_file()]
    data = bytearray(path.read_bytes())
    data[4000:4016] = b"\xff" * 16  # same size, different bytes
    path.write_bytes(bytes(data))
    nbstep.reset()
    with pytest.raises(StepReplayError, match="does not match the checksum recorded with it"):
        step.run("arr", lambda: "never")
    step.forget("arr")
    nbstep.reset()
    assert step.run("arr", lambda: bytes(range(200)) * 1000) == bytes(range(200)) * 1000
    # The same content again: the damaged file was rewritten, not reused.
    assert path.read_bytes() == bytes(range(200)) * 1000
    nbstep.reset()
    assert step.run("arr", lambda: "never") == bytes(range(200)) * 1000


def test_an_older_format_is_upgraded_in_place(store, tmp_path):
    import shutil
    from pathlib import Path

    shutil.copytree(Path(__file__).parents[1] / "stores" / "format-1", store)
    nbstep.configure(namespace="analysis.ipynb")
    assert step.run("json", {"n": 1}, lambda x: "never") == {"rows": [1, 2, 3], "label": "ok"}
    step.run("new", lambda: b"z" * 200_000)  # a record of this format, with a checksum
    assert "new" in step.inspect()["key"].tolist()
    Runtime.instance().drop_store()
    assert (store / "format").read_text() == f"nbstep store {FORMAT_VERSION}\n"
    log = (store / "logs" / f"{log_name('analysis.ipynb')}.log").read_bytes()
    objects = {item.event["key"]: item.event.get("checksum") for item in frames.scan(log)
               if isinstance(item, frames.Frame) and item.event.get("object_sha256")}
    assert objects["blob"] is None and objects["new"].startswith("xxh3-128:")
    assert _raw(store / "steps.duckdb", "SELECT count(*) FROM events WHERE key = 'new'") == [(1,)]


@pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork:DeprecationWarning")
def test_a_forked_child_uses_the_store_on_its_own(store):
    import multiprocessing

    step.run("parent", lambda: "p")
    s = Runtime.instance().store()
    assert s.log("nb").lookup("parent", 1) is not None  # the parent has the log open

    def child(queue):
        nbstep.reset()
        queue.put(step.run("child", lambda: "c"))

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    proc = context.Process(target=child, args=(queue,))
    proc.start()
    try:
        assert queue.get(timeout=60) == "c"
    finally:
        proc.join(timeout=60)
    assert proc.exitcode == 0
    nbstep.reset()
    assert step.run("parent", lambda: "never") == "p"
    assert step.run("child", lambda: "never") == "c"


def test_steps_journaled_after_a_torn_entry_survive_the_next_crash(store, tmp_path):
    import struct

    step.run("init", lambda: 0)
    Runtime.instance().drop_store()
    # A writer killed mid-entry left a torn frame (length says 500, 100 bytes follow).
    with open(store / "journal", "ab") as f:
        f.write(struct.pack("<II", 500, 12345) + b"x" * 100)
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(
        """
        import os, signal
        import nbstep
        from nbstep import step
        nbstep.configure(namespace="nb", linger=3600)
        for i in range(3):
            step.run(f"k{i}", lambda: 42)
        print("returned", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    ))
    result = subprocess.run([sys.executable, str(child)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert "returned" in result.stdout, result.stderr
    nbstep.reset()
    assert [step.run(f"k{i}", lambda: "lost") for i in range(3)] == [42, 42, 42]


def test_a_slot_index_that_cannot_be_written_loses_nothing_and_is_reported(store, monkeypatch):
    monkeypatch.setattr(namespace_log, "INDEX_AFTER", 5)
    failures = []
    real_write = slots.write_packed

    def failing_write(path, *args):
        if not failures:
            failures.append(1)
            raise OSError(28, "No space left on device")
        return real_write(path, *args)

    monkeypatch.setattr(slots, "write_packed", failing_write)
    with pytest.warns(nbstep.StoreDamagedWarning, match="could not write the slot index"):
        values = [step.run(f"k{i}", i, lambda x: x) for i in range(12)]
    assert values == list(range(12)) and failures == [1]
    assert (store / "logs" / f"{log_name('nb')}.idx").exists()  # written on the next try
    Runtime.instance().drop_store()
    nbstep.reset()
    assert [step.run(f"k{i}", i, lambda x: "lost") for i in range(12)] == list(range(12))
    assert step.inspect(all_columns=True)["event_id"].tolist() == list(range(1, 13))


def test_gc_dry_run_takes_no_lock_a_step_waits_for(tmp_path):
    import fcntl

    s = LocalStore(tmp_path / ".nbstep", busy_timeout=0.5, inline_limit=10, keep_versions=1)
    try:
        first, _ = s.append(new_record("nb", "k", 1, b"x" * 100), None)
        s.append(new_record("nb", "k", 1, b"y" * 100), first.event_id)
        # Another process mid-append holds the log's lock, and one writing a value
        # file holds objects.lock shared: a dry run reads past both, at once.
        log = os.open(s.layout.logs / f"{log_name('nb')}.log", os.O_RDONLY)
        pinned = os.open(s.objects.lock_path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(log, fcntl.LOCK_EX)
            fcntl.flock(pinned, fcntl.LOCK_SH)
            started = time.monotonic()
            report = s.admin().gc(dry_run=True, grace_seconds=0)
            assert time.monotonic() - started < 0.5
            assert report.events_dropped == 1 and report.objects_removed == 1
            fcntl.flock(pinned, fcntl.LOCK_UN)
            with pytest.raises(StoreBusy):  # a real gc does wait for the log's writer
                s.admin().gc(grace_seconds=0)
        finally:
            os.close(log)
            os.close(pinned)
        assert s.admin().gc(grace_seconds=0).events_dropped == 1
    finally:
        s.close()


def test_gc_waits_for_a_step_between_its_value_file_and_its_record(store, monkeypatch, tmp_path):
    nbstep.configure(inline_limit=10)
    payload = b"y" * 5000
    step.run("a", lambda: payload)
    step.forget("a")  # its value file is now unreferenced: gc --grace 0 would remove it
    (path,) = [p for p in (store / "objects").rglob("*") if p.is_file() and p.parent.name != "tmp"]
    real_reuse = ObjectFiles._reuse
    gcs = []

    def reuse_then_gc(self, digest, size, checksum):
        reused = real_reuse(self, digest, size, checksum)
        if reused and not gcs:
            # gc in another process, right after this step found the file to reuse.
            gcs.append(subprocess.Popen(
                [sys.executable, "-m", "nbstep", "--store", str(store), "gc", "--grace", "0"],
                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            time.sleep(1.0)  # long enough for it to remove the file, were it not held off
            assert path.exists()
        return reused

    monkeypatch.setattr(ObjectFiles, "_reuse", reuse_then_gc)
    nbstep.reset()
    step.run("b", lambda: payload)
    out, err = gcs[0].communicate(timeout=120)
    assert gcs[0].returncode == 0, err
    nbstep.reset()
    assert step.run("b", lambda: "never") == payload
    assert path.exists()


def test_a_slot_forgotten_while_its_step_reran_takes_the_new_value(store):
    from nbstep.hashing import input_hash

    step.run("k", 1, lambda x: "old")
    nbstep.reset()
    rt = Runtime.instance()
    occurrence = occurrences.begin(rt, "step.run", "k", input_hash(1), None, None, True)
    assert occurrence.record is not None
    assert rt.store().forget("nb", "k") == 1  # another process forgets it meanwhile
    outcome = occurrence.finish("new", 0.5)
    assert outcome.value == "new" and not outcome.replayed
    nbstep.reset()
    assert step.run("k", 1, lambda x: "never") == "new"


def test_event_ids_are_never_reused_after_gc(store):
    from nbstep.hashing import input_hash

    step.run("z", lambda: 0)
    step.run("k", 1, lambda x: "first")
    nbstep.reset()
    rt = Runtime.instance()
    step.run("z", lambda: 0)
    slow = occurrences.begin(rt, "step.run", "k", input_hash(2), None, "rerun", False)  # A starts
    s = rt.store()
    s.forget("nb", "k")                    # B forgets the slot ...
    s.admin().gc(grace_seconds=0)          # ... gc drops its events (the highest ids) ...
    nbstep.reset()
    step.run("z", lambda: 0)
    assert step.run("k", 2, lambda x: "B") == "B"  # ... and B records it anew
    outcome = slow.finish("A", 1.0)        # A finishes: the same input, so B's value stands
    assert outcome.value == "B" and outcome.replayed
    frame = step.inspect(all_columns=True)
    assert frame["event_id"].is_unique
    assert frame[frame.key == "k"]["result"].tolist() == ["B"]


@pytest.mark.parametrize("read_whole_after", [8, 10**9], ids=["reads-whole", "index-only"])
def test_lookups_through_the_slot_index_agree_with_a_model(tmp_path, monkeypatch,
                                                           read_whole_after):
    """Random records, forgets, gc, lookups and reopenings (other processes), with the
    slot index rewritten every few events: every lookup says what a plain dict says,
    whether a process goes on through the index or reads the log whole."""
    import random

    from backends import new_record

    monkeypatch.setattr(namespace_log, "INDEX_AFTER", 3)
    monkeypatch.setattr(namespace_log, "READ_WHOLE_AFTER", read_whole_after)
    seed = int(os.environ.get("NBSTEP_TEST_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    root = tmp_path / "store"
    stores = [LocalStore(root), LocalStore(root)]  # two processes, as it were
    model: dict[tuple[str, int], object] = {}
    keys = [f"k{i}" for i in range(6)]
    try:
        for step_number in range(1500):
            store = rng.choice(stores)
            action = rng.random()
            key, sequence = rng.choice(keys), rng.randint(1, 3)
            if action < 0.45:
                current = store.lookup("nb", key, sequence)
                expected = None if current is None else current.event_id
                record, _ = store.append(new_record("nb", key, sequence, step_number),
                                         expected)
                model[(key, sequence)] = store.read(record)
            elif action < 0.55:
                store.forget("nb", key)
                for slot in [slot for slot in model if slot[0] == key]:
                    del model[slot]
            elif action < 0.57:
                store.admin().gc(grace_seconds=0)
            elif action < 0.6:
                index = stores.index(store)
                store.close()
                stores[index] = LocalStore(root)
            else:
                record = store.lookup("nb", key, sequence)
                found = None if record is None else store.read(record)
                assert found == model.get((key, sequence)), (
                    f"seed {seed}, step {step_number}: {key}#{sequence} gave {found!r}, "
                    f"expected {model.get((key, sequence))!r}")
        for key in keys:
            for sequence in (1, 2, 3):
                for store in stores:
                    record = store.lookup("nb", key, sequence)
                    assert (None if record is None else store.read(record)) == model.get(
                        (key, sequence)), f"seed {seed}: {key}#{sequence} at the end"
    finally:
        for store in stores:
            store.close()


def test_a_merged_slot_index_equals_one_written_whole(tmp_path):
    import random as rand

    rng = rand.Random(12)
    for trial in range(20):
        old = {(rng.getrandbits(64), rng.randint(1, 3)): rng.getrandbits(40)
               for _ in range(rng.randint(0, 300))}
        path = tmp_path / f"{trial}.idx"
        slots.write(path, 1, 100, 7, [(h, seq, offset) for (h, seq), offset in old.items()])
        index = slots.SlotIndex.open(path, 1)
        assert index is not None
        changes: dict[tuple[int, int], int | None] = {}
        for target in rng.sample(sorted(old), min(len(old), rng.randint(0, 40))):
            changes[target] = rng.choice([None, rng.getrandbits(40)])  # replaced or dropped
        for _ in range(rng.randint(0, 40)):
            changes[(rng.getrandbits(64), rng.randint(1, 3))] = rng.getrandbits(40)  # new
        changes[(rng.getrandbits(64), 1)] = None  # dropping what is not there: nothing
        expected = dict(old)
        for target, offset in changes.items():
            if offset is None:
                expected.pop(target, None)
            else:
                expected[target] = offset
        packed, count = slots.changes_of(index, changes)
        index.close()
        slots.write_packed(path, 1, 200, 9, packed, count)
        merged = slots.SlotIndex.open(path, 1)
        assert merged is not None and (merged.covered, merged.max_event_id) == (200, 9)
        assert merged.entries() == sorted((h, seq, o) for (h, seq), o in expected.items())
        merged.close()
    packed, count = slots.changes_of(None, {(5, 1): 10, (3, 2): None, (1, 1): 4})
    assert count == 2 and packed == b"".join(
        struct.pack("<QIQ", *entry) for entry in [(1, 1, 4), (5, 1, 10)])


def test_a_process_recording_new_steps_never_reads_the_log_whole(store, monkeypatch):
    """Reading the indexed part of a log whole pays off for a process that replays
    much of it (Run All); one that records new steps only misses the index, and
    reading the log whole there was a stall of 0.5 s at 30,000 records."""
    monkeypatch.setattr(namespace_log, "INDEX_AFTER", 4)
    reads = []
    real = namespace_log.NamespaceLog._read_covered

    def counted(self):
        reads.append(self.namespace)
        return real(self)

    monkeypatch.setattr(namespace_log.NamespaceLog, "_read_covered", counted)
    assert [step.run(f"old{i}", i, lambda x: x) for i in range(40)] == list(range(40))
    Runtime.instance().drop_store()  # a new process: the index covers the 40 records
    nbstep.reset()
    assert [step.run(f"new{i}", i, lambda x: -x) for i in range(40)] == [-i for i in range(40)]
    assert reads == []  # 40 misses, more than the index's 40 / READ_WHOLE_AFTER
    Runtime.instance().drop_store()
    nbstep.reset()
    replayed = [step.run(f"old{i}", i, lambda x: "recomputed") for i in range(40)]
    assert replayed == list(range(40)) and reads == ["nb"]  # once, after 1/8 of them
