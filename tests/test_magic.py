"""%%step in process: an IPython shell whose run_cell re-raises (jupysql's TestingShell).

Each test gets its own shell, store and notebook path. Whether a body ran is read
from a side effect: cells call ``counter.hit(name)`` on a module the body imports.
"""

from __future__ import annotations

import inspect
import os
import sys
import types
import warnings

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import nbstep
from nbstep import StepNotPersistedWarning
from nbstep.codecs import cell as cell_codec
from nbstep.core.durations import duration
from nbstep.engine.runtime import Runtime
from nbstep.notebook import recording
from nbstep.notebook.extension import extension_of


class TestingShell(InteractiveShell):
    """``run_cell`` re-raises the cell's error; ``!cmd`` goes through ``sys.stdout``
    (``system_piped``), as in ipykernel."""

    __test__ = False  # a helper, not a test class

    def run_cell(self, raw_cell, *args, **kwargs):
        result = super().run_cell(raw_cell, *args, **kwargs)
        result.raise_error()
        return result

    def system(self, cmd):
        return self.system_piped(cmd)


@pytest.fixture
def counter():
    module = types.ModuleType("nbstep_test_counter")
    module.hits = []
    module.hit = module.hits.append
    sys.modules[module.__name__] = module
    yield module
    sys.modules.pop(module.__name__, None)


@pytest.fixture
def ip(store_dir, tmp_path, monkeypatch, counter):
    monkeypatch.chdir(tmp_path)
    # The notebook's identity, as jupyter_server passes it to the kernel.
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "analysis.ipynb"))
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    config.InteractiveShell.colors = "nocolor"
    shell = TestingShell.instance(config=config)
    shell.run_cell("%load_ext nbstep")
    yield shell
    shell.run_cell("%unload_ext nbstep")
    TestingShell.clear_instance()


def run(ip, source):
    """Execute a cell as a notebook does (a new execution count, history kept)."""
    return ip.run_cell(source, store_history=True)


def records(key=None):
    frame = nbstep.step.inspect("analysis.ipynb", results=False, all_columns=True)
    frame = frame[frame["status"] == "current"]
    return frame if key is None else frame[frame["key"] == key]


SLOW = """\
%%step slow
import nbstep_test_counter as counter
counter.hit("slow")
squares = [n * n for n in range(size)]  # size comes from another cell
print("computed", len(squares))
sum(squares)
"""


# -- replay ---------------------------------------------------------------------------


def test_second_execution_replays_variables_outputs_and_result(ip, counter, capsys):
    run(ip, "size = 4")
    first = run(ip, SLOW)
    assert counter.hits == ["slow"]
    assert first.result == 14
    assert capsys.readouterr().out.splitlines() == ["computed 4", "Out[2]: 14"]

    run(ip, "del squares, counter")
    second = run(ip, SLOW)
    assert counter.hits == ["slow"]  # the body did not run again
    assert second.result == 14
    assert ip.user_ns["squares"] == [0, 1, 4, 9]
    assert ip.user_ns["counter"] is counter  # a module comes back by import
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "computed 4"
    # After the outputs (a replayed clear_output() must not wipe it), before Out[n].
    assert out[1].startswith("nbstep ⟲ replayed `slow` - recorded ")
    assert out[1].endswith(" UTC, saved " + duration(records("slow")["duration_s"].iloc[0]))
    assert out[2] == "Out[4]: 14"
    assert Runtime.instance().stats["replayed"] == 1
    assert list(records("slow")["namespace"]) == ["analysis.ipynb"]


def test_comment_and_whitespace_edits_still_replay(ip, counter):
    run(ip, "size = 3")
    run(ip, SLOW)
    run(ip, SLOW.replace("# size comes from another cell", "# edited").replace(" = [", " =  ["))
    assert counter.hits == ["slow"]


def test_outputs_replay_in_order_with_rich_displays(ip, counter, capsys):
    cell = """\
%%step show
import sys
import nbstep_test_counter as counter
from IPython.display import HTML, display
counter.hit("show")
print("one")
print("two", file=sys.stderr)
display(HTML("<b>three</b>"))
print("four")
"""
    published = []
    original = ip.display_pub.publish

    def spy(data, metadata=None, **kwargs):
        published.append((data, metadata))
        return original(data, metadata, **kwargs)

    ip.display_pub.publish = spy
    run(ip, cell)
    live = capsys.readouterr()
    run(ip, cell)
    again = capsys.readouterr()
    assert counter.hits == ["show"]
    *shown, (notice, notice_metadata) = published
    assert [d["text/html"] for d, _ in shown] == ["<b>three</b>", "<b>three</b>"]
    # nbstep's line is a display of its own: muted HTML, a one-line text/plain, tagged.
    assert notice["text/plain"].startswith("nbstep ⟲ replayed `show` - recorded ")
    assert notice["text/html"].startswith('<div class="nbstep-notice nbstep-replayed"')
    assert "<code>show</code>" in notice["text/html"]
    assert notice_metadata == {"nbstep": {"notice": "replayed"}}
    assert live.out == "one\n<IPython.core.display.HTML object>\nfour\n"
    assert again.out.startswith(live.out)
    assert again.out[len(live.out):].startswith("nbstep ⟲ replayed `show`")  # after the outputs
    assert again.err == live.err == "two\n"


def test_semicolon_hides_the_result_on_both_runs(ip, capsys):
    run(ip, "%%step quiet_result\nx = 5\nx;")
    run(ip, "%%step quiet_result\nx = 5\nx;")
    assert "Out[" not in capsys.readouterr().out
    assert ip.user_ns["x"] == 5


def test_magics_and_shell_commands_run_inside_the_body(ip, counter, capsys):
    cell = """\
%%step tools
import nbstep_test_counter as counter
counter.hit("tools")
%cd .
names = !echo listed
!echo from-the-shell
"""
    run(ip, cell)
    first = capsys.readouterr().out
    run(ip, "del names")
    run(ip, cell)
    second = capsys.readouterr().out
    assert "from-the-shell" in first
    assert second.count("from-the-shell") == 1
    assert counter.hits == ["tools"]
    assert list(ip.user_ns["names"]) == ["listed"]


def test_top_level_await_runs_and_replays(ip, counter):
    cell = """\
%%step waited
import asyncio
import nbstep_test_counter as counter
await asyncio.sleep(0)
counter.hit("waited")
value = 7
value * 6
"""
    assert run(ip, cell).result == 42
    run(ip, "del value")
    assert run(ip, cell).result == 42
    assert ip.user_ns["value"] == 7
    assert counter.hits == ["waited"]


def test_functions_and_classes_come_back_from_source_with_live_globals(ip, counter):
    cell = """\
%%step defs
import nbstep_test_counter as counter
counter.hit("defs")

def scaled(v):
    # doubles, then adds the notebook's offset
    return 2 * v + offset

class Box:
    def __init__(self, v):
        self.v = v

box = Box(3)
handlers = {"scaled": scaled}
"""
    run(ip, "offset = 1")
    run(ip, cell)
    run(ip, "del scaled, Box, box, handlers")
    run(ip, cell)
    ns = ip.user_ns
    assert counter.hits == ["defs"]
    assert ns["scaled"](1) == 3
    assert ns["scaled"].__globals__ is ns  # not a copy: later edits to offset count
    assert "return 2 * v + offset" in inspect.getsource(ns["scaled"])
    assert isinstance(ns["box"], ns["Box"]) and ns["box"].v == 3
    assert ns["handlers"]["scaled"] is ns["scaled"]


def test_shared_objects_stay_shared_and_deletions_replay(ip):
    cell = """\
%%step shared
pair = [[1], None]
pair[1] = pair[0]
alias = pair[0]
del scratch
"""
    run(ip, "scratch = 1")
    run(ip, cell)
    run(ip, "del pair, alias\nscratch = 2")
    run(ip, cell)
    ns = ip.user_ns
    assert ns["pair"][0] is ns["pair"][1] is ns["alias"]
    assert "scratch" not in ns


def test_in_place_changes_to_variables_the_cell_reads_are_replayed(ip, counter):
    run(ip, "import pandas as pd\nframe = pd.DataFrame({'a': [1, 2]})\nitems = [1]")
    cell = """\
%%step mutate
import nbstep_test_counter as counter
counter.hit("mutate")
frame["b"] = frame["a"] * 10
items.append(2)
"""
    run(ip, cell)
    # A new kernel would have the values from before the cell: simulate that.
    run(ip, "frame = pd.DataFrame({'a': [1, 2]})\nitems = [1]")
    run(ip, cell)
    assert counter.hits == ["mutate"]
    assert list(ip.user_ns["frame"]["b"]) == [10, 20]
    assert ip.user_ns["items"] == [1, 2]


def test_a_cell_that_rebinds_what_it_reads_replays_when_executed_again(ip, counter):
    run(ip, "x = 1")
    cell = "%%step bump\nimport nbstep_test_counter as counter\ncounter.hit('bump')\nx = x + 1"
    run(ip, cell)
    run(ip, cell)  # x is now 2, which is what this step produced: not a new input
    assert ip.user_ns["x"] == 2
    assert counter.hits == ["bump"]
    run(ip, "x = 1")  # as a new kernel running the notebook from the top would have it
    run(ip, cell)
    assert counter.hits == ["bump"]
    assert ip.user_ns["x"] == 2


_NEW_KERNEL = """\
import json, sys
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance(colors="nocolor")
ip.run_cell("%load_ext nbstep")
for source in json.load(open(sys.argv[1])):
    if not ip.run_cell(source, store_history=True).success:
        sys.exit(1)
"""


def in_new_process(tmp_path, *cells):
    """Run cells in a new IPython process (a kernel restart); return what it printed."""
    import json
    import subprocess

    script, sources = tmp_path / "kernel.py", tmp_path / "cells.json"
    script.write_text(_NEW_KERNEL)
    sources.write_text(json.dumps(cells))
    env = {**os.environ, "JPY_SESSION_NAME": str(tmp_path / "analysis.ipynb"),
           "NBSTEP_STORE": str(tmp_path / ".nbstep")}
    done = subprocess.run([sys.executable, str(script), str(sources)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


DEFINITIONS = """\
%%step definitions
from dataclasses import dataclass, field
from typing import NamedTuple

K = 10

def deco(fn):
    fn.k = K
    return fn

@deco
def f(x, k=K):
    return x + k

class C(Base):
    scale = K * 2

@dataclass
class Cfg:
    lr: float = 0.1
    tags: list = field(default_factory=list)

class P(NamedTuple):
    a: int

def twice():
    return 1

def twice():
    return 2

cfg = Cfg(lr=0.5)
p = P(3)
first = twice
c = C()
K = 100
"""
AFTER_DEFINITIONS = """\
import dataclasses, inspect
print(f(1), f.k, C.scale, isinstance(c, C), isinstance(c, Base))
print(cfg, dataclasses.replace(cfg, lr=0.2), Cfg(), p, P(4), twice(), first())
print(f.__globals__ is globals(), inspect.getsource(f).splitlines()[0])
"""


def test_definitions_replay_as_they_were_made_in_a_new_kernel(tmp_path):
    """A class built with names the cell imports; defaults, decorators and class
    attributes that read a variable the cell rebinds later; a name defined twice."""
    cells = ("class Base:\n    pass", DEFINITIONS, AFTER_DEFINITIONS,
             "%%step later\nboth = (Cfg(lr=1.0), C())", "print('later', both[0].lr)")
    first = in_new_process(tmp_path, *cells)
    second = in_new_process(tmp_path, *cells)  # a new kernel: replayed
    assert "nbstep ⟲ replayed `definitions`" in second and "nbstep ⟲ replayed `later`" in second
    assert "recomputing" not in second
    expected = [
        "11 10 20 True True",
        "Cfg(lr=0.5, tags=[]) Cfg(lr=0.2, tags=[]) Cfg(lr=0.1, tags=[]) P(a=3) P(a=4) 2 2",
        "True @deco",
        "later 1.0",
    ]
    assert [line for line in first.splitlines() if not line.startswith("note:")] == expected
    assert [line for line in second.splitlines() if not line.startswith("nbstep ⟲ replayed")] == expected


def test_a_class_defined_by_the_cell_comes_back_with_its_instances(ip):
    run(ip, "class Base:\n    pass")
    run(ip, DEFINITIONS)
    names = ["deco", "f", "C", "Cfg", "P", "twice", "cfg", "p", "first", "c", "K"]
    run(ip, "del " + ", ".join(names))
    run(ip, DEFINITIONS)
    ns = ip.user_ns
    assert (ns["f"](1), ns["f"].k, ns["C"].scale, ns["K"]) == (11, 10, 20, 100)
    assert isinstance(ns["cfg"], ns["Cfg"]) and isinstance(ns["c"], ns["Base"])
    assert ns["first"] is ns["twice"] and ns["first"]() == 2  # one object, as recorded
    assert ns["f"].__globals__ is ns


def test_lru_cache_and_cached_property_replay(ip):
    cell = """\
%%step cached
import functools

class Area:
    def __init__(self, side):
        self.side = side

    @functools.cached_property
    def value(self):
        return self.side ** 2

@functools.lru_cache(maxsize=8)
def double(n):
    return 2 * n

area = Area(3)
"""
    run(ip, cell)
    run(ip, "del functools, Area, double, area")
    run(ip, cell)
    ns = ip.user_ns
    assert ns["area"].value == 9 and ns["double"](4) == 8
    assert ns["double"].cache_parameters()["maxsize"] == 8


def test_an_object_pickled_by_a_name_the_cell_defines_is_not_recorded(ip):
    cell = """\
%%step named
class Named:
    def __init__(self, name):
        self.__qualname__, self.__module__ = name, "__main__"

    def __reduce__(self):
        return self.__qualname__

thing = Named("thing")
"""
    with pytest.warns(StepNotPersistedWarning, match="`thing` .* pickle stores it by its name"):
        run(ip, cell)
    assert records("named").empty


def test_records_another_python_or_nbstep_made_are_recomputed(ip, counter, monkeypatch,
                                                             capsys):
    cell = "%%step code\nimport nbstep_test_counter as counter\ncounter.hit(1)\nf = lambda: 1"
    run(ip, cell)
    monkeypatch.setattr(recording, "PYTHON", "3.99")  # a kernel of another Python
    capsys.readouterr()
    run(ip, cell)
    assert "holds functions compiled by Python" in capsys.readouterr().out
    monkeypatch.setattr(cell_codec, "FORMAT", cell_codec.FORMAT + 1)  # a newer nbstep
    run(ip, cell)
    assert "was made by an older nbstep" in capsys.readouterr().out
    assert counter.hits == [1, 1, 1]
    run(ip, "%%step data\nx = 1")  # no code in it: any Python replays it
    monkeypatch.setattr(recording, "PYTHON", "3.98")
    run(ip, "%%step data\nx = 1")
    assert "nbstep ⟲ replayed `data`" in capsys.readouterr().out


def test_an_equal_upstream_value_in_a_new_kernel_is_a_changed_input(ip, counter, capsys):
    run(ip, "x = 1\nitems = [1]")
    cell = ("%%step inc\nimport nbstep_test_counter as counter\ncounter.hit('inc')\n"
            "x = x + 1\nitems.append(2)")
    run(ip, cell)
    run(ip, cell)  # the same kernel: x and items are what this step made, so it replays
    assert counter.hits == ["inc"]
    assert (ip.user_ns["x"], ip.user_ns["items"]) == (2, [1, 2])
    # A new kernel, whose upstream cell was edited to make what the step had made.
    extension_of(ip).forget_session()
    run(ip, "x = 2\nitems = [1, 2]")
    capsys.readouterr()
    run(ip, cell)
    assert counter.hits == ["inc", "inc"]
    assert (ip.user_ns["x"], ip.user_ns["items"]) == (3, [1, 2, 2])
    assert "nbstep ↻ recomputing `inc`: variable `items` and variable `x` changed" in (
        capsys.readouterr().out)
    run(ip, cell)  # and again in this kernel: replays what it just made
    assert counter.hits == ["inc", "inc"]
    assert (ip.user_ns["x"], ip.user_ns["items"]) == (3, [1, 2, 2])


def test_an_object_changed_after_the_step_is_a_changed_input(ip, counter):
    run(ip, "items = [1]")
    cell = "%%step grow\nimport nbstep_test_counter as counter\ncounter.hit(1)\nitems.append(2)"
    run(ip, cell)
    run(ip, "items.append(3)")  # the very object, changed by a later cell
    run(ip, cell)
    assert counter.hits == [1, 1]
    assert ip.user_ns["items"] == [1, 2, 3, 2]


# -- changed inputs --------------------------------------------------------------------


def test_changed_variable_recomputes_and_says_which(ip, counter, capsys):
    run(ip, "size = 3")
    run(ip, SLOW)
    run(ip, "size = 5")
    capsys.readouterr()
    result = run(ip, SLOW)
    out = capsys.readouterr().out
    assert out.startswith("nbstep ↻ recomputing `slow`: variable `size` changed since the record of ")
    assert counter.hits == ["slow", "slow"]
    assert result.result == 30
    assert list(records("slow")["sequence"]) == [1]  # a new version of the same step


def test_changed_code_recomputes_and_says_so(ip, counter, capsys):
    run(ip, "size = 3")
    run(ip, SLOW)
    capsys.readouterr()
    run(ip, SLOW.replace("n * n", "n * n * n"))
    assert capsys.readouterr().out.startswith("nbstep ↻ recomputing `slow`: the code changed")
    assert counter.hits == ["slow", "slow"]


def test_a_changed_helper_function_counts_as_a_changed_input(ip, counter, capsys):
    run(ip, "def helper(v):\n    return v + 1")
    cell = "%%step use_helper\nimport nbstep_test_counter as counter\ncounter.hit(1)\ny = helper(1)"
    run(ip, cell)
    run(ip, "def helper(v):\n    # same code, new comment\n    return v + 1")
    run(ip, cell)
    assert counter.hits == [1]
    run(ip, "def helper(v):\n    return v + 2")
    capsys.readouterr()
    run(ip, cell)
    assert "variable `helper` changed" in capsys.readouterr().out
    assert counter.hits == [1, 1]
    assert ip.user_ns["y"] == 3


def test_on_mismatch_error_raises_the_seed_message_as_usage_error(ip, counter):
    run(ip, "size = 3")
    strict = SLOW.replace("%%step slow", "%%step slow --on-mismatch error")
    run(ip, strict)
    run(ip, "size = 4")
    with pytest.raises(UsageError) as raised:
        run(ip, strict)
    message = str(raised.value)
    assert message.startswith(
        "%%step: deterministic input mismatch for key `slow` occurrence 1 in namespace "
        "`analysis.ipynb` (cached sha256:"
    )
    assert "What changed: variable `size`." in message
    assert "`%%step slow --rerun`" in message
    assert counter.hits == ["slow"]
    assert Runtime.instance().stats["failed"] == 1


def test_session_and_project_defaults_for_on_mismatch(ip, tmp_path, counter):
    run(ip, "size = 3")
    run(ip, SLOW)
    run(ip, "size = 4")
    run(ip, "%step_config --on-mismatch error")
    with pytest.raises(UsageError, match="What changed: variable `size`"):
        run(ip, SLOW)
    run(ip, "%step_config --reset")
    (tmp_path / "pyproject.toml").write_text('[tool.nbstep]\nmagic_on_mismatch = "error"\n')
    with pytest.raises(UsageError, match="deterministic input mismatch"):
        run(ip, SLOW)
    # The flag on the cell wins over both.
    run(ip, SLOW.replace("%%step slow", "%%step slow --on-mismatch rerun"))
    assert counter.hits == ["slow", "slow"]


def test_rerun_forces_a_new_version(ip, counter):
    run(ip, "size = 2")
    run(ip, SLOW)
    run(ip, SLOW.replace("%%step slow", "%%step slow --rerun"))
    assert counter.hits == ["slow", "slow"]
    assert list(records("slow")["reason"]) == ["rerun"]


# -- failures -------------------------------------------------------------------------


def test_a_cell_that_raises_records_nothing_and_keeps_its_traceback(ip, counter):
    cell = """\
%%step boom
import nbstep_test_counter as counter
counter.hit("boom")
partial = 1
1 / 0
"""
    with pytest.raises(ZeroDivisionError):
        run(ip, cell)
    assert ip.InteractiveTB.structured_traceback  # shown through IPython as usual
    with pytest.raises(ZeroDivisionError):
        run(ip, cell)
    assert counter.hits == ["boom", "boom"]
    assert records("boom").empty
    assert Runtime.instance().stats["failed"] == 2  # what `nbstep run` reports


def test_traceback_points_at_the_cell_line(ip, capsys):
    with pytest.raises(ZeroDivisionError):
        run(ip, "%%step boom\nx = 1\n1 / 0")
    shown = capsys.readouterr()
    text = shown.out + shown.err
    assert "----> 3 1 / 0" in text
    assert "1 %%step boom" in text
    # As for any cell: no `get_ipython().run_cell_magic(...)` frame, no nbstep frames.
    frames = [line for line in text.splitlines() if line.startswith(("Cell In", "File "))]
    assert frames == ["Cell In[1], line 3"]
    assert "run_cell_magic" not in text
    assert "skipping hidden" not in text


def test_traceback_of_an_error_in_a_called_function_shows_both_frames(ip, capsys):
    with pytest.raises(ZeroDivisionError):
        run(ip, "%%step deep\ndef f(v):\n    return v / 0\ny = f(1)")
    text = capsys.readouterr().out
    frames = [line for line in text.splitlines() if line.startswith(("Cell In", "File "))]
    assert frames == ["Cell In[1], line 4", "Cell In[1], line 3, in f(v)"]
    # The exception keeps its whole traceback (for %debug): only what is shown changes.
    assert "run_sync" in str(_frame_names(sys.last_traceback))
    run(ip, "x = 1")
    with pytest.raises(ZeroDivisionError):
        run(ip, "1 / 0")  # an ordinary cell is not affected
    assert "Cell In[3], line 1" in capsys.readouterr().out


def _frame_names(tb):
    names = []
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return names


def test_traceback_of_an_awaiting_body_starts_at_the_cell_line(ip, capsys):
    with pytest.raises(ZeroDivisionError):
        run(ip, "%%step waits\nimport asyncio\nawait asyncio.sleep(0)\n1 / 0")
    text = capsys.readouterr().out
    frames = [line for line in text.splitlines() if line.startswith(("Cell In", "File "))]
    assert frames == ["Cell In[1], line 4"]


def test_a_syntax_error_is_reported_by_ipython_at_the_cell_line(ip, capsys):
    with pytest.raises(SyntaxError) as raised:
        run(ip, "%%step typo\nx = 1\ny = (\n")
    assert raised.value.lineno == 3
    assert "nbstep" not in capsys.readouterr().err  # no stack of nbstep's frames
    assert records("typo").empty
    assert "x" not in ip.user_ns


def test_unpersistable_variable_warns_and_records_nothing(ip, counter):
    cell = """\
%%step connect
import sqlite3
import nbstep_test_counter as counter
counter.hit("connect")
con = sqlite3.connect(":memory:")
rows = 3
"""
    with pytest.warns(StepNotPersistedWarning) as caught:
        run(ip, cell)
    message = str(caught[0].message)
    assert "variable `con` (sqlite3.Connection) cannot be persisted" in message
    assert "%%step `connect` was not recorded" in message
    assert ip.user_ns["rows"] == 3  # the cell's effects stay
    assert records("connect").empty
    with pytest.warns(StepNotPersistedWarning):
        run(ip, cell)
    assert counter.hits == ["connect", "connect"]


def test_with_targets_that_cannot_persist_do_not_block_the_record(ip, tmp_path, counter):
    cell = """\
%%step read
import nbstep_test_counter as counter
counter.hit("read")
with open("data.txt") as fh:
    text = fh.read()
"""
    (tmp_path / "data.txt").write_text("hello")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(ip, cell)
        run(ip, cell)
    assert counter.hits == ["read"]
    assert ip.user_ns["text"] == "hello"


def test_an_unpersistable_result_is_kept_as_what_it_showed(ip, capsys):
    cell = "%%step gen\nx = 1\n(i for i in range(3))"
    run(ip, cell)
    first = capsys.readouterr().out
    result = run(ip, cell)
    again = capsys.readouterr().out
    assert "<generator object" in first
    assert repr(result.result).startswith("<generator object")
    assert again.splitlines()[1].startswith("Out[2]: <generator object")


def test_a_store_failure_while_recording_is_a_usage_error(ip, monkeypatch):
    from nbstep.engine.occurrence import Occurrence

    def failing_finish(self, *args, **kwargs):
        raise nbstep.NbstepError("could not record step `saved`: disk full")

    monkeypatch.setattr(Occurrence, "finish", failing_finish)
    with pytest.raises(UsageError, match="disk full"):
        run(ip, "%%step saved\nvalue = 1")
    assert ip.user_ns["value"] == 1


def test_nbstep_errors_raised_by_the_cells_own_code_keep_their_type(ip):
    run(ip, "step.run('inner', 1, lambda v: v)")
    with pytest.raises(nbstep.StepInputMismatch):
        run(ip, "%%step outer\nstep.run('inner', 2, lambda v: v, on_mismatch='error')")


def test_a_record_made_by_step_run_is_not_replayed_as_a_cell(ip, counter, capsys):
    run(ip, "step.run('shared_key', 1, lambda v: v)")
    run(ip, "%%step shared_key\nimport nbstep_test_counter as counter\ncounter.hit(1)")
    assert "the record was not made by %%step" in capsys.readouterr().out
    assert counter.hits == [1]


def test_a_replay_that_fails_says_rerun_and_counts_as_failed(ip, store_dir):
    run(ip, "%%step big\nblob = b'x' * 200_000")  # above the inline limit: an object file
    for path in (store_dir / "objects").rglob("*"):
        if path.is_file() and path.parent.name != "tmp":
            path.unlink()
    with pytest.raises(UsageError) as raised:
        run(ip, "%%step big\nblob = b'x' * 200_000")
    message = str(raised.value)
    assert "object file" in message and "is missing" in message
    assert "`%%step big --rerun`" in message and "rerun=True" not in message
    assert Runtime.instance().stats["failed"] == 1  # what `nbstep run` reports
    run(ip, "%%step big --rerun\nblob = b'x' * 200_000")
    assert len(ip.user_ns["blob"]) == 200_000


def test_a_record_that_cannot_be_restored_counts_as_failed_not_replayed(ip, counter):
    run(ip, "%%step uses_module\nimport nbstep_test_counter as counter\nn = 1")
    del sys.modules["nbstep_test_counter"]  # no longer importable
    with pytest.raises(UsageError, match=r"Run the cell as `%%step uses_module --rerun`"):
        run(ip, "%%step uses_module\nimport nbstep_test_counter as counter\nn = 1")
    stats = Runtime.instance().stats
    assert (stats["failed"], stats["replayed"], stats["saved_s"]) == (1, 0, 0.0)


def test_a_replayed_clear_output_does_not_wipe_the_replayed_line(ip, capsys):
    cell = ("%%step progress\nfrom IPython.display import clear_output\n"
            "print('working')\nclear_output()\nprint('done')")
    events = []
    original = ip.display_pub.clear_output

    def spy(wait=False):
        events.append(("clear", capsys.readouterr().out))
        return original(wait)

    ip.display_pub.clear_output = spy
    run(ip, cell)
    capsys.readouterr()
    run(ip, cell)
    cleared = events[-1]
    assert "replayed" not in cleared[1]  # nothing of the replay line before the clear
    after = capsys.readouterr().out
    assert after.endswith("done\n" + after.splitlines()[-1] + "\n")
    assert after.splitlines()[-1].startswith("nbstep ⟲ replayed `progress`")


def test_two_cells_with_one_key_are_told_apart_by_cell_id(ip, capsys):
    def execute(source, cell_id):
        return ip.run_cell(source, store_history=True, cell_id=cell_id)

    execute("%%step dup\nx = 1", "cell-a")
    capsys.readouterr()
    execute("%%step dup\ny = 2", "cell-b")
    shown = capsys.readouterr()
    assert ("warning: key `dup` is also used by another cell of this notebook; give each "
            "cell its own key") in shown.err
    assert shown.out.startswith("nbstep ↻ recomputing `dup`: the code changed")
    execute("%%step dup\ny = 2", "cell-b")  # the same cell again: replays, no warning
    shown = capsys.readouterr()
    assert "nbstep ⟲ replayed `dup`" in shown.out and "warning" not in shown.err
    # cell-a's own record is a kept earlier version: it replays.
    execute("%%step dup --on-mismatch error\nx = 1", "cell-a")
    assert "nbstep ⟲ replayed `dup`" in capsys.readouterr().out
    with pytest.raises(UsageError, match="also used by another cell"):
        execute("%%step dup --on-mismatch error\nx = 5", "cell-a")
    # Without cell ids (a plain IPython shell) nothing is said.
    run(ip, "%%step dup\nz = 3")
    assert "warning" not in capsys.readouterr().err
    assert records("dup")["key"].tolist() == ["dup"]


# -- occurrences, loading, the other magics ---------------------------------------------


def test_step_run_loops_number_occurrences_per_cell_execution(ip, counter):
    cell = "got = [step.run('item', n, lambda v: (counter.hit(v), v * 10)[1]) for n in range(3)]"
    run(ip, "import nbstep_test_counter as counter")
    run(ip, cell)
    run(ip, cell)  # counters restarted: occurrences 1..3 again, all replayed
    assert counter.hits == [0, 1, 2]
    assert ip.user_ns["got"] == [0, 10, 20]
    assert sorted(records("item")["sequence"]) == [1, 2, 3]


def test_a_key_used_twice_in_one_execution_counts_1_then_2(ip, counter):
    cell = ("a = step.run('twice', 1, lambda v: 'first')\n"
            "b = step.run('twice', 2, lambda v: 'second')")
    run(ip, cell)
    run(ip, cell)
    assert (ip.user_ns["a"], ip.user_ns["b"]) == ("first", "second")
    assert sorted(records("twice")["sequence"]) == [1, 2]


def test_quiet_flag_and_setting_silence_the_replayed_line(ip, capsys):
    run(ip, "%%step q --quiet\nx = 1")
    run(ip, "%%step q --quiet\nx = 1")
    assert "replayed" not in capsys.readouterr().out
    run(ip, "%%step q2\nx = 1")
    run(ip, "%step_config --quiet")
    run(ip, "%%step q2\nx = 1")
    assert "replayed" not in capsys.readouterr().out
    run(ip, "%step_config --no-quiet")
    run(ip, "%%step q2\nx = 1")
    assert "nbstep ⟲ replayed `q2`" in capsys.readouterr().out


def test_namespace_option_records_elsewhere(ip):
    run(ip, "%%step elsewhere --namespace exp-1\nx = 1")
    assert list(nbstep.step.inspect("exp-1")["key"]) == ["elsewhere"]
    assert records("elsewhere").empty


def test_steps_shows_this_notebooks_steps(ip):
    run(ip, "%%step listed\nx = 1")
    frame = run(ip, "%steps").result
    assert list(frame["key"]) == ["listed"]
    assert list(frame.columns) == ["key", "occurrence", "status", "recorded_at", "duration",
                                   "saved", "value"]
    assert frame["value"].tolist() == ["x: 1"]
    assert run(ip, "%steps --all-columns").result["namespace"].iloc[0] == "analysis.ipynb"


def test_steps_follows_step_inspects_defaults(ip):
    run(ip, "%%step listed\nx = 1")
    run(ip, "%%step listed --rerun\nx = 2")
    run(ip, "%%step listed\nx = 2")  # a replay, counted in `saved`
    frame = run(ip, "%steps").result
    assert frame["status"].tolist() == ["current"]
    assert frame["saved"].tolist() == frame["duration"].tolist()
    assert run(ip, "%steps --history").result["status"].tolist() == ["earlier", "current"]
    lean = run(ip, "%steps --no-results").result
    assert list(lean.columns) == ["key", "occurrence", "status", "recorded_at", "duration",
                                  "saved"]  # no empty column
    assert run(ip, "%steps --results").result["result"].tolist() == [{"x": 2}]
    with pytest.raises(UsageError, match="--results and --no-results contradict"):
        run(ip, "%steps --results --no-results")


def test_unknown_options_suggest_the_closest(ip):
    with pytest.raises(UsageError) as raised:
        run(ip, "%%step a --rerunn\nx = 1")
    assert str(raised.value) == (
        "unknown option `--rerunn` for %%step; did you mean `--rerun`? Its options: --rerun, "
        "--namespace/-n, --on-mismatch, --quiet/-q, --allow-untracked.")
    assert records("a").empty and "x" not in ip.user_ns
    with pytest.raises(UsageError, match="^unknown option `-rerun` for %%step; did you mean "
                                         "`--rerun`\\?"):
        run(ip, "%%step a -rerun\nx = 1")
    with pytest.raises(UsageError, match="^unknown option `--quite` for %step_config; did you "
                                         "mean `--quiet`\\? Its options: --on-mismatch, "):
        run(ip, "%step_config --quite")
    with pytest.raises(UsageError, match="^unknown option `--histroy` for %steps; did you "
                                         "mean `--history`\\?"):
        run(ip, "%steps --histroy")
    with pytest.raises(UsageError, match="^unknown option `--frobnicate` for %steps\\. Its "):
        run(ip, "%steps --frobnicate")
    # Abbreviations argparse resolves, and values, still work.
    run(ip, "%%step b --rer -n exp-1\nx = 1")
    assert nbstep.step.inspect("exp-1")["key"].tolist() == ["b"]


def test_step_config_without_arguments_shows_settings_and_their_source(ip, capsys):
    run(ip, "%step_config --on-mismatch error")
    capsys.readouterr()
    run(ip, "%step_config")
    out = capsys.readouterr().out
    assert "on mismatch  error    (%step_config / nbstep.configure)" in out
    assert "analysis.ipynb" in out


def test_a_key_with_a_space_says_to_quote_it(ip):
    with pytest.raises(UsageError, match='unrecognized arguments: b. A key is one word: quote '
                                         'it if it has spaces, as in %%step "a b"'):
        run(ip, "%%step a b\nx = 1")
    run(ip, '%%step "a b"\nx = 1')
    assert records("a b")["key"].tolist() == ["a b"]


def test_steps_of_an_unknown_notebook_suggests_close_names(ip):
    run(ip, "%%step listed\nx = 1")
    with pytest.raises(UsageError) as raised:
        run(ip, "%steps analysis.ipnb")
    message = str(raised.value)
    assert message.startswith("%steps: no notebook `analysis.ipnb` in the store ")
    assert "Did you mean `analysis.ipynb`?" in message
    assert list(run(ip, "%steps analysis.ipynb").result["key"]) == ["listed"]


def test_step_config_names_a_new_notebooks_own_namespace(ip, monkeypatch, capsys):
    monkeypatch.setenv("JPY_SESSION_NAME", "3f2b8c1e-6d4a-4b8e-9f0a-1c2d3e4f5a6b")
    run(ip, "%step_config")
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("namespace")][0]
    assert "session:3f2b8c1e-6d4a-4b8e-9f0a-1c2d3e4f5a6b" in line
    assert "this notebook's own namespace until the kernel restarts under its saved name" in line
    assert "shared" not in line


def test_inspect_shows_a_cells_variables_as_a_dict(ip):
    run(ip, "%%step inspected\nimport math\nrows = [1, 2]\ndef f():\n    return 1\nlen(rows)")
    frame = run(ip, "%steps --results").result
    (value,) = frame["result"]
    assert sorted(value) == ["f", "rows"]  # a module is not a variable
    assert value["rows"] == [1, 2]
    assert value["f"]() == 1
    assert frame["value"].tolist() == ["f: function f, rows: [1, 2]"]
    assert run(ip, "step.inspect(results=True)").result["result"][0].keys() == value.keys()
    run(ip, "%%step shown\nsum(rows)")
    assert run(ip, "%steps").result["value"].tolist()[-1] == "Out: 3"


def test_bad_arguments_are_usage_errors(ip):
    with pytest.raises(UsageError):
        run(ip, "%%step\nx = 1")
    with pytest.raises(UsageError, match="key cannot be empty"):
        run(ip, "%%step ''\nx = 1")
    with pytest.raises(UsageError):
        run(ip, "%%step k --on-mismatch sometimes\nx = 1")


def test_unload_removes_magics_hooks_and_step(ip):
    assert ip.user_ns["step"] is nbstep.step
    run(ip, "%unload_ext nbstep")
    assert "step" not in ip.user_ns
    assert "step" not in ip.magics_manager.magics["cell"]
    assert "steps" not in ip.magics_manager.magics["line"]
    assert "step_config" not in ip.magics_manager.magics["line"]
    assert not [cb for cb in ip.events.callbacks["pre_run_cell"]
                if getattr(cb, "__module__", "").startswith("nbstep.")]
    assert Runtime.instance().user_ns is None
    with pytest.raises(UsageError, match="Cell magic `%%step` not found"):
        run(ip, "%%step gone\nx = 1")
    run(ip, "%load_ext nbstep")
    run(ip, "%%step back\nx = 1")


def test_reset_keeps_the_step_name(ip):
    run(ip, "%reset -f")
    assert run(ip, "step").result is nbstep.step


def test_the_process_wide_rerun_setting_recomputes_cells(ip, counter):
    run(ip, "size = 2")
    run(ip, SLOW)
    nbstep.configure(rerun=True)  # what `nbstep run --rerun` sets
    run(ip, SLOW)
    assert counter.hits == ["slow", "slow"]


def test_a_users_own_step_is_left_alone(store_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shell = TestingShell.instance(config=Config({"HistoryManager": {"hist_file": ":memory:"}}))
    try:
        shell.user_ns["step"] = "mine"
        with pytest.warns(UserWarning, match="already has a variable named `step`"):
            shell.run_cell("%load_ext nbstep")
        assert shell.user_ns["step"] == "mine"
        shell.run_cell("%unload_ext nbstep")
        assert shell.user_ns["step"] == "mine"
    finally:
        shell.run_cell("%unload_ext nbstep")
        TestingShell.clear_instance()


def test_an_unknown_notebook_is_said_once(ip, monkeypatch, capsys):
    monkeypatch.delenv("JPY_SESSION_NAME")
    monkeypatch.setenv("JPY_SESSION_NAME", "3f2b8c1e-6d4a-4b8e-9f0a-1c2d3e4f5a6b")
    run(ip, "%%step a\nx = 1")
    run(ip, "%%step b\nx = 1")
    out = capsys.readouterr().out
    uuid = "3f2b8c1e-6d4a-4b8e-9f0a-1c2d3e4f5a6b"
    assert out.count(f"the session name `{uuid}` is not a saved notebook's path") == 1
    # Its own namespace: never `default`, which other unnamed notebooks would share.
    assert list(nbstep.step.inspect(f"session:{uuid}")["key"]) == ["a", "b"]
    assert nbstep.step.inspect("default").empty


def test_a_kernel_without_any_notebook_name_says_so_once(ip, monkeypatch, capsys):
    monkeypatch.delenv("JPY_SESSION_NAME")
    ip.user_ns.pop("__session__", None)
    run(ip, "%%step a\nx = 1")
    run(ip, "%%step b\nx = 1")
    out = capsys.readouterr().out
    assert out.count("nbstep cannot tell which notebook this is") == 1
    assert list(nbstep.step.inspect("default")["key"]) == ["a", "b"]


def test_autoload_respects_nbstep_autoload(monkeypatch, store_dir):
    from nbstep.notebook import autoload as magic_autoload

    shell = TestingShell.instance(config=Config({"HistoryManager": {"hist_file": ":memory:"}}))
    try:
        monkeypatch.setenv("NBSTEP_AUTOLOAD", "0")
        magic_autoload.load_ipython_extension(shell)
        assert "step" not in shell.magics_manager.magics["cell"]
        monkeypatch.setenv("NBSTEP_AUTOLOAD", "1")
        magic_autoload.load_ipython_extension(shell)
        assert "step" in shell.magics_manager.magics["cell"]
        # Loaded under the name "nbstep", so the usual commands manage it.
        shell.run_cell("%unload_ext nbstep")
        assert "step" not in shell.magics_manager.magics["cell"]
    finally:
        shell.run_cell("%unload_ext nbstep")
        TestingShell.clear_instance()


def test_a_decorators_change_to_a_notebook_variable_replays(tmp_path):
    """`@register` fills REGISTRY, which the cell never reads itself: the record keeps
    it, holding the very function the replay restores."""
    cells = ("REGISTRY = {}\ndef register(fn):\n    REGISTRY[fn.__name__] = fn\n    return fn",
             "%%step reg\n@register\ndef alpha():\n    return 'a'",
             "print('REGISTRY:', sorted(REGISTRY), REGISTRY['alpha'] is alpha, alpha())",
             "LOG = []\nclass Logger:\n    def log(self, m):\n        LOG.append(m)\n"
             "logger = Logger()",
             "%%step logged\nlogger.log('hi')",
             "print('LOG:', LOG)")
    first = in_new_process(tmp_path, *cells)
    second = in_new_process(tmp_path, *cells)
    assert "nbstep ⟲ replayed `reg`" in second and "nbstep ⟲ replayed `logged`" in second
    assert "LOG: ['hi']" in first and "LOG: ['hi']" in second
    assert "REGISTRY: ['alpha'] True a" in first
    assert "REGISTRY: ['alpha'] True a" in second


def test_earlier_cells_objects_in_defaults_are_kept_by_reference(tmp_path):
    """A default holding an earlier cell's connection (cannot be pickled) or large
    buffer (must not be copied): recorded as that variable's name, the very object
    after a replay."""
    cells = ("import sqlite3\nconn = sqlite3.connect(':memory:')\nbig = bytearray(16_000_000)",
             "%%step q\ndef query(sql, c=conn):\n    return c.execute(sql).fetchall()",
             "%%step tot\ndef total(arr=big):\n    return len(arr)\nholder = [big]",
             "print('same', query.__defaults__[0] is conn, total.__defaults__[0] is big,"
             " holder[0] is big, query('select 1'), total())")
    first = in_new_process(tmp_path, *cells)
    second = in_new_process(tmp_path, *cells)
    assert "nbstep ⟲ replayed `q`" in second and "nbstep ⟲ replayed `tot`" in second, second
    assert "same True True True [(1,)] 16000000" in first
    assert "same True True True [(1,)] 16000000" in second
    size = sum(p.stat().st_size for p in (tmp_path / ".nbstep").rglob("*") if p.is_file())
    assert size < 4_000_000
    # The record refers to `conn2`, which the cell does not read by name (it holds
    # the object `objs["c"]` is): an input all the same, so without it the step
    # recomputes instead of failing.
    setup = ("import sqlite3\nobjs = {'c': sqlite3.connect(':memory:')}\nconn2 = objs['c']",
             "%%step ref\ndef f(c=objs['c']):\n    return c.execute('select 2').fetchall()",
             "print('ref', f())")
    in_new_process(tmp_path, *setup)
    third = in_new_process(tmp_path, setup[0].rsplit("\n", 1)[0], *setup[1:])
    assert "nbstep ↻ recomputing `ref`: variable `conn2` (no longer defined) changed" in third, third
    assert "ref [(2,)]" in third


def test_a_step_reading_an_attrs_class_of_a_replayed_step_replays(tmp_path):
    """attrs' generated methods (text in linecache, or a closure of attrs' own module)
    and the cell's own functions hash the same before and after a by-value replay."""
    pytest.importorskip("attr")
    cells = ("%%step defs\nimport attr\n@attr.s(auto_attribs=True)\nclass AC:\n"
             "    v: int = 0\n    def double(self):\n        return self.v * 2\n"
             "def helper(a):\n    return a.double() + 1",
             "%%step use\na1 = AC(1)\nh = helper(a1)",
             "print('use', a1, h, a1 == AC(1), a1 < AC(2))")
    first = in_new_process(tmp_path, *cells)
    second = in_new_process(tmp_path, *cells)
    assert "nbstep ⟲ replayed `defs`" in second and "nbstep ⟲ replayed `use`" in second, second
    assert "recomputing" not in second
    assert "use AC(v=1) 3 True True" in first and "use AC(v=1) 3 True True" in second
