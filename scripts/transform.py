"""`make transform`: the sandbox's calls into DuckDB through Meltano, then every dbt model and test.

Starts the sandbox on a free port, serving the days of meltano.yml's `sandbox` environment, runs
`meltano run tap-optico target-duckdb dbt-duckdb:build` (which loads `output/warehouse.duckdb`,
builds the models of transform/ and runs their tests), stops the sandbox, then prints the first
days of one mart: calls per day and source for the sandbox's account.

It keeps its state under a state id of its own (`sandbox:tap-optico-to-target-duckdb:transform`),
so the README's `meltano run tap-optico target-duckdb ...` starts from no state.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

from tap_optico.sandbox import build_server

ROOT = Path(__file__).resolve().parent.parent
MELTANO = Path(sys.executable).parent / "meltano"
STATE_ID_SUFFIX = "transform"
ENVIRONMENT = "sandbox"
# Calls per day and source, for the first days: what an analyst reads first.
PREVIEW = """
select local_date, coalesce(source, '(static number)') as source,
       sum(calls) as calls, sum(answered_calls) as answered, sum(revenue) as revenue
from {{ ref('optico_calls_per_day_by_channel') }}
where account = 'default'
group by 1, 2
order by 1, 3 desc, 2
"""


def environment_days() -> tuple[dt.date, dt.date]:
    """The first and last day the `sandbox` environment of meltano.yml reads."""
    project = YAML(typ="safe").load((ROOT / "meltano.yml").read_text(encoding="utf-8"))
    [environment] = [e for e in project["environments"] if e["name"] == ENVIRONMENT]
    [extractor] = environment["config"]["plugins"]["extractors"]
    config = extractor["config"]
    return dt.date.fromisoformat(config["start_date"]), dt.date.fromisoformat(config["end_date"])


def main() -> int:
    (ROOT / "output").mkdir(exist_ok=True)
    first_day, last_day = environment_days()
    env = {**os.environ, "MELTANO_ENVIRONMENT": ENVIRONMENT}
    with build_server(first_day=first_day, last_day=last_day) as server:
        print(f"Sandbox: {server.api.data.calls_per_day} calls/day, {first_day}..{last_day}, {server.url}")
        command = [
            str(MELTANO), "run", "--state-id-suffix", STATE_ID_SUFFIX,
            "tap-optico", "target-duckdb", "dbt-duckdb:build",
        ]  # fmt: skip
        run = subprocess.run(command, cwd=ROOT, env={**env, "TAP_OPTICO_API_URL": server.url}, check=False)
    if run.returncode:
        print(
            "meltano run failed; see the log above (a failing dbt test keeps its rows in "
            "output/warehouse.duckdb, schema analytics_dbt_test__audit)",
            file=sys.stderr,
        )
        return run.returncode
    print("\nCalls per day and source, account 'default' (model optico_calls_per_day_by_channel):")
    show = [
        str(MELTANO),
        "--log-level=warning",
        "invoke",
        "dbt-duckdb",
        "show",
        "--inline",
        PREVIEW,
        "--limit",
        "12",
        "--quiet",
    ]
    return subprocess.run(show, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
