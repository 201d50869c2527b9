"""Every raw form of the API reference through the normaliser."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_optico.bookmarks import is_later
from tap_optico.normalize import LocalTime, call_id, decode_plain_page, empty_values_to_null
from tests.helpers import fast_type_of, normalizer_for

RAW = {
    "start_date": "2026-01-15 09:30:00",
    "caller": "0612345678",
    "tracking_number": "0182880101",
    "phone": "0142685300",
}


def normalize(**fields: Any) -> dict[str, Any]:
    return normalizer_for("calls")({**RAW, **fields})


@pytest.mark.parametrize(
    ("field", "raw", "typed"),
    [
        ("trigger_type", "3", 3), ("trigger_type", 3, 3), ("trigger_type", "3.0", 3),
        ("duration", "134", 134), ("duration", 134, 134), ("duration", "00:02:14", 134),
        ("duration", "02:14", 134), ("duration", "26:00:00", 93600), ("duration", 134.4, 134),
        ("revenue", "12.50", 12.5), ("revenue", "12,50", 12.5), ("revenue", 12.5, 12.5),
        ("revenue", "1.234,50", 1234.5), ("revenue", "1 234,50", 1234.5), ("revenue", 12, 12),
        ("is_redirect", "1", True), ("is_redirect", "0", False), ("is_redirect", 1, True),
        ("is_redirect", 0, False), ("is_redirect", True, True), ("is_redirect", "false", False),
        ("expired_redirect", "oui", True),
        ("call_path", "/\n/tarifs\n/contact", ["/", "/tarifs", "/contact"]),
        ("call_path", "/a\r\n/b\n", ["/a", "/b"]),
        ("keypad", "", None), ("keypad", None, None), ("source", "Google", "Google"),
        ("visit_id", 123456, "123456"), ("client_data", {"agence": "Lyon"}, '{"agence":"Lyon"}'),
    ],
)  # fmt: skip
def test_raw_forms(field: str, raw: Any, typed: Any) -> None:
    assert normalize(**{field: raw})[field] == typed


def test_calls_with_the_same_path_each_hold_a_list_of_their_own() -> None:
    """A path is split once (cached), but a record's list is its own: a target may change it."""
    first, second = (normalize(call_path="/\n/tarifs")["call_path"] for _ in range(2))
    first.append("/contact")
    assert second == ["/", "/tarifs"]


@pytest.mark.parametrize(
    ("raw", "utc", "local"),
    [
        ("2026-01-15 09:30:00", "2026-01-15T08:30:00+00:00", "2026-01-15 09:30:00"),
        ("2026-07-15 09:30:00", "2026-07-15T07:30:00+00:00", "2026-07-15 09:30:00"),
        ("2026-07-15T09:30:00", "2026-07-15T07:30:00+00:00", "2026-07-15 09:30:00"),
        ("2026-07-15T07:30:00Z", "2026-07-15T07:30:00+00:00", "2026-07-15 09:30:00"),
        ("2026-07-15T09:30:00+02:00", "2026-07-15T07:30:00+00:00", "2026-07-15 09:30:00"),
        ("2026-07-15T12:00:00-05:00", "2026-07-15T17:00:00+00:00", "2026-07-15 19:00:00"),
        ("2026-01-01 00:30:00", "2025-12-31T23:30:00+00:00", "2026-01-01 00:30:00"),
        (1784100600, "2026-07-15T07:30:00+00:00", "2026-07-15 09:30:00"),
        # A time the spring clock change skips is read with the offset before it, as zoneinfo does.
        ("2026-03-29 02:30:00", "2026-03-29T01:30:00+00:00", "2026-03-29 02:30:00"),
    ],
)
def test_start_date_is_the_instant_in_utc_and_the_wall_time_is_kept(
    raw: str | int, utc: str, local: str
) -> None:
    record = normalize(start_date=raw)
    assert (record["start_date"], record["start_date_local"]) == (utc, local)


ZONES = ["Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]
# Hours around both clock changes of 2026 in Paris and New York, at any minute and second.
NAIVE_TIMES = st.datetimes(min_value=dt.datetime(2026, 3, 7), max_value=dt.datetime(2026, 11, 2))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ZONES), st.lists(NAIVE_TIMES, min_size=1, max_size=20))
def test_naive_times_give_the_instant_zoneinfo_gives(zone: str, naive: list[dt.datetime]) -> None:
    """The per-hour cache of UTC hours gives what a reading of each time on its own gives."""
    normalizer = normalizer_for("calls", zone)
    for moment in naive:
        moment = moment.replace(microsecond=0, fold=0)  # naive text reads as the first occurrence
        expected = moment.replace(tzinfo=ZoneInfo(zone)).astimezone(dt.timezone.utc)
        for _ in range(2):  # read again: from the cache, where the hour has one offset
            record = normalizer({**RAW, "start_date": moment.isoformat(sep=" ")})
            assert dt.datetime.fromisoformat(record["start_date"]) == expected
            assert record["start_date"].endswith("+00:00")
            assert record["start_date_local"] == moment.isoformat(sep=" ")


@pytest.mark.parametrize(
    ("later", "earlier"),
    [
        # The same kind of value: dates, and instants in UTC.
        ("2026-04-08", "2026-04-07"),
        ("2026-04-08T21:45:00+00:00", "2026-04-08T21:44:59+00:00"),
        # A bookmark written with the offset of `timezone` (before start_date was UTC).
        ("2026-04-08T21:45:00+00:00", "2026-04-08T23:30:00+02:00"),
        ("2026-04-08T21:45:00Z", "2026-04-08T23:30:00+02:00"),
        ("2026-04-09T02:00:00-05:00", "2026-04-09T06:30:00+00:00"),
    ],
)
def test_bookmarks_compare_as_instants_whatever_their_offsets(later: str, earlier: str) -> None:
    assert is_later(later, earlier)
    assert not is_later(earlier, later)
    assert not is_later(later, later)


def test_a_bookmark_of_the_old_format_and_its_utc_form_are_the_same_moment() -> None:
    assert not is_later("2026-04-08T21:30:00+00:00", "2026-04-08T23:30:00+02:00")
    assert not is_later("2026-04-08T23:30:00+02:00", "2026-04-08T21:30:00+00:00")


def test_call_id_is_stable_across_raw_forms() -> None:
    plain = normalize()
    assert normalize(start_date="2026-01-15T09:30:00")["call_id"] == plain["call_id"]
    spaced = normalizer_for("calls")(
        {**{k: v for k, v in RAW.items() if k != "tracking_number"}, "tracking number": "0182880101"}
    )
    assert spaced["tracking_number"] == "0182880101"
    assert spaced["call_id"] == plain["call_id"]
    assert normalize(caller="0699999999")["call_id"] != plain["call_id"]
    assert plain["call_id"] == call_id("2026-01-15T09:30:00", "0182880101", "0612345678", "0142685300")


@pytest.mark.parametrize(
    ("start", "key"),
    [
        ("2026-01-15 09:30:00", "74601efcdb7aff5cc65142ed3169b6f6"),
        ("2026-07-15T07:30:00Z", "6a67dfdb8dd9ab3c29d8822e7718ab76"),
        (1784100600, "6a67dfdb8dd9ab3c29d8822e7718ab76"),
        ("2026-10-25 02:30:00", "6865cd775d1fc64f19dc905662d72952"),
        ("2026-10-25T02:30:00+01:00", "53aa546834da9884b55f1e84350eba7f"),
        ("2026-03-29 02:30:00", "8292e6c86632579a2e71706f61477ba6"),
    ],
)
def test_call_ids_are_those_of_earlier_releases(start: str | int, key: str) -> None:
    """start_date became UTC; the keys warehouses already hold did not change."""
    assert normalize(start_date=start)["call_id"] == key


def test_unreadable_values_become_null_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    normalizer = normalizer_for("calls")
    with caplog.at_level(logging.WARNING):
        first = normalizer({**RAW, "duration": "longtemps"})
        normalizer({**RAW, "duration": "encore"})
        normalizer.log_summary()
    assert first["duration"] is None
    assert first["caller"] == "0612345678"
    assert sum("could not read duration" in r.message for r in caplog.records) == 1
    assert any("2 value(s) of duration" in r.message for r in caplog.records)


@pytest.mark.parametrize(
    "raw", [2**63, -(2**63) - 1, 10**40, "10000000000000000000000", "2562047788015216:00:00"]
)
def test_an_integer_no_bigint_holds_is_unreadable_on_both_paths(raw: Any) -> None:
    """A warehouse's 64-bit integer column would refuse the whole load for one such value."""
    assert normalize(duration=raw, trigger_type=raw)["duration"] is None
    assert normalize(trigger_type=raw)["trigger_type"] is None
    body = json.dumps({"status": "OK", "results": [{**RAW, "duration": raw}]}).encode()
    page = decode_plain_page(FAST_CALL, body)
    assert page is not None
    [result] = page["results"]
    assert type(result) is not FAST_CALL  # the converters' path, which sets it to null
    assert normalizer_for("calls")(result)["duration"] is None
    assert normalize(duration=2**63 - 1, trigger_type=-(2**63))["trigger_type"] == -(2**63)


def test_unknown_fields_are_kept_and_named(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        record = normalize(**{"Campaign Id": "c-1"})
    assert record["extra_fields"] == {"campaign_id": "c-1"}
    assert any("campaign_id" in r.message for r in caplog.records)


def test_daily_rows() -> None:
    row = normalizer_for("daily_calls")(
        {"date": "2026-01-15", "calls": "12", "duration": "01:00:00", "revenue": "99,90"}
    )
    # The reader sets the account; the normaliser leaves it empty.
    assert row == {
        "account": None,
        "date": "2026-01-15",
        "calls": 12,
        "duration": 3600,
        "revenue": 99.9,
    }


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)
CALLS = normalizer_for("calls")
FAST_CALL = fast_type_of(CALLS)
FIELDS = [*CALLS.fields, "tracking number", "unlisted"]


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), JSON))
def test_any_json_in_any_field_never_raises_nor_drops(raw: dict[str, Any]) -> None:
    record = normalizer_for("calls")(raw)
    unlisted = "unlisted" in raw
    assert set(record) == {*CALLS.properties, *(["extra_fields"] if unlisted else [])}
    assert isinstance(record["call_id"], str)
    assert len(record["call_id"]) == 32
    for field in ("trigger_type", "duration"):
        assert record[field] is None or type(record[field]) is int
    assert record["revenue"] is None or isinstance(record["revenue"], (int, float))
    assert record["is_redirect"] is None or isinstance(record["is_redirect"], bool)


PLAIN_FIELDS = list(FAST_CALL.__struct_fields__)
RAW_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False)
    | st.sampled_from(["", "0", "1", "-5", "007", " 7", "3.0", "1e3", "12.50", "12,50", "nan", "1e400"])
    | st.sampled_from(["true", "False", "oui", "00:02:14", "2026-01-15 09:30:00", "2026-07-15T07:30:00Z"])
    | st.integers(-(10**20), 10**20).map(str)
    | st.floats(allow_nan=False).map(str)
    | st.text(max_size=12)
)
# Values every plain field accepts, so that most examples take the plain path.
PLAIN_VALUES = st.none() | st.just("") | st.integers(0, 10**6).map(str) | st.sampled_from(["0", "1"])


#: How JSON writers write the same answer: compact, Python's default, indented, ASCII or raw UTF-8.
WRITERS = [
    {"separators": (",", ":"), "ensure_ascii": False},
    {"separators": (", ", ": "), "ensure_ascii": True},
    {"indent": 2, "ensure_ascii": True},
    {"indent": "\t", "separators": (",", ":\t"), "ensure_ascii": False},
]


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.sampled_from([*PLAIN_FIELDS, "tracking number"]), PLAIN_VALUES | RAW_VALUES),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from(WRITERS),
    st.booleans(),
)
def test_plain_pages_give_the_records_of_the_converters(
    rows: list[dict[str, Any]], writer: dict[str, Any], reverse_keys: bool
) -> None:
    """Whatever the JSON's formatting, the msgspec path gives each result (plain or not) exactly
    the record the converters give."""
    if reverse_keys:
        rows = [dict(reversed(row.items())) for row in rows]
    body = json.dumps({"status": "OK", "results": rows}, **writer).encode()
    page = decode_plain_page(FAST_CALL, body)
    try:
        results = msgspec.json.decode(body)["results"]
    except msgspec.DecodeError:  # Infinity: not JSON, on either path
        assert page is None
        return
    assert page is not None
    for decoded, raw in zip(page["results"], results, strict=True):
        assert type(decoded) is FAST_CALL or decoded == raw
        assert normalizer_for("calls")(decoded) == normalizer_for("calls")(raw)


PLAIN = {**RAW, "duration": "134", "revenue": "", "is_redirect": "0", "call_path": "/\n/tarifs"}
#: The same plain call in forms msgspec types as they are: numbers and flags as JSON, null for "".
TYPED = {**PLAIN, "duration": 134, "revenue": None, "is_redirect": False}
#: Forms that need the converters: a decimal comma, a clock duration, a number as text, an unlisted field.
ODD_FORMS = ({"revenue": "12,50"}, {"duration": "00:02:14"}, {"visit_id": 42}, {"campaign": "x"})


@pytest.mark.parametrize("writer", WRITERS)
def test_plain_results_are_typed_in_any_formatting_and_only_odd_ones_are_not(
    writer: dict[str, Any],
) -> None:
    odd = [{**PLAIN, **form} for form in ODD_FORMS]
    answer = {"status": "OK", "total_results": 7, "results": [PLAIN, TYPED, *odd, 42]}
    page = decode_plain_page(FAST_CALL, json.dumps(answer, **writer).encode())
    assert page is not None
    assert page["total_results"] == 7
    plain, typed, *others, not_object = page["results"]
    assert type(plain) is type(typed) is FAST_CALL
    assert plain == typed
    assert others == odd
    assert not_object == 42
    record = normalizer_for("calls")(plain)
    assert record["call_path"] == ["/", "/tarifs"]
    assert record["revenue"] is None
    both = json.dumps({**answer, "results": [PLAIN, TYPED]}, **writer).encode()
    all_plain = decode_plain_page(FAST_CALL, both)
    assert all_plain is not None
    assert [type(row) for row in all_plain["results"]] == [FAST_CALL] * 2
    error = {"status": "ERROR", "errors": ["bad key"], "results": []}
    not_pages: list[dict[str, Any]] = [error, {"results": {}}, {}]
    for not_a_page in not_pages:
        assert decode_plain_page(FAST_CALL, json.dumps(not_a_page, **writer).encode()) is None


JSON_TEXTS = st.recursive(
    st.none() | st.sampled_from(["", "a", ":", '"', ' ""', "x:", ': ""', ":\n", 12]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["", "a", "b:", ': ""']), inner, max_size=4)
    ),
    max_leaves=12,
)


def nulled(value: Any) -> Any:
    """``value`` with every empty string that is an object's value a null."""
    if isinstance(value, dict):
        return {key: None if item == "" else nulled(item) for key, item in value.items()}
    if isinstance(value, list):
        return [nulled(item) for item in value]
    return value


@settings(max_examples=300)
@given(value=JSON_TEXTS, writer=st.sampled_from(WRITERS))
def test_empty_values_become_null_whatever_the_spacing(value: Any, writer: dict[str, Any]) -> None:
    text = json.dumps(value, **writer).encode()
    assert msgspec.json.decode(empty_values_to_null(text)) == nulled(value)


PARIS = ZoneInfo("Europe/Paris")
CLOCKS = st.sampled_from(["00", "07", "59", "60", "99", "5", "0a", "٣٣"])


@settings(max_examples=300)
@given(
    hour=st.sampled_from(["2026-03-20 10", "2026-03-29T02", "2026-10-25 02", "2026-10-25T03"]),
    minute=CLOCKS,
    second=CLOCKS,
    separator=st.sampled_from([":", "-"]),
)
def test_a_time_in_an_hour_read_before_reads_as_a_first_one(
    hour: str, minute: str, second: str, separator: str
) -> None:
    """The sliced reading of a known hour gives what the full reading gives, or fails as it does."""
    value = f"{hour}:{minute}{separator}{second}"
    warm = LocalTime(PARIS)
    for known in (f"{hour}:00:00", f"{hour[:10]} {hour[11:]}:30:00", f"{hour[:10]}T{hour[11:]}:30:00"):
        warm.read(known)
    try:
        expected: Any = LocalTime(PARIS).read(value)
    except ValueError as error:
        expected = type(error)
    try:
        got: Any = warm.read(value)
    except ValueError as error:
        got = type(error)
    assert got == expected
