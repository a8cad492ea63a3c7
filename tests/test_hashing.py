"""Tests for nbstep.hashing: the seed's encodings, nbstep's own tags, stability, errors."""

from __future__ import annotations

import collections
import copy
import dataclasses
import datetime as dt
import decimal
import enum
import fractions
import hashlib
import json
import os
import pathlib
import pickle
import subprocess
import sys
import textwrap
import tracemalloc
import uuid
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbstep.errors import NbstepError, NotHashable
from nbstep.hashing.recipe import _feed, input_hash, step_identity, structural_key

k = structural_key


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ reference vectors


def test_reference_vector_none() -> None:
    assert structural_key(None) == b"N"
    assert input_hash(None) == (
        "sha256:8ce86a6ae65d3692e7305e2c58ac62eebd97d3d943e093f577da25c36988246b"
    )


def test_reference_vector_user_dict() -> None:
    assert structural_key({"user_id": "alice"}) == b"D7:user_id=s5:alice,}"
    assert input_hash({"user_id": "alice"}) == (
        "sha256:5d67e5cc2955557e9d22c11e27653223bff06bc7be6a7dddbbc285c6e2b94edf"
    )


def test_reference_vector_string_one_is_not_int_one() -> None:
    assert structural_key("1") == b"s1:1"
    assert structural_key(1) == b"i1;"
    assert input_hash("1") != input_hash(1)


def test_step_identity_is_sha256_of_nul_joined_fields() -> None:
    expected = sha(b"ns\x00load\x001\x00sha256:abc")
    assert step_identity("ns", "load", 1, "sha256:abc") == expected
    assert expected == "sha256:44ca72de8448c0e18301935d492c5182dd88b0d9d1fbb96e8fb048555f070a55"


def test_step_identity_includes_the_raw_namespace_and_every_field() -> None:
    base = step_identity("tenant/a", "load", 1, "sha256:abc")
    assert base != step_identity("tenant_a", "load", 1, "sha256:abc")
    assert base != step_identity("tenant/a", "load", 2, "sha256:abc")
    assert base != step_identity("tenant/a", "load2", 1, "sha256:abc")
    assert base != step_identity("tenant/a", "load", 1, "sha256:abd")


# ---------------------------------------------------------- the seed's JSON-like keys


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (None, b"N"),
        (True, b"T"),
        (False, b"F"),
        (0, b"i0;"),
        (-5, b"i-5;"),
        (2**70, b"i1180591620717411303424;"),
        (1.0, b"f4607182418800017408;"),
        (2.5, b"f4612811918334230528;"),
        (0.0, b"f0;"),
        (-0.0, b"f9223372036854775808;"),
        (float("inf"), b"f9218868437227405312;"),
        (float("nan"), b"f9221120237041090560;"),
        ("", b"s0:"),
        ("é", b"s2:\xc3\xa9"),
        ("a:b,", b"s4:a:b,"),
        ("😀", b"s4:\xf0\x9f\x98\x80"),
        (b"", b"b;"),
        (b"\x00\xffA", b"b00ff41;"),
        ([], b"L]"),
        ([1, [2, None], "x"], b"Li1;,Li2;,N,],s1:x,]"),
        ({}, b"D}"),
        ({"b": 1, "a": [None]}, b"D1:a=LN,],1:b=i1;,}"),
        ({"é": 1, "z": 2, "Z": 3}, b"D1:Z=i3;,1:z=i2;,2:\xc3\xa9=i1;,}"),
        ({"k": {"n": True}}, b"D1:k=D1:n=T,},}"),
        (set(), b"S}"),
        ({3, "a", None}, b"SN,i3;,s1:a,}"),
        (frozenset({"b", "a"}), b"Ss1:a,s1:b,}"),
        ({(1, 2)}, b"SX5:tupleLi1;,i2;,],}"),
    ],
)
def test_seed_encoding(value: object, key: bytes) -> None:
    assert structural_key(value) == key
    assert input_hash(value) == sha(key)


def test_int_beyond_python_str_digit_limit_is_encoded_in_full() -> None:
    n = -(10**5000) - 123
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        expected = b"i" + str(n).encode() + b";"
    finally:
        sys.set_int_max_str_digits(limit)
    assert structural_key(n) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(st.characters(codec=None, exclude_categories=())), max_size=8))
def test_str_order_is_utf8_byte_order_as_in_the_seed(keys: list[str]) -> None:
    # The seed sorts dict keys as Rust Strings (bytewise UTF-8); lone surrogates included.
    as_bytes = [s.encode("utf-8", "surrogatepass") for s in keys]
    assert [s.encode("utf-8", "surrogatepass") for s in sorted(keys)] == sorted(as_bytes)
    d = dict.fromkeys(keys, 0)
    body = b"".join(b"%d:%b=i0;," % (len(b), b) for b in sorted(set(as_bytes)))
    assert structural_key(d) == b"D" + body + b"}"


# ------------------------------------------------------------------ type sensitivity


class MyInt(int):
    pass


class MyStr(str):
    pass


class Color(enum.IntEnum):
    RED = 1


class Mode(enum.Enum):
    FAST = "fast"


Point = collections.namedtuple("Point", "x y")


def test_type_sensitive_distinct_keys() -> None:
    values = [
        "1",
        1,
        1.0,
        True,
        [1],
        (1,),
        {1},
        {"1": 1},
        {1: 1},
        np.float64(1.0),
        np.int64(1),
        np.array([1]),
        MyInt(1),
        Color.RED,
        b"1",
        bytearray(b"1"),
        decimal.Decimal(1),
        fractions.Fraction(1),
        complex(1),
        dt.timedelta(microseconds=1),
        pd.Timedelta(1, "us"),
    ]
    keys = [structural_key(v) for v in values]
    assert len(set(keys)) == len(values)
    assert len({input_hash(v) for v in values}) == len(values)


def test_list_vs_tuple_and_str_dict_vs_non_str_dict() -> None:
    assert k([1, 2]) == b"Li1;,i2;,]"
    assert k((1, 2)) == b"X5:tupleLi1;,i2;,]"
    assert k({"1": "a"}) == b"D1:1=s1:a,}"
    assert k({1: "a"}) == b"X4:dictLLi1;,s1:a,],]"


def tag(letter: bytes, cls: type) -> bytes:
    """A class tag as docs/hashing.md defines it: letter, byte length, module.qualname."""
    name = f"{cls.__module__}.{cls.__qualname__}".encode()
    return letter + b"%d:" % len(name) + name


def test_subclasses_never_collide_with_their_base() -> None:
    assert k(MyInt(7)) == tag(b"C", MyInt) + b"i7;"
    assert k(MyStr("x")) == tag(b"C", MyStr) + b"s1:x"
    assert k(Point(1, 2)) == tag(b"C", Point) + b"X5:tupleLi1;,i2;,]"
    assert k(collections.OrderedDict(a=1)) == b"C23:collections.OrderedDictD1:a=i1;,}"
    assert k(Point(1, 2)) != k((1, 2))


def test_enum_members_name_the_class_and_member() -> None:
    assert k(Color.RED) == tag(b"E", Color) + b"s3:REDi1;"
    assert k(Mode.FAST) == tag(b"E", Mode) + b"s4:FASTs4:fast"
    assert k(Color.RED) != k(1)


def test_numpy_scalars_differ_from_python_numbers_and_by_dtype() -> None:
    assert k(np.float64(1.0)) == b"X8:npscalars3:<f88:\x00\x00\x00\x00\x00\x00\xf0?"
    assert k(np.float64(1.0)) != k(1.0)
    assert k(np.float32(1.0)) != k(np.float64(1.0))
    assert k(np.int64(1)) != k(np.int32(1))
    assert k(np.str_("a")) != k("a")


# --------------------------------------------------------- order and construction


@settings(deadline=None)
@given(st.dictionaries(st.text(), st.integers() | st.text() | st.none()))
def test_str_dict_key_order_does_not_matter(d: dict[str, object]) -> None:
    reversed_d = dict(reversed(list(d.items())))
    assert input_hash(d) == input_hash(reversed_d)


@settings(deadline=None)
@given(st.dictionaries(st.integers() | st.text() | st.tuples(st.integers()), st.integers()))
def test_non_str_dict_key_order_does_not_matter(d: dict[object, int]) -> None:
    reversed_d = dict(reversed(list(d.items())))
    assert input_hash(d) == input_hash(reversed_d)


@settings(deadline=None)
@given(st.lists(st.integers() | st.text() | st.tuples(st.integers(), st.text())))
def test_set_order_does_not_matter(items: list[object]) -> None:
    # Only members that are == exactly when their keys are equal: set([0.0, -0.0]) keeps
    # whichever came first, and the seed's bit-pattern float keys tell them apart.
    forward, backward = set(items), set(reversed(items))
    assert input_hash(forward) == input_hash(backward)
    assert input_hash(frozenset(items)) == input_hash(forward)


def test_nan_keys_that_share_an_encoding_still_sort_deterministically() -> None:
    a, b = float("nan"), float("nan")
    assert k({a: 1, b: 2}) == k({b: 2, a: 1})
    assert k({a: 1, b: 2}) == b"X4:dictLLf9221120237041090560;,i1;,],Lf9221120237041090560;,i2;,],]"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)

any_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.binary()
    | st.decimals()
    | st.datetimes()
    | st.dates()
    | st.uuids()
    | st.complex_numbers(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=5), children, max_size=4)
        | st.dictionaries(st.integers() | st.text(max_size=3), children, max_size=4)
        | st.frozensets(st.integers() | st.text(max_size=3), max_size=4)
    ),
    max_leaves=20,
)


@settings(deadline=None)
@given(json_values)
def test_json_round_trip_builds_an_equal_value_with_the_same_hash(value: object) -> None:
    rebuilt = json.loads(json.dumps(value))
    assert input_hash(rebuilt) == input_hash(value)


@settings(deadline=None)
@given(any_values)
def test_hash_is_deterministic_and_survives_copies(value: object) -> None:
    first = input_hash(value)
    assert input_hash(value) == first
    assert input_hash(copy.deepcopy(value)) == first
    assert input_hash(pickle.loads(pickle.dumps(value))) == first
    assert first == sha(structural_key(value))


@settings(deadline=None)
@given(any_values)
def test_feed_streams_the_same_bytes_into_any_digest(value: object) -> None:
    h = hashlib.sha256()
    _feed(value, h)
    assert "sha256:" + h.hexdigest() == input_hash(value)


# --------------------------------------------------------- stability across processes

VALUES_SOURCE = textwrap.dedent(
    """
    import datetime, decimal, uuid
    import numpy as np, pandas as pd
    VALUES = [
        None, 1, 1.5, "text", b"\\x00", [1, "a"], {"b": 1, "a": 2},
        {"alpha", "beta", "gamma", "delta", "epsilon"},
        frozenset({"x", "y", (1, "z")}),
        {"k1": {"s", "t", "u"}, 2: "two", (3, 4): None},
        (1, 2), datetime.datetime(2024, 1, 2, 3, 4, 5), decimal.Decimal("2.50"),
        uuid.UUID(int=12345),
        np.arange(6, dtype="<f8").reshape(2, 3),
        pd.DataFrame({"a": [1, 2], "s": ["x", None]}, index=["r1", "r2"]),
        pd.Series(pd.Categorical(["lo", "hi", "lo"], categories=["lo", "hi"], ordered=True)),
    ]
    """
)


def test_hashes_are_identical_in_processes_with_other_hash_seeds() -> None:
    namespace: dict[str, object] = {}
    exec(VALUES_SOURCE, namespace)
    here = [input_hash(v) for v in namespace["VALUES"]]  # type: ignore[attr-defined]
    script = VALUES_SOURCE + textwrap.dedent(
        """
        import json
        from nbstep.hashing import input_hash
        print(json.dumps([input_hash(v) for v in VALUES]))
        """
    )
    for seed in ("0", "1", "987654"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        assert json.loads(out.stdout) == here, f"PYTHONHASHSEED={seed}"


# ------------------------------------------------------------------- golden hashes
# Pinned: a failure here means the format changed, and every recorded step with such
# an input would now report a mismatch. Change them only on purpose.


def _golden_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"a": np.array([1, 2], dtype="int64"), "b": np.array([0.5, np.nan])},
        index=pd.Index(["x", "y"], dtype=object),
        columns=pd.Index(["a", "b"], dtype=object),
    )


GOLDEN = [
    (
        (1, "a", None),
        b"X5:tupleLi1;,s1:a,N,]",
        "sha256:fa9738bfae00c96e999bde66bb89fd383fbcd4ccd6257d232b1692849d514dd5",
    ),
    (
        dt.datetime(2024, 3, 1, 12, 30, 15, 250),
        b"X8:datetimeLi63844893015000250;,i0;,]",
        "sha256:77058ff98317c089410aa3c559edfb99cb7d111b1074d20edebd12fbe36f5122",
    ),
    (
        dt.datetime(2024, 3, 1, 12, 30, tzinfo=ZoneInfo("Europe/Paris")),
        b"X8:datetimeLi63844889400000000;,i3600000000;,s12:Europe/Paris,]",
        "sha256:2675500c3798c407b1cc103c41f86c328e8bb358d58c52134ca220d3b77e3e0a",
    ),
    (
        decimal.Decimal("1.10"),
        b"X7:decimals4:1.10",
        "sha256:5e758b348b2f27b8ffc5738a12f7e483befc683b5bffca200cbcc1a6d1d47f84",
    ),
    (
        np.array([[1, 2], [3, 4]], dtype="<i4"),
        b"X7:ndarrays3:<i4Li2;,i2;,]16:"
        b"\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04\x00\x00\x00",
        "sha256:8243e0d016df4c12b03afab417f1891eaa7ea2c8e54d6db4cc427ca665c2dc36",
    ),
    (
        _golden_frame(),
        b"X12:pd.DataFrame"
        b"X8:pd.IndexLN,]s6:objectX7:ndarrays2:|OLi2;,]Ls1:a,s1:b,]"
        b"X8:pd.IndexLN,]s6:objectX7:ndarrays2:|OLi2;,]Ls1:x,s1:y,]"
        b"L"
        b"s5:int64X7:ndarrays3:<i8Li2;,]16:"
        b"\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00,"
        b"s7:float64X7:ndarrays3:<f8Li2;,]16:"
        b"\x00\x00\x00\x00\x00\x00\xe0?\x00\x00\x00\x00\x00\x00\xf8\x7f,"
        b"]",
        "sha256:41ff99f4a2252f440eba24e9f7627540a19b7be4a738a4b7cca66aa7797911dc",
    ),
]


@pytest.mark.parametrize(("value", "key", "digest"), GOLDEN)
def test_golden_keys_and_hashes(value: object, key: bytes, digest: str) -> None:
    assert structural_key(value) == key
    assert input_hash(value) == digest


# ------------------------------------------------------------- stdlib extension tags


def test_datetime_payloads_are_microseconds_since_year_one() -> None:
    value = dt.datetime(1999, 12, 31, 23, 59, 59, 999999)
    us = (value - dt.datetime(1, 1, 1)) // dt.timedelta(microseconds=1)
    assert k(value) == b"X8:datetimeLi%d;,i0;,]" % us
    assert k(value.replace(fold=1)) == b"X8:datetimeLi%d;,i1;,]" % us


def test_naive_and_aware_datetimes_differ_and_zones_are_kept() -> None:
    utc = dt.datetime(2024, 6, 1, 12, tzinfo=dt.UTC)
    paris = utc.astimezone(ZoneInfo("Europe/Paris"))
    fixed = utc.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert utc == paris == fixed
    keys = {k(utc), k(paris), k(fixed), k(utc.replace(tzinfo=None))}
    assert len(keys) == 4
    # The same instant in the same zone, built two ways, is one key.
    assert k(paris) == k(dt.datetime(2024, 6, 1, 14, tzinfo=ZoneInfo("Europe/Paris")))


def test_date_time_timedelta_tags() -> None:
    assert k(dt.date(1, 1, 2)) == b"X4:datei2;"
    assert k(dt.time(1, 2, 3, 4)) == b"X4:timeLi3723000004;,i0;,]"
    assert k(dt.time(1, tzinfo=dt.UTC)) == b"X4:timeLi3600000000;,i0;,i0;,s3:UTC,]"
    assert k(dt.timedelta(days=1, microseconds=5)) == b"X9:timedeltai86400000005;"
    assert k(dt.timedelta(hours=24)) == k(dt.timedelta(days=1))
    assert k(dt.date(2020, 1, 1)) != k(dt.datetime(2020, 1, 1))


def test_decimal_keeps_its_exponent() -> None:
    assert k(decimal.Decimal("1.0")) == b"X7:decimals3:1.0"
    assert k(decimal.Decimal("1.0")) != k(decimal.Decimal("1.00"))
    assert k(decimal.Decimal("1.0")) == k(decimal.Decimal((0, (1, 0), -1)))
    assert k(decimal.Decimal("-0")) != k(decimal.Decimal("0"))


def test_other_stdlib_tags() -> None:
    assert k(complex(1, -0.0)) == b"X7:complexf4607182418800017408;f9223372036854775808;"
    assert k(uuid.UUID(int=1)) == b"X4:uuids36:00000000-0000-0000-0000-000000000001"
    assert k(range(0, 10, 3)) == b"X5:rangei0;i10;i3;"
    assert k(fractions.Fraction(2, 6)) == b"X8:fractioni1;i3;"
    assert k(bytearray(b"\x01")) == b"X9:bytearrayb01;"
    assert k(ZoneInfo("Asia/Tokyo")) == b"X2:tzs10:Asia/Tokyo"


def test_paths_by_flavour_and_normalized_text() -> None:
    assert k(pathlib.PurePosixPath("a//b/./c")) == b"X9:posixpaths5:a/b/c"
    assert k(pathlib.PurePosixPath("a/b")) == k(pathlib.PosixPath("a/b"))
    assert k(pathlib.PureWindowsPath("a/b")) == b"X11:windowspaths3:a\\b"
    assert k(pathlib.PureWindowsPath("a/b")) != k(pathlib.PurePosixPath("a/b"))
    assert k(pathlib.PurePosixPath("a")) != k("a")


@dataclasses.dataclass
class Params:
    alpha: float
    name: str = "x"
    cache: object = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass
class OtherParams:
    alpha: float
    name: str = "x"


def test_dataclass_name_and_compared_fields_in_order() -> None:
    fields = b"5:alpha=f4607182418800017408;,4:name=s1:x,}"
    assert k(Params(1.0)) == tag(b"R", Params) + fields
    # compare=False fields are left out, like ==, so an unhashable cache is fine.
    assert k(Params(1.0, cache=object())) == k(Params(1.0))
    assert k(Params(1.0)) != k(OtherParams(1.0))


# ---------------------------------------------------------------------------- numpy


def test_ndarray_byte_order_and_memory_layout_do_not_matter() -> None:
    a = np.arange(12, dtype="<i4").reshape(3, 4)
    assert k(a.astype(">i4")) == k(a)
    assert k(np.asfortranarray(a)) == k(a)
    assert k(np.arange(24, dtype="<i4").reshape(3, 8)[:, ::2]) == k(a * 2)


def test_ndarray_shape_and_dtype_matter() -> None:
    a = np.arange(12, dtype="<i4")
    assert k(a.reshape(3, 4)) != k(a.reshape(4, 3)) != k(a)
    assert k(a.view("<f4")) != k(a)
    assert k(np.array(1.0)) != k(np.array([1.0]))
    assert k(np.array(["ab"])) == b"X7:ndarrays3:<U2Li1;,]8:a\x00\x00\x00b\x00\x00\x00"


def test_ndarray_nan_is_hashed_by_its_bits() -> None:
    nan = np.array([np.nan])
    assert k(nan) == k(np.array([float("nan")]))
    assert k(nan) != k(-nan)


def test_object_and_structured_and_datetime_arrays() -> None:
    assert k(np.array([1, "a", None], dtype=object)) == b"X7:ndarrays2:|OLi3;,]Li1;,s1:a,N,]"
    rec = np.array([(1, 2.0)], dtype=[("a", ">i4"), ("b", "<f8")])
    assert k(rec) == k(rec.astype([("a", "<i4"), ("b", "<f8")]))
    days = np.array(["2020-01-01"], dtype="M8[D]")
    assert k(days) != k(days.astype("M8[s]"))


def test_streaming_matches_the_reference_key_for_big_and_object_arrays() -> None:
    big = np.random.default_rng(1).random(50_000)  # 400 kB: streamed, not buffered
    many = np.array([f"v{i}" for i in range(10_000)], dtype=object)  # spills the buffer
    for value in (big, many, {"a": big, "b": many}):
        assert input_hash(value) == sha(structural_key(value))


@pytest.mark.parametrize(
    ("make", "limit"),
    [
        (lambda: np.zeros(10_000_000), 5_000_000),  # contiguous: streamed as is
        (lambda: np.zeros((1_000, 10_000)).T, 25_000_000),  # F order: copied in 16 MB blocks
        (lambda: np.zeros(10_000_000, dtype=">f8"), 25_000_000),  # swapped in blocks
    ],
)
def test_hashing_a_big_array_never_copies_all_of_it(make, limit: int) -> None:
    big = make()  # 80 MB
    tracemalloc.start()
    try:
        digest = input_hash(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < limit
    assert digest == input_hash(np.zeros((10_000_000,)).reshape(big.shape))


# --------------------------------------------------------------------------- pandas


def test_frame_built_three_ways_hashes_the_same() -> None:
    a = pd.DataFrame({"x": [1, 2, 3], "y": [0.5, 1.5, 2.5]})
    b = pd.DataFrame.from_records([(1, 0.5), (2, 1.5), (3, 2.5)], columns=["x", "y"])
    c = pd.DataFrame({"y": [0.5, 1.5, 2.5], "x": [1, 2, 3]})[["x", "y"]]
    assert input_hash(a) == input_hash(b) == input_hash(c)


def test_frame_parts_all_matter() -> None:
    base = pd.DataFrame({"x": [1, 2], "y": [0.5, 1.5]})
    variants = [
        base.rename(columns={"x": "z"}),
        base.set_axis([10, 11]),
        base.astype({"x": "float64"}),
        base.assign(y=[0.5, 1.25]),
        base[["y", "x"]],
        base.rename_axis("idx"),
    ]
    keys = {k(base), *(k(v) for v in variants)}
    assert len(keys) == len(variants) + 1


def test_range_index_hashes_as_the_int64_index_it_equals() -> None:
    a = pd.Series([1.0, 2.0])
    b = pd.Series([1.0, 2.0], index=pd.Index([0, 1], dtype="int64"))
    assert k(a) == k(b)


def test_string_columns_are_canonical_across_storage_slicing_and_chunks() -> None:
    words = ["a", None, "ccc", "dé"] * 3
    py = pd.Series(words, dtype="string[python]")
    arrow = pd.Series(words, dtype="string[pyarrow]")
    assert k(py) == k(arrow)
    sliced = pd.Series(["zz"] + words, dtype="string[pyarrow]").iloc[1:].reset_index(drop=True)
    chunked = pd.concat([arrow.iloc[:5], arrow.iloc[5:]], ignore_index=True)
    assert k(sliced) == k(arrow) == k(chunked)
    assert k(pd.Series(["a", ""], dtype="string")) != k(pd.Series(["a", None], dtype="string"))
    assert k(pd.Series(["ab", "c"], dtype="string")) != k(pd.Series(["a", "bc"], dtype="string"))


def test_object_columns_are_hashed_element_wise() -> None:
    none = pd.Series(["a", None], dtype=object)
    na = pd.Series(["a", pd.NA], dtype=object)
    nan = pd.Series(["a", float("nan")], dtype=object)
    assert len({k(none), k(na), k(nan)}) == 3


def test_tz_aware_columns_include_the_zone() -> None:
    utc = pd.Series(pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC"))
    assert k(utc) != k(utc.dt.tz_convert("Europe/Paris"))
    assert k(utc) != k(utc.dt.tz_localize(None))
    assert k(utc) == k(pd.Series(pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC")))


def test_categoricals_hash_categories_codes_and_order() -> None:
    base = pd.Categorical(["lo", "hi", "lo"], categories=["lo", "hi"])
    assert k(base) == k(pd.Categorical(["lo", "hi", "lo"], categories=["lo", "hi"]))
    assert k(base) != k(pd.Categorical(["lo", "hi", "lo"], categories=["hi", "lo"]))
    assert k(base) != k(pd.Categorical(["lo", "hi", "lo"], categories=["lo", "hi"], ordered=True))
    assert k(pd.Series(base)) != k(pd.Series(["lo", "hi", "lo"]))


def test_nullable_arrays_distinguish_na_from_values() -> None:
    assert k(pd.array([1, None], dtype="Int64")) != k(pd.array([1, 0], dtype="Int64"))
    assert k(pd.array([1, None], dtype="Int64")) == k(pd.array([1, pd.NA], dtype="Int64"))
    assert k(pd.array([True, None], dtype="boolean")) != k(pd.array([True, False], dtype="boolean"))


def test_pandas_scalars() -> None:
    assert k(pd.NaT) == b"X6:pd.NaT"
    assert k(pd.NA) == b"X5:pd.NA"
    ts = pd.Timestamp("2020-01-01")
    assert k(ts) == b"X12:pd.TimestampLi1577836800000000000;,N,]"
    assert k(ts) == k(ts.as_unit("ns")) == k(ts.as_unit("s"))
    assert k(ts) != k(ts.tz_localize("UTC")) != k(ts.to_pydatetime())
    assert k(pd.Timedelta("1s")) == b"X12:pd.TimedeltaLi1000000000;,]"
    assert k(pd.Period("2020-01", "M")) != k(pd.Period("2020-01", "D"))
    assert k(pd.Interval(0, 1)) != k(pd.Interval(0, 1, closed="left"))


def test_multiindex_is_canonical_over_its_internal_levels() -> None:
    a = pd.MultiIndex.from_tuples([(1, "a"), (2, "b")], names=["n", "s"])
    b = pd.MultiIndex.from_arrays([[1, 2], ["a", "b"]], names=["n", "s"])
    c = pd.MultiIndex.from_tuples([(1, "a"), (2, "b"), (3, "c")], names=["n", "s"])[:2]
    assert k(a) == k(b) == k(c)
    assert k(a) != k(a.set_names(["n", "t"]))


def test_big_frame_streams_the_same_bytes_as_the_reference_key() -> None:
    df = pd.DataFrame(np.random.default_rng(2).random((20_000, 4)), columns=list("abcd"))
    df["s"] = [f"row{i}" for i in range(len(df))]
    assert input_hash(df) == sha(structural_key(df))


# ---------------------------------------------------------------------- NotHashable


def _error(value: object) -> NotHashable:
    with pytest.raises(NotHashable) as info:
        input_hash(value)
    with pytest.raises(NotHashable):
        structural_key(value)
    return info.value


FIX = "pass a hashable summary, e.g. a version string or a file's content hash, as the step input"


def test_not_hashable_names_type_path_and_fix() -> None:
    class Widget:
        pass

    error = _error({"rows": [0, 1, 2, Widget()]})
    assert isinstance(error, TypeError) and isinstance(error, NbstepError)
    assert error.path == 'input["rows"][3]'
    assert 'input["rows"][3]' in str(error)
    assert "Widget" in str(error) and "Widget" in error.type_name
    assert FIX in str(error).lower()


@pytest.mark.parametrize(
    ("value", "type_word", "why"),
    [
        ((x for x in []), "generator", "consumed"),
        (iter([1]), "list_iterator", "iterator"),
        (lambda: 1, "function", "function"),
        (len, "builtin_function_or_method", "function"),
        (object(), "object", "no stable"),
        (int, "type", "code"),
        (np.ma.masked_array([1, 2], mask=[0, 1]), "MaskedArray", "mask"),
    ],
)
def test_not_hashable_reasons(value: object, type_word: str, why: str) -> None:
    error = _error({"x": value})
    assert error.path == 'input["x"]'
    assert type_word in str(error)
    assert why in error.reason
    assert FIX in str(error).lower()


def test_open_file_is_not_hashable_and_the_message_says_what_to_pass(tmp_path) -> None:
    with open(tmp_path / "f.txt", "w") as handle:
        error = _error([handle])
    assert error.path == "input[0]"
    assert "file_digest" in str(error)


def test_cycles_are_detected_not_recursion_errors() -> None:
    loop: list[object] = [1]
    loop.append(loop)
    error = _error({"a": loop})
    assert error.path == 'input["a"][1]'
    assert "cycle" in str(error)
    d: dict[str, object] = {}
    d["self"] = d
    assert _error(d).path == 'input["self"]'


def test_shared_but_acyclic_references_are_fine() -> None:
    shared = [1, 2]
    assert k([shared, shared]) == b"LLi1;,i2;,],Li1;,i2;,],]"


def test_very_deep_nesting_raises_not_hashable() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    error = _error(deep)
    assert "nested" in str(error)


def test_paths_through_other_containers() -> None:
    bad = object()
    assert _error((1, bad)).path == "input[1]"
    assert _error({1: [bad]}).path == "input[1][0]"
    assert _error({"p": Params(1.0, name=bad)}).path == 'input["p"].name'  # type: ignore[arg-type]
    assert _error(np.array([[1, 2], [3, bad]], dtype=object)).path == "input[1, 1]"
    df = pd.DataFrame({"col": pd.Series([1, bad], dtype=object)})
    assert _error({"df": df}).path == 'input["df"]["col"].iloc[1]'
    assert _error(frozenset({("t", bad)})).path.startswith("input{")
