"""The same moment in every warehouse: the tap into targets written by others, through Meltano.

Each target of ``tests/targets.py`` gets the same sandbox days, with the spring clock change,
twice: the second run continues from the state of the first and reads its last days again.
Then every call is there once, ``start_date`` is the call's instant whatever the column type,
``start_date_local`` is the API's local time, and ``call_path`` and ``extra_fields`` are as the
README says. The column types must be those ``tests/targets.py`` lists (the README's table).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tap_optico.normalize import canonical_key
from tap_optico.sandbox import SandboxServer
from tap_optico.streams import SCHEMAS
from tests import test_meltano
from tests.helpers import SandboxFactory, sandbox_calls_by_id
from tests.targets import TARGETS, Target
from tests.test_meltano import ROOT, meltano_run, psql

pytestmark = pytest.mark.e2e
postgres = test_meltano.postgres  # the fixture: a throw-away PostgreSQL server

PARIS = ZoneInfo("Europe/Paris")
# 2026-03-29: in Paris the clock goes from 02:00 to 03:00 (UTC+1 to UTC+2).
FIRST_DAY, LAST_DAY = dt.date(2026, 3, 28), dt.date(2026, 3, 30)
# The columns of calls whose type tests/targets.py gives (and daily_calls.date).
TYPED = ("start_date", "start_date_local", "call_path", "extra_fields")


@dataclass
class Loaded:
    """What a target holds: the calls' rows, the daily rows' dates, the column types."""

    calls: list[dict[str, Any]]
    dates: list[str]
    types: dict[str, str]


def load_twice(loader: str, make_sandbox: SandboxFactory, work: Path, env: dict[str, str]) -> SandboxServer:
    """Two `meltano run tap-optico <loader>`, the second from the first's state."""
    # The mixed style: every raw form, and an unlisted field in a quarter of the calls.
    server = make_sandbox(first_day=FIRST_DAY, last_day=LAST_DAY, calls_per_day=40, style="mixed")
    first = meltano_run(loader, server, work, **env)
    assert first.returncode == 0, first.stderr[-3000:]
    server.requests.clear()
    second = meltano_run(loader, server, work, **env)
    assert second.returncode == 0, second.stderr[-3000:]
    # From the state: the last day minus lookback_days, read again.
    assert {request.params["start_date"] for request in server.requests} == {"2026-03-29"}
    return server


def check(target: Target, server: SandboxServer, loaded: Loaded) -> None:
    expected = sandbox_calls_by_id(server)
    ids = [row["call_id"] for row in loaded.calls]
    assert len(ids) == len(set(ids)) == len(expected), "every call once"
    assert set(ids) == set(expected)
    listed = set(SCHEMAS.get_schema("calls")["properties"])
    for row in loaded.calls:
        call = expected[row["call_id"]]
        local = dt.datetime.fromisoformat(call.start_date)
        instant = local.replace(tzinfo=PARIS)
        assert row["account"] == "default"
        assert row["start_date"] == instant.timestamp(), (call.start_date, row)
        assert row["start_date_local"] == local.isoformat(sep=" ")  # as sent, or with " " for "T"
        pages = call.profile.fields["call_path"]
        assert row["call_path"] == (pages.split("\n") if pages else None)
        unlisted = {
            canonical_key(k): v for k, v in call.profile.fields.items() if canonical_key(k) not in listed
        }
        assert row["extra_fields"] == (unlisted or None)
        # Absent from the record: SQL NULL, unless the target binds a missing value as JSON null.
        assert row["extra_fields_is_null"] is (not unlisted and target.sql_null_without_extra_fields)
    # Days on both sides of the clock change, and calls with unlisted fields, were loaded.
    days = ["2026-03-28", "2026-03-29", "2026-03-30"]
    assert sorted({row["start_date_local"][:10] for row in loaded.calls}) == days
    assert any(row["extra_fields"] for row in loaded.calls)
    assert loaded.dates == days
    assert loaded.types == target.types


def json_values(row: dict[str, Any]) -> dict[str, Any]:
    """Rows with JSON held as text (by the database or its driver) read as JSON."""
    for name in ("call_path", "extra_fields"):
        if isinstance(row[name], str):
            row[name] = json.loads(row[name])
    return row


# In SQL: the instant as epoch seconds, which for a column without time zone reads it as UTC.
POSTGRES_CALLS = """
select coalesce(json_agg(json_build_object(
  'account', account, 'call_id', call_id, 'start_date', extract(epoch from start_date),
  'start_date_local', start_date_local, 'call_path', call_path,
  'extra_fields', extra_fields, 'extra_fields_is_null', extra_fields is null)), '[]')
from optico.calls
"""
POSTGRES_TYPES = """
select json_object_agg(attname, format_type(atttypid, atttypmod)) from pg_attribute
where attnum > 0 and not attisdropped and (
  attrelid = 'optico.calls'::regclass and attname = any('{{{calls}}}')
  or attrelid = 'optico.daily_calls'::regclass and attname = 'date')
"""


def postgres_loaded(pg: dict[str, Any]) -> Loaded:
    calls = [json_values(row) for row in json.loads(psql(pg, POSTGRES_CALLS))]
    for row in calls:
        row["start_date"] = float(row["start_date"])
    dates = psql(pg, "select date::text from optico.daily_calls order by 1").splitlines()
    types = json.loads(psql(pg, POSTGRES_TYPES.format(calls=",".join(TYPED))))
    return Loaded(calls, dates, types)


# Run with the loader's own Python: its duckdb reads the file it wrote.
DUCKDB_READ = """
import json, sys, duckdb
db = duckdb.connect(sys.argv[1], read_only=True)
def rows(sql):
    cursor = db.execute(sql)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]
calls = rows(
    "select account, call_id, epoch(start_date) as start_date, start_date_local,"
    " call_path::varchar as call_path, extra_fields::varchar as extra_fields,"
    " extra_fields is null as extra_fields_is_null from optico.calls"
)
dates = [row["date"] for row in rows("select date::varchar as date from optico.daily_calls order by 1")]
types = {
    row["column_name"]: row["data_type"]
    for row in rows("select table_name, column_name, data_type from information_schema.columns"
                    " where table_schema = 'optico'")
    if (row["table_name"], row["column_name"]) in
    [("calls", name) for name in sys.argv[2].split(",")] + [("daily_calls", "date")]
}
print(json.dumps({"calls": calls, "dates": dates, "types": types}))
"""


def duckdb_loaded(path: Path) -> Loaded:
    python = ROOT / ".meltano" / "loaders" / "target-duckdb" / "venv" / "bin" / "python"
    read = subprocess.run(
        [str(python), "-c", DUCKDB_READ, str(path), ",".join(TYPED)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert read.returncode == 0, read.stderr
    held = json.loads(read.stdout)
    return Loaded([json_values(row) for row in held["calls"]], held["dates"], held["types"])


def target(loader: str) -> Target:
    [found] = [t for t in TARGETS if t.loader == loader]
    return found


def postgres_env(prefix: str, pg: dict[str, Any], database_key: str) -> dict[str, str]:
    return {
        f"{prefix}_HOST": pg["host"],
        f"{prefix}_PORT": str(pg["port"]),
        f"{prefix}_USER": pg["user"],
        f"{prefix}_PASSWORD": "unused",
        f"{prefix}_{database_key}": pg["database"],
    }


def test_meltanolabs_target_postgres(
    make_sandbox: SandboxFactory, tmp_path: Path, postgres: dict[str, Any]
) -> None:
    env = postgres_env("TARGET_POSTGRES", postgres, "DATABASE")
    server = load_twice("target-postgres", make_sandbox, tmp_path, env)
    check(target("target-postgres"), server, postgres_loaded(postgres))


def test_pipelinewise_target_postgres(
    make_sandbox: SandboxFactory, tmp_path: Path, postgres: dict[str, Any]
) -> None:
    env = postgres_env("TARGET_POSTGRES_PIPELINEWISE", postgres, "DBNAME")
    server = load_twice("target-postgres-pipelinewise", make_sandbox, tmp_path, env)
    check(target("target-postgres-pipelinewise"), server, postgres_loaded(postgres))


def test_target_duckdb(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    server = load_twice("target-duckdb", make_sandbox, tmp_path, {"TARGET_DUCKDB_PATH": str(path)})
    check(target("target-duckdb"), server, duckdb_loaded(path))
