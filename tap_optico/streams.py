"""The tap's streams: what each one reads, and how its records are keyed.

A stream's fields are its schema (``schemas/<stream>.json``, at the top of the repository); raw
values are converted as the field's schema type says, unless ``conversions`` names another way.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, ClassVar

from singer_sdk import SchemaDirectory, StreamSchema
from singer_sdk.helpers.types import Context
from typing_extensions import override

from tap_optico.normalize import DURATION, PAGE_LIST, RAW, CallNormalizer, Conversion, Normalizer
from tap_optico.reading import OpticoStream
from tap_optico.sdk_seam import DerivedStream
from tap_optico.totals import CallTally, Tally, TotalsTally, records


def schema_directory() -> Traversable:
    """The top-level ``schemas/``: in a wheel, as ``tap_optico/schemas`` (pyproject.toml's
    force-include); in an editable install (a clone), the repository's own."""
    packaged = resources.files("tap_optico").joinpath("schemas")
    if packaged.is_dir() and any(entry.name.endswith(".json") for entry in packaged.iterdir()):
        return packaged
    return Path(__file__).resolve().parent.parent / "schemas"


SCHEMAS = SchemaDirectory(schema_directory())


class CallsStream(OpticoStream):
    """One record per call."""

    name = "calls"
    primary_keys = ("account", "call_id")
    replication_key = "start_date"
    schema = StreamSchema(SCHEMAS)
    normalizer_class: ClassVar[type[Normalizer]] = CallNormalizer
    conversions: ClassVar[dict[str, Conversion]] = {
        "start_date": RAW,  # read with the call's identity by CallNormalizer
        "duration": DURATION,
        "call_path": PAGE_LIST,
    }
    identity_fields = ("call_id",)
    tally_type: ClassVar[type[Tally]] = CallTally


class DailyCallsStream(OpticoStream):
    """One record per day: the API's own totals (``group_by_day=1``)."""

    name = "daily_calls"
    primary_keys = ("account", "date")
    replication_key = "date"
    schema = StreamSchema(SCHEMAS)
    extra_params: ClassVar[dict[str, str]] = {"group_by_day": "1"}
    conversions: ClassVar[dict[str, Conversion]] = {"duration": DURATION}
    # A day's totals grow while the day lasts: a changed row is a new version to upsert.
    identity_fields = ("date", "calls", "duration", "revenue")
    tally_type: ClassVar[type[Tally]] = TotalsTally


class ReconciliationStream(DerivedStream):
    """One record per account-day both other streams read completely: the calls delivered against
    Optico's totals (totals.py). It asks the API nothing and runs after them (singer-sdk syncs streams
    in name order); each run's verdict replaces the last; its bookmark is the last day checked."""

    name = "reconciliation"
    primary_keys = ("account", "date")
    replication_key = "date"
    schema = StreamSchema(SCHEMAS)

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """The run's verdicts; in a connection test (``--test``), as many as it takes, not one more
        for singer-sdk to abort on with an ERROR."""
        result = self.source.reconciliation
        verdicts = () if result is None else records(result)
        limit = self.ABORT_AT_RECORD_COUNT
        return verdicts if limit is None else itertools.islice(verdicts, limit)
