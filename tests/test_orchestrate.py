"""The decisions of orchestrate/, in-process: groups, state ids, what a run receives, the hand-over."""

from __future__ import annotations

import datetime as dt
import importlib
import json
from pathlib import Path
from types import ModuleType

import dagster as dg
import pytest

from orchestrate import meltano
from orchestrate.meltano import LogLine, backfill_state_id, state_id


@pytest.fixture(scope="module")
def definitions() -> ModuleType:
    """orchestrate.definitions, loaded as Dagster loads it: with an account group set."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPTICO_GROUP_LOADED", "[]")
        patch.setenv("MELTANO_ENVIRONMENT", "sandbox-accounts")
        return importlib.import_module("orchestrate.definitions")


def test_state_ids() -> None:
    # Without a group: the state id of `meltano run tap-optico <loader>` in that environment.
    assert state_id("prod", "target-postgres") == "prod:tap-optico-to-target-postgres"
    assert state_id("prod", "target-postgres", "agency-1") == "prod:tap-optico-to-target-postgres:agency-1"
    first, last = dt.date(2025, 1, 1), dt.date(2025, 1, 31)
    assert backfill_state_id("prod", "target-jsonl", first, last) == (
        "prod:tap-optico-to-target-jsonl:backfill-2025-01-01-2025-01-31"
    )
    assert backfill_state_id("prod", "target-jsonl", first, last, "g") == (
        "prod:tap-optico-to-target-jsonl:g:backfill-2025-01-01-2025-01-31"
    )


def test_account_groups_come_from_one_variable_each(definitions: ModuleType) -> None:
    environ = {
        "OPTICO_GROUP_AGENCY_GROUP_1": "[1]",
        "OPTICO_GROUP_B": "[2]",
        "OPTICO_GROUP_": "[3]",
        "TAP_OPTICO_ACCOUNTS": "[4]",
    }
    assert definitions.account_groups(environ) == {"agency-group-1": "[1]", "b": "[2]"}


def test_a_run_receives_its_own_group_only(
    definitions: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(meltano, "PROJECT", tmp_path)
    monkeypatch.setenv("OPTICO_GROUP_ONE", '[{"name": "a", "api_key": "key-one"}]')
    monkeypatch.setenv("OPTICO_GROUP_TWO", '[{"name": "b", "api_key": "key-two"}]')
    monkeypatch.setenv("TAP_OPTICO_API_KEY", "key-of-the-environment")
    monkeypatch.delenv("TARGET_JSONL_DESTINATION_PATH", raising=False)
    env = definitions.run_environment("one", "daily")
    assert "TAP_OPTICO_API_KEY" not in env
    assert json.loads(env["TAP_OPTICO_ACCOUNTS"]) == [{"name": "a", "api_key": "key-one"}]
    assert "key-two" not in json.dumps(env)
    assert env["TARGET_JSONL_DESTINATION_PATH"] == str(tmp_path / "output" / "one" / "daily")
    assert (tmp_path / "output" / "one" / "daily").is_dir()
    with pytest.raises(dg.Failure, match="OPTICO_GROUP_THREE is not set where the run runs"):
        definitions.run_environment("three", "daily")


def test_months(definitions: ModuleType) -> None:
    assert definitions.month_days("2024-02-01") == (dt.date(2024, 2, 1), dt.date(2024, 2, 29))
    assert definitions.month_days("2025-12-01") == (dt.date(2025, 12, 1), dt.date(2025, 12, 31))


def backfill_run(group: str, month: str, status: dg.DagsterRunStatus) -> dg.DagsterRun:
    tags = {
        "dagster/partition": f"{group}|{month}",
        "dagster/partition/group": group,
        "dagster/partition/month": month,
    }
    return dg.DagsterRun(job_name="backfill", status=status, tags=tags)


SUCCESS, FAILURE = dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE


def test_hand_over_follows_a_backfill_whose_every_partition_succeeded(definitions: ModuleType) -> None:
    runs = [
        backfill_run("a", "2025-02-01", SUCCESS),
        backfill_run("b", "2025-01-01", SUCCESS),
        backfill_run("a", "2025-01-01", SUCCESS),
    ]
    assert definitions.backfilled_groups(runs) == {"a", "b"}
    running = [backfill_run("a", "2025-02-01", dg.DagsterRunStatus.STARTED), *runs]
    assert definitions.backfilled_groups(running) == set()
    failed = [backfill_run("b", "2025-01-01", FAILURE), *runs]
    assert definitions.backfilled_groups(failed) == set()
    assert definitions.backfilled_groups([]) == set()
    # Runs come newest first: a partition that failed, then succeeded when run again, counts.
    assert definitions.backfilled_groups([backfill_run("b", "2025-01-01", SUCCESS), *failed]) == {"a", "b"}


def test_meltano_log_lines() -> None:
    line = json.dumps({"name": "tap-optico", "level": "error", "event": "calls: account x failed"})
    assert LogLine.parse(line) == LogLine("error", "tap-optico: calls: account x failed")
    assert LogLine.parse(json.dumps({"level": "info", "event": "Running extract & load..."})) == LogLine(
        "info", "meltano: Running extract & load..."
    )
    assert LogLine.parse("not JSON\n") == LogLine("info", "not JSON")
    assert LogLine.parse("[1, 2]") == LogLine("info", "[1, 2]")


def test_the_daily_schedule_runs_every_group(definitions: ModuleType) -> None:
    repository = definitions.defs.get_repository_def()  # every definition resolved
    assert {job.name for job in repository.get_all_jobs()} >= {"daily", "backfill", "hand_over_job"}
    morning = dt.datetime(2026, 4, 2, 6, tzinfo=dt.timezone.utc)
    with dg.build_schedule_context(scheduled_execution_time=morning) as context:
        requests = list(definitions.every_group_daily(context))
    assert [(r.partition_key, r.run_key) for r in requests] == [("loaded", "2026-04-02:loaded")]


def test_record_counts_from_the_taps_metrics() -> None:
    counter = {"type": "counter", "metric": "record_count", "value": 62, "tags": {"stream": "daily_calls"}}
    metric = LogLine("info", f"tap-optico: METRIC: {json.dumps(counter)}")
    assert metric.records() == ("daily_calls", 62)
    timer = {**counter, "type": "timer", "metric": "sync_duration", "value": 0.1}
    assert LogLine("info", f"tap-optico: METRIC: {json.dumps(timer)}").records() is None
    assert LogLine("info", "tap-optico: METRIC: {not json").records() is None
    assert LogLine("info", f"meltano: METRIC: {json.dumps(counter)}").records() is None
