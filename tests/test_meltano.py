"""Meltano for real: `meltano run` into target-jsonl and into a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tap_optico.sandbox import SandboxServer, account_key
from tests.helpers import SandboxFactory, run_command

ROOT = Path(__file__).resolve().parent.parent
MELTANO = str(Path(sys.executable).parent / "meltano")
pytestmark = pytest.mark.e2e


def meltano_run(
    loader: str, server: SandboxServer, work: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """`meltano run tap-optico <loader>` with its own system database and output folder."""
    data = server.api.data
    environ = {
        **os.environ,
        "MELTANO_ENVIRONMENT": "sandbox",
        "MELTANO_DATABASE_URI": f"sqlite:///{work / 'meltano.db'}",
        "TAP_OPTICO_API_URL": server.url,
        "TAP_OPTICO_START_DATE": data.first_day.isoformat(),
        "TAP_OPTICO_END_DATE": data.last_day.isoformat(),
        "TARGET_JSONL_DESTINATION_PATH": str(work / "output"),
        **env,
    }
    (work / "output").mkdir(exist_ok=True)
    return run_command(
        [MELTANO, "run", "tap-optico", loader],
        cwd=ROOT,
        env=environ,
        timeout=600,
    )


def read_jsonl(pattern: str) -> list[list[dict[str, Any]]]:
    return [
        [json.loads(line) for line in Path(path).read_text().splitlines()]
        for path in sorted(glob.glob(pattern), key=os.path.getmtime)
    ]


def test_meltano_run_into_jsonl_then_incremental(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    server = make_sandbox()
    first = meltano_run("target-jsonl", server, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    [calls] = read_jsonl(str(tmp_path / "output" / "calls-*.jsonl"))
    assert len({r["call_id"] for r in calls}) == len(calls) == 20 * 50
    time.sleep(1.1)  # target-jsonl names its files by the second
    server.requests.clear()
    second = meltano_run("target-jsonl", server, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    _, recent = read_jsonl(str(tmp_path / "output" / "calls-*.jsonl"))
    assert {r["start_date_local"][:10] for r in recent} == {"2026-04-07", "2026-04-08"}
    assert {request.params["start_date"] for request in server.requests} == {"2026-04-07"}


def test_a_refused_state_names_the_meltano_command_that_fixes_it(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    server = make_sandbox()
    first = meltano_run("target-jsonl", server, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Skipping parse of env var settings" not in first.stderr  # neither discovery's nor the run's
    # The state reaches 2026-04-08; a run that ends earlier is refused, and says how to clear it.
    refused = meltano_run("target-jsonl", server, tmp_path, TAP_OPTICO_END_DATE="2026-03-31")
    assert refused.returncode != 0
    command = "meltano state clear --force sandbox:tap-optico-to-<loader>"
    assert command in refused.stderr, refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr
    clear = run_command(
        [MELTANO, *command.replace("<loader>", "target-jsonl").split()[1:]],
        cwd=ROOT,
        env={**os.environ, "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'meltano.db'}"},
        timeout=300,
    )
    assert clear.returncode == 0, clear.stderr[-3000:]
    again = meltano_run("target-jsonl", server, tmp_path, TAP_OPTICO_END_DATE="2026-03-31")
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.parametrize(("setting", "typed"), [("start_date", "05/03/2026"), ("end_date", "04/08/2026")])
def test_a_day_first_date_stops_the_meltano_run_before_any_state(
    make_sandbox: SandboxFactory, tmp_path: Path, setting: str, typed: str
) -> None:
    """Meltano hands the text to the tap as typed (the settings are `kind: string`): the tap's own
    line, exit non-zero, no request, no record and no state, so the corrected date loses nothing."""
    server = make_sandbox()
    run = meltano_run("target-jsonl", server, tmp_path, **{f"TAP_OPTICO_{setting.upper()}": typed})
    assert run.returncode != 0
    assert f"Setting '{setting}' must be a date as YYYY-MM-DD, got '{typed}'" in run.stderr, run.stderr[
        -3000:
    ]
    assert server.requests == []
    assert list((tmp_path / "output").iterdir()) == []
    state = run_command(
        [MELTANO, "state", "list"],
        cwd=ROOT,
        env={**os.environ, "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'meltano.db'}"},
        timeout=300,
    )
    assert state.returncode == 0, state.stderr[-3000:]
    assert "tap-optico-to-target-jsonl" not in state.stdout + state.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def postgres() -> Iterator[dict[str, Any]]:
    """A throw-away PostgreSQL server on a free local port (Debian's package)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        pytest.fail("PostgreSQL is not installed: `make test` installs Debian's postgresql package")
    bin_dir = Path(found[-1]).parent
    # Not under pytest's tmp_path: the server's user must be able to reach it.
    data_dir = Path(tempfile.mkdtemp(prefix="tap-optico-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(data_dir, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def pg(*args: str) -> None:
        subprocess.run([*run_as, *args], check=True, capture_output=True, timeout=120)

    pg(str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "optico", "--auth=trust")
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {data_dir}"
    pg(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data_dir),
        "-o",
        options,
        "-w",
        "-l",
        str(data_dir / "log"),
        "start",
    )
    try:
        yield {"host": "127.0.0.1", "port": port, "user": "optico", "database": "postgres", "bin": bin_dir}
    finally:
        pg(str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "stop")
        shutil.rmtree(data_dir, ignore_errors=True)


def psql(pg: dict[str, Any], sql: str) -> str:
    result = subprocess.run(
        [str(pg["bin"] / "psql"), "-h", pg["host"], "-p", str(pg["port"]),
         "-U", pg["user"], "-d", pg["database"], "-tAc", sql],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return result.stdout.strip()


def test_meltano_run_into_postgres_upserts(
    make_sandbox: SandboxFactory, tmp_path: Path, postgres: dict[str, Any]
) -> None:
    env = {
        "TARGET_POSTGRES_HOST": postgres["host"],
        "TARGET_POSTGRES_PORT": str(postgres["port"]),
        "TARGET_POSTGRES_USER": postgres["user"],
        "TARGET_POSTGRES_PASSWORD": "unused",
        "TARGET_POSTGRES_DATABASE": postgres["database"],
    }
    # Day one: 2026-04-07 is "today" and still filling up.
    today = make_sandbox(last_day=dt.date(2026, 4, 7), live_step=1)
    first = meltano_run("target-postgres", today, tmp_path, **env)
    assert first.returncode == 0, first.stderr[-3000:]
    partial = int(psql(postgres, "select calls from optico.daily_calls where date = '2026-04-07'"))
    assert 25 <= partial < 50
    # 18 complete days, and the calls of the last day that existed when it was read.
    assert 18 * 50 + 25 <= int(psql(postgres, "select count(*) from optico.calls")) <= 18 * 50 + partial
    # Day two: the lookback reads 2026-04-06 and 2026-04-07 again, now complete, plus the new day.
    tomorrow = make_sandbox(last_day=dt.date(2026, 4, 8))
    second = meltano_run("target-postgres", tomorrow, tmp_path, **env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert {request.params["start_date"] for request in tomorrow.requests} == {"2026-04-06"}
    assert psql(postgres, "select count(*), count(distinct call_id) from optico.calls") == "1000|1000"
    assert psql(postgres, "select calls from optico.daily_calls where date = '2026-04-07'") == "50"
    assert psql(postgres, "select count(*), count(distinct date) from optico.daily_calls") == "20|20"


def test_three_accounts_into_postgres_one_row_per_account_and_call(
    make_sandbox: SandboxFactory, tmp_path: Path, postgres: dict[str, Any]
) -> None:
    server = make_sandbox(accounts=3, last_day=dt.date(2026, 4, 7), live_step=1)
    accounts = [{"name": f"client-{n}", "api_key": account_key(n)} for n in (1, 2, 3)]
    env = {
        "MELTANO_ENVIRONMENT": "sandbox-accounts",
        "TAP_OPTICO_ACCOUNTS": json.dumps(accounts),
        "TARGET_POSTGRES_HOST": postgres["host"],
        "TARGET_POSTGRES_PORT": str(postgres["port"]),
        "TARGET_POSTGRES_USER": postgres["user"],
        "TARGET_POSTGRES_PASSWORD": "unused",
        "TARGET_POSTGRES_DATABASE": postgres["database"],
    }
    first = meltano_run("target-postgres", server, tmp_path, **env)
    assert first.returncode == 0, first.stderr[-3000:]
    # The next day: the lookback reads 2026-04-06 and 2026-04-07 again, now complete.
    tomorrow = make_sandbox(accounts=3, last_day=dt.date(2026, 4, 8))
    second = meltano_run("target-postgres", tomorrow, tmp_path, **env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert {r.params["start_date"] for r in tomorrow.requests} == {"2026-04-06"}
    rows = psql(
        postgres, "select account, count(*), count(distinct call_id) from optico.calls group by 1 order by 1"
    )
    assert rows.splitlines() == [f"client-{n}|1000|1000" for n in (1, 2, 3)]
    daily = psql(
        postgres, "select account, count(*), sum(calls) from optico.daily_calls group by 1 order by 1"
    )
    assert daily.splitlines() == [f"client-{n}|20|1000" for n in (1, 2, 3)]
    assert key_free(first.stderr + second.stderr, accounts)


def key_free(text: str, accounts: list[dict[str, str]]) -> bool:
    return not any(account["api_key"] in text for account in accounts[1:])
