"""The step API against a real store under tmp_path: the seed's rules and nbstep's."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import nbstep
from nbstep import StepInputMismatch, StepNotPersistedWarning, step
from nbstep.engine.inspect import COLUMNS
from nbstep.engine.runtime import Runtime


@pytest.fixture
def store(store_dir, tmp_path, monkeypatch):
    """A fresh store under tmp_path and the namespace `test-nb` (conftest resets all after)."""
    monkeypatch.chdir(tmp_path)
    nbstep.configure(namespace="test-nb")
    return store_dir


class Counter:
    """A handler that counts its calls, to prove when it did or did not run."""

    def __init__(self, result=None):
        self.calls = []
        self.result = result

    def __call__(self, value=None):
        self.calls.append(value)
        return self.result if self.result is not None else {"got": value}


# -- argument validation: the seed's messages, in the seed's order -----------------


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((), {}, ValueError, "step.run: expected key, optional input, handler, and optional options"),
        (("k",), {}, ValueError, "step.run: expected key, optional input, handler, and optional options"),
        ((1, lambda: 1), {}, TypeError, "step.run: key must be a string, got int"),
        (("  ", lambda: 1), {}, ValueError, "step.run: key cannot be empty"),
        (("k", 5), {}, ValueError, "step.run: handler is required after input"),
        (("k", 5, 6), {}, TypeError, "step.run: handler must be callable, got int"),
        (("k", lambda: 1, [1]), {}, TypeError, "step.run: options must be a dict, got list"),
        (("k", lambda: 1, {"namesapce": "x"}), {}, ValueError, "step.run: unknown option `namesapce`"),
        (("k", lambda: 1), {"bogus": 1}, ValueError, "step.run: unknown option `bogus`"),
        (("k", lambda: 1), {"rerunn": True}, ValueError, "step.run: unknown option `rerunn`; did you mean `rerun`? the options are namespace, on_mismatch, rerun"),
        (("k", lambda: 1, {"namespace": " "}), {}, ValueError, "step.run: options.namespace cannot be empty"),
        (("k", lambda: 1, {"namespace": 3}), {}, TypeError, "step.run: options.namespace must be a string, got int"),
        (("k", lambda: 1, None, 4), {}, ValueError, "step.run: expected at most 3 arguments, got 4"),
        (("k", 1, lambda: 1, None, 4), {}, ValueError, "step.run: expected at most 4 arguments, got 5"),
        (("k", lambda: 1), {"on_mismatch": "ignore"}, ValueError, "step.run: options.on_mismatch must be `error` or `rerun`, got `ignore`"),
        (("k", lambda: 1), {"on_mismatch": 1}, TypeError, "step.run: options.on_mismatch must be a string, got int"),
        (("k", lambda: 1), {"rerun": 1}, TypeError, "step.run: options.rerun must be a bool, got int"),
        (("k", lambda: 1, {"rerun": True}), {"rerun": True}, ValueError, "step.run: option `rerun` given twice"),
    ],
)
def test_validation_messages(store, args, kwargs, error, message):
    with pytest.raises(error) as caught:
        step.run(*args, **kwargs)
    assert str(caught.value).startswith(message)


def test_validation_errors_consume_no_occurrence(store):
    with pytest.raises(TypeError):
        step.run("k", 5, "not callable")
    step.run("k", lambda: "first")
    frame = step.inspect(all_columns=True)
    assert frame["sequence"].tolist() == [1]


def test_the_key_is_never_stripped(store):
    step.run(" k", lambda: 1)
    step.run("k", lambda: 2)
    assert sorted(step.inspect()["key"]) == [" k", "k"]


# -- replay, occurrences, mismatch ---------------------------------------------------


def test_replay_skips_the_handler_and_returns_the_recorded_value(store):
    handler = Counter()
    assert step.run("fetch", {"id": 7}, handler) == {"got": {"id": 7}}
    nbstep.reset()
    again = Counter()
    assert step.run("fetch", {"id": 7}, again) == {"got": {"id": 7}}
    assert len(handler.calls) == 1 and again.calls == []


def test_occurrences_count_per_namespace_and_key(store):
    values = [step.run("loop", i, lambda x: x * 10) for i in range(3)]
    other = step.run("loop", 0, lambda x: -1, namespace="elsewhere")
    assert values == [0, 10, 20] and other == -1
    frame = step.inspect(all_columns=True)
    assert frame["sequence"].tolist() == [1, 2, 3]
    assert step.inspect("elsewhere", all_columns=True)["sequence"].tolist() == [1]
    nbstep.reset()
    handler = Counter()
    assert [step.run("loop", i, handler) for i in range(3)] == [0, 10, 20]
    assert handler.calls == []


def test_a_changed_input_raises_the_seed_mismatch(store):
    step.run("k", 1, lambda x: x)
    nbstep.reset()
    handler = Counter()
    with pytest.raises(StepInputMismatch) as caught:
        step.run("k", "1", handler)
    message = str(caught.value)
    assert message.startswith(
        "step.run: deterministic input mismatch for key `k` occurrence 1 in namespace `test-nb` "
        "(cached sha256:"
    )
    assert ", current sha256:" in message
    assert "rerun=True" in message and "step.forget('k'" in message
    assert "The record was made 20" in message
    assert handler.calls == []
    assert isinstance(caught.value, nbstep.NbstepError)


# -- several versions per slot -----------------------------------------------------------


def test_an_input_seen_before_replays_its_earlier_version(store):
    handler = Counter()
    assert step.run("k", 10, handler) == {"got": 10}
    nbstep.reset()
    assert step.run("k", 20, handler, on_mismatch="rerun") == {"got": 20}
    events = len(step.inspect(history=True))
    # Back to N=10: the default mode ("error") replays the kept version, appends nothing.
    for _ in range(2):
        nbstep.reset()
        replayed = Runtime.instance().stats["replayed"]
        assert step.run("k", 10, handler) == {"got": 10}
        assert Runtime.instance().stats["replayed"] == replayed + 1
        nbstep.reset()
        assert step.run("k", 20, handler) == {"got": 20}
    assert handler.calls == [10, 20]
    frame = step.inspect(history=True)
    assert len(frame) == events
    assert frame["status"].tolist() == ["earlier", "current"]
    # An input no kept version has is still the seed's mismatch, saying so.
    nbstep.reset()
    with pytest.raises(StepInputMismatch) as caught:
        step.run("k", 30, handler)
    assert "No kept version matches it either (1 earlier version of this step kept)." in str(
        caught.value)
    assert handler.calls == [10, 20]
    # rerun=True recomputes even an input a kept version has, as a new version.
    nbstep.reset()
    assert step.run("k", 10, handler, rerun=True) == {"got": 10}
    assert handler.calls == [10, 20, 10]
    assert step.inspect(history=True)["status"].tolist() == ["earlier", "earlier", "current"]


def test_keep_versions_one_keeps_only_the_current_record(store):
    nbstep.configure(keep_versions=1)
    step.run("k", 10, lambda x: x)
    nbstep.reset()
    step.run("k", 20, lambda x: x, on_mismatch="rerun")
    nbstep.reset()
    with pytest.raises(StepInputMismatch, match="no earlier version of this step is kept"):
        step.run("k", 10, lambda x: -x)
    nbstep.reset()
    assert step.run("k", 10, lambda x: -x, on_mismatch="rerun") == -10
    assert step.inspect(history=True)["status"].tolist() == [
        "superseded", "superseded", "current"]


def test_forget_drops_the_earlier_versions_too(store):
    step.run("k", 10, lambda x: x)
    nbstep.reset()
    step.run("k", 20, lambda x: x, on_mismatch="rerun")
    assert step.forget("k") == 1
    nbstep.reset()
    handler = Counter()
    step.run("k", 10, handler)
    assert handler.calls == [10]  # computed again, not replayed from before the forget


def test_keep_versions_is_validated_wherever_it_is_set(store, tmp_path, monkeypatch):
    for bad, words in ((0, "must be an integer >= 1"), (-2, "got -2"), ("5", "must be int"),
                       (True, "got bool"), (2.0, "must be int")):
        with pytest.raises(nbstep.ConfigError, match=words):
            nbstep.configure(keep_versions=bad)
    rt = Runtime.instance()
    nbstep.configure(keep_versions=3)
    assert rt.settings(fresh=True).keep_versions == 3
    monkeypatch.setenv("NBSTEP_KEEP_VERSIONS", " 2 ")
    settings = rt.settings(fresh=True)
    assert settings.keep_versions == 2
    assert settings.sources["keep_versions"] == "environment NBSTEP_KEEP_VERSIONS"
    monkeypatch.setenv("NBSTEP_KEEP_VERSIONS", "many")
    with pytest.raises(nbstep.ConfigError, match="NBSTEP_KEEP_VERSIONS: must be an integer "
                                                 ">= 1.*got `many`"):
        rt.settings(fresh=True)
    monkeypatch.setenv("NBSTEP_KEEP_VERSIONS", "0")
    with pytest.raises(nbstep.ConfigError, match="`keep_versions` must be an integer >= 1"):
        rt.settings(fresh=True)
    monkeypatch.delenv("NBSTEP_KEEP_VERSIONS")
    nbstep.configure(keep_versions=None)
    (tmp_path / "pyproject.toml").write_text("[tool.nbstep]\nkeep_versions = 0\n")
    with pytest.raises(nbstep.ConfigError, match="keep_versions"):
        rt.settings(fresh=True)
    (tmp_path / "pyproject.toml").write_text("[tool.nbstep]\nkeep_versions = 7\n")
    assert rt.settings(fresh=True).keep_versions == 7
    assert rt.store().keep_versions == 7


def test_dict_key_order_does_not_change_the_input(store):
    step.run("k", {"a": 1, "b": 2}, lambda x: "once")
    nbstep.reset()
    assert step.run("k", {"b": 2, "a": 1}, Counter()) == "once"


def test_no_input_and_none_input_hash_the_same(store):
    step.run("k", lambda: "v")
    nbstep.reset()
    assert step.run("k", None, Counter()) == "v"


def test_on_mismatch_rerun_records_a_new_version(store):
    step.run("k", 1, lambda x: x + 100)
    nbstep.reset()
    assert step.run("k", 2, lambda x: x + 100, on_mismatch="rerun") == 102
    nbstep.reset()
    assert step.run("k", 2, Counter()) == 102
    frame = step.inspect(all_columns=True)
    assert frame["status"].tolist() == ["earlier", "current"]
    assert frame["current"].tolist() == [False, True]
    assert frame["result"].tolist() == [101, 102]


def test_configured_on_mismatch_is_the_default(store):
    step.run("k", 1, lambda x: x)
    nbstep.reset()
    nbstep.configure(on_mismatch="rerun")
    assert step.run("k", 2, lambda x: x) == 2


def test_rerun_recomputes_even_when_the_input_is_the_same(store):
    step.run("k", 1, lambda x: "old")
    nbstep.reset()
    assert step.run("k", 1, lambda x: "new", rerun=True) == "new"
    nbstep.reset()
    assert step.run("k", 1, Counter()) == "new"
    assert step.inspect(all_columns=True)["result"].tolist() == ["old", "new"]


def test_a_failing_handler_records_nothing_and_uses_its_occurrence(store):
    def boom():
        raise RuntimeError("api down")

    with pytest.raises(RuntimeError, match="api down"):
        step.run("k", boom)
    assert step.run("k", lambda: "second") == "second"
    frame = step.inspect(all_columns=True)
    assert frame["sequence"].tolist() == [2]
    nbstep.reset()
    assert step.run("k", lambda: "retried") == "retried"


def test_handler_arity(store):
    assert step.run("none", 5, lambda: "no params") == "no params"
    assert step.run("one", 5, lambda x: x) == 5
    assert step.run("star", 5, lambda *a: a) == (5,)

    def two(a, b):
        return a

    with pytest.raises(ValueError, match="handler expects 2 required arguments"):
        step.run("two", 5, two)
    # The arity is checked only when the handler would run: a replay does not check it.
    step.run("two", 5, lambda x: "recorded")
    nbstep.reset()
    with pytest.raises(ValueError, match="expects 2"):
        step.run("two", 5, two)  # occurrence 1 was never recorded
    assert step.run("two", 5, two) == "recorded"  # occurrence 2 replays


def test_a_callable_is_never_an_input(store):
    assert step.run("k", dict) == {}  # dict is the handler, called with no input
    with pytest.raises(TypeError, match="options must be a dict, got function"):
        step.run("k2", len, lambda: 1)  # len is the handler; the lambda is not an input


def test_options_dict_and_keywords(store):
    assert step.run("k", 1, lambda x: x, {"namespace": "a"}) == 1
    assert step.run("k", 1, lambda x: x, namespace="b") == 1
    assert len(step.inspect("a")) == 1 and len(step.inspect({"namespace": "b"})) == 1


# -- values that cannot be recorded ----------------------------------------------------


def test_an_unrecordable_result_is_returned_with_a_warning(store):
    def gen():
        return (i for i in range(3))

    with pytest.warns(StepNotPersistedWarning, match="step `g` occurrence 1 in namespace `test-nb` was not recorded") as warned:
        result = step.run("g", gen)
    assert list(result) == [0, 1, 2]
    assert "generator" in str(warned[0].message)
    assert step.inspect().empty
    nbstep.reset()
    with pytest.warns(StepNotPersistedWarning):
        step.run("g", gen)  # runs again: nothing was recorded


def test_an_unhashable_input_is_a_type_error_and_consumes_nothing(store):
    with pytest.raises(TypeError):
        step.run("k", object(), lambda x: 1)
    step.run("k", 1, lambda x: x)
    assert step.inspect(all_columns=True)["sequence"].tolist() == [1]


# -- inspect and forget ------------------------------------------------------------------


def test_inspect_all_columns_is_the_full_frame(store):
    step.run("a", lambda: {"x": [1, 2]})
    step.run("b", lambda: (1, 2))
    frame = step.inspect(all_columns=True)
    assert list(frame.columns) == COLUMNS
    assert type(frame) is pd.DataFrame
    assert frame["key"].tolist() == ["a", "b"]
    assert frame["result"].tolist() == [{"x": [1, 2]}, (1, 2)]
    assert str(frame["occurred_at"].dt.tz) == "UTC"
    assert frame["codec"].iloc[0] == "json"
    assert frame["current"].dtype == bool
    assert (frame["duration_s"] >= 0).all() and (frame["size_bytes"] > 0).all()
    assert frame["event_id"].is_monotonic_increasing
    lean = step.inspect(all_columns=True, results=False)
    assert list(lean.columns) == [c for c in COLUMNS if c != "result"] and len(lean) == 2


def test_inspect_reads_at_a_glance(store):
    import numpy as np

    step.run("frame", lambda: pd.DataFrame({"a": range(1000), "b": 1.0, "c": "x"}))
    step.run("array", lambda: np.zeros((100, 10)))
    step.run("frames", lambda: {"a": pd.DataFrame(), "b": pd.DataFrame(), "c": pd.DataFrame()})
    step.run("numbers", lambda: list(range(100)))
    step.run("params", lambda: {"lr": 0.1})
    step.run("text", lambda: "word " * 50)
    frame = step.inspect()
    assert list(frame.columns) == ["key", "occurrence", "status", "recorded_at", "duration",
                                   "saved", "value"]
    assert frame["value"].tolist() == [
        "DataFrame 1,000×3", "ndarray float64 (100, 10)", "dict of 3: a, b, c",
        "list of 100", "{'lr': 0.1}", "'" + "word " * 11 + "wor…",
    ]
    assert frame["occurrence"].tolist() == [1] * 6 and set(frame["status"]) == {"current"}
    assert str(frame["recorded_at"].dt.tz) == "UTC"
    assert frame["duration"].dtype == float and (frame["duration"] >= 0).all()
    # Nothing replayed in this process yet: `saved` is what each replay would save.
    assert frame["saved"].tolist() == frame["duration"].tolist()
    with pd.option_context("display.max_columns", None, "display.width", 250):
        shown = repr(frame)
    header, first = shown.splitlines()[:2]
    assert header.split() == list(frame.columns)
    assert first.split()[1:5] == ["frame", "1", "current",
                                  frame["recorded_at"][0].strftime("%Y-%m-%d")]
    assert first.split()[5] == frame["recorded_at"][0].strftime("%H:%M:%S")  # to the second
    assert first.split()[7] in ("µs", "ms", "s")  # durations as a person reads them
    assert first.endswith("DataFrame 1,000×3") and "[0, 1, 2" not in shown
    html = frame._repr_html_()
    assert "<td>DataFrame 1,000×3</td>" in html and "dict of 3: a, b, c" in html
    # A filtered frame reads as well.
    assert "ndarray float64 (100, 10)" in repr(frame[frame["key"] == "array"])


def test_inspect_results_adds_the_values_and_history_adds_old_records(store):
    step.run("k", lambda: {"a": pd.DataFrame({"x": [1, 2]})})
    step.run("k", lambda: "second")
    nbstep.reset()
    step.run("k", lambda: "new", rerun=True)
    nbstep.reset()
    assert step.run("k", Counter()) == "new"  # replays, counted in this process
    assert step.run("k", Counter()) == "second"
    nbstep.reset()
    assert step.run("k", Counter()) == "new"

    frame = step.inspect(results=True)
    assert list(frame.columns)[-2:] == ["value", "result"]
    assert frame["result"].tolist() == ["second", "new"]  # in the order recorded
    assert frame["key"].tolist() == ["k", "k"] and frame["occurrence"].tolist() == [2, 1]
    # `saved`: the time the replays in this process saved.
    assert frame["saved"].tolist() == [frame["duration"][0], 2 * frame["duration"][1]]
    everything = step.inspect(history=True, results=True)
    assert everything["status"].tolist() == ["earlier", "current", "current"]
    assert everything["value"][0] == "dict of 1: a"
    assert isinstance(everything["result"][0]["a"], pd.DataFrame)
    assert "  x\n" not in repr(everything)  # the frame in the dict is not printed out
    lean = step.inspect(results=False)
    assert "value" not in lean.columns and "result" not in lean.columns
    assert step.inspect({"results": False, "history": True})["status"].tolist() == [
        "earlier", "current", "current"]
    assert len(step.inspect(all_columns=True, history=False)) == 2


def test_a_long_inspect_frame_shows_its_ends_summarized(store):
    for i in range(8):
        step.run("k", i, lambda n: pd.DataFrame({"x": range(n + 1)}))
    frame = step.inspect(results=True)
    with pd.option_context("display.max_rows", 4, "display.min_rows", 4,
                           "display.max_columns", None, "display.width", 250):
        lines = repr(frame).splitlines()
        html = frame._repr_html_()
    assert lines[1].endswith("DataFrame 1×1  DataFrame 1×1")
    assert lines[-3].endswith("DataFrame 8×1  DataFrame 8×1") and lines[-1] == "[8 rows x 8 columns]"
    assert "DataFrame 8×1" in html and "DataFrame 4×1" not in html


def test_inspect_argument_errors(store):
    with pytest.raises(ValueError, match="^step.inspect: namespace cannot be empty$"):
        step.inspect(" ")
    with pytest.raises(TypeError, match="^step.inspect: expected namespace string or options dict, got int$"):
        step.inspect(3)
    with pytest.raises(ValueError, match="^step.inspect: expected at most 1 argument, got 2$"):
        step.inspect("a", "b")
    with pytest.raises(ValueError, match="^step.inspect: unknown option `nope`; the options are "
                                         "namespace, results, history, all_columns$"):
        step.inspect({"nope": 1})
    with pytest.raises(ValueError, match="^step.inspect: unknown option `histroy`; did you mean "
                                         "`history`\\?"):
        step.inspect(histroy=True)
    with pytest.raises(TypeError, match="^step.inspect: history must be a bool, got str$"):
        step.inspect(history="yes")
    with pytest.raises(ValueError, match="^step.inspect: option `results` given twice"):
        step.inspect({"results": True}, results=False)
    assert step.inspect("never-used").empty
    assert list(step.inspect("never-used").columns) == [
        "key", "occurrence", "status", "recorded_at", "duration", "saved", "value"]


def test_inspect_does_not_move_the_counters(store):
    step.run("k", lambda: 1)
    step.inspect()
    step.run("k", lambda: 2)
    assert step.inspect(all_columns=True)["sequence"].tolist() == [1, 2]


def test_forget_makes_steps_recompute(store):
    step.run("a", lambda: 1)
    step.run("a", lambda: 2)
    step.run("b", lambda: 3)
    assert step.forget("a") == 2
    assert step.forget("a") == 0
    nbstep.reset()
    assert step.run("a", lambda: 10) == 10
    assert step.run("b", Counter()) == 3
    frame = step.inspect(all_columns=True)
    # a1 was forgotten, then recorded again: the newer record supersedes it.
    assert frame["status"].tolist() == ["superseded", "forgotten", "current", "current"]
    assert frame["key"].tolist() == ["a", "a", "b", "a"]
    assert step.forget() == 2
    with pytest.raises(ValueError, match="step.forget: key cannot be empty"):
        step.forget("")


# -- async ---------------------------------------------------------------------------------


def test_arun_awaits_async_handlers_and_replays(store):
    async def fetch(x):
        await asyncio.sleep(0)
        return [x, x]

    assert asyncio.run(step.arun("a", 3, fetch)) == [3, 3]
    nbstep.reset()
    assert asyncio.run(step.arun("a", 3, Counter())) == [3, 3]
    assert asyncio.run(step.arun("sync", 1, lambda x: x + 1)) == 2
    with pytest.raises(TypeError, match="^step.arun: key must be a string"):
        asyncio.run(step.arun(1, lambda: 1))


# -- durability across processes -------------------------------------------------------------


CHILD = textwrap.dedent(
    """
    import json, os, sys
    import nbstep
    from nbstep import step
    calls = []
    def handler(x):
        calls.append(x)
        import pandas as pd, numpy as np, decimal, datetime
        return {
            "frame": pd.DataFrame({"a": [1.5, float("nan")], "b": pd.Categorical(["x", "y"])}),
            "tuple": (1, 2), "decimal": decimal.Decimal("1.10"),
            "when": datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.timezone.utc),
            "array": np.arange(6, dtype="int16").reshape(2, 3), "set": {1, 2},
        }
    value = step.run("load", {"n": 2}, handler)
    print(json.dumps({"calls": len(calls), "types": sorted(type(v).__name__ for v in value.values()),
                      "frame": value["frame"].dtypes.astype(str).tolist(),
                      "array": [str(value["array"].dtype), list(value["array"].shape)]}))
    """
)


def test_record_in_one_process_and_replay_in_another(store, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(CHILD)
    env = {**os.environ, "NBSTEP_STORE": str(store)}
    env.pop("NBSTEP_NAMESPACE", None)
    runs = [
        subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
    first, second = (__import__("json").loads(r.stdout.strip().splitlines()[-1]) for r in runs)
    assert first["calls"] == 1 and second["calls"] == 0
    assert first["types"] == second["types"] == sorted(
        ["DataFrame", "tuple", "Decimal", "datetime", "ndarray", "set"]
    )
    assert second["frame"] == ["float64", "category"]
    assert second["array"] == ["int16", [2, 3]]
    # The script's path relative to the store root is its namespace.
    assert step.inspect("job.py")["key"].tolist() == ["load"]


def test_store_layout(store):
    step.run("small", lambda: "x")
    step.run("big", lambda: b"\0" * 300_000)
    assert (store / ".gitignore").read_text().strip().endswith("*")
    objects = [p for p in (store / "objects").rglob("*") if p.is_file()]
    assert len(objects) == 1 and objects[0].stat().st_size == 300_000
    Runtime.instance().store().release()
    (log,) = (store / "logs").glob("*.log")
    assert log.stat().st_size < 4_000  # the small value inline, the big one beside it
    nbstep.reset()
    assert step.run("big", Counter()) == b"\0" * 300_000
    frame = step.inspect(all_columns=True)
    assert frame["stored"].tolist() == ["inline", "object"]


def test_namespace_from_path_is_relative_to_the_store_root(tmp_path):
    from nbstep.core.location import namespace_for_path

    root = tmp_path
    (tmp_path / "sub").mkdir()
    assert namespace_for_path(tmp_path / "sub" / "a.ipynb", root) == "sub/a.ipynb"
    assert namespace_for_path(Path("/elsewhere/b.ipynb"), root) == "/elsewhere/b.ipynb"


def test_configure_rerun_recomputes_every_step(store):
    step.run("k", 1, lambda x: "old")
    nbstep.reset()
    nbstep.configure(rerun=True)
    try:
        assert step.run("k", 1, lambda x: "new") == "new"
    finally:
        nbstep.configure(rerun=None)
    nbstep.reset()
    assert step.run("k", 1, Counter()) == "new"


def test_stats_count_replayed_computed_and_failed_steps(store):
    stats = Runtime.instance().stats
    before = dict(stats)
    step.run("a", lambda: 1)
    nbstep.reset()
    step.run("a", lambda: 1)
    with pytest.raises(ZeroDivisionError):
        step.run("b", lambda: 1 / 0)
    nbstep.reset()
    with pytest.raises(StepInputMismatch):
        step.run("a", 5, lambda x: x)
    assert stats["computed"] - before["computed"] == 1
    assert stats["replayed"] - before["replayed"] == 1
    assert stats["failed"] - before["failed"] == 2


def test_default_namespace_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("NBSTEP_STORE", str(tmp_path / ".nbstep"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NBSTEP_NAMESPACE", raising=False)
    rt = Runtime.instance()
    try:
        monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "sub" / "nb.ipynb"))
        rt.reset()
        assert rt.default_namespace() == "sub/nb.ipynb"
        monkeypatch.setenv("JPY_SESSION_NAME", "0b5c1d8e-uuid-like")
        rt.reset()
        assert rt.default_namespace() == "session:0b5c1d8e-uuid-like"
        (tmp_path / "pyproject.toml").write_text('[tool.nbstep]\nnamespace = "project-wide"\n')
        rt.reset()
        assert rt.default_namespace() == "project-wide"
        nbstep.configure(namespace="configured")
        assert rt.default_namespace() == "configured"
        monkeypatch.setenv("NBSTEP_NAMESPACE", "from-env")
        assert rt.default_namespace() == "from-env"
    finally:
        nbstep.configure(namespace=None)
        rt.drop_store()
        rt.reset()


def test_keyword_only_handler_and_inspect_keyword(store):
    with pytest.raises(ValueError, match="required keyword-only parameter `x`"):
        step.run("kw", 1, lambda *, x: x)
    step.run("k", 1, lambda x: x, namespace="nb-a")
    assert step.inspect(namespace="nb-a")["key"].tolist() == ["k"]
    with pytest.raises(ValueError, match="namespace given twice"):
        step.inspect("nb-a", namespace="nb-a")
    with pytest.raises(nbstep.ConfigError, match="finite number of seconds"):
        nbstep.configure(busy_timeout=float("nan"))


def test_a_replay_that_cannot_be_read_counts_as_a_failed_step(store):
    nbstep.configure(inline_limit=10)
    try:
        step.run("big", lambda: b"v" * 100)
        for path in (store / "objects").rglob("*"):
            if path.is_file():
                path.unlink()
        nbstep.reset()
        failed = Runtime.instance().stats["failed"]
        with pytest.raises(nbstep.StepReplayError):
            step.run("big", lambda: "x")
        assert Runtime.instance().stats["failed"] == failed + 1
    finally:
        nbstep.configure(inline_limit=None)


def test_pyproject_sets_step_runs_default_on_mismatch(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    step.run("k", 1, lambda x: "one")
    nbstep.reset()
    with pytest.raises(StepInputMismatch):
        step.run("k", 2, lambda x: "two")
    (tmp_path / "pyproject.toml").write_text('[tool.nbstep]\non_mismatch = "rerun"\n')
    nbstep.reset()  # settings are read again for the next run
    assert step.run("k", 2, lambda x: "two") == "two"


def test_rerun_is_refused_as_a_project_setting(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[tool.nbstep]\nrerun = true\n")
    with pytest.raises(nbstep.ConfigError, match="`rerun` cannot be a project setting"):
        step.run("k", lambda: 1)
