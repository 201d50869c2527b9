"""The fast path (records written a batch at a time) against the ordinary one (the SDK's loop, record
by record): the same output, byte for byte apart from ``time_extracted``, the same STATE after the
same records, the same record counts; and the settings that must take the ordinary path do.

The API is faked behind the client's retried request (``_send_with_retries``): each answer's body
goes through the client's own decoding, plain or not, and its own reading of ``next_page``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from singer_sdk.singerlib import RecordMessage
from typing_extensions import override

from tap_optico.normalize import BOOLEAN, DURATION, INTEGER, NUMBER, PAGE_LIST, TEXT
from tap_optico.paging import Window
from tap_optico.reading import OpticoStream
from tap_optico.sdk_seam import WindowedStream
from tap_optico.tap import TapOptico
from tap_optico.writer import OpticoWriter

FIRST = dt.date(2026, 3, 20)
DAYS = 4
WINDOW_DAYS = 2
TIME_EXTRACTED = re.compile(rb',"time_extracted":"[^"]*"')
#: The SDK's signpost in STATE is the time the tap started: the one other clock reading in the output.
SIGNPOST = re.compile(rb'"replication_key_signpost":"[^"]*"')
#: When a run compared its days (in the reconciliation stream's records): a time of the run.
CHECKED_AT = re.compile(rb'("checked_at":)"[^"]*"')
RECORD = b'{"type":"RECORD"'

# Raw values of each conversion: plain forms, odd forms, unreadable ones, empty ones.
VALUES: dict[Any, list[Any]] = {
    TEXT: ["abc", "0142685300", "é à", "", 12, None, {"k": 1}],
    INTEGER: ["4", "", "4.0", "1 234", "x", 3],
    NUMBER: ["12.50", "12,50", "", "7", "nan", 7.25],
    BOOLEAN: ["0", "1", "oui", "", "peut-être", True],
    DURATION: ["437", "00:02:14", "02:14", "", "-3", "12.5", 90],
    PAGE_LIST: ["/a\n/b", "", "/x\r\n/y", "/", ["/p", ""]],
}


def day_text(offset: int) -> str:
    return (FIRST + dt.timedelta(days=offset)).isoformat()


# Offsets from FIRST: most inside the days read, some strays (before, after, years ahead).
DAY_OFFSETS = st.sampled_from([0, 0, 1, 1, 2, 2, 3, 3, -1, 4, 400])
START_DATES = st.one_of(
    st.builds(
        lambda day, hour, minute, sep: f"{day_text(day)}{sep}{hour:02d}:{minute:02d}:{minute % 7:02d}",
        DAY_OFFSETS,
        st.integers(0, 23),
        st.integers(0, 59),
        st.sampled_from([" ", " ", "T"]),
    ),
    st.sampled_from(["2026-03-21T10:00:00+02:00", "2026-03-22T08:30:00Z", 1774090000, "hier", "", None]),
)


def field_values(conversion: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(VALUES[conversion])


@st.composite
def call_rows(draw: st.DrawFn) -> Any:
    """A result of ``type=calls``: mostly plain, sometimes odd, now and then not an object."""
    if draw(st.integers(0, 30)) == 0:
        return draw(st.sampled_from([42, "texte", [1]]))
    plain = draw(st.booleans())
    row: dict[str, Any] = {"start_date": draw(START_DATES)}
    for name, conversion in CALL_FIELDS.items():
        if plain:
            row[name] = draw(st.sampled_from(VALUES[conversion][:2]))
        elif draw(st.integers(0, 5)):
            row[name] = draw(field_values(conversion))
    if not plain and draw(st.integers(0, 4)) == 0:
        row["Extra Field"] = draw(st.sampled_from(["v", 3]))
    return row


CALL_FIELDS = {
    "caller": TEXT,
    "tracking_number": TEXT,
    "phone": TEXT,
    "trigger_type": INTEGER,
    "source": TEXT,
    "call_path": PAGE_LIST,
    "status": TEXT,
    "duration": DURATION,
    "revenue": NUMBER,
    "is_redirect": BOOLEAN,
}


@st.composite
def daily_rows(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "date": day_text(draw(DAY_OFFSETS)),
        "calls": draw(field_values(INTEGER)),
        "duration": draw(field_values(DURATION)),
        "revenue": draw(field_values(NUMBER)),
    }


# A window's results: drawn from a small pool, so that rows repeat (look-alikes, or a page's
# last rows given again at the top of the next).
def window_rows(rows: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(rows, min_size=1, max_size=12).flatmap(
        lambda pool: st.lists(st.sampled_from(pool), max_size=30)
    )


# (stream, account, window start) -> the window's results, in the API's order.
Answers = dict[tuple[str, str, dt.date], list[Any]]


@st.composite
def answers(draw: st.DrawFn, accounts: list[str]) -> Answers:
    starts = [FIRST + dt.timedelta(days=first) for first in range(0, DAYS, WINDOW_DAYS)]
    return {
        (stream, account, start): draw(window_rows(call_rows() if stream == "calls" else daily_rows()))
        for stream in ("calls", "daily_calls")
        for account in accounts
        for start in starts
    }


def body(results: list[Any], number: int, page_size: int, last_form: Any) -> bytes:
    """Page ``number`` of ``results``: compact JSON as the API writes it, the last page marked by
    ``last_form`` (an absent next_page for ``...``)."""
    first = (number - 1) * page_size
    answer: dict[str, Any] = {
        "status": "OK",
        "total_results": len(results),
        "results": results[first : first + page_size],
    }
    if first + page_size < len(results):
        answer["next_page"] = number + 1
    elif last_form is not ...:
        answer["next_page"] = last_form
    return json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()


def serve(
    stream: OpticoStream, data: Answers, page_size: int, last_form: Any
) -> Callable[[Any, int, Window], dict[str, Any]]:
    def send(_prepared: Any, number: int, window: Window) -> dict[str, Any]:
        response = requests.Response()
        response.status_code = 200
        response.headers["Content-Type"] = "application/json"
        response._content = body(
            data[stream.name, window.account.name, window.start], number, page_size, last_form
        )
        return stream.decode(response, number)

    return send


@contextmanager
def captured_stdout() -> Iterator[io.BytesIO]:
    """What the tap writes to stdout (it writes bytes to ``sys.stdout.buffer``)."""
    raw = io.BytesIO()
    saved, sys.stdout = sys.stdout, io.TextIOWrapper(raw, encoding="utf-8")
    try:
        yield raw
    finally:
        sys.stdout.flush()
        sys.stdout.detach()  # leaves ``raw`` open
        sys.stdout = saved


class Metrics(logging.Handler):
    """The record_count points the SDK's metrics logger writes, summed per stream."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: Counter[str] = Counter()

    @override
    def emit(self, record: logging.LogRecord) -> None:
        point = json.loads(record.getMessage().removeprefix("METRIC: "))
        if point["metric"] == "record_count":
            self.records[point["tags"]["stream"]] += point["value"]


@dataclass
class Output:
    """The tap's output lines (``time_extracted`` and the start time in STATE cut out), the error
    that ended the run, the records counted by the SDK's metrics, and the batches written."""

    lines: list[bytes]
    error: str | None
    counted: Counter[str]
    batches: int

    def records(self) -> Counter[str]:
        return Counter(json.loads(line)["stream"] for line in self.lines if line.startswith(RECORD))


def run(
    config: dict[str, Any], data: Answers, *, fast: bool, limit: int | None, page_size: int, last_form: Any
) -> Output:
    tap = TapOptico(config=config)
    for stream in tap.streams.values():
        if not isinstance(stream, OpticoStream):
            continue  # the reconciliation stream asks nothing: what it writes comes from the others
        stream.__dict__["_send_with_retries"] = serve(stream, data, page_size, last_form)
        if limit is not None:
            stream.ABORT_AT_RECORD_COUNT = limit
    metrics, logger = Metrics(), logging.getLogger("singer_sdk.metrics")
    level = logger.level
    logger.addHandler(metrics)
    logger.setLevel(logging.INFO)
    batches = 0
    error: str | None = None
    write_records = WindowedStream.write_records

    def counted(self: WindowedStream, records: list[dict[str, Any]]) -> None:
        nonlocal batches
        batches += 1
        write_records(self, records)

    # The ordinary path, forced; the fast one is what these settings take.
    fast_path = WindowedStream.fast_path if fast else property(lambda self: False)
    try:
        with (
            captured_stdout() as out,
            mock.patch.object(WindowedStream, "write_records", counted),
            mock.patch.object(WindowedStream, "fast_path", fast_path),
        ):
            try:
                tap.sync_all()
            except Exception as raised:  # noqa: BLE001  # a dry run (a record limit) fails on any failure
                error = f"{type(raised).__name__}: {raised}"
    finally:
        logger.removeHandler(metrics)
        logger.setLevel(level)
    lines = [
        CHECKED_AT.sub(rb'\1"-"', SIGNPOST.sub(b"", TIME_EXTRACTED.sub(b"", line, count=1)))
        for line in out.getvalue().splitlines()
    ]
    return Output(lines, error, metrics.records, batches)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    accounts=st.sampled_from([["default"], ["alpha", "beta"]]),
    data=st.data(),
    page_size=st.sampled_from([10, 11]),
    concurrency=st.sampled_from([1, 4]),
    limit=st.sampled_from([None, None, 1, 7]),
    last_form=st.sampled_from([..., None, 0, ""]),
)
def test_the_fast_path_writes_what_the_ordinary_path_writes(
    accounts: list[str],
    data: st.DataObject,
    page_size: int,
    concurrency: int,
    limit: int | None,
    last_form: Any,
) -> None:
    answered = data.draw(answers(accounts))
    keys = (
        {"accounts": [{"name": name, "api_key": f"key-{name}"} for name in accounts]}
        if len(accounts) > 1
        else {"api_key": "key"}
    )
    config = {
        **keys,
        "api_url": "http://127.0.0.1:9/data-api",
        "start_date": FIRST.isoformat(),
        "end_date": (FIRST + dt.timedelta(days=DAYS - 1)).isoformat(),
        "window_days": WINDOW_DAYS,
        "page_size": page_size,
        "max_concurrency": concurrency,
    }
    options = {"limit": limit, "page_size": page_size, "last_form": last_form}
    fast = run(config, answered, fast=True, **options)
    ordinary = run(config, answered, fast=False, **options)
    assert fast.lines == ordinary.lines
    assert fast.error == ordinary.error
    assert fast.counted == ordinary.counted
    if fast.error is None:
        assert +fast.counted == fast.records()
    assert ordinary.batches == 0
    # The reconciliation stream's records (one per day read by both) come from the others' records.
    read = {stream: count for stream, count in fast.records().items() if stream != "reconciliation"}
    assert (fast.batches > 0) == bool(read)
    if limit is not None:
        assert all(count <= limit for count in read.values())


def sync_config(**settings: Any) -> dict[str, Any]:
    return {"api_key": "k", "start_date": FIRST.isoformat(), **settings}


@pytest.mark.parametrize(
    ("config", "catalog_deselects"),
    [
        ({}, False),
        ({"stream_maps": {"calls": {"caller": "__NULL__"}}}, False),
        ({"stream_maps": {"calls_copy": {"__source__": "calls"}}}, False),
        ({"flattening_enabled": True, "flattening_max_depth": 1}, False),
        ({}, True),
    ],
    ids=["plain", "a stream map", "a stream copied", "flattening", "deselected field"],
)
def test_only_a_run_the_sdk_loop_would_only_write_takes_the_fast_path(
    config: dict[str, Any], catalog_deselects: bool
) -> None:
    tap = TapOptico(config=sync_config(**config))
    if catalog_deselects:
        catalog = tap.catalog_dict
        for entry in catalog["streams"]:
            for metadata in entry["metadata"]:
                if metadata["breadcrumb"] == ["properties", "caller"]:
                    metadata["metadata"]["selected"] = False
        tap = TapOptico(config=sync_config(**config), catalog=catalog)
    calls = tap.streams["calls"]
    assert isinstance(calls, OpticoStream)
    assert calls.fast_path == (not config and not catalog_deselects)
    assert not calls.writes_batches  # outside the SDK's sync loop, records are always yielded


@pytest.mark.parametrize("version", [None, 3])
def test_record_messages_are_written_as_the_sdk_writes_them(version: int | None) -> None:
    """The fast path's and the ordinary path's envelopes against singer-sdk's own."""
    records: list[dict[str, Any]] = [
        {"call_id": "a", "path": ["/é", "/b\n"], "duration": None},
        {},
        {"caller": "\u2028"},
    ]
    now = dt.datetime.now(dt.timezone.utc)
    writer = OpticoWriter()
    out = io.BytesIO()
    with mock.patch.object(sys, "stdout", mock.Mock(buffer=out)):
        writer.write_records("calls", records, version)
        for record in records:
            writer.write_record("calls", record, version)
        writer.flush()
    expected = b"".join(  # bytes(): format_message returns the one buffer it writes each message into
        bytes(writer.format_message(RecordMessage("calls", record, version=version, time_extracted=now)))
        for record in records * 2
    )
    assert TIME_EXTRACTED.sub(b"", out.getvalue()) == TIME_EXTRACTED.sub(b"", expected)
