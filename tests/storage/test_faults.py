"""Fault injection on the local store, in the spirit of SQLite's crash tests.

Each test breaks the store one way at a time, over every position it can (every
byte offset of a small log, every byte flipped, a full disk at every write, ...),
and checks one invariant after each fault: every step whose recording returned
replays its value, nothing is invented (a slot whose record was lost is empty, never
another value), and the store opens and records again. Counts are printed (run with
-s to see them).
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
from backends import new_record

from nbstep.errors import StoreDamagedWarning, StoreWriteError
from nbstep.storage.local import LocalStore, frames, namespace_log
from nbstep.storage.local.namespace_log import log_name

NS = "faults.ipynb"
# Values of several codecs and sizes; two inline blobs, one JSON, one object file.
VALUES = {"a": {"n": 1}, "b": b"\x00\x01" * 40, "c": "text" * 10, "d": b"z" * 300}


def _reference(tmp_path: Path) -> tuple[Path, list[tuple[str, int, int]]]:
    """A store holding VALUES (and one superseded record); the log's frame extents."""
    root = tmp_path / "reference"
    store = LocalStore(root, inline_limit=128)
    first, _ = store.append(new_record(NS, "a", 1, "old a"), None)
    store.append(new_record(NS, "a", 1, VALUES["a"], reason="rerun"), first.event_id)
    for key in "bcd":
        store.append(new_record(NS, key, 1, VALUES[key]), None)
    store.close()
    data = (root / "logs" / f"{log_name(NS)}.log").read_bytes()
    extents = [(item.event["key"], item.offset, item.end) for item in frames.scan(data)
               if isinstance(item, frames.Frame) and "key" in item.event]
    return root, extents


def _copy(reference: Path, target: Path, log: bytes) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(reference, target, ignore=shutil.ignore_patterns("*.idx", "steps.*"))
    (target / "logs" / f"{log_name(NS)}.log").write_bytes(log)
    return target


def _check(root: Path, expected: dict[str, object]) -> None:
    """The invariant: kept values replay, lost slots are empty, and the store records."""
    store = LocalStore(root, inline_limit=128)
    try:
        for key in VALUES:
            record = store.lookup(NS, key, 1)
            if key in expected:
                assert record is not None, f"`{key}` was lost"
                assert store.read(record) == expected[key]
            else:
                assert record is None or store.read(record) in ("old a",), \
                    f"`{key}` replays a value nobody recorded"
        record, inserted = store.append(new_record(NS, "after", 1, "after"), None)
        assert inserted and store.read(store.lookup(NS, "after", 1)) == "after"
    finally:
        store.close()


def test_a_torn_write_at_every_byte_offset_keeps_every_complete_record(tmp_path):
    reference, extents = _reference(tmp_path)
    log = (reference / "logs" / f"{log_name(NS)}.log").read_bytes()
    first = min(start for _, start, _ in extents)
    cuts = 0
    for cut in range(first, len(log) + 1):
        # A process killed mid-append leaves the log cut at any byte.
        root = _copy(reference, tmp_path / "cut", log[:cut])
        latest: dict[str, object] = {}
        for key, _start, end in extents:
            if end <= cut:
                latest[key] = VALUES[key] if key != "a" or latest.get("a") else "old a"
        expected = {k: v for k, v in latest.items()}
        if "a" in expected and any(k == "a" and e <= cut for k, _, e in extents[1:2]):
            expected["a"] = VALUES["a"]
        _check(root, expected)
        cuts += 1
    print(f"\ntorn writes: {cuts} cuts tried, every complete record kept after each")


def test_a_flipped_byte_anywhere_loses_at_most_its_own_record(tmp_path):
    reference, extents = _reference(tmp_path)
    log = (reference / "logs" / f"{log_name(NS)}.log").read_bytes()
    flips = kept_total = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreDamagedWarning)  # expected: damage was set aside
        for offset in range(len(log)):
            damaged = bytearray(log)
            damaged[offset] ^= 0xFF
            root = _copy(reference, tmp_path / "flip", bytes(damaged))
            hit = {key for key, start, end in extents if start <= offset < end}
            expected = {key: VALUES[key] for key in VALUES if key not in hit}
            if "a" in hit and not any(k == "a" and s <= offset < e for k, s, e in extents[1:2]):
                expected["a"] = VALUES["a"]  # only the superseded version was hit
            _check(root, expected)
            flips += 1
            kept_total += len(expected)
    print(f"\nflipped bytes: {flips} offsets, {kept_total} records kept in all, "
          "each fault losing at most the record it hit")


def test_every_write_failing_on_a_full_disk_keeps_the_store_whole(tmp_path, monkeypatch):
    """A test double of a full disk: the log's write fails after a few bytes (a real
    tiny file system is the next test, where mounting one is allowed)."""
    root = tmp_path / "full"
    faults = 0
    real_write = os.write
    for failing in range(8):
        store = LocalStore(root, inline_limit=128)
        calls = {"n": 0}

        def write(fd, data, store=store, calls=calls, failing=failing):
            log = store._logs.get(NS)
            if log is not None and fd == log._fd:
                calls["n"] += 1
                if calls["n"] > failing:
                    real_write(fd, bytes(data)[:7])  # a partial frame, then no space
                    raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        monkeypatch.setattr(namespace_log.os, "write", write)
        recorded = {}
        for i in range(4):
            key = f"k{failing}-{i}"
            try:
                record, _ = store.append(new_record(NS, key, 1, i), None)
                recorded[key] = i
            except StoreWriteError as e:
                assert "the disk is full" in str(e) and "nothing was recorded" in str(e)
                faults += 1
        monkeypatch.setattr(namespace_log.os, "write", real_write)
        store.close()
        store = LocalStore(root, inline_limit=128)
        for key, value in recorded.items():
            assert store.read(store.lookup(NS, key, 1)) == value
        record, _ = store.append(new_record(NS, f"after-{failing}", 1, "ok"), None)
        assert store.read(record) == "ok"
        store.close()
    print(f"\nfull disk (test double): {faults} failed appends, every returned one kept")


def test_a_large_value_whose_file_cannot_be_synced_records_nothing(tmp_path, monkeypatch):
    """A test double of a disk that fails to flush a large value file (written first,
    then hashed while another thread syncs it): the error reaches the caller as the
    store's, no temporary file stays, no record is written, the next try works."""
    from nbstep.storage import objects

    root = tmp_path / "store"
    store = LocalStore(root, inline_limit=128)
    value = bytes(range(256)) * 30_000  # 7.7 MB: the write-then-hash path
    real_fsync = objects._fsync_file

    def failing_fsync(path):
        if path.parent.name == objects.TMP:
            raise OSError(errno.EIO, "Input/output error")
        return real_fsync(path)

    monkeypatch.setattr(objects, "_fsync_file", failing_fsync)
    with pytest.raises(StoreWriteError, match="Input/output error"):
        store.append(new_record(NS, "big", 1, value), None)
    assert not list((root / "objects" / objects.TMP).iterdir())
    assert store.lookup(NS, "big", 1) is None
    monkeypatch.setattr(objects, "_fsync_file", real_fsync)
    record, _ = store.append(new_record(NS, "big", 1, value), None)
    assert store.read(record) == value
    store.close()


def test_a_failing_flush_of_the_log_is_reported_and_the_log_goes_on(tmp_path, monkeypatch):
    """A test double of a disk whose flush fails once (EIO): the append raises the
    store's error naming the log; the frame was written, so it may replay (a record of a
    value the step did compute, never another one); the next appends are flushed."""
    root = tmp_path / "store"
    store = LocalStore(root, inline_limit=128)
    store.append(new_record(NS, "before", 1, "kept"), None)
    real = namespace_log.os.fdatasync
    calls = []

    def failing_once(fd):
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd)

    monkeypatch.setattr(namespace_log.os, "fdatasync", failing_once)
    with pytest.raises(StoreWriteError, match=f"{log_name(NS)}.log.*Input/output error"):
        store.append(new_record(NS, "during", 1, "computed"), None)
    record, _ = store.append(new_record(NS, "after", 1, "recorded"), None)
    assert len(calls) == 2
    monkeypatch.setattr(namespace_log.os, "fdatasync", real)
    store.close()
    store = LocalStore(root, inline_limit=128)
    assert store.read(store.lookup(NS, "before", 1)) == "kept"
    assert store.read(store.lookup(NS, "after", 1)) == "recorded"
    during = store.lookup(NS, "during", 1)
    assert during is None or store.read(during) == "computed"
    store.close()


@pytest.fixture
def tiny_filesystem(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}); the test "
                    "double above covers the failing writes")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_really_full_disk_returns_values_and_keeps_what_was_recorded(tiny_filesystem):
    code = textwrap.dedent(
        """
        import json, sys, warnings
        import nbstep
        from nbstep import step
        nbstep.configure(namespace="full", inline_limit=1024)
        done, unrecorded = [], 0
        for i in range(200):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                value = step.run("k", i, lambda x: bytes([x % 251]) * 3000)  # an object file each
            assert value == bytes([i % 251]) * 3000  # the cell still gets its value
            if any("was not recorded" in str(w.message) for w in caught):
                unrecorded += 1
            else:
                done.append(i)
        print(json.dumps({"done": done, "unrecorded": unrecorded}))
        """
    )
    env = {**os.environ, "NBSTEP_STORE": str(tiny_filesystem / ".nbstep")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["unrecorded"] > 0 and report["done"]  # the disk filled up midway
    check = textwrap.dedent(
        """
        import json, sys
        import nbstep
        from nbstep import step
        nbstep.configure(namespace="full", inline_limit=1024)
        done = json.loads(sys.argv[1])
        for i in range(max(done) + 1):
            value = step.run("k", i, lambda x: None)
            if i in done:
                assert value == bytes([i % 251]) * 3000, i
        print("ok")
        """
    )
    replay = subprocess.run([sys.executable, "-c", check, json.dumps(report["done"])], env=env,
                            capture_output=True, text=True, timeout=300)
    assert replay.returncode == 0 and "ok" in replay.stdout, replay.stderr[-3000:]
    print(f"\nfull tmpfs: {len(report['done'])} steps recorded and replayed, "
          f"{report['unrecorded']} returned their value unrecorded")


def test_a_truncated_or_garbled_table_is_rebuilt_from_the_logs(tmp_path):
    root = tmp_path / "store"
    store = LocalStore(root, inline_limit=128)
    for i in range(30):
        store.append(new_record(NS, "k", i + 1, i), None)
    expected = store.admin().history(NS, values=False)["event_id"].tolist()
    store.close()
    db = root / "steps.duckdb"
    size = db.stat().st_size
    tried = 0
    for cut in sorted({0, 1, 100, 4096, size // 3, size // 2, size - 1}):
        data = db.read_bytes()
        db.write_bytes(data[:cut] if cut else b"garbage, not a database")
        store = LocalStore(root, inline_limit=128)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = store.admin().history(NS, values=False)
        assert history["event_id"].tolist() == expected
        assert store.read(store.lookup(NS, "k", 7)) == 6
        assert any(issubclass(w.category, StoreDamagedWarning) for w in caught) or cut == 0
        store.close()
        tried += 1
    print(f"\ntruncated tables: {tried} sizes tried, each rebuilt with all "
          f"{len(expected)} records")


GC_STEPS = 1500
GC_WRITER = textwrap.dedent(
    """
    import sys
    import nbstep
    from nbstep import step
    nbstep.configure(namespace=sys.argv[1], inline_limit=256)
    total = int(sys.argv[2])

    def value(i):
        return bytes([i % 251]) * (1000 + i % 3)  # value files, many of them reused

    def never(x):
        raise AssertionError(f"recomputed {x}: its record was lost")

    for i in range(total):
        assert step.run("k", i, lambda x: value(x)) == value(i)
        if i % 10 == 9:
            nbstep.reset()  # a fresh runtime replays the batch from files gc may race
            for j in range(i - 9, i + 1):
                assert step.run("k", j, never) == value(j)
            if i < total - 10:
                step.forget("k")  # unreferenced files for gc to find, right away
            nbstep.reset()
    print("ok", flush=True)
    """
)


@pytest.mark.slow
def test_gc_racing_writers_never_removes_what_they_record(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(GC_WRITER)
    store_dir = tmp_path / ".nbstep"
    env = {**os.environ, "NBSTEP_STORE": str(store_dir)}
    writers = [subprocess.Popen([sys.executable, str(script), f"w{w}", str(GC_STEPS)], env=env,
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for w in range(3)]
    deadline = time.monotonic() + 120
    while not (store_dir / "format").exists():  # gc needs a store: the first step makes it
        assert time.monotonic() < deadline and all(w.poll() is None for w in writers)
        time.sleep(0.01)
    gcs = 0
    while any(w.poll() is None for w in writers):
        done = subprocess.run([sys.executable, "-m", "nbstep", "--store", str(store_dir),
                               "gc", "--grace", "0"], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        gcs += 1
    for w in writers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0 and "ok" in out, err[-3000:]
    store = LocalStore(store_dir, inline_limit=256)
    try:
        report = store.admin().check()
        assert report.ok, report
        kept = 0
        for w in range(3):
            for record in store.current(f"w{w}"):
                i = GC_STEPS - 10 + record.sequence - 1
                assert store.read(record) == bytes([i % 251]) * (1000 + i % 3)
                kept += 1
    finally:
        store.close()
    assert kept == 30
    print(f"\ngc racing writers: {gcs} gc runs during {3 * GC_STEPS} steps, {kept} current records "
          "all readable")


def test_an_undecodable_old_journal_never_blocks_opening(tmp_path):
    root = tmp_path / ".nbstep"
    shutil.copytree(Path(__file__).parents[1] / "stores" / "format-2", root)
    with open(root / "journal", "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00" + os.urandom(64))
    store = LocalStore(root)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            record = store.lookup("analysis.ipynb", "tuple", 1)
        assert store.read(record) == (1, "a", None)
        assert any("unreadable journal entries" in str(w.message) for w in caught)
        assert list((root / "quarantine").iterdir())
    finally:
        store.close()


def test_random_damage_across_many_logs(tmp_path):
    """Many namespaces, damage sprinkled at random: each namespace keeps what was not hit."""
    rng = random.Random(2026)
    root = tmp_path / "many"
    store = LocalStore(root, inline_limit=128)
    for n in range(20):
        for i in range(5):
            store.append(new_record(f"nb{n}", "k", i + 1, [n, i]), None)
    store.close()
    seed = rng.randrange(1 << 30)
    rng = random.Random(seed)
    hits = 0
    for path in (root / "logs").glob("*.log"):
        data = bytearray(path.read_bytes())
        for _ in range(rng.randrange(3)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            hits += 1
        path.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreDamagedWarning)
        store = LocalStore(root, inline_limit=128)
        try:
            kept = 0
            for n in range(20):
                for i in range(5):
                    record = store.lookup(f"nb{n}", "k", i + 1)
                    if record is not None:
                        assert store.read(record) == [n, i], f"seed {seed}"
                        kept += 1
            assert kept >= 100 - hits, f"seed {seed}: lost more records than bytes hit"
        finally:
            store.close()
    print(f"\nrandom damage (seed {seed}): {hits} bytes hit in 20 logs, {kept} of 100 kept")


@pytest.fixture
def read_only_store(tmp_path):
    """A store with two steps recorded, seen through a read-only bind mount."""
    source, mount = tmp_path / "source", tmp_path / "read-only"
    source.mkdir()
    mount.mkdir()
    store = LocalStore(source / ".nbstep", inline_limit=128)
    store.append(new_record("nb", "small", 1, {"v": 1}), None)
    store.append(new_record("nb", "big", 1, b"b" * 5000), None)
    store.close()
    done = subprocess.run(["mount", "--bind", str(source), str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({done.stderr.strip()})")
    try:
        done = subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot make a read-only mount here ({done.stderr.strip()})")
        yield mount / ".nbstep"
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_read_only_store_replays_and_says_why_it_cannot_record(read_only_store):
    code = textwrap.dedent(
        f"""
        import warnings
        import nbstep
        from nbstep import step
        from nbstep.errors import NbstepError
        nbstep.configure(store={str(read_only_store)!r}, namespace="nb", inline_limit=128)
        assert step.run("small", lambda: "recomputed") == {{"v": 1}}
        assert step.run("big", lambda: "recomputed") == b"b" * 5000
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert step.run("new", lambda: 7) == 7
        (warning,) = [w for w in caught if w.category is nbstep.StepNotPersistedWarning]
        print("warning:", warning.message)
        try:
            step.inspect()
        except NbstepError as e:
            print("inspect:", e)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    warning = done.stdout.split("warning:")[1].splitlines()[0]
    assert "read-only" in warning and "nothing was recorded" in warning, warning
    assert "inspect:" in done.stdout and "Read-only" in done.stdout, done.stdout
    listing = subprocess.run([sys.executable, "-m", "nbstep", "--store", str(read_only_store),
                              "ls"], capture_output=True, text=True, timeout=120)
    assert listing.returncode != 0
    assert "Traceback" not in listing.stderr and "Read-only" in listing.stderr, listing.stderr


def test_a_damaged_log_header_loses_nothing_and_repair_writes_a_new_one(tmp_path):
    root = tmp_path / "store"
    store = LocalStore(root, inline_limit=128)
    for key, value in VALUES.items():
        store.append(new_record(NS, key, 1, value), None)
    store.close()
    log = root / "logs" / f"{log_name(NS)}.log"
    data = bytearray(log.read_bytes())
    data[20] ^= 0xFF  # inside the header frame's JSON
    log.write_bytes(bytes(data))
    (root / "logs" / f"{log_name(NS)}.idx").unlink(missing_ok=True)
    store = LocalStore(root, inline_limit=128)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert {key: store.read(store.lookup(NS, key, 1)) for key in VALUES} == VALUES
        assert store.admin().namespaces() == [NS]
        report = store.admin().check()
    assert any(issubclass(w.category, StoreDamagedWarning) for w in caught)
    assert not report.ok and report.damage, report
    repaired = store.admin().repair()
    assert repaired.logs_rewritten == 1 and repaired.damaged_bytes > 0, repaired
    store.close()
    store = LocalStore(root, inline_limit=128)
    assert store.admin().check().ok
    assert {key: store.read(store.lookup(NS, key, 1)) for key in VALUES} == VALUES
    record, _ = store.append(new_record(NS, "after", 1, "ok"), None)
    assert store.read(record) == "ok"
    store.close()
