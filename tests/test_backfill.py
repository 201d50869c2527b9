"""scripts/backfill.py: two ranges really run at the same time, then the daily job continues."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest

from tap_optico.sandbox import Faults
from tests.helpers import SandboxFactory, expected_call_count, run_command
from tests.helpers_readme import jsonl_records, make_project_copy, sandbox_environment, user_env

pytestmark = pytest.mark.e2e


def run(args: list[str], work: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_command(
        args,
        cwd=work,
        env=env,
        timeout=600,
    )


def test_two_ranges_side_by_side_then_the_daily_job(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    config = sandbox_environment()
    first, last = (dt.date.fromisoformat(config[key]) for key in ("start_date", "end_date"))
    middle = first + (last - first) / 2
    # Slow answers and one request at a time: each run takes seconds of requests, so two
    # runs one after the other could not overlap.
    server = make_sandbox(first_day=first, last_day=last, calls_per_day=30, faults=Faults(latency=0.25))
    work = make_project_copy(tmp_path / "project", server.port)
    env = user_env(TAP_OPTICO_MAX_CONCURRENCY="1", TAP_OPTICO_PAGE_SIZE="100")
    ranges = [f"{first}..{middle}", f"{middle + dt.timedelta(days=1)}..{last}"]

    command = [".venv/bin/python", "scripts/backfill.py", "--loader", "target-jsonl", *ranges]
    backfill = run(command, work, env)

    assert backfill.returncode == 0, backfill.stdout + backfill.stderr[-3000:]
    early = [r.received_at for r in server.requests if r.params["start_date"] <= middle.isoformat()]
    late = [r.received_at for r in server.requests if r.params["start_date"] > middle.isoformat()]
    assert len(early) > 5
    assert len(late) > 5
    assert max(min(early), min(late)) < min(max(early), max(late)), "the two ranges did not overlap"
    calls = jsonl_records(sorted((work / "output").glob("calls-*.jsonl")))
    assert len({r["call_id"] for r in calls}) == len(calls) == expected_call_count(server)
    daily = jsonl_records(sorted((work / "output").glob("daily_calls-*.jsonl")))
    assert sorted(r["date"] for r in daily) == [d.isoformat() for d in server.api.data.days(first, last)]

    # The daily job (the sandbox environment reads first..last) starts where the last range ended.
    server.requests.clear()
    daily_run = run(
        [".venv/bin/meltano", "run", "tap-optico", "target-jsonl"],
        work,
        {**env, "TARGET_JSONL_DESTINATION_PATH": "daily"},
    )
    assert daily_run.returncode == 0, daily_run.stderr[-3000:]
    lookback = (last - dt.timedelta(days=1)).isoformat()
    assert {r.params["start_date"] for r in server.requests} == {lookback}
    recent = jsonl_records(sorted((work / "daily").glob("calls-*.jsonl")))
    assert recent
    assert {r["start_date_local"][:10] for r in recent} == {lookback, last.isoformat()}


def test_overlapping_ranges_are_refused(tmp_path: Path) -> None:
    work = make_project_copy(tmp_path / "project", 1)
    refused = run(
        [".venv/bin/python", "scripts/backfill.py", "2026-01-01..2026-01-31", "2026-01-31..2026-02-28"],
        work,
        user_env(),
    )
    assert refused.returncode == 2
    assert "overlap" in refused.stderr
    assert not (work / ".meltano" / "meltano.db").exists()
