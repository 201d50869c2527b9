"""The dbt models as Dagster assets (orchestrate/transform.py), for real: a group's days loaded into
DuckDB by the daemon's run queue, then the dbt build the automation sensor starts after the load,
its tests as asset checks; and the asset graph's lineage from the API's tables to the marts.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import dagster as dg
import pytest

from orchestrate import transform
from tests.helpers import SandboxFactory
from tests.helpers_readme import ROOT, user_env
from tests.test_dagster import Deployment, accounts, deploy, finished

pytestmark = pytest.mark.e2e
__all__ = ["deploy"]  # the fixture

#: Each mart, with the tables it is built from.
MARTS = {
    "optico_calls": ["calls"],
    "optico_calls_per_day_by_channel": ["calls"],
    "optico_account_daily": ["calls"],
    "optico_account_monthly": ["calls"],
    "optico_daily_reconciliation": ["calls", "daily_calls"],
}
STAGING = {
    "stg_optico__calls": ["calls"],
    "stg_optico__daily_calls": ["daily_calls"],
    "stg_optico__reconciliation": ["calls", "daily_calls"],
}
DIFFERING_DAY = dt.date(2026, 3, 5)


@pytest.fixture(scope="module")
def dbt_definitions() -> Iterator[ModuleType]:
    """orchestrate/definitions.py as Dagster loads it with a warehouse loader: a module of its own
    (tests/test_orchestrate.py keeps the one loaded with target-jsonl)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPTICO_GROUPS", "one,two")
        patch.setenv("OPTICO_GROUP_SECRET", "file:/nowhere/{group}.json")
        patch.setenv("MELTANO_ENVIRONMENT", "sandbox-accounts")
        patch.setenv("OPTICO_LOADER", "target-duckdb")
        spec = importlib.util.spec_from_file_location(
            "optico_definitions_with_dbt", ROOT / "orchestrate" / "definitions.py"
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module


def key(*path: str) -> dg.AssetKey:
    return dg.AssetKey(["optico", *path])


def test_lineage_runs_from_the_api_tables_to_the_marts(dbt_definitions: ModuleType) -> None:
    graph = dbt_definitions.defs.resolve_asset_graph()
    parents = {k: set(graph.get(k).parent_keys) for k in graph.get_all_asset_keys()}
    # Each staging model reads the tables every group's load writes.
    for model, streams in STAGING.items():
        assert parents[key("dbt", model)] == {key(g, s) for g in ("one", "two") for s in streams}
    # Each mart, up its parents, reaches the loads of its tables, of every group.
    for mart, streams in MARTS.items():
        seen: set[dg.AssetKey] = set()
        todo = [key("dbt", mart)]
        while todo:
            for parent in parents[todo.pop()] - seen:
                seen.add(parent)
                todo.append(parent)
        assert {key(g, s) for g in ("one", "two") for s in streams} <= seen, mart
        assert key("dbt", "stg_optico__calls") in seen
    # Each dbt test is a check on the model it tests; the reconciliation tests among them.
    checks = {(check.asset_key, check.name) for check in graph.asset_check_keys}
    assert (key("dbt", "optico_daily_reconciliation"), "calls_match_daily_calls") in checks
    assert (key("dbt", "stg_optico__reconciliation"), "reconciliation_days_differ") in checks
    assert len(checks) > 30
    # Built after the loads by the sensor the daemon runs; the loads' own job stays the loads.
    sensor = dbt_definitions.defs.resolve_sensor_def(transform.SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    daily = dbt_definitions.defs.resolve_job_def("daily")
    assert not any(k.path[1] == "dbt" for k in daily.asset_layer.selected_asset_keys)


def check_results(deployment: Deployment, record: dg.RunRecord) -> dict[str, dict[str, Any]]:
    """Each check a run evaluated: passed or not, its metadata and description."""
    found: dict[str, dict[str, Any]] = {}
    for entry in deployment.instance.all_logs(
        record.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ):
        assert entry.dagster_event is not None
        evaluation = entry.dagster_event.event_specific_data
        assert isinstance(evaluation, dg.AssetCheckEvaluation)
        metadata = {name: value.value for name, value in evaluation.metadata.items()}
        found[evaluation.check_name] = {
            "passed": evaluation.passed,
            "metadata": metadata,
            "description": evaluation.description,
        }
    return found


def test_a_load_then_the_dbt_build_its_failing_tests_are_failed_checks(
    make_sandbox: SandboxFactory, deploy: Callable[..., Deployment]
) -> None:
    # Optico's own totals count a call more than its calls on one day: two tests must fail.
    server = make_sandbox(
        first_day=dt.date(2026, 3, 1),
        last_day=dt.date(2026, 3, 10),
        calls_per_day=10,
        disagree={DIFFERING_DAY: "missing-call"},
    )
    deployment = deploy(server, one=accounts(1))
    deployment.env["OPTICO_LOADER"] = "target-duckdb"
    deployment.env["OPTICO_DBT_SENSOR_SECONDS"] = "3"  # the build follows the load sooner than in production
    deployment.launch("one", dt.date(2026, 3, 4), dt.date(2026, 3, 6))

    def done(records: list[dg.RunRecord]) -> bool:
        failed = [r for r in records if r.dagster_run.job_name == "optico_one" and r.dagster_run.is_failure]
        return bool(failed) or (len(records) == 2 and finished(records))

    with deployment.daemon():
        records = deployment.wait_for(done, 300)

    load, *rest = sorted(records, key=lambda record: record.start_time or 0)
    assert load.dagster_run.job_name == "optico_one"
    assert load.dagster_run.status == dg.DagsterRunStatus.SUCCESS, deployment.error_lines(load)
    [build] = rest
    # The build: started by the sensor once the load had ended, every model in one dbt build.
    assert build.dagster_run.tags.get("dagster/from_automation_condition") == "true"
    assert (build.start_time or 0) >= (load.end_time or 0)
    built = deployment.events(build, dg.DagsterEventType.ASSET_MATERIALIZATION)
    assert sorted(built) == sorted(f"optico/dbt/{m}" for m in [*MARTS, *STAGING])
    # The failing tests fail the run and are failed checks; every other test passed.
    assert build.dagster_run.status == dg.DagsterRunStatus.FAILURE
    checks = check_results(deployment, build)
    assert len(checks) > 30
    assert sorted(name for name, check in checks.items() if not check["passed"]) == [
        "calls_match_daily_calls",
        "reconciliation_days_differ",
    ]
    # Each names the account-day that differs, and what differs.
    differ = checks["reconciliation_days_differ"]
    [row] = differ["metadata"]["failing rows"]
    assert (row["account"], row["local_date"], row["calls_delivered"], row["calls_optico"]) == (
        "account-1",
        str(DIFFERING_DAY),
        10,
        11,
    )
    assert f"account=account-1, local_date={DIFFERING_DAY}" in differ["description"]
    [row] = checks["calls_match_daily_calls"]["metadata"]["failing rows"]
    assert (row["account"], row["local_date"], row["calls_loaded"], row["calls_reported"]) == (
        "account-1",
        str(DIFFERING_DAY),
        10,
        11,
    )
    # dbt runs in meltano.yml's utility, not here: dagster-dbt's notice of it is not in the run's log.
    messages = [entry.user_message for entry in deployment.instance.all_logs(build.dagster_run.run_id)]
    assert not [message for message in messages if transform.ADAPTER_NOTICE in message]


@pytest.mark.parametrize(
    ("loader", "database"),
    [("target-postgres", "DATABASE"), ("target-postgres-pipelinewise", "DBNAME")],
)
def test_dbt_reads_the_warehouse_the_loader_writes(loader: str, database: str) -> None:
    """transform/profiles.yml's variables, from the loader's settings as Meltano resolves them."""
    prefix = loader.upper().replace("-", "_")
    settings = {"HOST": "db.example", "PORT": "6543", "USER": "loader", "PASSWORD": "secret"}
    env = user_env(**{f"{prefix}_{name}": value for name, value in settings.items()})
    env[f"{prefix}_{database}"] = "warehouse"  # each loader's own name for the setting
    env[f"{prefix}_DEFAULT_TARGET_SCHEMA"] = "raw_optico"
    assert transform.profile_environment(loader, "sandbox-accounts", env) == {
        "DBT_POSTGRES_HOST": "db.example",
        "DBT_POSTGRES_PORT": "6543",
        "DBT_POSTGRES_USER": "loader",
        "DBT_POSTGRES_PASSWORD": "secret",
        "DBT_POSTGRES_DBNAME": "warehouse",
        "OPTICO_SOURCE_SCHEMA": "raw_optico",
    }
    duckdb = transform.profile_environment("target-duckdb", "sandbox-accounts", user_env())
    assert duckdb == {
        "DBT_DUCKDB_PATH": str(ROOT / "output" / "warehouse.duckdb"),
        "OPTICO_SOURCE_SCHEMA": "optico",
    }


def test_a_missing_dbt_utility_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(
        dg.DagsterInvariantViolationError,
        match=re.escape("need meltano.yml's dbt-snowflake utility: run `meltano install dbt-snowflake`"),
    ):
        transform.manifest("snowflake", target_path=tmp_path)
