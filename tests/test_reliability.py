"""Faults, interrupted runs, growing data and malformed answers."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tap_optico.sandbox import SANDBOX_API_KEY, Faults
from tests.helpers import (
    TAP,
    SandboxFactory,
    TapRun,
    run_tap,
    sandbox_call_id,
    sandbox_call_ids,
    tap_config,
)


def call_ids(run: TapRun) -> set[str]:
    return {record["call_id"] for record in run.records("calls")}


def error_lines(run: TapRun) -> list[str]:
    """The lines of the requests given up (not the run's last line, which repeats it)."""
    return [line for line in run.stderr.splitlines()[:-1] if "giving up" in line]


def test_transient_faults_change_nothing(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    clean_server = make_sandbox()
    clean = run_tap(tap_config(clean_server, window_days=5), tmp_path)
    faulty_server = make_sandbox(faults=Faults(every=3, stall_seconds=3, retry_after=1))
    faulty = run_tap(tap_config(faulty_server, window_days=5, request_timeout=1, max_concurrency=2), tmp_path)
    assert faulty.returncode == 0, faulty.stderr
    injected = {request.fault for request in faulty_server.requests} - {None}
    assert injected == {"429", "500", "503", "timeout", "truncated", "html"}
    assert call_ids(faulty) == call_ids(clean)
    assert len(faulty.records("calls")) == len(clean.records("calls"))
    assert sorted(r["date"] for r in faulty.records("daily_calls")) == sorted(
        r["date"] for r in clean.records("daily_calls")
    )
    assert faulty.final_state == clean.final_state


def test_many_requests_in_flight_keep_their_connections(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    server = make_sandbox()
    run = run_tap(tap_config(server, window_days=1, page_size=10, max_concurrency=16), tmp_path)
    assert run.returncode == 0, run.stderr
    # One kept connection per request in flight: none thrown away (and logged) by a pool too small.
    assert "Connection pool is full" not in run.stderr


def test_a_rate_limit_pauses_every_worker(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    server = make_sandbox(faults=Faults(every=40, kinds=["429"], retry_after=2))
    run = run_tap(tap_config(server, page_size=10, window_days=2, max_concurrency=4), tmp_path)
    assert run.returncode == 0, run.stderr
    first_429 = next(r for r in server.requests if r.fault == "429")
    # Every worker waits out Retry-After, not only the one that got the 429.
    during_pause = [
        r
        for r in server.requests
        if first_429.received_at + 0.3 < r.received_at < first_429.received_at + 1.7
    ]
    assert during_pause == []
    assert max(r.received_at for r in server.requests) > first_429.received_at + 2
    assert "429" in run.stderr


def test_server_that_never_recovers_fails_after_bounded_retries_and_resumes(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    server = make_sandbox(faults=Faults(every=1, kinds=["503"], start_after=5))
    config = tap_config(server, window_days=3, max_concurrency=1, max_tries=3, max_wait_seconds=1)
    failed = run_tap(config, tmp_path)
    assert failed.returncode != 0
    [line] = error_lines(failed)
    assert "after 3 tries: Optico API answered HTTP 503 Service Unavailable" in line
    assert len(server.requests) == 5 + 3
    assert failed.states, "windows read before the outage were checkpointed"
    server.faults = Faults()
    resumed = run_tap(config, tmp_path, state=failed.states[-1])
    assert resumed.returncode == 0, resumed.stderr
    assert call_ids(failed) | call_ids(resumed) == sandbox_call_ids(server)


def test_unreachable_server_fails_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = {
        "api_key": SANDBOX_API_KEY,
        "api_url": f"http://127.0.0.1:{port}/data-api",
        "start_date": "2026-01-01",
        "end_date": "2026-01-02",
        "max_tries": 2,
        "max_wait_seconds": 1,
    }
    run = run_tap(config, tmp_path)
    assert run.returncode != 0
    [line] = error_lines(run)
    assert "after 2 tries" in line
    # With one account, the last line says that the run failed, and why.
    last = run.stderr.splitlines()[-1]
    assert last.endswith("The run failed: account default could not be read: " + line.split("stays: ")[-1])
    assert "Connection refused" in line or "Failed to establish" in line


@pytest.mark.parametrize("kill_after", [0.1, 0.35, 0.6, 0.9])
def test_sigkill_then_resume_from_last_state_loses_nothing(
    make_sandbox: SandboxFactory, tmp_path: Path, kill_after: float
) -> None:
    server = make_sandbox(calls_per_day=60, faults=Faults(latency=0.01))
    config = tap_config(server, page_size=50, window_days=2, max_concurrency=2)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    total_lines = len(run_tap(config, tmp_path).stdout.splitlines())
    process = subprocess.Popen(
        [TAP, "--config", str(config_file)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(int(total_lines * kill_after))]
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()
    killed = TapRun(-9, "".join(lines), "")
    resumed = run_tap(config, tmp_path, state=killed.states[-1] if killed.states else None)
    assert resumed.returncode == 0, resumed.stderr
    assert call_ids(killed) | call_ids(resumed) == sandbox_call_ids(server)


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_calls_arriving_while_paging_are_not_lost(
    make_sandbox: SandboxFactory, tmp_path: Path, order: str
) -> None:
    today = dt.date(2026, 4, 8)
    server = make_sandbox(calls_per_day=400, first_day=today, last_day=today, live_step=7, order=order)
    run = run_tap(tap_config(server, page_size=10, max_concurrency=1), tmp_path)
    assert run.returncode == 0, run.stderr
    emitted = call_ids(run)
    everything = server.api.data.calls_of_day(today)
    in_order = [sandbox_call_id(call) for call in everything]
    # No gap: what was emitted is exactly the first calls of the day, however many had arrived.
    assert emitted == set(in_order[: len(emitted)])
    assert len(emitted) >= 200
    if order == "desc":
        assert "reading it again" in run.stderr


CALL = {
    "start_date": "2026-01-01 10:00:00",
    "caller": "0612345678",
    "tracking_number": "0182880101",
    "phone": "0142685300",
}


def canned_config(url: str) -> dict[str, Any]:
    return {
        "api_key": SANDBOX_API_KEY,
        "api_url": url,
        "start_date": "2026-01-01",
        "end_date": "2026-01-01",
        "max_concurrency": 1,
        "max_tries": 1,
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"status": "OK", "total_results": 5}, "has no 'results' list (got NoneType)"),
        ({"status": "OK", "total_results": 1, "results": "oops"}, "has no 'results' list (got str)"),
        ({"status": "OK", "total_results": 9, "results": [CALL], "next_page": "deux"}, "next_page='deux'"),
        ({"status": "OK", "total_results": "²", "results": [CALL], "next_page": "³"}, "next_page='³'"),
        (
            {"status": "ERROR", "errors": ["Date invalide", "Limite invalide"]},
            "Date invalide; Limite invalide",
        ),
        (["not", "an", "object"], "a JSON list instead of an object"),
    ],
)
def test_malformed_answers_fail_clearly(canned: Any, tmp_path: Path, body: Any, message: str) -> None:
    api = canned([body])
    run = run_tap(canned_config(api.url), tmp_path)
    assert run.returncode != 0
    assert message in run.stderr
    assert not run.records("calls")


def test_absurd_total_results_is_reported_not_trusted(canned: Any, tmp_path: Path) -> None:
    api = canned([{"status": "OK", "total_results": 10**12, "results": [CALL]}])
    run = run_tap(canned_config(api.url), tmp_path)
    assert run.returncode == 0, run.stderr
    assert len(run.records("calls")) == 1
    assert "total_results 1000000000000 after 3 reads" in run.stderr
    # Rewritten (issue 29): every page the API offers was read (page 2, asked though none was
    # announced, brings nothing new): the count is wrong, the run says so and the bookmark moves on.
    assert "of every page the API offers (999999999999 short)" in run.stderr
    assert run.bookmark("calls") == "2026-01-01T09:00:00+00:00"  # its one call, in UTC


def test_unexpected_field_types_become_typed_nulls(canned: Any, tmp_path: Path) -> None:
    odd = {
        **CALL,
        "duration": {"minutes": 3},
        "revenue": [1],
        "is_redirect": "peut-être",
        "trigger_type": "x",
    }
    api = canned([{"status": "OK", "total_results": 1, "results": [odd, 42]}])
    run = run_tap(canned_config(api.url), tmp_path)
    assert run.returncode == 0, run.stderr
    [record] = run.records("calls")
    assert record["duration"] is record["revenue"] is record["is_redirect"] is record["trigger_type"] is None
    assert record["caller"] == "0612345678"
    for field in ("duration", "revenue", "is_redirect", "trigger_type"):
        assert f"could not read {field}=" in run.stderr
    assert "skipped a result that is not a JSON object: 42" in run.stderr
