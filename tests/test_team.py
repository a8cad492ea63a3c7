"""The team store against a real PostgreSQL server (tests/pg_server.py).

Machines are separate local folders (each with its own mirror and journal) on one
server; processes are real processes. The storage contract itself runs on this
backend in tests/storage/.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import duckdb
import psycopg
import pytest
from click.testing import CliRunner

import nbstep
from nbstep.cli.main import cli
from nbstep.engine.runtime import Runtime
from nbstep.errors import StoreOfflineWarning, TeamServerError, UntrustedValue
from nbstep.storage.team import TeamStore
from nbstep.storage.team import schema as team_schema

sys.path.insert(0, str(Path(__file__).parent / "storage"))
from backends import new_record  # noqa: E402


@pytest.fixture
def team(team_url, tmp_path):
    """``team.machine(name, **options)``: a TeamStore for one machine of the team."""

    class Team:
        url = team_url
        shared = tmp_path / "shared"
        def __init__(self):
            self.opened: list[TeamStore] = []

        def machine(self, name="a", url=None, **options):
            options.setdefault("objects", str(self.shared))
            store = TeamStore(url or self.url, tmp_path / name / ".nbstep", **options)
            self.opened.append(store)
            return store

    team = Team()
    yield team
    for store in team.opened:
        store.close()


def _user(pg_server, database, role, name):
    """A login of the test's own (roles are the cluster's) granted one nbstep role."""
    user = f"{name}_{database}"
    pg_server.execute(f"CREATE ROLE {user} LOGIN PASSWORD 'pw-{name}' IN ROLE {role}")
    return pg_server.url(database, user, f"pw-{name}")


@pytest.fixture
def roles(pg_server, team):
    """Logins for a reader, a writer, another writer and an admin, after `team init`."""
    setup = TeamStore(team.url, team.shared.parent / "init")
    setup.init()
    setup.close()
    database = team.url.rsplit("/", 1)[1]
    return {name: _user(pg_server, database, f"nbstep_{role}", name)
            for name, role in (("reader", "reader"), ("alice", "writer"),
                               ("bob", "writer"), ("admin", "admin"))}


# -- two machines, one server ---------------------------------------------------------------

MACHINE = textwrap.dedent(
    """
    import json, os, sys
    from nbstep import step
    import nbstep
    nbstep.configure(namespace="shared.ipynb")
    ran = []
    def expensive(n):
        ran.append(n)
        return {"rows": list(range(n)), "by": sys.argv[1]}
    big = step.run("big", 3, lambda n: bytes(200_000) + sys.argv[1].encode())
    print(json.dumps({"value": step.run("load", 5, expensive), "ran": ran,
                      "big_tail": big[-1:].decode()}))
    """
)


def test_a_step_computed_on_one_machine_replays_on_another(team, tmp_path):
    script = tmp_path / "machine.py"
    script.write_text(MACHINE)
    outputs = {}
    for name in ("laptop", "server"):
        folder = tmp_path / name
        (folder / ".nbstep").mkdir(parents=True)  # (not one a parent folder may have)
        (folder / "pyproject.toml").write_text(
            f'[tool.nbstep]\nstore = "{team.url}"\nobjects = "../shared"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("NBSTEP_")}
        # The script lives in its project: the store is found from the script's folder.
        local = folder / script.name
        local.write_text(script.read_text())
        done = subprocess.run([sys.executable, str(local), name], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Warning" not in done.stderr, done.stderr[-3000:]
        outputs[name] = json.loads(done.stdout)
        # Each machine has a local folder of its own: its mirror, found from its project,
        # holding what the process did when it exited.
        (mirror,) = (folder / ".nbstep" / "team").glob("*/steps.duckdb")
        with duckdb.connect(str(mirror), read_only=True) as con:
            assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 2
    assert outputs["laptop"]["ran"] == [5]
    assert outputs["server"]["ran"] == []  # replayed: computed once for everyone
    assert outputs["server"]["value"] == {"rows": [0, 1, 2, 3, 4], "by": "laptop"}
    assert outputs["server"]["big_tail"] == "p"  # the laptop's value, from ../shared
    assert any((tmp_path / "shared" / "objects").rglob("*"))


# -- exactly once, 8 processes ----------------------------------------------------------------

RACER = textwrap.dedent(
    """
    import json, os, sys, time
    import nbstep
    from nbstep import step
    nbstep.configure(namespace="race")
    go = sys.argv[1]
    while not os.path.exists(go):
        time.sleep(0.001)
    out = []
    for i in range(30):
        out.append(step.run("slot", i, lambda i: {"i": i, "pid": os.getpid()}))
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_eight_processes_racing_for_the_same_slots_record_each_once(team, tmp_path):
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    go = tmp_path / "go"
    env = {**os.environ, "NBSTEP_STORE": team.url, "NBSTEP_OBJECTS": str(team.shared)}
    racers = []
    for n in range(8):
        folder = tmp_path / f"machine{n}"
        folder.mkdir()
        racers.append(subprocess.Popen([sys.executable, str(script), str(go)], cwd=folder,
                                       env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True))
    time.sleep(1.5)
    go.write_text("")
    results = []
    for racer in racers:
        out, err = racer.communicate(timeout=300)
        assert racer.returncode == 0, err[-3000:]
        results.append(json.loads(out))
    for i in range(30):
        values = {json.dumps(r[i], sort_keys=True) for r in results}
        assert len(values) == 1, f"slot {i}: {values}"  # every loser got the winner's value
    with psycopg.connect(team.url) as con:
        rows = con.execute(
            "SELECT sequence, count(*) FROM nbstep.events GROUP BY sequence").fetchall()
    assert sorted(rows) == [(i + 1, 1) for i in range(30)]  # one record per slot


# -- the mirror's cursor -----------------------------------------------------------------------


def test_the_mirror_gets_a_row_whose_transaction_committed_after_later_ones(team):
    store = team.machine()
    store.append(new_record("nb", "first", 1, 1), None)
    store.sync(["nb"])
    # A transaction that starts now and commits last: its event id is lower than the
    # rows committed meanwhile, which "id greater than the last seen" would skip.
    slow = psycopg.connect(team.url)
    slow.execute(
        "INSERT INTO nbstep.events (kind, namespace, key, sequence, version, codec, "
        "result_json, size_bytes) VALUES ('recorded', 'nb', 'slow', 1, 1, 'json', '7', 1)")
    later, _ = store.append(new_record("nb", "later", 1, 2), None)
    store.sync(["nb"])
    assert set(store.admin().history("nb")["key"]) == {"first", "later"}
    slow.commit()
    slow.close()
    history = store.admin().history("nb")
    assert set(history["key"]) == {"first", "later", "slow"}
    slow_id = int(history[history["key"] == "slow"]["event_id"].iloc[0])
    assert slow_id < later.event_id


MIRROR_WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from backends import new_record
    from nbstep.storage.team import TeamStore
    store = TeamStore(sys.argv[2], sys.argv[3])
    for i in range(int(sys.argv[5])):
        store.append(new_record("busy", sys.argv[4], i + 1, i), None)
    store.close()
    """
)


@pytest.mark.slow
def test_the_mirror_is_complete_while_writers_keep_writing(team, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(MIRROR_WRITER)
    here = str(Path(__file__).parent / "storage")
    writers = [subprocess.Popen([sys.executable, str(script), here, team.url,
                                 str(tmp_path / f"w{n}"), f"k{n}", "150"],
                                stderr=subprocess.PIPE, text=True) for n in range(4)]
    reader = team.machine("reader")
    syncs = 0
    while any(w.poll() is None for w in writers):
        reader.sync(["busy"])
        syncs += 1
    for w in writers:
        _out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err[-3000:]
    reader.sync(["busy"])
    with psycopg.connect(team.url) as con:
        on_server = sorted(r[0] for r in con.execute("SELECT event_id FROM nbstep.events"))
    mirrored = sorted(int(i) for i in reader.admin().history("busy")["event_id"])
    assert syncs > 1
    assert mirrored == on_server and len(on_server) == 600


def test_gc_makes_mirrors_fetch_the_namespace_again(team):
    store = team.machine()
    first, _ = store.append(new_record("nb", "k", 1, "old"), None)
    store.append(new_record("nb", "k", 1, "new"), first.event_id)
    assert len(store.admin().history("nb")) == 2
    assert list(store.admin().history("nb")["status"]) == ["earlier", "current"]
    assert team.machine("admin").admin().gc(grace_seconds=0).events_dropped == 0  # kept
    other = team.machine("admin", keep_versions=1)
    assert other.admin().gc(grace_seconds=0).events_dropped == 1
    history = store.admin().history("nb")
    assert list(history["status"]) == ["current"]


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_client_killed_mid_append_leaves_no_partial_record_and_no_lock(team, tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        from backends import new_record
        from nbstep.storage.team import TeamStore
        store = TeamStore(sys.argv[2], sys.argv[3], objects=sys.argv[4], inline_limit=1024)
        i = 0
        while True:
            i += 1
            store.append(new_record("nb", sys.argv[5], i, bytes(300_000) + str(i).encode()),
                         None)
            print(i, flush=True)
        """))
    here = str(Path(__file__).parent / "storage")
    for trial in range(3):
        proc = subprocess.Popen([sys.executable, str(script), here, team.url,
                                 str(tmp_path / f"m{trial}"), str(team.shared), f"k{trial}"],
                                stdout=subprocess.PIPE, text=True)
        for _ in range(3 + trial):
            proc.stdout.readline()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    admin = team.machine("admin")
    report = admin.admin().check(decode=True)
    assert report.ok and report.records >= 12, report.problems
    # No advisory lock is left behind by a killed writer: gc (which takes it alone) runs.
    started = time.monotonic()
    admin.admin().gc(grace_seconds=0)
    assert time.monotonic() - started < 30
    assert admin.admin().check().ok


def test_a_server_restart_mid_session_is_invisible_to_steps(team, pg_server):
    store = team.machine()
    store.append(new_record("nb", "before", 1, 1), None)
    pg_server.restart()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no offline warning: the connection is reopened
        record, inserted = store.append(new_record("nb", "after", 1, 2), None)
        assert inserted and store.read(store.lookup("nb", "before", 1)) == 1


def test_steps_go_on_while_the_server_is_down_and_are_pushed_when_it_is_back(
        team, pg_server, tmp_path, monkeypatch):
    (tmp_path / ".nbstep").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBSTEP_STORE", team.url)
    monkeypatch.setenv("NBSTEP_OBJECTS", str(team.shared))
    nbstep.configure(namespace="nb.ipynb")
    step = nbstep.step
    assert step.run("online", 1, lambda x: x + 1) == 2
    store = Runtime.instance().store()
    store.sync(["nb.ipynb"])
    pg_server.stop()
    try:
        nbstep.reset()
        calls = []
        with pytest.warns(StoreOfflineWarning, match="cannot reach the team store's server"):
            assert step.run("online", 1, lambda x: calls.append(x)) == 2  # from the mirror
            assert step.run("offline", 2, lambda x: x * 10) == 20  # into the journal
            frame = step.inspect()
        assert calls == [] and "online" in set(frame["key"])
        nbstep.reset()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StoreOfflineWarning)
            assert step.run("offline", 2, lambda x: calls.append(x)) == 20  # from the journal
        assert calls == []
        with pytest.warns(StoreOfflineWarning, match="Showing"):
            shown = CliRunner().invoke(cli, ["inspect", "nb.ipynb"])
        assert shown.exit_code == 0 and "online" in shown.output, shown.output
        result = CliRunner().invoke(cli, ["team", "status"])
        assert result.exit_code == 1 and "1 record recorded while the server" in result.output
        assert "super-secret-pw" not in result.output
    finally:
        pg_server.start()
    result = CliRunner().invoke(cli, ["push"])
    assert result.exit_code == 0, result.output
    assert "pushed 1 record" in result.output
    with psycopg.connect(team.url) as con:
        assert con.execute("SELECT result_json FROM nbstep.events WHERE key = 'offline'"
                           ).fetchall() == [("20",)]


def test_a_record_made_offline_loses_to_one_another_machine_made_meanwhile(team, pg_server):
    mine = team.machine("mine")
    mine.lookup("nb", "k", 1)
    pg_server.stop()
    try:
        with pytest.warns(StoreOfflineWarning):
            record, inserted = mine.append(new_record("nb", "k", 1, "mine"), None)
        assert inserted and record.event_id < 0
    finally:
        pg_server.start()
    theirs = team.machine("theirs")
    won, _ = theirs.append(new_record("nb", "k", 1, "theirs"), None)
    report = mine.push()
    assert (report.pushed, report.superseded, report.left) == (0, 1, 0)
    assert mine.read(mine.lookup("nb", "k", 1)) == "theirs"
    assert mine.lookup("nb", "k", 1).event_id == won.event_id


def test_faults_are_one_clear_error_naming_the_server_without_its_password(
        team, pg_server, tmp_path):
    wrong = pg_server.url(team.url.rsplit("/", 1)[1], password="not-it")
    with pytest.raises(TeamServerError, match="refused the login of `nbstep_super`") as e:
        team.machine("x", url=wrong).lookup("nb", "k", 1)
    assert "not-it" not in str(e.value) and "127.0.0.1" in str(e.value)
    with pytest.raises(TeamServerError, match="has no such database"):
        team.machine("y", url=pg_server.url("no_such_db")).lookup("nb", "k", 1)
    with pytest.raises(TeamServerError, match="holds no nbstep team store.*team init"):
        team.machine("z", create=False).admin().namespaces()
    # From the CLI: exit 1, the same message, no traceback.
    result = CliRunner().invoke(cli, ["--store", wrong, "ls"])
    assert result.exit_code == 1 and "refused the login" in result.output
    assert "not-it" not in result.output and "Traceback" not in result.output


def test_a_server_of_a_newer_schema_is_refused_untouched(team):
    team.machine().lookup("nb", "k", 1)  # creates the schema
    with psycopg.connect(team.url, autocommit=True) as con:
        con.execute("UPDATE nbstep.meta SET value = '99' WHERE name = 'schema_version'")
    with pytest.raises(TeamServerError, match="newer nbstep .schema version 99; this nbstep "
                                              f"knows up to {team_schema.SCHEMA_VERSION}"):
        team.machine("b").lookup("nb", "k", 1)
    with psycopg.connect(team.url) as con:
        assert con.execute("SELECT value FROM nbstep.meta WHERE name = 'schema_version'"
                           ).fetchone() == ("99",)


# -- roles and trust ---------------------------------------------------------------------------


def test_a_reader_cannot_write_and_a_writer_cannot_gc(team, roles):
    alice = team.machine("alice", url=roles["alice"])
    record, _ = alice.append(new_record("nb", "k", 1, {"a": 1}), None)
    reader = team.machine("reader", url=roles["reader"])
    assert reader.read(reader.lookup("nb", "k", 1)) == {"a": 1}
    with pytest.raises(TeamServerError, match="may not record a step.*nbstep_writer"):
        reader.append(new_record("nb", "k2", 1, 1), None)
    with pytest.raises(TeamServerError, match="may not forget steps"):
        reader.forget("nb")
    with pytest.raises(TeamServerError, match="may not run gc.*nbstep_admin"):
        alice.admin().gc(grace_seconds=0)
    assert team.machine("admin", url=roles["admin"]).admin().gc(grace_seconds=0) is not None
    assert record.recorded_by == f"alice_{team.url.rsplit('/', 1)[1]}"


def test_a_writer_cannot_forge_who_recorded_a_step(roles):
    with psycopg.connect(roles["alice"]) as con, pytest.raises(
            psycopg.errors.InsufficientPrivilege):
        con.execute("INSERT INTO nbstep.events (kind, namespace, key, sequence, version, "
                    "recorded_by) VALUES ('recorded', 'nb', 'k', 1, 1, 'bob')")


def test_pickles_load_only_from_trusted_writers(team, roles):
    alice = team.machine("alice", url=roles["alice"])
    alice.append(new_record("nb", "pickled", 1, {1, 2, 3}), None)  # a set: pickle
    alice.append(new_record("nb", "plain", 1, {"x": [1, 2]}), None)  # json
    who = alice.lookup("nb", "pickled", 1).recorded_by
    bob = team.machine("bob", url=roles["bob"])
    assert bob.read(bob.lookup("nb", "plain", 1)) == {"x": [1, 2]}
    with pytest.raises(UntrustedValue, match=f"recorded by `{who}` as a pickle.*trust = "):
        bob.read(bob.lookup("nb", "pickled", 1))
    assert alice.read(alice.lookup("nb", "pickled", 1)) == {1, 2, 3}  # one's own
    trusting = team.machine("bob2", url=roles["bob"], trust=(who,))
    assert trusting.read(trusting.lookup("nb", "pickled", 1)) == {1, 2, 3}
    # verify does not unpickle what it may not load, and does not call it damage.
    assert bob.admin().check(decode=True).ok


def test_the_magic_reports_a_server_fault_as_one_line(team, pg_server, tmp_path, monkeypatch,
                                                      capsys):
    from IPython.core.error import UsageError
    from test_magic import TestingShell
    from traitlets.config import Config

    wrong = pg_server.url(team.url.rsplit("/", 1)[1], password="not-it")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBSTEP_STORE", wrong)
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "analysis.ipynb"))
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = TestingShell.instance(config=config)
    try:
        shell.run_cell("%load_ext nbstep")
        capsys.readouterr()
        shell.run_cell("%step_config")
        shown = capsys.readouterr().out
        assert "postgresql://nbstep_super@127.0.0.1" in shown and "not-it" not in shown
        assert "local copy" in shown
        with pytest.raises(UsageError, match="refused the login") as raised:
            shell.run_cell("%%step load\nx = 1\n", store_history=True)
        assert "not-it" not in str(raised.value)
        shell.run_cell("%unload_ext nbstep")
    finally:
        TestingShell.clear_instance()


# -- an S3 object store (against moto's S3 server: a test double of S3) -----------------------


@pytest.fixture
def s3_double(monkeypatch, tmp_path):
    """An S3 bucket on moto's server, an S3 test double on localhost (no real S3 here)."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in (("AWS_ENDPOINT_URL", endpoint), ("AWS_ACCESS_KEY_ID", "test"),
                        ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_REGION", "us-east-1"),
                        ("AWS_ALLOW_HTTP", "true")):
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=endpoint)
    # moto keeps its buckets per process, across servers: a bucket of the test's own.
    client.bucket = f"team-{abs(hash(str(tmp_path))) % 10**9}"
    client.create_bucket(Bucket=client.bucket)
    yield client
    server.stop()


def test_large_values_go_to_an_s3_object_store_shared_by_machines(team, s3_double):
    url = f"s3://{s3_double.bucket}/steps"
    big = bytes(range(256)) * 2000
    laptop = team.machine("laptop", objects=url)
    record, _ = laptop.append(new_record("nb", "big", 1, big), None)
    assert record.stored == "object"
    keys = [o["Key"] for o in s3_double.list_objects_v2(Bucket=s3_double.bucket)["Contents"]]
    assert keys == [f"steps/objects/{record.object_sha256[:2]}/{record.object_sha256}"]
    desk = team.machine("desk", objects=url)  # another machine: an empty local cache
    assert desk.read(desk.lookup("nb", "big", 1)) == big
    # Read once, the value is in the desk's cache: no download on the next replay.
    s3_double.delete_object(Bucket=s3_double.bucket, Key=keys[0])
    assert desk.read(desk.lookup("nb", "big", 1)) == big
    report = desk.admin().check()
    assert not report.ok and "is missing" in report.problems[0].what
    # Damaged in the bucket: a replay that has to download it says so.
    s3_double.put_object(Bucket=s3_double.bucket, Key=keys[0], Body=big[:-1] + b"!")
    fresh = team.machine("fresh", objects=url)
    with pytest.raises(nbstep.StepReplayError, match="does not match the checksum"):
        fresh.read(fresh.lookup("nb", "big", 1))


def test_gc_removes_unreferenced_objects_from_s3(team, s3_double):
    url = f"s3://{s3_double.bucket}/steps"
    store = team.machine(objects=url, keep_versions=1)
    old, _ = store.append(new_record("nb", "k", 1, bytes(100_000)), None)
    store.append(new_record("nb", "k", 1, bytes(100_001)), old.event_id)
    assert store.admin().gc(grace_seconds=3600).young_kept == 1
    report = store.admin().gc(grace_seconds=0)
    assert report.objects_removed == 1 and report.bytes_freed == 100_000
    keys = [o["Key"] for o in s3_double.list_objects_v2(Bucket=s3_double.bucket)["Contents"]]
    assert len(keys) == 1 and store.admin().check(decode=True).ok


# -- settings and docs ---------------------------------------------------------------------------


def test_a_team_store_in_pyproject_is_kept_as_a_url_and_objects_is_resolved(tmp_path,
                                                                            monkeypatch):
    from nbstep import settings as settings_module

    (tmp_path / "pyproject.toml").write_text(
        '[tool.nbstep]\nstore = "postgresql://alice@db.example.com/steps"\n'
        'objects = "shared/objects"\ntrust = ["bob", "ci"]\n')
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    loaded = settings_module.load({})
    assert loaded.store == "postgresql://alice@db.example.com/steps"
    assert loaded.objects == str((tmp_path / "shared" / "objects").resolve())
    assert loaded.trust == ("bob", "ci")
    # The local folder of the team store: the project's .nbstep, as for a local store.
    assert settings_module.store_dir(loaded) == tmp_path.resolve() / ".nbstep"
    monkeypatch.setenv("NBSTEP_TRUST", "carol, dave")
    assert settings_module.load({}).trust == ("carol", "dave")
    with pytest.raises(nbstep.ConfigError, match="`trust` must be a list of the team store"):
        nbstep.configure(trust=["ok", 3])
    with pytest.raises(nbstep.ConfigError, match="`objects` must be a directory"):
        nbstep.configure(objects="ftp://somewhere")


def test_the_docs_hold_the_roles_sql_the_code_runs():
    doc = (Path(__file__).parents[1] / "docs" / "team-store.md").read_text()
    assert team_schema.ROLES.strip() in doc


# -- real notebooks, a real kernel -------------------------------------------------------------


@pytest.mark.kernel
def test_nbstep_run_on_two_machines_computes_a_cell_once(team, tmp_path):
    from test_cli_run import nbstep_cmd, summary_counts, write_notebook

    cells = ["%load_ext nbstep", "%%step load\nimport os\nrows = list(range(5))\n"
             "who = os.getcwd()\n", "print(rows, who)"]
    outputs = {}
    for machine in ("laptop", "ci"):
        project = tmp_path / machine
        (project / "notebooks").mkdir(parents=True)
        (project / ".nbstep").mkdir()
        (project / "pyproject.toml").write_text(
            f'[project]\nname = "demo"\n[tool.nbstep]\nstore = "{team.url}"\n'
            f'objects = "{team.shared}"\n')
        write_notebook(project / "notebooks" / "analysis.ipynb", *cells)
        done = nbstep_cmd("run", "notebooks/analysis.ipynb", "--inplace", cwd=project)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[machine] = summary_counts(done.stdout)
    assert outputs == {"laptop": "0 replayed, 1 computed, 0 failed",
                       "ci": "1 replayed, 0 computed, 0 failed"}
    # Each machine's copy had no id: the laptop's run gave it one and recorded its path,
    # and ci's run gave its copy the same id back (the server knows that path's id).
    ids = {json.loads((tmp_path / m / "notebooks" / "analysis.ipynb").read_text())[
        "metadata"]["nbstep"]["id"] for m in ("laptop", "ci")}
    assert len(ids) == 1
    with psycopg.connect(team.url) as con:
        rows = con.execute("SELECT namespace, key FROM nbstep.events ORDER BY 1").fetchall()
    assert rows == [(f"nb:{ids.pop()}", "load")] + [
        ("nbstep:notebooks", key) for _, key in rows[1:]]


def test_the_store_commands_work_on_a_team_store(team, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = team.machine("here")
    old, _ = store.append(new_record("nb.ipynb", "load", 1, bytes(100_000)), None)
    store.append(new_record("nb.ipynb", "load", 1, bytes(100_001)), old.event_id)
    store.append(new_record("nb.ipynb", "plain", 1, {"rows": 3}), None)
    base = ["--store", team.url]
    monkeypatch.setenv("NBSTEP_OBJECTS", str(team.shared))
    runner = CliRunner()
    listing = runner.invoke(cli, [*base, "ls"])
    assert listing.exit_code == 0 and "nb.ipynb" in listing.output, listing.output
    steps = runner.invoke(cli, [*base, "ls", "nb.ipynb"])
    assert "BY" in steps.output and "nbstep_super" in steps.output, steps.output
    shown = runner.invoke(cli, [*base, "show", "nb.ipynb", "plain"])
    assert shown.exit_code == 0 and "by nbstep_super" in shown.output, shown.output
    history = runner.invoke(cli, [*base, "inspect", "nb.ipynb", "--all", "--format", "json"])
    assert [r["status"] for r in json.loads(history.output)] == [
        "earlier", "current", "current"]
    assert runner.invoke(cli, [*base, "verify", "--decode"]).exit_code == 0
    kept = runner.invoke(cli, [*base, "gc", "--grace", "0"])
    assert kept.exit_code == 0 and "drop 0 events" in kept.output, kept.output
    monkeypatch.setenv("NBSTEP_KEEP_VERSIONS", "1")
    gc = runner.invoke(cli, [*base, "gc", "--grace", "0"])
    assert gc.exit_code == 0 and "drop 1 event" in gc.output, gc.output
    assert "remove 1 unreferenced object file" in gc.output
    assert "server tables" in gc.output
    forgot = runner.invoke(cli, [*base, "forget", "nb.ipynb", "plain"])
    assert forgot.exit_code == 0 and store.lookup("nb.ipynb", "plain", 1) is None
    status = runner.invoke(cli, [*base, "team", "status"])
    assert status.exit_code == 0 and "reachable, as `nbstep_super`" in status.output
    assert "nb.ipynb" in status.output  # mirrored by `inspect` above


def test_an_older_server_schema_is_upgraded_by_whoever_may(team, roles, monkeypatch):
    team.machine("first").lookup("nb", "k", 1)  # version 1 tables
    monkeypatch.setattr(team_schema, "SCHEMA_VERSION", team_schema.SCHEMA_VERSION + 1)
    monkeypatch.setitem(team_schema.UPGRADES, team_schema.SCHEMA_VERSION - 1,
                        "ALTER TABLE nbstep.meta ADD COLUMN note text;")
    with pytest.raises(TeamServerError, match="older than this nbstep's.*team init"):
        team.machine("reader", url=roles["reader"]).lookup("nb", "k", 1)
    team.machine("admin").lookup("nb", "k", 1)  # the superuser upgrades it
    with psycopg.connect(team.url) as con:
        assert con.execute("SELECT value FROM nbstep.meta WHERE name = 'schema_version'"
                           ).fetchone() == (str(team_schema.SCHEMA_VERSION),)
        assert con.execute("SELECT note FROM nbstep.meta LIMIT 1").fetchone() == (None,)
    assert team.machine("reader2", url=roles["reader"]).lookup("nb", "k", 1) is None


def test_a_damaged_journal_file_is_set_aside_and_the_rest_pushed(team, pg_server):
    store = team.machine()
    store.lookup("nb", "k", 1)
    pg_server.stop()
    try:
        with pytest.warns(StoreOfflineWarning):
            store.append(new_record("nb", "a", 1, "kept"), None)
            store.append(new_record("nb", "b", 1, "damaged"), None)
    finally:
        pg_server.start()
    files = sorted(store.journal.folder.glob("*.rec"))
    assert len(files) == 2
    files[1].write_bytes(b"{not json\n")
    with pytest.warns(nbstep.StoreDamagedWarning, match="cannot be read"):
        report = store.push()
    assert (report.pushed, report.left) == (1, 0)
    assert [p.name.endswith(".damaged") for p in store.journal.folder.iterdir()] == [True]
    assert store.read(store.lookup("nb", "a", 1)) == "kept"


def test_a_journal_this_user_may_not_push_does_not_stop_the_steps(team, roles, pg_server):
    reader = team.machine("reader", url=roles["reader"])
    reader.lookup("nb", "k", 1)
    pg_server.stop()
    try:
        with pytest.warns(StoreOfflineWarning):
            reader.append(new_record("nb", "k", 1, "offline"), None)
    finally:
        pg_server.start()
    reader.server.retry_now()
    with pytest.warns(nbstep.StepNotPersistedWarning, match="could not be pushed.*may not"):
        assert reader.lookup("nb", "other", 1) is None  # the step at hand goes on
    with pytest.raises(TeamServerError, match="may not push the journal"):
        reader.push()
    assert len(reader.journal.pending()) == 1  # kept for someone who may


def test_gc_dry_run_never_waits_for_a_writer(team):
    store = team.machine(inline_limit=1024)
    first, _ = store.append(new_record("nb", "k", 1, bytes(10_000)), None)
    store.append(new_record("nb", "k", 1, bytes(10_001)), first.event_id)
    with psycopg.connect(team.url, autocommit=True) as writer:
        # A writer between its value file and its record: a dry run only reads.
        writer.execute("SELECT pg_advisory_lock_shared(%s)", [team_schema.GC_LOCK])
        admin = team.machine("admin", keep_versions=1).admin()
        admin.server.run("limit waits", lambda con: con.execute(
            "SET lock_timeout = '2s'"))
        started = time.monotonic()
        report = admin.gc(dry_run=True, grace_seconds=0)
        assert time.monotonic() - started < 2.0
        assert report.events_dropped == 1 and report.objects_removed == 1
        writer.execute("SELECT pg_advisory_unlock_shared(%s)", [team_schema.GC_LOCK])


def test_gc_waits_for_a_writer_between_its_value_file_and_its_record(team):
    import threading

    store = team.machine(inline_limit=1024)
    store.append(new_record("nb", "k", 1, bytes(10_000)), None)
    # What a writer on another machine holds from before its file until its record.
    with psycopg.connect(team.url, autocommit=True) as writer:
        writer.execute("SELECT pg_advisory_lock_shared(%s)", [team_schema.GC_LOCK])
        admin = team.machine("admin")
        done = threading.Event()
        worker = threading.Thread(target=lambda: (admin.admin().gc(grace_seconds=0),
                                                  done.set()))
        worker.start()
        assert not done.wait(1.0)  # gc waits for the writer
        writer.execute("SELECT pg_advisory_unlock_shared(%s)", [team_schema.GC_LOCK])
        assert done.wait(30)
        worker.join()
