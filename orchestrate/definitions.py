"""tap-optico's pipelines as a Dagster code location: account groups and backfill ranges as partitions.

- `optico_daily`, partitioned by account group: `meltano el tap-optico <loader>` with the
  group's accounts, under the state id `<environment>:tap-optico-to-<loader>:<group>`; the
  `daily` schedule runs every group.
- `optico_backfill`, partitioned by group and month: the same for one month of one group,
  under a state id of its own. When a Dagster backfill of it has succeeded, the
  `hand_over_after_backfill` sensor copies the state of each group's range that ends last
  to the group's daily state id (unless the daily job already has state).

Settings, read from the environment where Dagster loads this module:
- `OPTICO_GROUP_<NAME>`: the accounts of group `<name>` (lowercase, `_` read as `-`), JSON as
  the tap's `accounts` setting; one variable per group, filled from a secret store;
- `OPTICO_LOADER` (default `target-jsonl`), `MELTANO_ENVIRONMENT` (default: meltano.yml's);
- `OPTICO_BACKFILL_START` (the first month, default January of last year) and
  `OPTICO_BACKFILL_END` (the month after the last; default: up to the last complete month);
- `OPTICO_EXECUTOR`: `in_process` (default: each run is one step) or `multiprocess`.

At most one run per partition, hence per state id, runs at a time: the instance's
`dagster.yaml` limits runs per `dagster/partition` tag (see orchestrate/dagster.yaml).
No `from __future__ import annotations` here: Dagster reads the `context` annotations.
"""

import datetime as dt
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

import dagster as dg

from orchestrate import meltano

GROUP_VARIABLE = "OPTICO_GROUP_"
#: Loaders that write files: each partition writes into a folder of its own.
FILE_LOADERS = {"target-jsonl": "TARGET_JSONL_DESTINATION_PATH"}
EXECUTORS = {"in_process": dg.in_process_executor, "multiprocess": dg.multiprocess_executor}


def account_groups(environ: Mapping[str, str]) -> dict[str, str]:
    """Each group's name and accounts (JSON), from the `OPTICO_GROUP_<NAME>` variables."""
    return {
        name.removeprefix(GROUP_VARIABLE).lower().replace("_", "-"): value
        for name, value in sorted(environ.items())
        if name.startswith(GROUP_VARIABLE) and name != GROUP_VARIABLE
    }


def setting(name: str, default: str) -> str:
    return os.environ.get(name) or default


GROUP_NAMES = list(account_groups(os.environ))
if not GROUP_NAMES:
    raise dg.DagsterInvariantViolationError(
        f"no account group: set {GROUP_VARIABLE}<NAME> to each group's accounts, as JSON "
        f'([{{"name": ..., "api_key": ...}}, ...]), where Dagster loads orchestrate.definitions'
    )
if setting("OPTICO_EXECUTOR", "in_process") not in EXECUTORS:
    raise dg.DagsterInvariantViolationError(f"OPTICO_EXECUTOR must be one of {', '.join(EXECUTORS)}")
ENVIRONMENT = meltano.default_environment()
LOADER = setting("OPTICO_LOADER", "target-jsonl")
LAST_YEAR = dt.date.today().year - 1

groups = dg.StaticPartitionsDefinition(GROUP_NAMES)
months = dg.MonthlyPartitionsDefinition(
    start_date=setting("OPTICO_BACKFILL_START", f"{LAST_YEAR}-01-01"),
    end_date=os.environ.get("OPTICO_BACKFILL_END") or None,
)
group_months = dg.MultiPartitionsDefinition({"group": groups, "month": months})


def month_days(month: str) -> tuple[dt.date, dt.date]:
    """The first and last day of a month partition."""
    window = months.time_window_for_partition_key(month)
    return window.start.date(), window.end.date() - dt.timedelta(days=1)


def run_environment(group: str, folder: str) -> dict[str, str]:
    """The Meltano run's environment: the group's accounts only, its own output folder."""
    accounts = account_groups(os.environ).get(group)
    if accounts is None:
        raise dg.Failure(f"{GROUP_VARIABLE}{group.upper().replace('-', '_')} is not set where the run runs")
    env = {key: value for key, value in os.environ.items() if not key.startswith(GROUP_VARIABLE)}
    env.pop("TAP_OPTICO_API_KEY", None)  # the keys are the group's
    env["TAP_OPTICO_ACCOUNTS"] = accounts
    if LOADER in FILE_LOADERS:
        variable = FILE_LOADERS[LOADER]
        output = meltano.PROJECT / os.environ.get(variable, "output") / group / folder
        output.mkdir(parents=True, exist_ok=True)
        env[variable] = str(output)
    return env


def extract_load(
    context: dg.AssetExecutionContext, state: str, env: dict[str, str]
) -> dg.MaterializeResult[None]:
    """Run the pipeline, the tap's and Meltano's log lines in the run's log; fail on failure.

    The materialisation carries the state id and the records of each stream.
    """
    levels = {
        "debug": context.log.debug,
        "warning": context.log.warning,
        "error": context.log.error,
        "critical": context.log.error,
    }

    records: Counter[str] = Counter()

    def log(line: meltano.LogLine) -> None:
        levels.get(line.level, context.log.info)(line.text)
        counted = line.records()
        if counted:
            records[counted[0]] += counted[1]

    context.log.info(f"meltano el {meltano.EXTRACTOR} {LOADER} --state-id {state}")
    try:
        meltano.prepare(env)
        meltano.run_el(ENVIRONMENT, LOADER, state, env, log)
    except meltano.MeltanoError as error:
        raise dg.Failure(str(error), metadata={"state_id": state}) from None
    counts = {f"{stream} records": count for stream, count in sorted(records.items())}
    return dg.MaterializeResult(metadata={"state_id": state, **counts})


@dg.asset(partitions_def=groups, kinds={"meltano"}, group_name="optico")
def optico_daily(context: dg.AssetExecutionContext) -> dg.MaterializeResult[None]:
    """The calls and daily totals of one account group, from its state to today."""
    group = context.partition_key
    env = run_environment(group, "daily")
    return extract_load(context, meltano.state_id(ENVIRONMENT, LOADER, group), env)


@dg.asset(partitions_def=group_months, kinds={"meltano"}, group_name="optico")
def optico_backfill(context: dg.AssetExecutionContext) -> dg.MaterializeResult[None]:
    """One month of one account group, with a state id of its own."""
    key = context.partition_key
    assert isinstance(key, dg.MultiPartitionKey)
    group, month = key.keys_by_dimension["group"], key.keys_by_dimension["month"]
    first, last = month_days(month)
    env = run_environment(group, f"backfill-{month}")
    env.update(TAP_OPTICO_START_DATE=first.isoformat(), TAP_OPTICO_END_DATE=last.isoformat())
    return extract_load(context, meltano.backfill_state_id(ENVIRONMENT, LOADER, first, last, group), env)


@dg.op
def hand_over(context: dg.OpExecutionContext) -> None:
    """Copy the state of the group's backfill range that ends last to the group's daily state id.

    That range's state is where the daily job must start: its bookmarks, or, if it stopped
    short, the days it has read (the daily job then reads the rest). Launched by the sensor
    below when a backfill has succeeded, or by hand for a group.
    """
    group = context.partition_key
    daily = meltano.state_id(ENVIRONMENT, LOADER, group)
    try:
        meltano.prepare(os.environ)
        if meltano.has_state(daily):
            context.log.info(f"{daily} already has state: the daily job keeps it")
            return
        backfilled = set(meltano.state_ids(f"{daily}:backfill-*"))
        ranges = [
            meltano.backfill_state_id(ENVIRONMENT, LOADER, *month_days(m), group)
            for m in months_newest_first()
        ]
        last = next((state for state in ranges if state in backfilled), None)
        if last is None:
            raise dg.Failure(f"no backfill state for group {group}: nothing to hand over")
        meltano.copy_state(last, daily)
        context.log.info(f"state of {last} copied to {daily}: the daily job continues from it")
    except meltano.MeltanoError as error:
        raise dg.Failure(str(error)) from None


def months_newest_first() -> list[str]:
    return list(reversed(months.get_partition_keys()))


daily = dg.define_asset_job("daily", selection=[optico_daily])
backfill = dg.define_asset_job("backfill", selection=[optico_backfill])


@dg.job(partitions_def=groups)
def hand_over_job() -> None:
    hand_over()


@dg.schedule(
    job=daily,
    cron_schedule="0 6 * * *",
    execution_timezone="Europe/Paris",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def every_group_daily(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest]:
    """Every group, every morning (yesterday is complete by then)."""
    day = context.scheduled_execution_time.date()
    for group in groups.get_partition_keys():
        yield dg.RunRequest(run_key=f"{day}:{group}", partition_key=group)


#: A backfill in these states has requested all its runs (`COMPLETED`: by `dagster job backfill`).
BACKFILL_REQUESTED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED"}


def backfilled_groups(runs: Sequence[dg.DagsterRun]) -> set[str]:
    """The groups of a backfill, once the latest run of every partition has succeeded; else none.

    `runs` are the backfill's runs, newest first: a partition run again after a failure counts
    by its latest run.
    """
    latest: dict[str, dg.DagsterRun] = {}
    for run in runs:
        latest.setdefault(run.tags.get("dagster/partition", ""), run)
    if not all(run.is_success for run in latest.values()):
        return set()
    return {run.tags.get("dagster/partition/group", "") for run in latest.values()} - {""}


@dg.sensor(job=hand_over_job, minimum_interval_seconds=10, default_status=dg.DefaultSensorStatus.RUNNING)
def hand_over_after_backfill(context: dg.SensorEvaluationContext) -> Iterator[dg.RunRequest]:
    """When a backfill of `optico_backfill` has succeeded, hand each of its groups to the daily job.

    Once per backfill and group: Dagster skips a run key this sensor has already requested.
    """
    for requested in context.instance.get_backfills(limit=20):
        if requested.status.value not in BACKFILL_REQUESTED:
            continue
        runs = context.instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": requested.backfill_id}))
        ours = [
            r for r in runs if r.job_name == backfill.name or optico_backfill.key in (r.asset_selection or ())
        ]
        for group in sorted(backfilled_groups(ours)):
            yield dg.RunRequest(run_key=f"{requested.backfill_id}:{group}", partition_key=group)


defs = dg.Definitions(
    assets=[optico_daily, optico_backfill],
    jobs=[daily, backfill, hand_over_job],
    schedules=[every_group_daily],
    sensors=[hand_over_after_backfill],
    executor=EXECUTORS[setting("OPTICO_EXECUTOR", "in_process")],
)
