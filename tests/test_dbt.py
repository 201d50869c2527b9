"""The dbt project (transform/) for real: the tap over HTTP, through Meltano, into a database, then
`dbt build` as the last step of the same `meltano run`.

DuckDB (the default, a file): load, build, load again from the state, build again, so target-duckdb
and dbt-duckdb keep writing the same file; the marts hold the sandbox's calls and totals, and every
column is documented. A load with one call missing fails the calls-vs-daily_calls test, and only
it, naming the day. PostgreSQL (kept small): two append loads (no key properties), so the raw
table holds the last days twice, still give one row per call.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import re
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tap_optico.sandbox import SandboxServer
from tests import test_meltano
from tests.helpers import SandboxFactory, run_command, sandbox_calls_by_id
from tests.helpers_readme import free_port, make_project_copy, user_env
from tests.test_meltano import MELTANO, ROOT
from tests.test_targets import postgres_env

pytestmark = pytest.mark.e2e
postgres = test_meltano.postgres  # the fixture: a throw-away PostgreSQL server

UTILITIES = ROOT / ".meltano" / "utilities"
DBT_PYTHON = UTILITIES / "dbt-duckdb" / "venv" / "bin" / "python"
TARGET_DUCKDB_PYTHON = ROOT / ".meltano" / "loaders" / "target-duckdb" / "venv" / "bin" / "python"
# 2026-03-29: in Paris the clock goes forward; local days are not 24 hours on every side.
FIRST_DAY, LAST_DAY = dt.date(2026, 3, 26), dt.date(2026, 3, 31)
MARTS = (
    "optico_calls",
    "optico_calls_per_day_by_channel",
    "optico_account_daily",
    "optico_account_monthly",
    "optico_daily_reconciliation",
)
RECONCILIATION_TEST = "test.tap_optico.calls_match_daily_calls"


def sandbox(make_sandbox: SandboxFactory) -> SandboxServer:
    # The mixed style: every raw form (decimal commas, HH:MM:SS durations) in calls and totals.
    return make_sandbox(first_day=FIRST_DAY, last_day=LAST_DAY, calls_per_day=40, style="mixed")


def meltano_run_dbt(
    loader: str, server: SandboxServer, work: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """`meltano run tap-optico <loader> <dbt utility>:build`, with the project's and dbt's files
    (system database, target/, logs/) under ``work``."""
    utility = "dbt-duckdb" if loader == "target-duckdb" else "dbt-postgres"
    environ = {
        **os.environ,
        "MELTANO_ENVIRONMENT": "sandbox",
        "MELTANO_DATABASE_URI": f"sqlite:///{work / 'meltano.db'}",
        "TAP_OPTICO_API_URL": server.url,
        "TAP_OPTICO_START_DATE": server.api.data.first_day.isoformat(),
        "TAP_OPTICO_END_DATE": server.api.data.last_day.isoformat(),
        "DBT_TARGET_PATH": str(work / "dbt-target"),
        "DBT_LOG_PATH": str(work / "dbt-logs"),
        **env,
    }
    return run_command(
        [MELTANO, "run", "tap-optico", loader, f"{utility}:build"], cwd=ROOT, env=environ, timeout=600
    )


def run_results(work: Path) -> dict[str, str]:
    """The status of every node of the last dbt command, by its unique id."""
    results = json.loads((work / "dbt-target" / "run_results.json").read_text(encoding="utf-8"))
    return {result["unique_id"]: result["status"] for result in results["results"]}


# Run with the dbt utility's Python: its duckdb reads the file as dbt does.
DUCKDB_QUERY = """
import json, sys, duckdb
db = duckdb.connect(sys.argv[1], read_only=True)
cursor = db.execute(sys.argv[2])
names = [column[0] for column in cursor.description]
print(json.dumps([dict(zip(names, row)) for row in cursor.fetchall()], default=str))
"""


def duckdb_rows(path: Path, sql: str, python: Path = DBT_PYTHON) -> list[dict[str, Any]]:
    read = run_command([python, "-c", DUCKDB_QUERY, path, sql], timeout=120)
    assert read.returncode == 0, read.stderr
    rows: list[dict[str, Any]] = json.loads(read.stdout)
    return rows


def expected_days(server: SandboxServer) -> dict[str, tuple[int, int, Decimal]]:
    """Calls, duration and revenue per local day, from the sandbox's calls themselves."""
    days: dict[str, tuple[int, int, Decimal]] = collections.defaultdict(lambda: (0, 0, Decimal(0)))
    for call in sandbox_calls_by_id(server).values():
        calls, duration, revenue = days[call.day.isoformat()]
        profile = call.profile
        days[call.day.isoformat()] = (
            calls + 1,
            duration + profile.duration_seconds,
            revenue + Decimal(profile.revenue_cents) / 100,
        )
    return dict(days)


def documented_columns(work: Path) -> dict[str, list[str]]:
    """The columns each mart and staging model documents (with a description), from the manifest."""
    manifest = json.loads((work / "dbt-target" / "manifest.json").read_text(encoding="utf-8"))
    return {
        node["name"]: [name for name, column in node["columns"].items() if column["description"].strip()]
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model"
    }


def test_duckdb_loads_and_builds_twice_into_one_file(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    server = sandbox(make_sandbox)
    path = tmp_path / "warehouse.duckdb"
    env = {"TARGET_DUCKDB_PATH": str(path), "DBT_DUCKDB_PATH": str(path)}
    first = meltano_run_dbt("target-duckdb", server, tmp_path, **env)
    assert first.returncode == 0, first.stderr[-5000:]
    server.requests.clear()
    # The loader writes again into the file dbt built its models in, then dbt builds again.
    second = meltano_run_dbt("target-duckdb", server, tmp_path, **env)
    assert second.returncode == 0, second.stderr[-5000:]
    assert {request.params["start_date"] for request in server.requests} == {"2026-03-30"}
    statuses = run_results(tmp_path)
    assert RECONCILIATION_TEST in statuses
    assert set(statuses.values()) <= {"success", "pass"}, statuses
    assert {node.split(".")[-1] for node in statuses if node.startswith("model.")} >= set(MARTS)

    # The marts hold every call once, and the sandbox's own figures per day.
    days = expected_days(server)
    [count] = duckdb_rows(
        path, "select count(*) as n, count(distinct call_id) as ids from analytics.optico_calls"
    )
    assert count == {"n": len(sandbox_calls_by_id(server)), "ids": len(sandbox_calls_by_id(server))}
    daily = duckdb_rows(
        path,
        "select local_date, calls, duration_seconds, revenue from analytics.optico_account_daily"
        " where account = 'default' order by local_date",
    )
    assert {
        row["local_date"]: (
            row["calls"],
            row["duration_seconds"],
            Decimal(row["revenue"]).quantize(Decimal("0.01")),
        )
        for row in daily
    } == days
    by_channel = duckdb_rows(
        path,
        "select local_date, sum(calls) as calls from analytics.optico_calls_per_day_by_channel"
        " group by local_date order by local_date",
    )
    assert {row["local_date"]: int(row["calls"]) for row in by_channel} == {d: v[0] for d, v in days.items()}
    # Local calendar: each call's local day and hour are the API's own (the days of the clock change too).
    hours = duckdb_rows(
        path,
        "select local_date, local_hour, count(*) as calls from analytics.optico_calls group by 1, 2",
    )
    sandbox_hours = collections.Counter(
        (call.day.isoformat(), dt.datetime.fromisoformat(call.start_date).hour)
        for call in sandbox_calls_by_id(server).values()
    )
    assert {(row["local_date"], row["local_hour"]): row["calls"] for row in hours} == sandbox_hours
    [first_calls] = duckdb_rows(
        path,
        "select count(*) as n, count(distinct caller) as callers from analytics.optico_calls"
        " where is_first_call_of_caller",
    )
    assert first_calls["n"] == first_calls["callers"] > 0

    # The tap's verdicts: one per account-day read by both streams, the latest of the two runs.
    verdicts = duckdb_rows(
        path,
        "select local_date, status, calls_delivered, calls_optico from analytics.stg_optico__reconciliation"
        " where account = 'default' order by local_date",
    )
    assert {
        row["local_date"]: (row["status"], row["calls_delivered"], row["calls_optico"]) for row in verdicts
    } == {day: ("match", figures[0], figures[0]) for day, figures in days.items()}

    # Every column of every model has a description (dbt docs).
    columns = duckdb_rows(
        path,
        "select table_name, column_name from information_schema.columns where table_schema = 'analytics'"
        " order by table_name, ordinal_position",
    )
    built: dict[str, list[str]] = collections.defaultdict(list)
    for row in columns:
        built[row["table_name"]].append(row["column_name"])
    documented = documented_columns(tmp_path)
    assert set(built) == set(documented)
    for model, names in built.items():
        assert sorted(names) == sorted(documented[model]), model


def test_loader_and_dbt_share_the_duckdb_version() -> None:
    """target-duckdb and dbt-duckdb write the same file: with the same duckdb library."""
    version = "import duckdb; print(duckdb.__version__)"
    found = {
        run_command([python, "-c", version], timeout=60).stdout.strip()
        for python in (DBT_PYTHON, TARGET_DUCKDB_PYTHON)
    }
    assert len(found) == 1, found


def test_a_missing_call_fails_the_reconciliation_test_and_only_it(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    server = sandbox(make_sandbox)
    # One call of 2026-03-28 never reaches the target (a stream map filters it out of the tap).
    [missing] = [
        call_id for call_id, call in sandbox_calls_by_id(server).items() if call.day == dt.date(2026, 3, 28)
    ][:1]
    maps = {"calls": {"__filter__": f"call_id != '{missing}'"}}
    path = tmp_path / "warehouse.duckdb"
    run = meltano_run_dbt(
        "target-duckdb",
        server,
        tmp_path,
        TARGET_DUCKDB_PATH=str(path),
        DBT_DUCKDB_PATH=str(path),
        TAP_OPTICO_STREAM_MAPS=json.dumps(maps),
    )
    assert run.returncode != 0
    statuses = run_results(tmp_path)
    failed = {node: status for node, status in statuses.items() if status not in ("success", "pass")}
    assert failed == {RECONCILIATION_TEST: "fail"}, failed
    assert "calls_match_daily_calls" in run.stderr
    # The failing rows name the day, with both counts.
    rows = duckdb_rows(path, "select * from analytics_dbt_test__audit.calls_match_daily_calls")
    assert [
        (row["account"], row["local_date"], row["calls_reported"] - row["calls_loaded"]) for row in rows
    ] == [("default", "2026-03-28", 1)]


def test_postgres_append_only_loads_give_one_row_per_call(
    make_sandbox: SandboxFactory, tmp_path: Path, postgres: dict[str, Any]
) -> None:
    server = sandbox(make_sandbox)
    env = {
        **postgres_env("TARGET_POSTGRES", postgres, "DATABASE"),
        **postgres_env("DBT_POSTGRES", postgres, "DBNAME"),
        # An append load: without key properties (a stream map drops them) the target inserts
        # every record it receives (its load_method only applies to streams with keys).
        "TAP_OPTICO_STREAM_MAPS": json.dumps(
            {stream: {"__key_properties__": []} for stream in ("calls", "daily_calls")}
        ),
    }
    for _ in range(2):  # the second run reads the last days again: appended a second time
        run = meltano_run_dbt("target-postgres", server, tmp_path, **env)
        assert run.returncode == 0, run.stderr[-5000:]
    calls = len(sandbox_calls_by_id(server))
    raw = int(test_meltano.psql(postgres, "select count(*) from optico.calls"))
    assert raw > calls  # the last days twice
    assert (
        test_meltano.psql(
            postgres, "select count(*), count(distinct (account, call_id)) from analytics.optico_calls"
        )
        == f"{calls}|{calls}"
    )
    assert set(run_results(tmp_path).values()) <= {"success", "pass"}
    # The same figures as on DuckDB: calls per local day against the sandbox's.
    per_day = test_meltano.psql(
        postgres, "select local_date, calls from analytics.optico_account_daily order by 1"
    ).splitlines()
    assert per_day == [f"{day}|{figures[0]}" for day, figures in sorted(expected_days(server).items())]


def test_dbt_parse_is_clean(tmp_path: Path) -> None:
    """The project parses without a warning or a deprecation (no database needed)."""
    dbt = DBT_PYTHON.parent / "dbt"
    env = {
        **os.environ,
        "DBT_PROJECT_DIR": str(ROOT / "transform"),
        "DBT_PROFILES_DIR": str(ROOT / "transform"),
        "DBT_TARGET_PATH": str(tmp_path / "dbt-target"),
        "DBT_LOG_PATH": str(tmp_path / "dbt-logs"),
    }
    parse = run_command(
        [dbt, "--no-use-colors", "parse", "--no-partial-parse", "--show-all-deprecations"],
        env=env,
        timeout=300,
    )
    assert parse.returncode == 0, parse.stdout[-3000:]
    assert "WARN" not in parse.stdout.upper(), parse.stdout[-3000:]
    assert "Deprecat" not in parse.stdout, parse.stdout[-3000:]


def test_make_transform_script_in_a_copy_of_the_project(tmp_path: Path) -> None:
    """`make transform` is make install plugins and the dbt-duckdb utility, then
    scripts/transform.py: its script, run as a user would in a clone, loads the sandbox, builds
    and tests every model and prints calls per day and source."""
    work = make_project_copy(tmp_path / "project", free_port())
    run = run_command(
        [work / ".venv" / "bin" / "python", "scripts/transform.py"], cwd=work, env=user_env(), timeout=600
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert "Calls per day and source, account 'default'" in run.stdout
    preview = [line for line in run.stdout.splitlines() if line.startswith("| 2026-03-01 |")]
    assert len(preview) >= 5, run.stdout[-3000:]  # the day's sources, in a table
    # dbt's summary of the build (run_results.json is the preview's, `dbt show`, by then).
    [passed] = re.findall(r"Done\. PASS=(\d+) WARN=0 ERROR=0 SKIP=0 ", run.stderr)
    assert int(passed) > 30
    # Its own state id: the README's `meltano run tap-optico target-duckdb ...` starts afresh.
    state = run_command(
        [work / ".venv" / "bin" / "meltano", "state", "list"], cwd=work, env=user_env(), timeout=120
    )
    assert "sandbox:tap-optico-to-target-duckdb:transform" in state.stdout, state.stdout + state.stderr
