"""The tap end to end: the real executable against a sandbox over HTTP."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tap_optico.sandbox import Faults, Misbehaviour, SandboxServer
from tap_optico.sandbox.server import RecordedRequest
from tap_optico.settings import read_day
from tests.helpers import (
    TAP,
    SandboxFactory,
    TapRun,
    bookmark,
    canonical_json,
    expected_call_count,
    run_tap,
    sandbox_call_ids,
    tap_config,
)


@pytest.mark.parametrize("style", ["strings", "mixed"])
def test_both_streams_every_call_exactly_once(
    make_sandbox: SandboxFactory, tmp_path: Path, style: str
) -> None:
    server = make_sandbox(style=style)
    run = run_tap(tap_config(server), tmp_path)
    assert run.returncode == 0, run.stderr
    calls = run.records("calls")
    ids = [record["call_id"] for record in calls]
    assert len(ids) == len(set(ids)) == expected_call_count(server)
    assert set(ids) == sandbox_call_ids(server)
    daily = run.records("daily_calls")
    assert [row["date"] for row in sorted(daily, key=lambda r: r["date"])] == [
        day.isoformat() for day in server.api.data.days(dt.date.min, dt.date.max)
    ]
    assert sum(row["calls"] for row in daily) == len(ids)
    # The API's daily totals agree with the typed calls, whatever raw forms came in.
    assert sum(row["duration"] for row in daily) == sum(record["duration"] or 0 for record in calls)
    assert sum(row["revenue"] for row in daily) == pytest.approx(sum(r["revenue"] or 0 for r in calls))
    schemas = {m["stream"] for m in run.messages if m["type"] == "SCHEMA"}
    assert schemas == {"calls", "daily_calls", "reconciliation"}
    # Every day adds up, whatever raw forms its calls and totals came in.
    checks = run.records("reconciliation")
    assert sorted(r["date"] for r in checks) == sorted(row["date"] for row in daily)
    assert all(r["status"] == "match" for r in checks)
    assert run.bookmark("daily_calls") == "2026-04-08"
    assert run.bookmark("calls").startswith("2026-04-08T")


def test_records_are_typed(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    server = make_sandbox(style="mixed")
    run = run_tap(tap_config(server, timezone="Europe/Paris"), tmp_path)
    calls = run.records("calls")
    winter = next(r for r in calls if r["start_date_local"].startswith("2026-03-20 12"))
    summer = next(r for r in calls if r["start_date_local"].startswith("2026-04-01 12"))
    # Instants in UTC: an hour behind Paris in winter, two in summer (since 2026-03-29).
    assert winter["start_date"] == f"2026-03-20T11{winter['start_date_local'][13:]}+00:00"
    assert summer["start_date"] == f"2026-04-01T10{summer['start_date_local'][13:]}+00:00"
    for record in calls:
        assert isinstance(record["trigger_type"], int)
        assert isinstance(record["duration"], int)
        assert record["revenue"] is None or isinstance(record["revenue"], (int, float))
        assert isinstance(record["is_redirect"], bool)
        assert record["tracking_number"]  # also when the API spells it "tracking number"
        assert record["call_path"] is None or all(isinstance(page, str) for page in record["call_path"])
        assert "" not in record.values()
    # Present only when the API sent an unlisted field: targets store SQL NULL otherwise.
    extras = [r["extra_fields"] for r in calls if "extra_fields" in r]
    assert 0 < len(extras) < len(calls)
    assert all(extra == {"campaign_id": extra["campaign_id"]} for extra in extras)
    assert "campaign_id" in run.stderr  # an unlisted field is named in a warning


def test_second_run_reads_from_bookmark_minus_lookback(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    server = make_sandbox()
    first = run_tap(tap_config(server), tmp_path)
    assert first.returncode == 0, first.stderr
    server.requests.clear()
    second = run_tap(tap_config(server, lookback_days=2), tmp_path, state=first.final_state)
    assert second.returncode == 0, second.stderr
    starts = {request.params["start_date"] for request in server.requests}
    assert starts == {"2026-04-06"}  # bookmark 2026-04-08 minus two days
    assert {r["start_date_local"][:10] for r in second.records("calls")} == {
        "2026-04-06",
        "2026-04-07",
        "2026-04-08",
    }
    assert second.final_state == first.final_state


def test_filters_are_passed_to_the_api(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    server = make_sandbox()
    run = run_tap(tap_config(server, offline_phone_description="pages jaunes"), tmp_path)
    calls = run.records("calls")
    assert calls
    assert {r["tracking_number"] for r in calls} == {"0182880190"}
    assert all(r["url"] is None for r in calls)  # static numbers have no web visit
    assert {request.params.get("offline_phone_description") for request in server.requests} == {
        "pages jaunes"
    }


def test_api_error_fails_with_the_api_messages(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    server = make_sandbox(api_key="another-key")
    run = run_tap(tap_config(server), tmp_path)
    assert run.returncode != 0
    assert "Optico API error: Clef API invalide" in run.stderr
    assert not run.records("calls")


def test_non_json_answer_fails_with_status_and_content_type(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    server = make_sandbox(faults=Faults(every=1, kinds=["html"]))
    run = run_tap(tap_config(server, max_tries=2, max_wait_seconds=1, max_concurrency=1), tmp_path)
    assert run.returncode != 0
    assert "HTTP 200 with text/html; charset=utf-8 that is not valid JSON" in run.stderr
    assert len(server.requests) == 2


@pytest.mark.parametrize("concurrency", [2, 4])
def test_concurrent_and_sequential_runs_agree(
    make_sandbox: SandboxFactory, tmp_path: Path, concurrency: int
) -> None:
    server = make_sandbox(calls_per_day=120)
    config = tap_config(server, page_size=50, window_days=3)
    sequential = run_tap({**config, "max_concurrency": 1}, tmp_path)
    concurrent = run_tap({**config, "max_concurrency": concurrency}, tmp_path)
    assert sequential.returncode == concurrent.returncode == 0
    for stream in ("calls", "daily_calls"):
        records = sequential.records(stream)
        assert records
        assert sorted(map(canonical_json, records)) == sorted(map(canonical_json, concurrent.records(stream)))
    assert sequential.final_state == concurrent.final_state


LATENCY = 0.2


def most_in_flight(requests: list[RecordedRequest]) -> int:
    """The most requests the server held at once, each for the latency it waits before answering
    (the tap holds each longer: from before it arrives until its answer is read)."""
    moments = sorted(
        [(r.received_at, 1) for r in requests] + [(r.received_at + LATENCY, -1) for r in requests]
    )
    held = most = 0
    for _, change in moments:
        held += change
        most = max(most, held)
    return most


def daily_asked_ahead(requests: list[RecordedRequest]) -> bool:
    """Whether daily_calls' first request reached the server before calls' last answer left it."""
    calls = [r.received_at for r in requests if "group_by_day" not in r.params]
    return min(r.received_at for r in requests if "group_by_day" in r.params) < max(calls) + LATENCY


def test_the_next_streams_first_pages_fill_the_slots_left_idle(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    """calls reads three windows: at max_concurrency 4 a slot is idle from the start, and daily_calls'
    first pages are asked there, before calls' last answer, each once, never more than 4 requests in
    flight across both streams; records and STATE are those of max_concurrency 1, where nothing is
    asked ahead (daily_calls' first request follows calls' last answer)."""
    server = make_sandbox(faults=Faults(latency=LATENCY))
    config = tap_config(server, window_days=7, page_size=100)
    runs: dict[int, tuple[TapRun, list[RecordedRequest]]] = {}
    for concurrency in (1, 4):
        server.requests.clear()
        runs[concurrency] = (
            run_tap({**config, "max_concurrency": concurrency}, tmp_path),
            list(server.requests),
        )
    daily_asked = {}
    for concurrency, (run, requests) in runs.items():
        assert run.returncode == 0, run.stderr
        assert daily_asked_ahead(requests) == (concurrency > 1)
        daily = [r for r in requests if "group_by_day" in r.params]
        assert most_in_flight(requests) <= concurrency
        daily_asked[concurrency] = Counter((r.params["start_date"], r.params["page"]) for r in daily)
    assert daily_asked[4] == daily_asked[1]
    assert set(daily_asked[4].values()) == {1}  # no page of daily_calls asked twice
    sequential, concurrent = runs[1][0], runs[4][0]
    for stream in ("calls", "daily_calls"):
        records = sequential.records(stream)
        assert records
        assert sorted(map(canonical_json, records)) == sorted(map(canonical_json, concurrent.records(stream)))
    assert sequential.final_state == concurrent.final_state


def test_a_page_asked_ahead_that_fails_fails_its_account_as_any_other(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    """daily_calls' answers are HTTP 500: asked ahead in calls' idle slots, they fail daily_calls'
    account with the one line a run at max_concurrency 1 writes."""
    server = make_sandbox(
        faults=Faults(latency=LATENCY), misbehaviour=Misbehaviour(frozenset({"control-chars"}))
    )
    config = tap_config(server, window_days=7, page_size=100, max_tries=1)
    lines = {}
    for concurrency in (1, 4):
        server.requests.clear()
        run = run_tap({**config, "max_concurrency": concurrency}, tmp_path)
        assert daily_asked_ahead(server.requests) == (concurrency > 1)
        assert run.returncode == 1
        assert run.bookmark("calls").startswith("2026-04-08T")
        assert run.bookmark("daily_calls") is None
        lines[concurrency] = [
            line.split(" ERROR ", 1)[1] for line in run.stderr.splitlines() if " ERROR " in line
        ]
    assert len(lines[4]) >= 1
    assert lines[4] == lines[1]


def discover(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    config_file = tmp_path / "discover-config.json"
    config_file.write_text(json.dumps(config))
    found = subprocess.run([TAP, "--config", str(config_file), "--discover"], capture_output=True, check=True)
    catalog: dict[str, Any] = json.loads(found.stdout)
    return catalog


def test_catalog_selection_and_stream_maps_apply(sandbox: SandboxServer, tmp_path: Path) -> None:
    """Records skip the SDK's generic per-record path; selection and stream maps must still hold."""
    config = tap_config(sandbox)
    plain = run_tap(config, tmp_path)
    catalog = discover(config, tmp_path)
    for entry in catalog["streams"]:
        for metadata in entry["metadata"]:
            breadcrumb = metadata["breadcrumb"]
            if entry["tap_stream_id"] == "daily_calls" and breadcrumb == []:
                metadata["metadata"]["selected"] = False
            if entry["tap_stream_id"] == "calls" and breadcrumb == ["properties", "keypad"]:
                metadata["metadata"]["selected"] = False
    maps = {"calls": {"__alias__": "phone_calls", "caller": "md5(caller)"}}
    mapped = run_tap({**config, "stream_maps": maps}, tmp_path, catalog=catalog)
    assert plain.returncode == mapped.returncode == 0, mapped.stderr
    assert mapped.records("daily_calls") == []
    assert mapped.records("calls") == []
    records = mapped.records("phone_calls")
    assert len(records) == len(plain.records("calls")) == expected_call_count(sandbox)
    assert all("keypad" not in record for record in records)
    assert {r["call_id"] for r in records} == {r["call_id"] for r in plain.records("calls")}
    callers = {r["caller"] for r in plain.records("calls")}
    assert {r["caller"] for r in records} == {
        hashlib.md5(caller.encode(), usedforsecurity=False).hexdigest() for caller in callers
    }


def test_bookmarks_only_cover_complete_windows(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    server = make_sandbox(calls_per_day=120)
    run = run_tap(tap_config(server, page_size=50, window_days=3, max_concurrency=4), tmp_path)
    seen: list[str] = []
    for message in run.messages:
        if message["type"] == "RECORD" and message["stream"] == "calls":
            seen.append(message["record"]["start_date_local"][:10])
        if message["type"] == "STATE":
            value = bookmark(message["value"], "calls")
            if value:
                day = read_day(value, ZoneInfo("Europe/Paris")).isoformat()
                expected = {
                    d.isoformat() for d in server.api.data.days(dt.date.min, dt.date.fromisoformat(day))
                }
                assert expected <= set(seen), f"bookmark {day} passed days not yet emitted"


def test_an_end_date_after_today_reads_and_bookmarks_up_to_today_only(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    """Days after today have no calls yet: a bookmark moved over them would skip their calls once
    they happen (the sandbox serves such days, as a clock set wrong would)."""
    today = dt.datetime.now(ZoneInfo("Europe/Paris")).date()
    server = make_sandbox(first_day=today - dt.timedelta(days=3), last_day=today + dt.timedelta(days=20))
    config = tap_config(server, end_date=(today + dt.timedelta(days=20)).isoformat())
    run = run_tap(config, tmp_path)
    assert run.returncode == 0, run.stderr
    days = {read_day(record["start_date"], ZoneInfo("Europe/Paris")) for record in run.records("calls")}
    assert max(days) == today
    assert max(row["date"] for row in run.records("daily_calls")) == today.isoformat()
    for stream in ("calls", "daily_calls"):
        assert read_day(run.bookmark(stream), ZoneInfo("Europe/Paris")) <= today


def test_a_catalog_whose_schema_lists_fewer_fields_gets_records_of_those_fields(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Its SCHEMA message lists those fields: a target that checks records against it would refuse
    the others, or load columns it was told do not exist."""
    config = tap_config(sandbox)
    catalog = discover(config, tmp_path)
    kept = ("account", "call_id", "start_date", "duration")
    for entry in catalog["streams"]:
        if entry["tap_stream_id"] == "calls":
            properties = entry["schema"]["properties"]
            entry["schema"]["properties"] = {name: properties[name] for name in kept}
    run = run_tap(config, tmp_path, catalog=catalog)
    assert run.returncode == 0, run.stderr
    [schema] = [m["schema"] for m in run.messages if m["type"] == "SCHEMA" and m["stream"] == "calls"]
    assert sorted(schema["properties"]) == sorted(kept)
    records = run.records("calls")
    assert len(records) == expected_call_count(sandbox)
    assert {tuple(sorted(record)) for record in records} == {tuple(sorted(kept))}
