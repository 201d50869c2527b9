"""Lose nothing: look-alike calls, repeated rows, stray dates, unusable state, DST, the key, batch."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_optico.client import MAX_REPORTED_BODY_CHARS
from tap_optico.sandbox import SANDBOX_API_KEY, build_server
from tap_optico.sandbox.api import Order
from tap_optico.secrets import register, shorten
from tap_optico.tap import TapOptico
from tests.helpers import (
    TAP,
    CannedApi,
    SandboxFactory,
    canonical_json,
    normalizer_for,
    run_command,
    run_tap,
    sandbox_call_ids,
    stream,
    tap_config,
)

Canned = Callable[[list[Any]], CannedApi]
DAY = dt.date(2026, 3, 20)
ORDERS: tuple[Order, ...] = ("asc", "desc")


def read_calls(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The calls stream's records, read in this process over HTTP as the tap reads them."""
    calls = TapOptico(config=config).streams["calls"]
    return [record for record in calls.get_records(None) if isinstance(record, dict)]


@settings(max_examples=25, deadline=None)
@given(
    lookalikes=st.integers(1, 4),
    page_size=st.sampled_from([10, 13, 37, 100]),
    concurrency=st.sampled_from([1, 4]),
    order=st.sampled_from(ORDERS),
)
def test_every_lookalike_call_is_emitted_with_a_key_of_its_own(
    lookalikes: int, page_size: int, concurrency: int, order: Order
) -> None:
    server = build_server(
        first_day=DAY,
        last_day=DAY + dt.timedelta(days=2),
        calls_per_day=60,
        lookalikes=lookalikes,
        order=order,
    ).start()
    try:
        config = tap_config(server, page_size=page_size, max_concurrency=concurrency, window_days=2)
        records = read_calls(config)
        again = read_calls({**config, "page_size": 50, "max_concurrency": 1})
    finally:
        server.stop()
    ids = [record["call_id"] for record in records]
    assert len(ids) == len(set(ids)) == 3 * 60
    assert set(ids) == sandbox_call_ids(server)
    # Read again with other pages: the same keys, each on the same call.
    by_id = {record["call_id"]: canonical_json(record) for record in records}
    assert by_id == {record["call_id"]: canonical_json(record) for record in again}


def _calls(first_second: int, count: int) -> list[dict[str, str]]:
    return [
        {
            "start_date": f"2026-01-01 10:{(first_second + n) // 60:02d}:{(first_second + n) % 60:02d}",
            "caller": "0612345678",
            "tracking_number": "0182880101",
            "phone": "0142685300",
        }
        for n in range(count)
    ]


def _page(results: list[dict[str, str]], total: int, next_page: int | None) -> dict[str, Any]:
    return {"status": "OK", "total_results": total, "next_page": next_page, "results": results}


def _canned_config(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "api_key": SANDBOX_API_KEY,
        "api_url": url,
        "start_date": "2026-01-01",
        "end_date": "2026-01-01",
        "page_size": 10,
        "max_concurrency": 1,
        "max_tries": 1,
        **overrides,
    }


def test_a_row_repeated_on_the_next_page_while_data_shifts_is_emitted_once(canned: Canned) -> None:
    rows = _calls(0, 21)
    # A call arrived between the two requests: row 9 is handed again at the top of page 2.
    api = canned([_page(rows[:10], 20, 2), _page(rows[9:19], 21, 3), _page(rows[19:], 21, None)])
    records = read_calls(_canned_config(api.url))
    assert [r["start_date_local"] for r in records] == [r["start_date"] for r in rows]
    assert api.served == 3  # 21 distinct calls for 21 results: no read again


def test_identical_calls_on_two_pages_of_one_snapshot_are_two_calls(canned: Canned) -> None:
    rows = _calls(0, 19)
    twin = rows[9]
    api = canned([_page(rows[:10], 20, 2), _page([twin, *rows[10:]], 20, None)])
    records = read_calls(_canned_config(api.url))
    assert len(records) == len({r["call_id"] for r in records}) == 20
    assert api.served == 2


def test_calls_dated_outside_the_days_asked_are_emitted_once_and_move_no_bookmark(
    canned: Canned, tmp_path: Path
) -> None:
    day_one, day_two = _calls(0, 1)[0], {**_calls(1, 1)[0], "start_date": "2026-01-02 09:00:00"}
    future = {**_calls(2, 1)[0], "start_date": "2031-01-05 10:00:00"}
    # The API ignores the dates asked: every window gets the same three calls.
    api = canned([_page([day_one, day_two, future], 3, None)])
    config = _canned_config(api.url, end_date="2026-01-02", window_days=1, max_concurrency=2)
    run = run_tap(config, tmp_path)
    assert run.returncode == 0, run.stderr
    ids = [r["call_id"] for r in run.records("calls")]
    assert len(ids) == len(set(ids)) == 3
    assert run.bookmark("calls") == "2026-01-02T08:00:00+00:00"
    warnings = [line for line in run.stderr.splitlines() if "outside the days requested" in line]
    assert len(warnings) == 1
    assert "2031-01-05" in warnings[0]


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("{not json", "State file"),
        ("[1, 2]", "holds a JSON list, not a Singer state object"),
        ("null", "holds a JSON null, not a Singer state object"),
        ('{"calls": {"replication_key_value": "2026-03-20"}}', "holds no 'bookmarks' or 'currently_syncing'"),
        (b"\xff\xfe{}", "is not UTF-8 text"),
        ('{"bookmarks": []}', "'bookmarks' is not as in a Singer state"),
        ('{"bookmarks": {"calls": []}}', "'bookmarks' is not as in a Singer state"),
        ('{"bookmarks": {"calls": {"partitions": null}}}', "'bookmarks' is not as in a Singer state"),
        ('{"bookmarks": {"calls": {"partitions": [7]}}}', "'bookmarks' is not as in a Singer state"),
        ('{"bookmarks": {"calls": {"replication_key_value": "hier"}}}', "is 'hier', which is not a date"),
        (
            '{"bookmarks": {"daily_calls": {"replication_key_value": 20260401}}}',
            "is 20260401, which is not a date",
        ),
        (
            '{"bookmarks": {"calls": {"replication_key_value": "2031-01-05T10:00:00+01:00"}}}',
            "after the last day to read (2026-04-08)",
        ),
    ],
)
def test_state_that_cannot_be_used_stops_with_one_line(
    make_sandbox: SandboxFactory, tmp_path: Path, state: str | bytes, message: str
) -> None:
    server = make_sandbox()
    run = run_tap(tap_config(server), tmp_path, state=state)
    assert run.returncode == 1
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    assert message in run.stderr.splitlines()[-1]
    assert server.requests == []


@pytest.mark.parametrize("wrap", ["meltano state get", "STATE message"])
def test_a_state_as_meltano_prints_it_or_as_a_state_message_is_the_state_it_holds(
    make_sandbox: SandboxFactory, tmp_path: Path, wrap: str
) -> None:
    """Read as no state, either would read every day again from start_date."""
    server = make_sandbox(last_day=dt.date(2026, 3, 25))
    first = run_tap(tap_config(server), tmp_path)
    wrapped = (
        {"singer_state": first.final_state}
        if wrap == "meltano state get"
        else {"type": "STATE", "value": first.final_state}
    )
    again = run_tap(tap_config(server), tmp_path, state=wrapped)
    assert again.returncode == 0, again.stderr
    given = run_tap(tap_config(server), tmp_path, state=first.final_state)
    assert again.records("calls") == given.records("calls")
    assert len(again.records("calls")) < len(first.records("calls"))
    assert again.final_state == given.final_state


def test_an_empty_state_file_is_read_as_no_state(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    server = make_sandbox(last_day=dt.date(2026, 3, 21))
    run = run_tap(tap_config(server), tmp_path, state="")
    assert run.returncode == 0, run.stderr
    assert "is empty: reading as if there were no state" in run.stderr
    assert len(run.records("calls")) == 100


AUTUMN = dt.datetime(
    2026, 10, 25, 0, 0, tzinfo=dt.timezone.utc
)  # 02:00 CEST: the clock goes back at 01:00 UTC


@settings(max_examples=300, deadline=None)
@given(
    seconds=st.integers(-3 * 3600, 4 * 3600),
    form=st.sampled_from(["epoch", "Z", "paris", "+05:30"]),
)
def test_a_time_with_its_instant_keeps_it_across_the_clock_change(seconds: int, form: str) -> None:
    instant = AUTUMN + dt.timedelta(seconds=seconds)
    raw: Any
    if form == "epoch":
        raw = int(instant.timestamp())
    elif form == "Z":
        raw = instant.strftime("%Y-%m-%dT%H:%M:%SZ")
    elif form == "paris":
        raw = instant.astimezone(ZoneInfo("Europe/Paris")).isoformat()
    else:
        raw = instant.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30))).isoformat()
    normalize = normalizer_for("calls")
    # Warm the per-hour cache with the first occurrence of the repeated hour, as real pages would.
    normalize({"start_date": "2026-10-25 02:15:00"})
    record = normalize({"start_date": raw, "caller": "0612345678"})
    assert dt.datetime.fromisoformat(record["start_date"]) == instant


def test_the_repeated_hour_keeps_both_calls_and_reads_naive_times_as_summer_time() -> None:
    normalize = normalizer_for("calls")
    first = normalize({"start_date": "2026-10-25T02:30:00+02:00", "caller": "0612345678"})
    second = normalize({"start_date": "2026-10-25T02:30:00+01:00", "caller": "0612345678"})
    naive = normalize({"start_date": "2026-10-25 02:30:00", "caller": "0612345678"})
    assert first["call_id"] != second["call_id"]
    assert naive["start_date"] == first["start_date"] == "2026-10-25T00:30:00+00:00"
    assert second["start_date"] == "2026-10-25T01:30:00+00:00"
    assert naive["call_id"] == first["call_id"]
    # One wall time for both: start_date tells them apart.
    assert {r["start_date_local"] for r in (first, second, naive)} == {"2026-10-25 02:30:00"}


KEY = "9f3c1e7a5b2d4f6e8a0c1b3d5f7e9a2c"


def _no_piece_of_the_key(text: str) -> None:
    pieces = {KEY[i : i + 8] for i in range(len(KEY) - 7)}
    assert not [piece for piece in pieces if piece in text], text


@pytest.mark.parametrize("cut", [MAX_REPORTED_BODY_CHARS, 80])
def test_the_key_is_masked_before_any_text_is_cut(cut: int) -> None:
    register(KEY)
    for position in range(cut - len(KEY) - 2, cut + 2):
        _no_piece_of_the_key(shorten("x" * position + KEY + " trailing text" * 20, cut))
        _no_piece_of_the_key(shorten("x" * position + f"api_key={KEY}&page=1" + " more" * 60, cut))


def test_an_error_page_naming_the_key_near_the_cut_prints_none_of_it() -> None:
    calls = stream("calls")
    register(KEY)
    for position in range(MAX_REPORTED_BODY_CHARS - 80, MAX_REPORTED_BODY_CHARS + 2):
        response = requests.Response()
        response.status_code, response.reason = 500, "Internal Server Error"
        echoed = KEY.upper() if position % 2 else KEY  # a page may echo it in another case
        response._content = ("<html>" + "y" * position + f"api_key {echoed} </html>").encode()
        _no_piece_of_the_key(calls.response_error_message(response))


def test_batch_mode_is_not_advertised_nor_accepted(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    about = json.loads(
        subprocess.run([TAP, "--about", "--format=json"], capture_output=True, check=True, text=True).stdout
    )
    assert "stream-maps" in about["capabilities"]
    assert "batch" not in about["capabilities"]
    assert "batch_config" not in about["settings"]["properties"]
    config = {**tap_config(make_sandbox()), "batch_config": {"encoding": {"format": "jsonl"}}}
    run = run_tap(config, tmp_path)
    assert run.returncode == 1
    assert "Setting 'batch_config' is not supported" in run.stderr
    assert not re.search(r'"type": ?"BATCH"', run.stdout)


def test_an_api_error_quoting_part_of_the_key_prints_none_of_it(canned: Canned, tmp_path: Path) -> None:
    api = canned([{"status": "ERROR", "errors": [f"Clef API {KEY[3:19]}… invalide"], "results": []}])
    run = run_tap({**_canned_config(api.url), "api_key": KEY}, tmp_path, env={"TAP_OPTICO_LOGLEVEL": "DEBUG"})
    assert run.returncode == 1
    assert "Optico API error: Clef API" in run.stderr
    _no_piece_of_the_key(run.stderr + run.stdout)


def test_an_empty_page_ends_the_read_whatever_next_page_says(canned: Canned, tmp_path: Path) -> None:
    api = canned([_page(_calls(0, 3), 3, 2), _page([], 3, 3)])
    run = run_tap(_canned_config(api.url), tmp_path, timeout=60)
    assert run.returncode == 0, run.stderr
    assert len(run.records("calls")) == 3
    assert api.served < 10


@pytest.mark.parametrize(
    ("catalog", "message"),
    [
        (b"{nope", "is not JSON ("),
        (b"\xff\xfe", "is not UTF-8 text"),
        (b"[]", "has no 'streams' list: it is not a Singer catalog"),
        (b'{"streams": [{"schema": {}}]}', "stream 1 has no 'tap_stream_id'"),
        (b'{"streams": [{"tap_stream_id": "calls"}]}', "stream 'calls' has no 'schema' object"),
    ],
)
def test_a_catalog_that_cannot_be_used_stops_with_one_line_naming_the_file(
    make_sandbox: SandboxFactory, tmp_path: Path, catalog: bytes, message: str
) -> None:
    server = make_sandbox()
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_bytes(catalog)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(tap_config(server)))
    run = run_command([TAP, "--config", str(config_file), "--catalog", str(catalog_file)], timeout=120)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    [line] = [line for line in run.stderr.splitlines() if "ERROR" in line]
    assert f"Catalog file {catalog_file} " in line or f"Catalog file {catalog_file}:" in line
    assert message in line
    assert server.requests == []
