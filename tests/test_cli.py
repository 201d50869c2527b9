"""What a person reads: progress lines, one line per retry, a quiet `--test`."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import subprocess
from pathlib import Path

import pytest

from tap_optico.reading import Plan, Progress, plan_windows
from tap_optico.sandbox import Faults
from tests.helpers import ACCOUNT, TAP, SandboxFactory, run_tap, tap_config


def test_progress_is_logged_after_each_window(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    run = run_tap(tap_config(make_sandbox(), window_days=5), tmp_path)
    lines = [line for line in run.stderr.splitlines() if "calls: read 2026-" in line and "daily" not in line]
    assert len(lines) == 4
    assert re.search(
        r"read 2026-03-20\.\.2026-03-24; 250 records handed over and 5 of 20 days so far", lines[0]
    )
    # No ETA from the first window alone (it holds the start-up and the first answer's wait).
    assert lines[0].endswith("3 window(s) left")
    assert "2 window(s) left, about" in lines[1]
    assert "1000 records handed over and 20 of 20 days so far" in lines[-1]
    assert "0 window(s) left" in lines[-1]


def test_progress_is_logged_during_a_long_window(caplog: pytest.LogCaptureFixture) -> None:
    windows = plan_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 14), 7, ACCOUNT)
    plans = [Plan(ACCOUNT, windows[0].start, windows[-1].end, windows)]
    with caplog.at_level(logging.INFO):
        progress = Progress("calls", plans, logging.getLogger("t"), every=0)
        progress.emitted(5000)
        progress.emitted(5000)
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == "calls: reading 2026-01-01..2026-01-14 in 2 window(s)"
    assert len(messages) == 3
    assert messages[1].startswith("calls: reading; 5000 records handed over and 0 of 14 days so far (")
    assert messages[2].startswith("calls: reading; 10000 records handed over and 0 of 14 days so far (")
    assert all(message.endswith("2 window(s) left") for message in messages[1:])


def test_each_retry_is_logged_once(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    server = make_sandbox(faults=Faults(every=3, kinds=["503"]))
    run = run_tap(tap_config(server, max_concurrency=1, window_days=5, max_wait_seconds=1), tmp_path)
    assert run.returncode == 0, run.stderr
    faults = sum(1 for request in server.requests if request.fault)
    assert faults > 0
    assert sum("request failed (try" in line for line in run.stderr.splitlines()) == faults
    assert "Backing off" not in run.stderr


@pytest.mark.parametrize(
    ("calls_per_day", "streams"), [(50, ["calls", "daily_calls"]), (0, ["reconciliation"])]
)
def test_a_connection_test_reads_one_record_per_stream_without_error_lines(
    make_sandbox: SandboxFactory, tmp_path: Path, calls_per_day: int, streams: list[str]
) -> None:
    """Without calls, both streams are read to their end and their days reconciled: one verdict,
    without singer-sdk's ERROR for a stream it aborts."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tap_config(make_sandbox(calls_per_day=calls_per_day))))
    run = subprocess.run(
        [TAP, "--config", str(config), "--test"], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert " ERROR " not in run.stderr
    records = [json.loads(line)["stream"] for line in run.stdout.splitlines() if '"type":"RECORD"' in line]
    assert records == streams


def test_discovery_needs_no_settings(tmp_path: Path) -> None:
    config = tmp_path / "empty.json"
    config.write_text("{}")
    run = subprocess.run(
        [TAP, "--config", str(config), "--discover"], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    streams = {entry["stream"] for entry in json.loads(run.stdout)["streams"]}
    assert streams == {"calls", "daily_calls", "reconciliation"}


def test_a_connection_test_with_a_refused_key_fails(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tap_config(make_sandbox(api_key="another-key"))))
    run = subprocess.run(
        [TAP, "--config", str(config), "--test"], capture_output=True, text=True, check=False
    )
    assert run.returncode != 0
    assert "Clef API invalide" in run.stderr.splitlines()[-1]
