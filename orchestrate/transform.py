"""The dbt models of transform/ as Dagster assets (dagster-dbt), downstream of the tables' assets.

- Each dbt model is an asset `optico/dbt/<model>`; each dbt test, an asset check on the model it
  tests. The sources of transform/ (`optico.calls`, `optico.daily_calls`,
  `optico.reconciliation`) are the tables the groups' runs load, so each staging model depends on
  the loading assets of every group (`optico/<group>/calls`, ...): lineage runs from the API's
  tables to the marts.
- One `dbt build` builds every model and runs every test, after the loads: the models are not
  partitioned. Staging models are views; the marts are tables computed from every loaded row
  (a caller's first call, a month's totals, a day's reconciliation need more than the days a run
  loaded), and they rebuild in seconds. The build starts once a group's load has materialised
  and no load is in progress (the dbt assets' automation condition, evaluated by the sensor
  `optico_dbt_after_loads`), so one build follows the morning's loads of every group.
- A failed test is a failed asset check whose metadata holds the failing rows (dbt keeps them:
  `store_failures` in transform/dbt_project.yml): the account-days a reconciliation test names.
- dbt reads the warehouse the loader writes: its output of transform/profiles.yml follows
  `OPTICO_LOADER`, its settings come from the loader's own Meltano configuration. With a loader
  that writes files (target-jsonl, the default), or a project without transform/ (an image built
  without it), there is nothing for dbt to build: no dbt asset. dbt runs from meltano.yml's dbt
  utility (`meltano install dbt-duckdb`), in its own venv: dbt-core cannot share this one (it
  pins pathspec below what mypy needs), and its duckdb is the loader's.
"""

import contextlib
import fcntl
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from typing_extensions import override

from orchestrate import meltano

# dagster-dbt's `sqlglot[rs]` brings sqlglotrs, which warns on import that it is deprecated in favour
# of sqlglotc (installed with it): nothing for this project to act on.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "sqlglotrs is deprecated", DeprecationWarning)
    from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

PROJECT_DIR = meltano.PROJECT / "transform"
#: The dbt that dagster-dbt runs: meltano.yml's dbt utility for the warehouse, its own venv.
UTILITIES = meltano.PROJECT / ".meltano" / "utilities"
#: Where the code location keeps the parsed project, its manifest.
TARGET_PATH = PROJECT_DIR / "target" / "dagster"
#: The loaders whose tables dbt reads, with the output of transform/profiles.yml that reads them
#: (and the dbt utility of meltano.yml, `dbt-<output>`, that runs it).
PROFILE_OUTPUTS = {
    "target-duckdb": "duckdb",
    "target-postgres": "postgres",
    "target-postgres-pipelinewise": "postgres",
}
#: The variables transform/profiles.yml reads, from the loader's settings (by output).
PROFILE_SETTINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "duckdb": {"DBT_DUCKDB_PATH": ("path",)},
    "postgres": {
        "DBT_POSTGRES_HOST": ("host",),
        "DBT_POSTGRES_PORT": ("port",),
        "DBT_POSTGRES_USER": ("user",),
        "DBT_POSTGRES_PASSWORD": ("password",),
        "DBT_POSTGRES_DBNAME": ("database", "dbname"),
    },
}
#: The schema of the loaded tables, for transform/'s sources.
SOURCE_SCHEMA = "OPTICO_SOURCE_SCHEMA"
#: The dbt source transform/ reads the tap's tables from.
SOURCE = "optico"
#: The failing rows a failed check shows.
FAILING_ROWS = 20
SENSOR = "optico_dbt_after_loads"
#: What dagster-dbt logs on every dbt command when dbt-core is not importable here: dbt runs in
#: the utility's venv instead, and the notice asks nothing of anyone.
ADAPTER_NOTICE = "An error was encountered when creating a handle to the dbt adapter in Dagster."


class _NoAdapterNotice(logging.Filter):
    @override
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != ADAPTER_NOTICE


dg.get_dagster_logger().addFilter(_NoAdapterNotice())


def dbt_executable(output: str) -> str:
    """meltano.yml's dbt utility for a profile output (`meltano install dbt-<output>` installs it)."""
    return str(UTILITIES / f"dbt-{output}" / "venv" / "bin" / "dbt")


def reads(loader: str) -> bool:
    """Whether dbt has models to build on `loader`'s tables: a warehouse, and transform/ here (an
    image built without it has none)."""
    return loader in PROFILE_OUTPUTS and (PROJECT_DIR / "dbt_project.yml").exists()


def manifest(output: str, project_dir: Path = PROJECT_DIR, target_path: Path = TARGET_PATH) -> Path:
    """The project's manifest, made by `dbt parse` when missing or older than a file of the project.

    Each process that loads the code location (web server, daemon, each run) finds it made once;
    a lock keeps two of them from writing it at once.
    """
    if not Path(dbt_executable(output)).exists():
        raise dg.DagsterInvariantViolationError(
            f"the dbt models of transform/ need meltano.yml's dbt-{output} utility: "
            f"run `meltano install dbt-{output}` in {meltano.PROJECT}"
        )
    target_path.mkdir(parents=True, exist_ok=True)
    path = target_path / "manifest.json"
    files = [
        file
        for folder in ("models", "macros", "tests")
        for file in (project_dir / folder).rglob("*")
        if file.is_file()
    ]
    newest = max(file.stat().st_mtime for file in [*files, project_dir / "dbt_project.yml"])
    with (target_path / "parse.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists() or path.stat().st_mtime < newest:
            resource = DbtCliResource(
                project_dir=str(project_dir), dbt_executable=dbt_executable(output), target=output
            )
            resource.cli(["parse", "--quiet"], target_path=target_path, raise_on_error=True).wait()
    return path


class Translator(DagsterDbtTranslator):
    """Models as `optico/dbt/<model>`; the tap's tables as their loading assets, of every group."""

    def __init__(self, tables: Callable[[str], list[dg.AssetKey]], output: str) -> None:
        super().__init__()
        self.tables, self.output = tables, output

    def loaded_by(self, manifest: Mapping[str, Any], unique_id: str) -> list[dg.AssetKey]:
        """The loading assets of a source table of transform/ (none for any other node)."""
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] != "source" or props["source_name"] != SOURCE:
            return []
        return self.tables(props["name"])

    @override
    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] == "source":
            return spec
        deps: dict[dg.AssetKey, dg.AssetDep] = {}
        for parent in props.get("depends_on", {}).get("nodes", []):
            keys = self.loaded_by(manifest, parent) or [self.get_asset_spec(manifest, parent, project).key]
            deps.update((key, dg.AssetDep(key)) for key in keys)
        return spec.replace_attributes(
            key=dg.AssetKey(["optico", "dbt", props["name"]]),
            deps=list(deps.values()),
            group_name="optico_dbt",
            kinds={"dbt", self.output},
            automation_condition=after_loads(),
        )

    @override
    def get_asset_check_spec(
        self,
        asset_spec: dg.AssetSpec,
        manifest: Mapping[str, Any],
        unique_id: str,
        project: DbtProject | None,
    ) -> dg.AssetCheckSpec | None:
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        # A test runs whenever its model is built (`dbt build` runs a selected model's tests).
        return spec._replace(automation_condition=dg.AutomationCondition.any_deps_updated()) if spec else None


def after_loads() -> dg.AutomationCondition[dg.AssetKey | dg.AssetCheckKey]:
    """Built when a table it reads (or a model before it) has been updated since its last build,
    once nothing it reads from is being loaded or built, and not before: days never loaded, or a
    model never built, do not start a build (eager's `newly_missing`, `any_deps_missing`)."""
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("after the loads")


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `values`, while dagster-dbt starts dbt (it passes os.environ on)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def profile_environment(
    loader: str, meltano_environment: str, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What transform/profiles.yml reads, from the loader's configuration as Meltano resolves it."""
    command = ("--environment", meltano_environment, "config", "--unsafe", "print", loader)
    config = json.loads(meltano.meltano(*command, env=env) or "{}")
    values = {SOURCE_SCHEMA: str(config.get("default_target_schema") or SOURCE)}
    for variable, names in PROFILE_SETTINGS[PROFILE_OUTPUTS[loader]].items():
        found = [config[name] for name in names if config.get(name) not in (None, "")]
        if found:
            values[variable] = str(found[0])
    if "DBT_DUCKDB_PATH" in values:  # relative to the project, where the loader runs
        values["DBT_DUCKDB_PATH"] = str(meltano.PROJECT / values["DBT_DUCKDB_PATH"])
    return values


def prepare_warehouse(loader: str, meltano_environment: str, env: Mapping[str, str]) -> None:
    """The folder of the loader's DuckDB file, made before the loader runs (it makes the file only)."""
    path = profile_environment(loader, meltano_environment, env).get("DBT_DUCKDB_PATH")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def failing_rows(dbt: DbtCliResource, relation: str) -> list[dict[str, Any]]:
    """The first rows a failed test kept (store_failures), as `dbt show` prints them."""
    query = f"select * from {relation}"  # noqa: S608 - a relation named by dbt's own results
    show = dbt.cli(["show", "--inline", query, "--limit", str(FAILING_ROWS), "--output", "json"])
    for event in show.stream_raw_events():
        data = event.raw_event.get("data", {})
        if event.raw_event.get("info", {}).get("name") == "ShowNode" and "preview" in data:
            rows: list[dict[str, Any]] = json.loads(data["preview"])
            return rows
    return []


def with_failing_rows(
    event: dg.AssetCheckResult, rows: Callable[[str], list[dict[str, Any]]], relations: Mapping[str, str]
) -> dg.AssetCheckResult:
    """A failed check with the rows its test found, in its metadata and description."""
    unique_id = event.metadata.get("unique_id")
    relation = relations.get(str(unique_id.value)) if unique_id is not None else None
    if not relation:
        return event
    found = rows(relation)
    lines = [", ".join(f"{name}={value}" for name, value in row.items()) for row in found]
    metadata: dict[str, Any] = {
        **event.metadata,
        "failing rows": dg.MetadataValue.json(found),
        "kept in": dg.MetadataValue.text(relation),
    }
    return event._replace(metadata=metadata, description="; ".join(lines) or event.description)


def dbt_definitions(
    tables: Callable[[str], list[dg.AssetKey]],
    loader: str,
    meltano_environment: str,
    pool: str,
    sensor_seconds: int = 30,
) -> tuple[dg.AssetsDefinition, dg.SensorDefinition]:
    """The dbt assets and checks of transform/ for `loader`'s warehouse, and the sensor that builds
    them after the loads (looking every `sensor_seconds`); `tables` gives the loading assets of a
    source table."""
    output = PROFILE_OUTPUTS[loader]

    @dbt_assets(
        manifest=manifest(output),
        dagster_dbt_translator=Translator(tables, output),
        name="optico_dbt",
        pool=pool,
    )
    def models(context: dg.AssetExecutionContext) -> Iterator[Any]:
        dbt = DbtCliResource(
            project_dir=str(PROJECT_DIR), dbt_executable=dbt_executable(output), target=output
        )
        with environment(profile_environment(loader, meltano_environment)):
            invocation = dbt.cli(["build"], context=context, raise_on_error=False)
            failed = []  # given once dbt has ended: the rows a test kept are read then
            for event in invocation.stream():
                if isinstance(event, dg.AssetCheckResult) and not event.passed:
                    failed.append(event)
                else:
                    yield event
            results = invocation.get_artifact("run_results.json")["results"] if failed else []
            relations = {result["unique_id"]: result.get("relation_name") or "" for result in results}
            for event in failed:
                yield with_failing_rows(event, lambda relation: failing_rows(dbt, relation), relations)
        if not invocation.is_successful():
            raise dg.Failure(f"dbt build failed: {invocation.get_error()}")

    sensor = dg.AutomationConditionSensorDefinition(
        SENSOR,
        target=dg.AssetSelection.assets(models),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=sensor_seconds,
    )
    return models, sensor
