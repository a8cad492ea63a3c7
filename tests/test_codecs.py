"""Round trips through nbstep.codecs: same value, same type, the right codec.

Every value is decoded four ways, as the store can hand it over: from bytes, from a
memoryview, and from an mmap of an object file, read-only and copy-on-write.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import fractions
import hashlib
import json
import math
import mmap
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
import types
import uuid
import zoneinfo
from pathlib import Path

import numpy as np
import pandas as pd
import pandas.testing as tm
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbstep.codecs import CODECS, Encoded, decode, encode
from nbstep.codecs.streamed import Streamed
from nbstep.errors import NotPersistable

# -- helpers -------------------------------------------------------------------


def encoded_bytes(encoded: Encoded, tmp_path: Path) -> bytes:
    """The encoded bytes; for a Streamed value, also what it writes to a file, which
    must be the same bytes."""
    data = encoded.data
    if not isinstance(data, Streamed):
        return bytes(memoryview(data))
    raw = bytes(data)
    written = tmp_path / f"streamed-{hashlib.sha256(raw).hexdigest()}"
    written.touch()
    data.write_to(str(written))
    assert written.read_bytes() == raw, "the streamed file differs from the bytes"
    return raw


def decode_all_ways(encoded: Encoded, tmp_path: Path) -> list[object]:
    """Decode from bytes, memoryview, and an mmap (read-only and copy-on-write)."""
    raw = encoded_bytes(encoded, tmp_path)
    results = [decode(encoded.codec, raw), decode(encoded.codec, memoryview(raw))]
    if raw:
        path = tmp_path / f"object-{hashlib.sha256(raw).hexdigest()}"
        path.write_bytes(raw)
        for access in (mmap.ACCESS_READ, mmap.ACCESS_COPY):
            with open(path, "rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, access=access)
            results.append(decode(encoded.codec, mapped))
        assert path.read_bytes() == raw, "decoding changed the object file"
    return results


def assert_same(a: object, b: object) -> None:
    """Equal and of the same type all the way down; NaN equals NaN."""
    assert type(a) is type(b), f"{type(a)} != {type(b)}"
    if isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)  # type: ignore[arg-type]
    elif isinstance(a, dict):
        assert list(a) == list(b)  # type: ignore[call-overload]
        for key in a:
            assert_same(a[key], b[key])  # type: ignore[index]
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)  # type: ignore[arg-type]
        for x, y in zip(a, b, strict=True):  # type: ignore[call-overload]
            assert_same(x, y)
    elif isinstance(a, (set, frozenset)):
        # NaN-free by construction of the strategies below; compare as sets.
        assert a == b
        assert {type(x) for x in a} == {type(x) for x in b}  # type: ignore[attr-defined]
    else:
        assert a == b


def roundtrip(value: object, tmp_path: Path, codec: str | None = None) -> list[object]:
    encoded = encode(value)
    if codec is not None:
        assert encoded.codec == codec
    assert encoded.codec in CODECS
    assert encoded.size == len(encoded_bytes(encoded, tmp_path))
    return decode_all_ways(encoded, tmp_path)


def assert_frame_same(left: pd.DataFrame, right: object) -> None:
    assert type(right) is pd.DataFrame
    tm.assert_frame_equal(
        left, right, check_exact=True, check_dtype=True, check_index_type=True,
        check_column_type=True, check_frame_type=True, check_names=True, check_freq=True,
        check_flags=True,
    )
    assert left.attrs == right.attrs


def assert_series_same(left: pd.Series, right: object) -> None:
    assert type(right) is pd.Series
    tm.assert_series_equal(
        left, right, check_exact=True, check_dtype=True, check_index_type=True,
        check_series_type=True, check_names=True, check_freq=True, check_flags=True,
    )
    assert left.attrs == right.attrs


def assert_array_same(left: np.ndarray, right: object) -> None:
    assert type(right) is np.ndarray
    assert right.dtype == left.dtype
    assert right.shape == left.shape
    equal_nan = left.dtype.kind in "fcmM"
    assert np.array_equal(left, right, equal_nan=equal_nan)
    assert left.tobytes() == right.tobytes()  # bit for bit: -0.0, NaN payloads
    assert right.flags.writeable


# Module-level so that plain pickle finds them by reference.
@dataclasses.dataclass
class Point:
    x: int
    y: float


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    LOW = 1


class Mode(enum.StrEnum):
    FAST = "fast"


class Text(str):
    pass


def module_level_function(x: int) -> int:
    return x + 1


# -- the Encoded record and the API surface ------------------------------------


def test_encoded_is_an_immutable_slotted_record() -> None:
    encoded = Encoded("json", b"1")
    with pytest.raises(AttributeError):
        encoded.codec = "pickle"  # type: ignore[misc]
    assert not hasattr(encoded, "__dict__")
    assert encoded.size == 1


def test_codecs_lists_every_codec_encode_can_choose() -> None:
    assert set(CODECS) == {"json", "arrow", "npy", "bytes", "pickle", "cloudpickle"}


def test_unknown_codec_names_the_known_ones_and_the_close_match() -> None:
    with pytest.raises(ValueError) as info:
        decode("jsn", b"1")
    message = str(info.value)
    assert "'jsn'" in message
    for name in CODECS:
        assert name in message
    assert "Did you mean 'json'?" in message


def test_import_does_not_pull_in_heavy_libraries() -> None:
    code = (
        "import sys, nbstep.codecs as c; c.encode({'a': 1}); c.decode('json', b'1');"
        "print(sorted(m for m in ('pandas', 'numpy', 'pyarrow', 'cloudpickle')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# -- json ------------------------------------------------------------------------

JSON_VALUES = [
    {"a": 1, "b": [1, 2]},
    {},
    [],
    "",
    "naïve ☃ 𝄞",
    0,
    -(2**100),
    True,
    False,
    None,
    1.5,
    -0.0,
    1e308,
    {"nested": {"deep": [{"x": [None, True, 2.5, "s"]}]}},
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
def test_json_values_get_json_and_come_back_with_the_same_types(
    value: object, tmp_path: Path
) -> None:
    for back in roundtrip(value, tmp_path, "json"):
        assert_same(value, back)


def test_json_is_compact_utf8_text() -> None:
    encoded = encode({"é": [1, 2], "b": None})
    assert encoded.data == '{"é":[1,2],"b":null}'.encode()
    assert json.loads(bytes(encoded.data)) == {"é": [1, 2], "b": None}


NOT_JSON = [
    (1, 2),
    {1: "a"},
    {"a": (1, 2)},
    [1, (2,)],
    float("inf"),
    -float("inf"),
    {"x": float("inf")},
    collections.OrderedDict(a=1),
    collections.defaultdict(list, a=[1]),
    Level.LOW,
    Mode.FAST,
    Text("subclass"),
    {"k": Level.LOW},
    {Mode.FAST: 1},
    10 ** 5000,  # more digits than int() may print by default
    "lone \ud800 surrogate",
]


@pytest.mark.parametrize("value", NOT_JSON, ids=lambda v: type(v).__name__)
def test_values_json_would_change_are_pickled(value: object, tmp_path: Path) -> None:
    for back in roundtrip(value, tmp_path, "pickle"):
        assert_same(value, back)


def test_nan_is_pickled_and_comes_back_as_nan(tmp_path: Path) -> None:
    for back in roundtrip(float("nan"), tmp_path, "pickle"):
        assert type(back) is float and math.isnan(back)


def test_a_self_containing_list_is_pickled_not_a_recursion_error(tmp_path: Path) -> None:
    value: list[object] = [1]
    value.append(value)
    for back in roundtrip(value, tmp_path, "pickle"):
        assert isinstance(back, list) and back[1] is back


json_leaves = (
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=True, allow_infinity=True)
)
hashable_leaves = st.none() | st.booleans() | st.integers() | st.text() | st.floats(
    allow_nan=False
)
json_like = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5), children, max_size=4)
        | st.dictionaries(st.integers() | st.text(max_size=3), children, max_size=3)
        | st.tuples(children, children)
        | st.lists(children, max_size=3).map(tuple)
        | st.frozensets(hashable_leaves, max_size=3)
        | st.sets(hashable_leaves | st.tuples(hashable_leaves), max_size=3)
    ),
    max_leaves=20,
)


@given(json_like)
@settings(max_examples=300, deadline=None)
def test_json_like_values_round_trip_with_the_same_types(value: object) -> None:
    encoded = encode(value)
    back = decode(encoded.codec, encoded.data)
    assert_same(value, back)
    if encoded.codec == "json":
        # What SQL sees is plain JSON that gives back the same value.
        assert_same(value, json.loads(bytes(encoded.data).decode("utf-8")))
    elif encoded.codec == "cloudpickle":
        # Only the documented false positive: the string "__main__" in the data.
        assert b"__main__" in pickle.dumps(value, protocol=5)
    else:
        assert encoded.codec == "pickle"


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False,
                                                                      allow_infinity=False),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
    max_leaves=20,
))
@settings(max_examples=200, deadline=None)
def test_every_exact_json_value_gets_the_json_codec(value: object) -> None:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be UTF-8
        assert encode(value).codec == "pickle"
        return
    assert encode(value).codec == "json"


# -- bytes and other Python values -----------------------------------------------


@pytest.mark.parametrize("value", [b"", b"\x00\xffraw", bytes(range(256)) * 1000])
def test_bytes_are_stored_raw(value: bytes, tmp_path: Path) -> None:
    encoded = encode(value)
    assert encoded.codec == "bytes"
    assert bytes(encoded.data) == value  # no framing
    for back in decode_all_ways(encoded, tmp_path):
        assert_same(value, back)


PICKLED = [
    (1, "a", (2.5, None)),
    {1, 2, 3},
    frozenset({"a", "b"}),
    {(1, 2): "tuple key", 3: [None]},
    bytearray(b"mutable"),
    datetime.datetime(2024, 5, 1, 12, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    datetime.date(2024, 5, 1),
    datetime.timedelta(days=2, microseconds=3),
    decimal.Decimal("1.10"),
    fractions.Fraction(1, 3),
    uuid.UUID(int=12345),
    complex(1, -2),
    Point(1, 2.5),
    [Point(1, 2.5), Point(3, float("inf"))],
    Color.RED,
    types.SimpleNamespace(a=1, b=[2]),
    np.float64(1.5),
    np.int32(7),
    pd.Timestamp("2024-01-01", tz="UTC"),
    pd.Index([1, 2, 3], name="i"),
    module_level_function,
    Path("/tmp/x"),
    range(3, 9, 2),
]


@pytest.mark.parametrize("value", PICKLED, ids=lambda v: type(v).__name__)
def test_other_picklable_values_are_pickled_faithfully(value: object, tmp_path: Path) -> None:
    for back in roundtrip(value, tmp_path, "pickle"):
        if isinstance(value, pd.Index):
            tm.assert_index_equal(value, back, exact=True)  # type: ignore[arg-type]
        else:
            assert_same(value, back)


def test_decimal_keeps_its_exponent(tmp_path: Path) -> None:
    for back in roundtrip(decimal.Decimal("1.10"), tmp_path):
        assert str(back) == "1.10"


def test_the_string_main_inside_data_still_round_trips(tmp_path: Path) -> None:
    value = {"module": "__main__", "n": (1, 2)}
    for back in roundtrip(value, tmp_path):  # pickle or cloudpickle, both fine
        assert_same(value, back)


# -- cloudpickle -----------------------------------------------------------------


def test_a_lambda_is_cloudpickled_and_callable_after_decode(tmp_path: Path) -> None:
    offset = 10
    for back in roundtrip(lambda x: x + offset, tmp_path, "cloudpickle"):
        assert back(1) == 11  # type: ignore[operator]


def test_nested_functions_and_local_classes_are_cloudpickled(tmp_path: Path) -> None:
    def make() -> tuple[object, object]:
        @dataclasses.dataclass
        class Local:
            a: int

        def inner(v: int) -> int:
            return v * 2

        return Local(3), inner

    instance, inner = make()
    for back in roundtrip(instance, tmp_path, "cloudpickle"):
        assert type(back).__name__ == "Local" and back.a == 3  # type: ignore[attr-defined]
        assert back == type(back)(3)
    for back in roundtrip(inner, tmp_path, "cloudpickle"):
        assert back(4) == 8  # type: ignore[operator]


NOTEBOOK_CELL = """
import dataclasses

@dataclasses.dataclass
class Result:
    total: int

def summarize(values):
    return Result(sum(values))

value = {"fn": summarize, "result": summarize([1, 2, 3])}
"""


def test_notebook_definitions_are_cloudpickled_and_load_in_a_fresh_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A kernel runs cells in __main__; a new process has a different __main__, so a
    # by-reference pickle of these would fail there. Stand in a fresh __main__.
    main = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", main)
    exec(compile(NOTEBOOK_CELL, "<cell>", "exec"), main.__dict__)
    value = main.__dict__["value"]
    assert pickle.loads(pickle.dumps(value))  # plain pickle works in this process ...
    encoded = encode(value)
    assert encoded.codec == "cloudpickle"  # ... but would not in the next one
    path = tmp_path / "object"
    path.write_bytes(bytes(encoded.data))
    script = textwrap.dedent(f"""
        import mmap
        from nbstep.codecs import decode
        with open({str(path)!r}, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        value = decode("cloudpickle", data)
        print(value["result"].total, value["fn"]([4, 5]).total, type(value["result"]).__name__)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["6", "9", "Result"]


# -- NotPersistable --------------------------------------------------------------


def _generator():
    yield 1


class FailsToLoad:
    """Pickles fine, but its reconstructor raises: caught at record time."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_refuse, ())


def _refuse() -> None:
    raise RuntimeError("no way back")


@pytest.mark.parametrize(
    ("make", "type_name", "reason"),
    [
        (lambda: _generator(), "`generator`", "cannot pickle 'generator' object"),
        (lambda: threading.Lock(), "`_thread.lock`", "cannot pickle '_thread.lock' object"),
        (lambda: sys, "`module`", "cannot pickle 'module' object"),
        (lambda: {"inner": [threading.Lock()]}, "`dict`", "_thread.lock"),
        (lambda: memoryview(b"x"), "`memoryview`", "memoryview"),
        (lambda: FailsToLoad(), "FailsToLoad`", "does not load back"),
    ],
    ids=["generator", "lock", "module", "nested-lock", "memoryview", "broken-load"],
)
def test_values_no_codec_can_keep_raise_not_persistable(
    make: object, type_name: str, reason: str
) -> None:
    with pytest.raises(NotPersistable) as info:
        encode(make())  # type: ignore[operator]
    message = str(info.value)
    assert message.startswith("cannot record a value of type")
    assert type_name in message
    assert reason in message


def test_open_files_and_sockets_are_not_persistable(tmp_path: Path) -> None:
    with open(tmp_path / "f.txt", "w") as f:
        with pytest.raises(NotPersistable, match="TextIOWrapper"):
            encode(f)
    with socket.socket() as s:
        with pytest.raises(NotPersistable, match="socket"):
            encode(s)


def test_a_lambda_holding_a_lock_is_not_persistable() -> None:
    lock = threading.Lock()
    with pytest.raises(NotPersistable, match="_thread.lock"):
        encode(lambda: lock.locked())


def test_the_generator_message_matches_the_contract() -> None:
    with pytest.raises(NotPersistable) as info:
        encode(_generator())
    assert str(info.value) == (
        "cannot record a value of type `generator`: cannot pickle 'generator' object"
    )
    assert isinstance(info.value.__cause__, TypeError)


# -- numpy -------------------------------------------------------------------------

ARRAYS = {
    "float-nan": np.array([1.0, np.nan, -np.inf, -0.0]),
    "int8-2d": np.arange(12, dtype=np.int8).reshape(3, 4),
    "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "strided": np.arange(20.0)[::3],
    "transposed-3d": np.arange(24).reshape(2, 3, 4).transpose(2, 0, 1),
    "bool": np.array([True, False, True]),
    "complex": np.array([1 + 2j, np.nan * 1j]),
    "big-endian": np.arange(5, dtype=">i4"),
    "datetime": np.array(["2024-01-01", "NaT"], dtype="datetime64[ns]"),
    "unicode": np.array(["a", "ünï"]),
    "bytes": np.array([b"a", b"bc"]),
    "structured": np.array([(1, 2.5)], dtype=[("a", "i4"), ("b", "f8")]),
    "zero-d": np.array(3.5),
    "empty": np.empty((0, 3)),
    "float16": np.array([1, 2], dtype=np.float16),
}


@pytest.mark.parametrize("array", ARRAYS.values(), ids=ARRAYS.keys())
def test_arrays_round_trip_as_npy(array: np.ndarray, tmp_path: Path) -> None:
    for back in roundtrip(array, tmp_path, "npy"):
        assert_array_same(array, back)


def test_npy_bytes_are_what_numpy_load_reads() -> None:
    import io

    c_order = np.arange(6.0).reshape(2, 3)
    for array in (c_order, np.asfortranarray(c_order), c_order[:, ::2], c_order[::-1]):
        encoded = bytes(encode(array).data)
        saved = io.BytesIO()
        np.save(saved, array, allow_pickle=False)
        assert encoded == saved.getvalue()  # byte for byte what numpy.save writes
        loaded = np.load(io.BytesIO(encoded), allow_pickle=False)
        assert_array_same(array, loaded)


def test_object_arrays_and_array_subclasses_are_pickled(tmp_path: Path) -> None:
    objects = np.array([1, "a", None], dtype=object)
    for back in roundtrip(objects, tmp_path, "pickle"):
        assert type(back) is np.ndarray and back.dtype == object
        assert back.tolist() == [1, "a", None]
    masked = np.ma.masked_array([1.0, 2.0], mask=[False, True])
    for back in roundtrip(masked, tmp_path, "pickle"):
        assert type(back) is np.ma.MaskedArray
        assert back.mask.tolist() == [False, True]


def test_decoded_arrays_are_writable_and_independent(tmp_path: Path) -> None:
    array = np.arange(1000.0)
    encoded = encode(array)
    raw = bytes(encoded.data)
    first, *others = decode_all_ways(encoded, tmp_path)
    for back in [first, *others]:
        back[0] = -1.0  # type: ignore[index]
    assert decode("npy", raw)[0] == 0.0


def test_npy_from_a_copy_on_write_mmap_is_zero_copy(tmp_path: Path) -> None:
    array = np.arange(100_000.0)
    path = tmp_path / "obj"
    path.write_bytes(bytes(encode(array).data))
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    back = decode("npy", mapped)
    assert np.shares_memory(back, np.frombuffer(mapped, np.uint8))
    back[:] = 7.0
    assert_array_same(array, decode("npy", path.read_bytes()))


# -- pandas ----------------------------------------------------------------------

PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def _frames() -> dict[str, pd.DataFrame]:
    n = 6
    rng = np.random.default_rng(0)
    floats = rng.standard_normal(n)
    floats[1] = np.nan
    attrs = pd.DataFrame({"a": floats})
    attrs.attrs = {"source": "sensor", "version": [1, 2]}
    return {
        "numeric": pd.DataFrame({
            "f64": floats,
            "f32": floats.astype(np.float32),
            "i64": np.arange(n),
            "i8": np.arange(n, dtype=np.int8),
            "u64": np.arange(n, dtype=np.uint64),
            "bool": [True, False] * 3,
        }),
        "times": pd.DataFrame({
            "naive": pd.date_range("2024-01-01", periods=n, freq="h").insert(1, pd.NaT)[:n],
            "seconds": pd.date_range("2024-01-01", periods=n, unit="s"),
            "tz": pd.date_range("2024-03-30", periods=n, freq="6h", tz=PARIS),
            "utc": pd.date_range("2024-01-01", periods=n, tz="UTC"),
            "delta": pd.to_timedelta(np.arange(n), unit="min"),
        }),
        "categorical": pd.DataFrame({
            "plain": pd.Categorical(["a", "b", None, "a", "c", "b"]),
            "ordered": pd.Categorical(list("lmhlmh"), categories=list("lmh"), ordered=True),
            "ints": pd.Categorical([3, 1, 3, 1, 2, None]),
        }),
        "nullable": pd.DataFrame({
            "Int64": pd.array([1, None, 3, 4, 5, 6], dtype="Int64"),
            "UInt8": pd.array([1, 2, None, 4, 5, 6], dtype="UInt8"),
            "Float64": pd.array([1.5, None, 3, 4, 5, 6], dtype="Float64"),
            "boolean": pd.array([True, None, False, True, True, False], dtype="boolean"),
        }),
        "strings": pd.DataFrame({
            "str": ["a", None, "ç", "d", "", "f"],
            "string": pd.array(["a", None, "c", "d", "e", "f"], dtype="string"),
            "arrow": pd.array(["x", "y", None, "z", "x", "y"], dtype="string[pyarrow]"),
        }),
        "named-index": pd.DataFrame(
            {"v": floats}, index=pd.Index(list("uvwxyz"), name="key")
        ).rename_axis(columns="fields"),
        "int-index-duplicates": pd.DataFrame({"v": floats}, index=[3, 3, 1, 2, 2, 9]),
        "range-index": pd.DataFrame({"v": floats}, index=pd.RangeIndex(10, 22, 2, name="r")),
        "freq-index": pd.DataFrame({"v": floats}, index=pd.date_range("2024", periods=n)),
        "tz-index": pd.DataFrame(
            {"v": floats}, index=pd.DatetimeIndex(pd.date_range("2024", periods=n, tz="UTC"))
        ),
        "timedelta-freq-index": pd.DataFrame(
            {"v": floats}, index=pd.timedelta_range(0, periods=n, freq="30s")
        ),
        "multiindex": pd.DataFrame(
            {"v": floats},
            index=pd.MultiIndex.from_product([["a", "b"], [1, 2, 3]], names=["g", "k"]),
        ),
        "multiindex-columns": pd.DataFrame(
            rng.standard_normal((n, 4)),
            columns=pd.MultiIndex.from_product([["x", "y"], ["lo", "hi"]]),
        ),
        "int-column-labels": pd.DataFrame({1: floats, 5: floats}),
        "range-column-labels": pd.DataFrame(rng.standard_normal((n, 3))),
        "float-column-labels": pd.DataFrame({1.5: floats}),
        "empty": pd.DataFrame(),
        "no-rows": pd.DataFrame(
            {"a": pd.Series([], dtype="float64"), "b": pd.Series([], dtype="str")}
        ),
        "attrs": attrs,
        "period-interval": pd.DataFrame({
            "period": pd.period_range("2024-01", periods=n, freq="M"),
            "interval": pd.interval_range(0, n),
        }),
        "categorical-index": pd.DataFrame({"v": floats}, index=pd.CategoricalIndex(list("aabbcc"))),
    }


FRAMES = _frames()


@pytest.mark.parametrize("frame", FRAMES.values(), ids=FRAMES.keys())
def test_frames_arrow_represents_go_through_arrow(frame: pd.DataFrame, tmp_path: Path) -> None:
    for back in roundtrip(frame, tmp_path, "arrow"):
        assert_frame_same(frame, back)


def _pickled_frames() -> dict[str, pd.DataFrame]:
    non_json_attrs = pd.DataFrame({"a": [1.0]})
    non_json_attrs.attrs = {"when": datetime.date(2024, 1, 1)}
    no_duplicates = pd.DataFrame({"a": [1.0]}).set_flags(allows_duplicate_labels=False)
    return {
        "mixed-objects": pd.DataFrame({"o": [1, "a", 2.5, None, b"x", Point(1, 2)]}),
        "object-strings": pd.DataFrame({"o": pd.Series(["a", "b"], dtype=object)}),
        "object-decimals": pd.DataFrame({"d": [decimal.Decimal("1.10"), decimal.Decimal("2")]}),
        "duplicate-columns": pd.DataFrame([[1, 2]], columns=["a", "a"]),
        "mixed-column-labels": pd.DataFrame({1: [1.0], "1": [2.0]}),
        "tuple-and-str-labels": pd.DataFrame({("a", "b"): [1.0], "c": [2.0]}),
        "non-str-index-name": pd.DataFrame({"a": [1.0]}, index=pd.Index([7], name=5)),
        "object-index": pd.DataFrame({"a": [1.0, 2.0]}, index=pd.Index(["x", 1], dtype=object)),
        "python-strings": pd.DataFrame({"s": pd.array(["a", None], dtype="string[python]")}),
        "complex": pd.DataFrame({"c": [1 + 2j]}),
        "sparse": pd.DataFrame({"s": pd.arrays.SparseArray([0, 0, 1])}),
        "nested-arrow": pd.DataFrame(
            {"l": pd.array([[1], [2, 3]], dtype=pd.ArrowDtype(pa.list_(pa.int64())))}
        ),
        "non-json-attrs": non_json_attrs,
        "no-duplicate-labels": no_duplicates,
        "business-day-holidays": pd.DataFrame(
            {"v": [1.0, 2.0]},
            index=pd.date_range("2024-12-24", periods=2,
                                freq=pd.offsets.CustomBusinessDay(holidays=["2024-12-25"])),
        ),
    }


PICKLED_FRAMES = _pickled_frames()


@pytest.mark.parametrize("frame", PICKLED_FRAMES.values(), ids=PICKLED_FRAMES.keys())
def test_frames_arrow_would_change_are_pickled(frame: pd.DataFrame, tmp_path: Path) -> None:
    for back in roundtrip(frame, tmp_path, "pickle"):
        assert_frame_same(frame, back)


SERIES = {
    "named": pd.Series([1.0, np.nan, 3.0], name="x"),
    "unnamed": pd.Series([1, 2, 3]),
    "int-name": pd.Series([1, 2], name=3),
    "bool-name": pd.Series([1, 2], name=True),
    "category": pd.Series(pd.Categorical(["a", "b", "a"]), name="c"),
    "tz": pd.Series(pd.date_range("2024", periods=3, tz=PARIS), name="t"),
    "str-index": pd.Series([1.0, 2.0], index=pd.Index(["a", "b"], name="k"), name="v"),
    "multiindex": pd.Series(
        [1, 2, 3, 4], index=pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["g", "n"])
    ),
    "freq-index": pd.Series(np.arange(4.0), index=pd.date_range("2024", periods=4, freq="W")),
    "nullable": pd.Series([1, None], dtype="Int64", name="n"),
    "string": pd.Series(["a", None], dtype="str", name="s"),
    "name-like-the-storage-column": pd.Series([1.0], name="__nbstep_series__"),
}


@pytest.mark.parametrize("series", SERIES.values(), ids=SERIES.keys())
def test_series_go_through_arrow(series: pd.Series, tmp_path: Path) -> None:
    for back in roundtrip(series, tmp_path, "arrow"):
        assert_series_same(series, back)


def test_series_attrs_are_kept(tmp_path: Path) -> None:
    series = pd.Series([1.0], name="x")
    series.attrs = {"unit": "m"}
    for back in roundtrip(series, tmp_path, "arrow"):
        assert_series_same(series, back)


@pytest.mark.parametrize(
    "series",
    [
        pd.Series([1.0], name=("a", "b")),
        pd.Series([1, "a"], name="o"),
        pd.Series([1.0], name=float("nan")),
        pd.Series([1.0], name=pd.Timestamp("2024")),
    ],
    ids=["tuple-name", "object", "nan-name", "timestamp-name"],
)
def test_series_arrow_would_change_are_pickled(series: pd.Series, tmp_path: Path) -> None:
    for back in roundtrip(series, tmp_path, "pickle"):
        assert_series_same(series, back)


def test_a_dataframe_subclass_is_pickled_as_itself(tmp_path: Path) -> None:
    frame = SubFrame({"a": [1.0]})
    for back in roundtrip(frame, tmp_path, "pickle"):
        assert type(back) is SubFrame


class SubFrame(pd.DataFrame):
    @property
    def _constructor(self) -> type[SubFrame]:
        return SubFrame


def _writable_mix(n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "f": np.arange(n, dtype=np.float64),
        "i": np.arange(n),
        "b": np.ones(n, dtype=bool),
        "t": pd.date_range("2024", periods=n, freq="s"),
        "tz": pd.date_range("2024", periods=n, freq="s", tz="UTC"),
        "c": pd.Categorical(np.resize(["a", "b"], n)),
        "I": pd.array(np.arange(n), dtype="Int64"),
        "s": np.resize(["x", "y"], n).astype(str),
    })


NEW_VALUES = {
    "f": -1.0, "i": -1, "b": False, "t": pd.Timestamp("2000"),
    "tz": pd.Timestamp("2000", tz="UTC"), "c": "b", "I": -1, "s": "changed",
}


def test_decoded_frames_are_writable_and_do_not_share_state(tmp_path: Path) -> None:
    frame = _writable_mix(1000)
    encoded = encode(frame)
    assert encoded.codec == "arrow"
    raw = bytes(encoded.data)
    for back in decode_all_ways(encoded, tmp_path):
        assert isinstance(back, pd.DataFrame)
        for position, column in enumerate(frame.columns):
            back.iloc[0, position] = NEW_VALUES[column]
            assert back.iloc[0, position] == NEW_VALUES[column]
        back.loc[5, "f"] = 99.0
        # Replaying the same bytes again gives the original, untouched.
        assert_frame_same(frame, decode("arrow", raw))
    assert_frame_same(frame, decode("arrow", encoded.data))


def test_decoded_series_is_writable(tmp_path: Path) -> None:
    series = pd.Series(np.arange(100.0), name="s")
    encoded = encode(series)
    for back in decode_all_ways(encoded, tmp_path):
        back.iloc[0] = 5.0  # type: ignore[union-attr]
        assert back.iloc[0] == 5.0  # type: ignore[union-attr]
    assert_series_same(series, decode("arrow", encoded.data))


def test_a_copy_on_write_mmap_is_decoded_zero_copy(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": np.arange(100_000.0), "b": np.arange(100_000)})
    path = tmp_path / "obj"
    path.write_bytes(bytes(encode(frame).data))
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    back = decode("arrow", mapped)
    whole = np.frombuffer(mapped, np.uint8)
    assert np.shares_memory(back["a"].to_numpy(), whole)
    assert np.shares_memory(back["b"].to_numpy(), whole)
    back.iloc[:, 0] = -1.0
    assert_frame_same(frame, decode("arrow", path.read_bytes()))


def test_bytes_are_decoded_into_fresh_memory() -> None:
    frame = pd.DataFrame({"a": np.arange(1000.0)})
    raw = bytes(encode(frame).data)
    back = decode("arrow", raw)
    assert not np.shares_memory(back["a"].to_numpy(), np.frombuffer(raw, np.uint8))


def test_object_files_open_with_plain_pyarrow() -> None:
    frame = FRAMES["numeric"]
    reader = pa.ipc.open_file(pa.py_buffer(bytes(encode(frame).data)))
    assert reader.read_all().column_names == list(frame.columns)


def test_a_truncated_arrow_object_fails_loudly() -> None:
    raw = bytes(encode(FRAMES["numeric"]).data)
    for cut in (1, 16, len(raw) // 2):
        with pytest.raises(pa.ArrowInvalid):
            decode("arrow", raw[:-cut])


def test_frames_and_arrays_are_written_straight_from_their_memory() -> None:
    frame = pd.DataFrame({"a": np.arange(10.0)})
    array = np.arange(10.0)
    for value in (frame, array):
        encoded = encode(value)
        assert isinstance(encoded.data, Streamed)  # no joined copy of the value's bytes
        assert encoded.size == len(bytes(encoded.data))
    # The array's own memory is what gets written, not a copy of it.
    parts = encode(array).data.parts()
    assert np.shares_memory(np.frombuffer(parts[-1], dtype=np.uint8), array)


# -- hypothesis: frames ------------------------------------------------------------

ARROW_KINDS = {
    "float64": lambda n: st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=n,
                                  max_size=n).map(lambda v: np.array(v, dtype=np.float64)),
    "float32": lambda n: st.lists(st.floats(width=32), min_size=n, max_size=n).map(
        lambda v: np.array(v, dtype=np.float32)),
    "int64": lambda n: st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n).map(
        lambda v: np.array(v, dtype=np.int64)),
    "uint8": lambda n: st.lists(st.integers(0, 255), min_size=n, max_size=n).map(
        lambda v: np.array(v, dtype=np.uint8)),
    "bool": lambda n: st.lists(st.booleans(), min_size=n, max_size=n).map(
        lambda v: np.array(v, dtype=bool)),
    "datetime": lambda n: st.lists(
        st.none() | st.datetimes(datetime.datetime(1900, 1, 1), datetime.datetime(2200, 1, 1)),
        min_size=n, max_size=n,
    ).map(lambda v: pd.array(v, dtype="datetime64[us]")),
    "datetime-tz": lambda n: st.lists(
        st.datetimes(datetime.datetime(1970, 1, 2), datetime.datetime(2100, 1, 1)),
        min_size=n, max_size=n,
    ).map(lambda v: pd.DatetimeIndex(v, dtype="datetime64[ns]").tz_localize("UTC")
          .tz_convert(PARIS).array),
    "timedelta": lambda n: st.lists(
        st.timedeltas(datetime.timedelta(days=-(10**5)), datetime.timedelta(days=10**5)),
        min_size=n, max_size=n,
    ).map(
        lambda v: pd.array(v, dtype="timedelta64[us]")),
    "category": lambda n: st.lists(st.none() | st.sampled_from("abc"), min_size=n,
                                   max_size=n).map(lambda v: pd.Categorical(v)),
    "Int64": lambda n: st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), min_size=n,
                                max_size=n).map(lambda v: pd.array(v, dtype="Int64")),
    "Float64": lambda n: st.lists(st.none() | st.floats(allow_nan=False), min_size=n,
                                  max_size=n).map(lambda v: pd.array(v, dtype="Float64")),
    "boolean": lambda n: st.lists(st.none() | st.booleans(), min_size=n, max_size=n).map(
        lambda v: pd.array(v, dtype="boolean")),
    "str": lambda n: st.lists(st.none() | st.text(max_size=5), min_size=n, max_size=n).map(
        lambda v: pd.array(v, dtype="str")),
    "string": lambda n: st.lists(st.none() | st.text(max_size=5), min_size=n, max_size=n).map(
        lambda v: pd.array(v, dtype="string")),
}
PICKLE_KINDS = {
    "object": lambda n: st.lists(st.none() | st.integers() | st.text(max_size=3), min_size=n,
                                 max_size=n).map(lambda v: pd.array(v, dtype=object)),
}


def _surrogate_free(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def private_copy(data: object) -> mmap.mmap:
    """The bytes in a writable anonymous mapping: decode's zero-copy path, no file."""
    if isinstance(data, Streamed):
        data = bytes(data)
    view = memoryview(data).cast("B")  # type: ignore[arg-type]
    mapped = mmap.mmap(-1, max(len(view), 1))
    mapped[: len(view)] = view
    return mapped


@st.composite
def frames(draw: st.DrawFn, kinds: dict[str, object]) -> pd.DataFrame:
    n = draw(st.integers(0, 8))
    names = draw(st.lists(st.text(max_size=4).filter(_surrogate_free), max_size=4,
                          unique=True))
    data = {}
    for name in names:
        kind = draw(st.sampled_from(sorted(kinds)))
        data[name] = draw(kinds[kind](n))  # type: ignore[operator]
    index_kind = draw(st.sampled_from(["range", "int", "str", "datetime", "multi"]))
    if index_kind == "range":
        start = draw(st.integers(-5, 5))
        step = draw(st.sampled_from([1, 2, -3]))
        index = pd.RangeIndex(start, start + step * n, step, name=draw(st.none() | st.just("i")))
    elif index_kind == "int":
        index = pd.Index(draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)),
                         dtype="int64", name="i")
    elif index_kind == "str":
        index = pd.Index(draw(st.lists(st.text(max_size=3).filter(_surrogate_free),
                                       min_size=n, max_size=n)), dtype="str")
    elif index_kind == "datetime":
        index = pd.date_range("2024", periods=n, freq=draw(st.sampled_from(["D", "h", None]))
                              or "D")
        if draw(st.booleans()):
            index = pd.DatetimeIndex(list(index))  # no freq
    else:
        index = pd.MultiIndex.from_arrays(
            [np.resize(["a", "b"], n), np.arange(n)], names=["g", None]
        )
    return pd.DataFrame(data, index=index, columns=pd.Index(names, dtype="str"))


@given(frames(ARROW_KINDS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_frames_of_arrow_dtypes_round_trip_through_arrow(frame: pd.DataFrame) -> None:
    encoded = encode(frame)
    assert encoded.codec == "arrow"
    assert_frame_same(frame, decode("arrow", encoded.data))
    assert_frame_same(frame, decode("arrow", private_copy(encoded.data)))
    series = frame.iloc[:, 0] if frame.shape[1] else pd.Series(frame.index.to_numpy())
    encoded = encode(series)
    assert encoded.codec in ("arrow", "pickle")
    assert_series_same(series, decode(encoded.codec, encoded.data))


@given(frames({**ARROW_KINDS, **PICKLE_KINDS}))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_frame_round_trips_whatever_the_codec(frame: pd.DataFrame) -> None:
    encoded = encode(frame)
    has_object = any(dtype == np.dtype("O") for dtype in frame.dtypes)
    assert encoded.codec == ("pickle" if has_object else "arrow"), (frame.index, frame.columns)
    assert_frame_same(frame, decode(encoded.codec, encoded.data))
