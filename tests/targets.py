"""The Singer targets written by others that the tap is proven with, and what each stores.

``tests/test_targets.py`` loads the same sandbox days into each, through Meltano, and checks
every line here against what the target wrote; ``make readme`` renders the README's Targets
table from it (and the versions from meltano.yml), so the README says what the tests check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """A loader of meltano.yml and the column types it gives the fields that differ most."""

    loader: str
    title: str
    start_date: str
    start_date_local: str
    call_path: str
    extra_fields: str
    #: Whether a record without ``extra_fields`` gets SQL NULL (else a JSON ``null``).
    sql_null_without_extra_fields: bool
    #: The type of ``daily_calls.date``.
    date: str
    notes: str

    @property
    def types(self) -> dict[str, str]:
        """Column types in ``calls`` (and ``daily_calls.date``), as the database names them."""
        return {
            "start_date": self.start_date,
            "start_date_local": self.start_date_local,
            "call_path": self.call_path,
            "extra_fields": self.extra_fields,
            "date": self.date,
        }


TARGETS = (
    Target(
        loader="target-postgres",
        title="MeltanoLabs target-postgres",
        start_date="timestamp without time zone",
        start_date_local="text",
        call_path="text[]",
        extra_fields="jsonb",
        sql_null_without_extra_fields=False,
        date="date",
        notes=(
            "Converts an offset to UTC, then drops it. Binds a missing `extra_fields` as a JSON "
            "`null`, so `extra_fields is null` finds no row; rows without extra fields are "
            "`jsonb_typeof(extra_fields) = 'null'`. "
            "Upserts on (`account`, `call_id`) with `load_method: upsert`."
        ),
    ),
    Target(
        loader="target-postgres-pipelinewise",
        title="pipelinewise-target-postgres",
        start_date="timestamp without time zone",
        start_date_local="character varying",
        call_path="jsonb",
        extra_fields="jsonb",
        sql_null_without_extra_fields=True,
        date="character varying",
        notes=(
            "Drops an offset without converting (`10:15:00+01:00` is stored as `10:15:00`): right only "
            "because the tap writes UTC."
        ),
    ),
    Target(
        loader="target-duckdb",
        title="target-duckdb",
        start_date="TIMESTAMP",
        start_date_local="VARCHAR",
        call_path="JSON",
        extra_fields="JSON",
        sql_null_without_extra_fields=True,
        date="VARCHAR",
        notes=(
            "`duckdb==1.1.3` is pinned in its `pip_url`: with duckdb 2.0.1 it loads one row fewer than "
            "it logs (the first record of `calls`) and drops offsets without converting. Name the file "
            "apart from the schema (`warehouse.duckdb`, not `optico.duckdb`): DuckDB names its catalog "
            "after the file, and `optico.calls` would be ambiguous."
        ),
    ),
)

#: Singer targets that do not run on current Python, and why (tried on Python 3.11).
BROKEN = (
    (
        "singer-io target-sqlite 0.2.0",
        "Crashes at start: its pinned SQLAlchemy 1.2 uses `collections.MutableMapping`, gone since "
        "Python 3.10.",
    ),
    (
        "singer-io target-csv 0.3.0",
        "Crashes on the first record: it uses `collections.MutableMapping`, gone since Python 3.10.",
    ),
    (
        "target-parquet 0.0.1",
        "Does not install: it pins pandas 0.24.2 (and pyarrow 0.13.0), which has no wheel for "
        "Python 3.11 and fails to build from source.",
    ),
)


def pip_url(loader: str, meltano_yml: Path = ROOT / "meltano.yml") -> str:
    """The loader's pinned ``pip_url`` in meltano.yml."""
    project = YAML(typ="safe").load(meltano_yml.read_text(encoding="utf-8"))
    [plugin] = [plugin for plugin in project["plugins"]["loaders"] if plugin["name"] == loader]
    return str(plugin["pip_url"])


def table(meltano_yml: Path = ROOT / "meltano.yml") -> str:
    """The README's Targets table."""
    rows = [
        "| target (loader) | `pip_url` | `start_date` | `start_date_local` | `call_path` "
        "| `extra_fields` | `daily_calls.date` | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for target in TARGETS:
        packages = " ".join(f"`{package}`" for package in pip_url(target.loader, meltano_yml).split())
        without = "NULL" if target.sql_null_without_extra_fields else "JSON `null`"
        rows.append(
            f"| {target.title} (`{target.loader}`) | {packages} | {target.start_date} "
            f"| {target.start_date_local} | {target.call_path} | {target.extra_fields}; {without} when "
            f"none | {target.date} | {target.notes} |"
        )
    rows += ["", "| target | why it is not listed |", "| --- | --- |"]
    rows += [f"| {name} | {why} |" for name, why in BROKEN]
    return "\n".join(rows)
