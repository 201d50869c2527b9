"""tap-optico's tables as Dagster assets: `calls` and `daily_calls` of each account group, by day.

- Each account group has two assets, `optico/<group>/calls` and `optico/<group>/daily_calls`,
  partitioned by day (in the tap's time zone, up to yesterday). One run loads both tables
  for a range of days of one group: `meltano el tap-optico <loader> --full-refresh` with
  `start_date` and `end_date` set to the range's first and last day, whatever any state
  holds. So a partition is materialised by reading its days again, through the tables' keys
  (upserted by a warehouse loader), with no Meltano state to carry from run to run.
- A backfill of any range runs as runs of at most `OPTICO_DAYS_PER_RUN` days (default 31)
  per group; the `daily` schedule materialises, each morning, yesterday and the lookback
  days before it (`OPTICO_LOOKBACK_DAYS`, default the tap's `lookback_days`), which is how
  late changes to a call are reached.
- The groups' names come from `OPTICO_GROUPS`; a run reads its own group's accounts when it
  starts (orchestrate/groups.py), so no other process holds them.
- At most one run per group at a time, without holding anyone else's runs: each group's
  assets are in the pool `optico-<group>` (limit 1), and the runs this code location
  requests (the schedule, each group's job) carry the tag `optico/group`, limited to one run
  per value in the run queue (orchestrate/dagster.yaml, deploy/helm/values.yaml).
- With a loader that writes a warehouse (target-duckdb, target-postgres), the dbt models of
  transform/ are assets downstream of every group's tables, built after the loads, their tests
  as asset checks (orchestrate/transform.py, docs/dagster-dbt.md).

Other settings, read where Dagster loads this module: `OPTICO_LOADER` (default
`target-jsonl`), `MELTANO_ENVIRONMENT` (default: meltano.yml's), `OPTICO_HISTORY_START` (the
first day offered, default January 1st of last year), `OPTICO_TIMEZONE` (the days' time
zone, default the tap's `timezone`; passed to the tap), `OPTICO_EXECUTOR` (`in_process`,
the default, or `multiprocess`), `OPTICO_DBT_SENSOR_SECONDS` (how often the sensor that builds
the dbt models after the loads looks for ended loads, default 30).
No `from __future__ import annotations` here: Dagster reads the `context` annotations.
"""

import datetime as dt
import os
import re
import zoneinfo
from collections import Counter
from collections.abc import Iterator
from typing import Any

import dagster as dg

from orchestrate import groups, meltano, transform
from tap_optico.tap import TapOptico

STREAMS = ("calls", "daily_calls")
#: The tap's tables, each with the streams whose assets load it: the reconciliation table is
#: written by the run that loads the two others (read by transform/'s dbt sources).
TABLES = {"calls": ("calls",), "daily_calls": ("daily_calls",), "reconciliation": STREAMS}
#: The tap's own defaults, declared once in its settings.
TAP_DEFAULTS = {name: spec.get("default") for name, spec in TapOptico.config_jsonschema["properties"].items()}
#: Loaders that write files: each run writes into a folder of its own.
FILE_LOADERS = {"target-jsonl": "TARGET_JSONL_DESTINATION_PATH"}
#: The tap's settings that hold keys: a run's come from its group's secret only.
KEY_VARIABLES = ("TAP_OPTICO_API_KEY", "TAP_OPTICO_ACCOUNTS")
EXECUTORS = {"in_process": dg.in_process_executor, "multiprocess": dg.multiprocess_executor}
#: The run tags of a range of partitions (Dagster's own).
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
#: The run tag that names a run's group: the run queue holds a second run of a group (dagster.yaml).
GROUP_TAG = "optico/group"
#: The tap's line for an account that failed (tap_optico/reading.py).
FAILED_ACCOUNT = re.compile(r"^tap-optico: \w+: account (?P<account>.+?) failed, its bookmark stays")


def setting(name: str, default: str) -> str:
    return os.environ.get(name) or default


def whole_number(name: str, default: int, least: int) -> int:
    text = setting(name, str(default))
    if not text.isdigit() or int(text) < least:
        raise dg.DagsterInvariantViolationError(f"{name} must be a whole number, at least {least}: {text!r}")
    return int(text)


try:
    GROUPS = groups.group_names(os.environ)
except groups.GroupError as problem:
    raise dg.DagsterInvariantViolationError(str(problem)) from None
if setting("OPTICO_EXECUTOR", "in_process") not in EXECUTORS:
    raise dg.DagsterInvariantViolationError(f"OPTICO_EXECUTOR must be one of {', '.join(EXECUTORS)}")
ENVIRONMENT = meltano.default_environment()
LOADER = setting("OPTICO_LOADER", "target-jsonl")
TIMEZONE = setting("OPTICO_TIMEZONE", str(TAP_DEFAULTS["timezone"]))
LOOKBACK_DAYS = whole_number("OPTICO_LOOKBACK_DAYS", int(TAP_DEFAULTS["lookback_days"]), 0)
DAYS_PER_RUN = whole_number("OPTICO_DAYS_PER_RUN", 31, 1)
DBT_SENSOR_SECONDS = whole_number("OPTICO_DBT_SENSOR_SECONDS", 30, 1)

days = dg.DailyPartitionsDefinition(
    start_date=setting("OPTICO_HISTORY_START", f"{dt.date.today().year - 1}-01-01"), timezone=TIMEZONE
)


def asset_key(group: str, stream: str) -> dg.AssetKey:
    return dg.AssetKey(["optico", group, stream])


def loading_assets(table: str) -> list[dg.AssetKey]:
    """The assets of every group that load one of the tap's tables."""
    return [asset_key(group, stream) for group in GROUPS for stream in TABLES.get(table, ())]


def job_name(group: str) -> str:
    return f"optico_{group.replace('-', '_')}"


def days_of(window: dg.TimeWindow) -> tuple[dt.date, dt.date]:
    """The first and last day of a window of daily partitions (its end is the next day's start)."""
    return window.start.date(), (window.end - dt.timedelta(days=1)).date()


def run_environment(group: str, accounts: str, first: dt.date, last: dt.date) -> dict[str, str]:
    """The Meltano run's environment: the group's accounts only, its days, its own output folder."""
    # The settings a deployment gives every run (the API's URL, page size...) pass; never a key.
    env = {key: value for key, value in os.environ.items() if key not in KEY_VARIABLES}
    env.update(
        TAP_OPTICO_ACCOUNTS=accounts,
        TAP_OPTICO_START_DATE=first.isoformat(),
        TAP_OPTICO_END_DATE=last.isoformat(),
        TAP_OPTICO_TIMEZONE=TIMEZONE,
    )
    if LOADER in FILE_LOADERS:
        variable = FILE_LOADERS[LOADER]
        output = meltano.PROJECT / os.environ.get(variable, "output") / group / f"{first}..{last}"
        output.mkdir(parents=True, exist_ok=True)
        env[variable] = str(output)
    return env


def what_loaded(
    streams: dict[str, dict[str, str]], records: Counter[str], first: dt.date, last: dt.date
) -> dict[str, dict[str, Any]]:
    """Each stream's metadata: records, the days and the newest value read, per account."""
    metadata: dict[str, dict[str, Any]] = {}
    for stream in STREAMS:
        marks = streams.get(stream, {})
        metadata[stream] = {
            "dagster/row_count": records[stream],
            "days": f"{first}..{last}",
            "read up to": dg.MetadataValue.json(dict(sorted(marks.items()))),
        }
        if marks:
            metadata[stream]["newest"] = max(marks.values())
    return metadata


def extract_load(context: dg.AssetExecutionContext, group: str) -> Iterator[dg.MaterializeResult[None]]:
    """Load the run's days of one group; the tap's and Meltano's lines in the run's log.

    Each table's materialisation says what was loaded; when an account fails, the run fails,
    and each table's partitions are observed with what did load and the accounts that failed.
    """
    first, last = days_of(context.partition_time_window)
    try:
        accounts = groups.read_accounts(group, os.environ)
    except groups.GroupError as unreadable:
        raise dg.Failure(str(unreadable)) from None
    env = run_environment(group, accounts, first, last)
    without_keys = {key: value for key, value in env.items() if key not in KEY_VARIABLES}  # `meltano state`
    state = meltano.state_id(ENVIRONMENT, LOADER, group)
    levels = {
        "debug": context.log.debug,
        "warning": context.log.warning,
        "error": context.log.error,
        "critical": context.log.error,
    }
    records: Counter[str] = Counter()
    failed: set[str] = set()

    def log(line: meltano.LogLine) -> None:
        levels.get(line.level, context.log.info)(line.text)
        counted = line.records()
        if counted:
            records[counted[0]] += counted[1]
        account = FAILED_ACCOUNT.match(line.text) if line.level == "error" else None
        if account:
            failed.add(account["account"])

    context.log.info(
        f"meltano el {meltano.EXTRACTOR} {LOADER} --state-id {state} --full-refresh: {first}..{last}"
    )
    error: meltano.MeltanoError | None = None
    try:
        meltano.prepare(without_keys)
        if LOADER in transform.PROFILE_OUTPUTS:
            transform.prepare_warehouse(LOADER, ENVIRONMENT, without_keys)
        meltano.run_el(ENVIRONMENT, LOADER, state, env, log)
    except meltano.MeltanoError as problem:
        error = problem
    try:
        loaded = what_loaded(meltano.bookmarks(state, without_keys), records, first, last)
    except meltano.MeltanoError as problem:
        error = error or problem
        loaded = what_loaded({}, records, first, last)
    if error is None:
        for stream in STREAMS:
            yield dg.MaterializeResult(asset_key=asset_key(group, stream), metadata=loaded[stream])
        return
    for stream in STREAMS:
        for partition in context.partition_keys:
            metadata = {**loaded[stream], "failed accounts": ", ".join(sorted(failed)) or "(the run)"}
            context.log_event(
                dg.AssetObservation(asset_key(group, stream), metadata=metadata, partition=partition)
            )
    raise dg.Failure(str(error), metadata={"failed accounts": ", ".join(sorted(failed))})


def group_assets(group: str) -> dg.AssetsDefinition:
    """The tables of one group, loaded together by one Meltano run."""
    specs = [
        dg.AssetSpec(
            asset_key(group, stream),
            description=f"The `{stream}` stream of the accounts of group {group}, one partition per day.",
            kinds={"meltano"},
            group_name=f"optico_{group.replace('-', '_')}",
        )
        for stream in STREAMS
    ]

    @dg.multi_asset(
        name=f"load_{group.replace('-', '_')}",
        specs=specs,
        partitions_def=days,
        backfill_policy=dg.BackfillPolicy.multi_run(DAYS_PER_RUN),
        pool=groups.pool(group),
    )
    def load(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult[None]]:
        yield from extract_load(context, group)

    return load


ASSETS = {group: group_assets(group) for group in GROUPS}
#: Each group's job: a day, or a range of days (`dagster job backfill --from --to`), of one group.
GROUP_JOBS = [
    dg.define_asset_job(
        job_name(group),
        selection=dg.AssetSelection.assets(assets),
        tags={GROUP_TAG: group},
    )
    for group, assets in ASSETS.items()
]
daily = dg.define_asset_job("daily", selection=dg.AssetSelection.assets(*ASSETS.values()))


@dg.schedule(
    job=daily,
    cron_schedule="0 6 * * *",
    execution_timezone=TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def every_group_daily(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest]:
    """Every group, every morning: yesterday (complete by then) and the lookback days before it."""
    yesterday = context.scheduled_execution_time.astimezone(
        zoneinfo.ZoneInfo(TIMEZONE)
    ).date() - dt.timedelta(days=1)
    first = max(yesterday - dt.timedelta(days=LOOKBACK_DAYS), days.start.date())
    for group in GROUPS:
        yield dg.RunRequest(
            run_key=f"{yesterday}:{group}",
            asset_selection=[asset_key(group, stream) for stream in STREAMS],
            tags={RANGE_START: first.isoformat(), RANGE_END: yesterday.isoformat(), GROUP_TAG: group},
        )


#: The dbt models of transform/ on the loader's warehouse, built after the loads (orchestrate/transform.py).
DBT = (
    transform.dbt_definitions(
        loading_assets, LOADER, ENVIRONMENT, pool="optico-dbt", sensor_seconds=DBT_SENSOR_SECONDS
    )
    if transform.reads(LOADER)
    else None
)

defs = dg.Definitions(
    assets=[*ASSETS.values(), *([DBT[0]] if DBT else [])],
    jobs=[daily, *GROUP_JOBS],
    schedules=[every_group_daily],
    sensors=[DBT[1]] if DBT else [],
    executor=EXECUTORS[setting("OPTICO_EXECUTOR", "in_process")],
)
