"""The store commands of the `nbstep` command line, through click's runner and as real
subprocesses (`python -m nbstep`, the `nbstep` script). Each test has its own store
under tmp_path, filled through the Python API. `nbstep run` is in test_cli_run.py."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import nbstep
from nbstep import step
from nbstep.cli import cli
from nbstep.engine.runtime import Runtime
from nbstep.storage.local import LocalStore

NB = "nb/analysis.ipynb"
FRAME = pd.DataFrame({"a": range(100), "b": np.arange(100) * 1.5, "c": ["x"] * 100})
BIG = np.arange(20_000, dtype=float)  # 160 KB: above the inline limit, so an object file


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A store with two notebooks: five current steps in one (a DataFrame, a dict, an
    object-file array, two occurrences of one key) and a re-run step in the other."""
    monkeypatch.delenv("NBSTEP_STORE", raising=False)
    monkeypatch.delenv("NBSTEP_NAMESPACE", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.chdir(tmp_path)
    store_dir = tmp_path / ".nbstep"
    nbstep.configure(store=str(store_dir), namespace=NB)
    nbstep.reset()
    try:
        step.run("load", "data.csv", lambda path: FRAME)
        step.run("params", {"lr": 0.1}, lambda p: {"lr": p["lr"], "epochs": 3})
        step.run("big", 1, lambda n: BIG)
        step.run("fetch", 1, lambda n: n * 2)
        step.run("fetch", 2, lambda n: n * 2)
        nbstep.configure(namespace="other.ipynb")
        step.run("x", lambda: "hello")
        nbstep.reset()
        step.run("x", lambda: "hello2", rerun=True)
    finally:
        # Close the engine's store so the command line can open it, and leave no state.
        nbstep.configure(store=None, namespace=None)
        Runtime.instance().drop_store()
        nbstep.reset()
    return store_dir


def invoke(root, *args, input=None, code=0):
    result = CliRunner().invoke(cli, ["--store", str(root), *args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, result.output
    assert "\x1b" not in result.output, "colour codes in output that is not a terminal"
    return result


def current_keys(root, namespace=NB):
    store = LocalStore(root)
    try:
        return [(r.key, r.sequence) for r in store.current(namespace)]
    finally:
        store.close()


def object_file(root, key="big"):
    store = LocalStore(root)
    try:
        (record,) = [r for r in store.current(NB) if r.key == key]
        assert record.object_sha256, "the fixture's big array should be an object file"
        return store.objects.path(record.object_sha256)
    finally:
        store.close()


# -- help -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", ["run", "ls", "inspect", "show", "export", "forget", "gc", "verify"]
)
def test_every_command_has_help_with_an_example(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert f"nbstep {command}" in result.output


def test_group_help_lists_commands_and_store_env():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ["run", "ls", "inspect", "show", "export", "forget", "gc", "verify"]:
        assert f"  {command} " in result.output
    assert "NBSTEP_STORE" in result.output


# -- ls -------------------------------------------------------------------------------


def test_ls_lists_notebooks_with_counts_sizes_and_old_versions(root, monkeypatch):
    out = invoke(root, "ls").output.splitlines()
    assert out[0].split()[:4] == ["NOTEBOOK", "STEPS", "SIZE", "OLD"]
    analysis = next(line for line in out if line.startswith(NB)).split()
    other = next(line for line in out if line.startswith("other.ipynb")).split()
    assert analysis[1] == "5"
    assert analysis[4] == "-"  # nothing superseded there
    assert other[1] == "1"
    assert other[4] == "-"  # the first `x` is a kept earlier version: gc frees nothing
    monkeypatch.setenv("NBSTEP_KEEP_VERSIONS", "1")
    out = invoke(root, "ls").output.splitlines()
    other = next(line for line in out if line.startswith("other.ipynb")).split()
    assert other[4] != "-"  # keeping one version, the first `x` is for gc


def test_ls_json_counts(root):
    rows = {r["notebook"]: r for r in json.loads(invoke(root, "ls", "--format", "json").output)}
    assert rows[NB]["steps"] == 5
    assert rows[NB]["keys"] == 4
    assert rows[NB]["size_bytes"] > BIG.nbytes
    assert rows["other.ipynb"]["old_bytes"] == 0  # an earlier version, kept


def test_ls_json_old_bytes_are_what_gc_frees(root, monkeypatch):
    monkeypatch.setenv("NBSTEP_KEEP_VERSIONS", "1")
    rows = {r["notebook"]: r for r in json.loads(invoke(root, "ls", "--format", "json").output)}
    assert rows["other.ipynb"]["old_bytes"] > 0


def test_ls_one_notebook_lists_its_steps(root):
    out = invoke(root, "ls", NB).output
    lines = out.splitlines()
    assert lines[0].startswith(NB)
    rows = [line.split() for line in lines[2:]]
    assert [(r[0], r[1]) for r in rows] == [
        ("load", "1"), ("params", "1"), ("big", "1"), ("fetch", "1"), ("fetch", "2")
    ]
    big = next(r for r in rows if r[0] == "big")
    assert big[-1] == "object"


def test_notebook_argument_may_be_a_path(root, tmp_path, monkeypatch):
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "analysis.ipynb").write_text("{}")
    monkeypatch.chdir(tmp_path / "nb")
    # From inside nb/, `analysis.ipynb` is the file nb/analysis.ipynb of the store's root.
    out = invoke(root, "ls", "analysis.ipynb").output
    assert out.startswith(NB)
    out = invoke(root, "ls", str(tmp_path / "nb" / "analysis.ipynb")).output
    assert out.startswith(NB)


def test_unknown_notebook_is_a_usage_error_with_close_matches(root):
    result = invoke(root, "ls", "analysis.ipynb", code=2)
    assert "no notebook `analysis.ipynb`" in result.output
    assert "Did you mean `nb/analysis.ipynb`?" in result.output
    result = invoke(root, "show", "othr.ipynb", "x", code=2)
    assert "Did you mean `other.ipynb`?" in result.output


def test_a_missing_store_is_an_error_and_is_not_created(tmp_path):
    nowhere = tmp_path / "nowhere"
    result = invoke(nowhere, "ls", code=2)
    assert "no nbstep store at" in result.output
    assert not nowhere.exists()


def test_store_from_environment(root, monkeypatch):
    monkeypatch.chdir(root.parent.parent)  # no .nbstep to find from here
    result = CliRunner().invoke(cli, ["ls"], env={"NBSTEP_STORE": str(root)})
    assert result.exit_code == 0, result.output
    assert NB in result.output


# -- inspect -----------------------------------------------------------------------------


def test_inspect_shows_current_records_unless_history(root):
    current = json.loads(invoke(root, "inspect", "other.ipynb", "--format", "json").output)
    assert [(r["key"], r["status"], r["value"]) for r in current] == [
        ("x", "current", "'hello2'")
    ]
    everything = json.loads(
        invoke(root, "inspect", "other.ipynb", "--history", "--format", "json").output
    )
    assert [(r["status"], r["value"]) for r in everything] == [
        ("earlier", "'hello'"), ("current", "'hello2'")
    ]
    # --all, as before: every record, every column.
    old = json.loads(invoke(root, "inspect", "other.ipynb", "--all", "--format", "json").output)
    assert [(r["status"], r["result"], r["reason"]) for r in old] == [
        ("earlier", "hello", "first"), ("current", "hello2", "rerun")
    ]


def test_inspect_json_has_step_inspect_columns(root):
    records = json.loads(invoke(root, "inspect", NB, "--format", "json").output)
    assert list(records[0]) == ["key", "occurrence", "status", "recorded_at", "duration",
                                "saved", "value"]
    by_key = {(r["key"], r["occurrence"]): r for r in records}
    assert by_key[("params", 1)]["value"] == "{'lr': 0.1, 'epochs': 3}"
    assert by_key[("load", 1)]["value"] == "DataFrame 100×3"
    assert by_key[("big", 1)]["value"] == "ndarray float64 (20000,)"
    assert isinstance(by_key[("load", 1)]["duration"], float)  # seconds
    assert by_key[("load", 1)]["saved"] == by_key[("load", 1)]["duration"]
    with_values = json.loads(invoke(root, "inspect", NB, "--results", "--format", "json").output)
    assert [r["result"] for r in with_values if r["key"] == "params"] == [
        {"lr": 0.1, "epochs": 3}]


def test_inspect_all_columns_is_the_full_frame(root):
    from nbstep.engine.inspect import COLUMNS

    records = json.loads(invoke(root, "inspect", NB, "--all-columns", "--format", "json").output)
    assert list(records[0]) == COLUMNS
    by_key = {(r["key"], r["sequence"]): r for r in records}
    assert by_key[("params", 1)]["result"] == {"lr": 0.1, "epochs": 3}
    assert by_key[("load", 1)]["result"] == "DataFrame 100×3"
    assert by_key[("big", 1)]["stored"] == "object"
    assert by_key[("load", 1)]["stored"] == "inline"
    lean = json.loads(invoke(root, "inspect", NB, "--all-columns", "--no-results",
                             "--format", "json").output)
    assert "result" not in lean[0] and len(lean) == 5


def test_inspect_key_as_csv(root):
    out = invoke(root, "inspect", NB, "--key", "fetch", "--format", "csv").output
    frame = pd.read_csv(__import__("io").StringIO(out))
    assert list(frame["occurrence"]) == [1, 2]
    assert list(frame["value"]) == [2, 4]


def test_inspect_table_reads_at_a_glance(root):
    header, *rows = invoke(root, "inspect", NB).output.splitlines()
    assert header.split() == ["KEY", "OCC", "STATUS", "RECORDED", "(UTC)", "TOOK", "SAVED",
                              "VALUE"]
    assert len(rows) == 5
    load = rows[0].split()
    assert load[:3] == ["load", "1", "current"] and load[6] in ("µs", "ms", "s")
    assert rows[0].endswith("DataFrame 100×3")


def test_inspect_table_without_results(root):
    out = invoke(root, "inspect", NB, "--no-results").output
    header, *rows = out.splitlines()
    assert header.split() == ["KEY", "OCC", "STATUS", "RECORDED", "(UTC)", "TOOK", "SAVED"]
    assert len(rows) == 5 and all(row.split()[-1] in ("µs", "ms", "s") for row in rows)
    header, *rows = invoke(root, "inspect", NB, "--no-results", "--all-columns").output.splitlines()
    assert header.split()[:4] == ["EVENT_ID", "KEY", "SEQUENCE", "STATUS"]
    assert header.split()[-1] == "REASON"  # no column of dashes


def test_inspect_a_forgotten_key_points_to_its_history(root):
    invoke(root, "forget", NB, "params")
    result = invoke(root, "inspect", NB, "--key", "params", code=2)
    assert "has no current record (it was forgotten)" in result.output
    assert "--history --key params` shows its history" in result.output
    out = invoke(root, "inspect", NB, "--key", "params", "--history").output
    assert [row.split()[2] for row in out.splitlines()[1:]] == ["forgotten"]


def test_inspect_unknown_key_suggests(root):
    result = invoke(root, "inspect", NB, "--key", "fech", code=2)
    assert "no step `fech`" in result.output
    assert "Did you mean `fetch`?" in result.output


# -- show / export ---------------------------------------------------------------------


def test_show_dataframe_shape_dtypes_head(root):
    out = invoke(root, "show", NB, "load", "--rows", "3").output
    assert "step `load` occurrence 1" in out
    assert "100 rows × 3 columns" in out
    dtypes = out.split("dtypes:")[1].split("first")[0].split()
    assert dtypes[:4] == ["a", "int64", "b", "float64"]
    head = out.split("first 3 rows:")[1].strip().splitlines()
    assert len(head) == 4  # the column header and three rows
    assert head[3].split() == ["2", "2", "3.0", "x"]


def test_show_picks_an_occurrence(root):
    first = invoke(root, "show", NB, "fetch").output
    assert "choose with --occurrence" in first
    assert first.rstrip().endswith("\n2")
    second = invoke(root, "show", NB, "fetch", "--occurrence", "2").output
    assert "occurrence 2" in second and "choose with" not in second
    assert second.rstrip().endswith("\n4")
    result = invoke(root, "show", NB, "fetch", "--occurrence", "3", code=2)
    assert "its occurrences: 1, 2" in result.output


def test_show_a_forgotten_key_says_so(root):
    invoke(root, "forget", NB, "params")
    result = invoke(root, "show", NB, "params", code=2)
    assert "was forgotten" in result.output


def test_export_dataframe_to_parquet_and_csv(root, tmp_path):
    invoke(root, "export", NB, "load", str(tmp_path / "load.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "load.parquet"), FRAME)
    invoke(root, "export", NB, "load", str(tmp_path / "load.csv"))
    back = pd.read_csv(tmp_path / "load.csv")
    assert list(back.columns) == ["a", "b", "c"]  # a default index is not written
    assert back["b"].tolist() == FRAME["b"].tolist()


def test_export_other_values_to_json_and_pickle(root, tmp_path):
    out = invoke(root, "export", NB, "params", str(tmp_path / "p.json")).output
    assert "(json," in out
    assert json.loads((tmp_path / "p.json").read_text()) == {"lr": 0.1, "epochs": 3}
    invoke(root, "export", NB, "big", str(tmp_path / "big.pkl"))
    with open(tmp_path / "big.pkl", "rb") as f:
        np.testing.assert_array_equal(pickle.load(f), BIG)


def test_export_refuses_a_format_the_value_has_not(root, tmp_path):
    result = invoke(root, "export", NB, "params", str(tmp_path / "p.parquet"), code=1)
    assert "must be one of .json, .pkl" in result.output
    result = invoke(root, "export", NB, "big", str(tmp_path / "big.json"), code=1)
    assert "must be one of .npy, .pkl, .pickle" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [".nbstep"]  # no partial files


def test_export_refusal_names_the_type_grammatically(root, tmp_path):
    result = invoke(root, "export", NB, "big", str(tmp_path / "big.csv"), code=1)
    assert "cannot export this ndarray to `big.csv`" in result.output
    assert "a ndarray" not in result.output


def test_export_an_array_to_npy(root, tmp_path):
    out = invoke(root, "export", NB, "big", str(tmp_path / "big.npy")).output
    assert "(npy," in out
    back = np.load(tmp_path / "big.npy", allow_pickle=False)
    assert back.dtype == BIG.dtype
    np.testing.assert_array_equal(back, BIG)


@pytest.fixture
def cell_root(tmp_path, monkeypatch):
    """A store with two %%step cells recorded by an IPython shell in this process."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    monkeypatch.delenv("NBSTEP_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    store_dir = tmp_path / ".nbstep"
    nbstep.configure(store=str(store_dir), namespace=NB)
    main = sys.modules["__main__"]  # the shell makes its namespace __main__
    monkeypatch.setitem(sys.modules, "__main__", main)
    shell = InteractiveShell.instance(config=Config(
        {"HistoryManager": {"hist_file": ":memory:"}}))
    cells = [
        "class Point:\n    def __init__(self, x):\n        self.x = x",
        "%%step load\nimport pandas as pd\nframe = pd.DataFrame({'a': range(5)})\n"
        "names = ['x', 'y']\npoint = Point(1)\nprint('loaded')\nlen(frame)",
        "%%step one\nscores = pd.Series([0.5, 0.7], name='score')",
    ]
    try:
        shell.run_cell("%load_ext nbstep")
        for source in cells:
            shell.run_cell(source, store_history=True).raise_error()
        step.run("plain", lambda: {"a": 1})
    finally:
        shell.run_cell("%unload_ext nbstep")
        InteractiveShell.clear_instance()
        sys.modules["__main__"] = main  # as in the `nbstep` command: no notebook classes
        nbstep.configure(store=None, namespace=None)
        Runtime.instance().drop_store()
        nbstep.reset()
    return store_dir


def test_show_a_cell_lists_its_variables_result_and_outputs(cell_root):
    out = invoke(cell_root, "show", NB, "load").output
    assert "a %%step cell: 3 variables, 1 recorded output" in out
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in out.splitlines()
            if line.startswith(("frame ", "names ", "pd ", "point "))}
    assert rows["frame"] == ["pandas.DataFrame", "5 rows × 1 columns"]
    assert rows["names"] == ["list", "len 2: ['x', 'y']"]
    assert "pd" not in rows and "imports: pd (pandas)" in out  # a module is not a variable
    # A class of an earlier cell exists only in the notebook: named, not a failure.
    assert rows["point"][0] == "__main__.Point"
    assert rows["point"][1].startswith("<__main__.Point object: its class is defined")
    assert "result (Out): int: 5" in out
    assert "nbstep_cell" not in out and "b'" not in out  # not the internal record


def test_export_a_cells_variable(cell_root, tmp_path):
    out = invoke(cell_root, "export", NB, "load", str(tmp_path / "f.parquet"),
                 "--var", "frame").output
    assert "wrote variable `frame` of step `load`" in out
    assert pd.read_parquet(tmp_path / "f.parquet")["a"].tolist() == [0, 1, 2, 3, 4]
    # One variable: --var is not needed.
    invoke(cell_root, "export", NB, "one", str(tmp_path / "s.csv"))
    assert pd.read_csv(tmp_path / "s.csv")["score"].tolist() == [0.5, 0.7]


def test_export_a_cell_needs_the_right_variable(cell_root, tmp_path):
    result = invoke(cell_root, "export", NB, "load", str(tmp_path / "x.json"), code=2)
    assert "bound 3 variables (`frame`, `names`, `point`); choose one with --var" in (
        result.output)
    result = invoke(cell_root, "export", NB, "load", str(tmp_path / "x.json"),
                    "--var", "pd", code=2)
    assert "`pd` of the %%step cell `load` is the module `pandas`, imported again" in (
        result.output)
    result = invoke(cell_root, "export", NB, "load", str(tmp_path / "x.json"),
                    "--var", "nams", code=2)
    assert "no variable `nams`; did you mean `names`?" in result.output
    result = invoke(cell_root, "export", NB, "load", str(tmp_path / "x.pkl"),
                    "--var", "point", code=1)
    assert "defined in the notebook" in result.output
    result = invoke(cell_root, "export", NB, "plain", str(tmp_path / "x.json"),
                    "--var", "a", code=2)
    assert "--var is for %%step cells" in result.output
    invoke(cell_root, "export", NB, "load", str(tmp_path / "n.json"), "--var", "names")
    assert json.loads((tmp_path / "n.json").read_text()) == ["x", "y"]


def test_inspect_a_cell_summarizes_its_variables(cell_root):
    out = invoke(cell_root, "inspect", NB, "--key", "one", "--format", "json").output
    (row,) = json.loads(out)
    assert row["value"] == "scores: Series 2 float64"
    out = invoke(cell_root, "inspect", NB, "--key", "load", "--format", "json").output
    (row,) = json.loads(out)
    assert row["value"].startswith("frame: DataFrame 5×1, names: ['x', 'y'], point: <__main__")
    assert "pd" not in row["value"]  # modules are never variables


# -- forget / gc -------------------------------------------------------------------------


def test_forget_keys(root):
    out = invoke(root, "forget", NB, "fetch", "big").output
    assert "forgot 3 records" in out
    assert current_keys(root) == [("load", 1), ("params", 1)]


def test_forget_checks_every_key_before_forgetting_any(root):
    result = invoke(root, "forget", NB, "fetch", "nope", code=2)
    assert "no step `nope`" in result.output
    assert ("fetch", 1) in current_keys(root)


def test_forget_a_whole_notebook_asks_first(root):
    result = invoke(root, "forget", NB, input="n\n", code=1)
    assert "Forget all 5 steps" in result.output
    assert len(current_keys(root)) == 5
    invoke(root, "forget", NB, input="y\n")
    assert current_keys(root) == []
    invoke(root, "forget", "other.ipynb", "--yes")
    assert current_keys(root, "other.ipynb") == []


def test_forget_a_whole_notebook_without_a_terminal_says_to_pass_yes(root):
    result = invoke(root, "forget", NB, input="", code=1)  # stdin at its end, as in CI
    assert "Aborted!" not in result.output
    assert "needs a confirmation" in result.output and "--yes" in result.output
    assert len(current_keys(root)) == 5


def test_forget_declined_says_nothing_was_forgotten(root):
    result = invoke(root, "forget", NB, input="n\n", code=1)
    assert "nothing forgotten" in result.output and "Aborted!" not in result.output


def all_versions(root, namespace):
    out = invoke(root, "inspect", namespace, "--all", "--format", "json").output
    return [r["status"] for r in json.loads(out)]


def test_gc_dry_run_changes_nothing_then_gc_frees(root, monkeypatch):
    path = object_file(root)
    invoke(root, "forget", NB, "big")
    dry = invoke(root, "gc", "--dry-run", "--grace", "0").output
    assert "would drop 2 events" in dry  # big's record and its forget mark
    assert "would free 156.4 KiB" in dry
    assert path.exists()
    assert all_versions(root, "other.ipynb") == ["earlier", "current"]
    out = invoke(root, "gc", "--grace", "0").output
    assert "drop 2 events" in out and "freed 156.4 KiB" in out
    assert not path.exists()
    assert all_versions(root, "other.ipynb") == ["earlier", "current"]  # kept: 5 versions
    assert len(current_keys(root)) == 4
    assert invoke(root, "gc").output.startswith("drop 0 events")
    monkeypatch.setenv("NBSTEP_KEEP_VERSIONS", "1")
    assert invoke(root, "gc", "--grace", "0").output.startswith("drop 1 event")  # old x
    assert all_versions(root, "other.ipynb") == ["current"]


def test_gc_reports_the_event_logs_as_well_as_object_files(root, monkeypatch):
    from nbstep.cli.text import size

    monkeypatch.setenv("NBSTEP_KEEP_VERSIONS", "1")  # so other.ipynb's old x is for gc

    def logs_size():
        return sum(p.stat().st_size for p in (root / "logs").glob("*.log"))

    before = logs_size()
    dry = invoke(root, "gc", "--dry-run", "--grace", "0").output
    assert "would free 0 B of object files" in dry
    assert f"event logs: {size(before)}\n" in dry
    out = invoke(root, "gc", "--grace", "0").output  # drops other.ipynb's old inline x
    assert "drop 1 event" in out and "freed 0 B of object files" in out
    assert logs_size() < before
    assert f"event logs: {size(before)} -> {size(logs_size())}" in out


def test_gc_keeps_young_unreferenced_files_and_says_so(root):
    path = object_file(root)
    invoke(root, "forget", NB, "big")
    out = invoke(root, "gc").output  # default grace: an hour
    assert "freed 0 B" in out
    assert "kept 1 unreferenced object file (156.4 KiB)" in out
    assert path.exists()


# -- verify --------------------------------------------------------------------------------


def test_verify_a_sound_store(root):
    out = invoke(root, "verify", "--decode").output
    assert "checked 7 records: 6 inline, 1 in 1 object file" in out
    assert "all values are intact" in out


def test_verify_finds_a_damaged_object_file(root):
    path = object_file(root)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    out = invoke(root, "verify", code=1).output
    assert "DAMAGED: 1 record" in out
    assert f"`{NB}` step `big` occurrence 1 (current" in out
    assert "does not match its sha256" in out
    assert f"nbstep forget {NB} big" in out


def test_verify_finds_a_missing_object_file(root):
    object_file(root).unlink()
    out = invoke(root, "verify", code=1).output
    assert "is missing" in out


def damage_inline_value(root, key, namespace=NB):
    """Rewrite a record's inline value in its log as garbage, the frame itself intact."""
    from nbstep.storage.local import frames
    from nbstep.storage.local.namespace_log import log_name

    log = root / "logs" / f"{log_name(namespace)}.log"
    data = log.read_bytes()
    parts = []
    for item in frames.scan(data):
        raw = data[item.offset:item.end]
        if isinstance(item, frames.Frame) and item.event.get("key") == key:
            raw = frames.encode(item.event, b"garbage")
        parts.append(raw)
    log.write_bytes(b"".join(parts))
    (root / "logs" / f"{log_name(namespace)}.idx").unlink(missing_ok=True)


def test_verify_finds_an_inline_value_that_does_not_decode(root):
    damage_inline_value(root, "load")
    out = invoke(root, "verify", code=1).output
    assert "`load` occurrence 1" in out
    assert "does not decode as arrow" in out


def test_inspect_still_lists_records_when_a_value_is_damaged(root):
    damage_inline_value(root, "load")
    result = invoke(root, "inspect", NB)
    assert "1 value cannot be read back (shown as <unreadable>)" in result.stderr
    rows = result.stdout.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["load", "params", "big", "fetch", "fetch"]
    assert "<unreadable" in rows[0] and "{'lr': 0.1" in rows[1]  # the others still show


# -- real processes -------------------------------------------------------------------------


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBSTEP_")}
    return {**env, **extra}


def test_python_m_nbstep_and_console_script(root, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "nbstep", "ls"], capture_output=True, text=True,
        env=_env(NBSTEP_STORE=str(root)), cwd=tmp_path, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert NB in done.stdout
    script = Path(sys.executable).with_name("nbstep")
    done = subprocess.run(
        [str(script), "--store", str(root), "show", NB, "fech"], capture_output=True,
        text=True, env=_env(), cwd=tmp_path, timeout=60,
    )
    assert done.returncode == 2
    assert "Did you mean `fetch`?" in done.stderr
    assert "Traceback" not in done.stderr


def test_verify_exit_code_in_a_subprocess(root, tmp_path):
    object_file(root).unlink()
    done = subprocess.run(
        [sys.executable, "-m", "nbstep", "--store", str(root), "verify"],
        capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=60,
    )
    assert done.returncode == 1
    assert "DAMAGED" in done.stdout
