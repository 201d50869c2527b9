"""Each field is declared once, in its stream's schema; everything else follows from it."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import msgspec
import pytest

from tap_optico.api import FILTERS
from tap_optico.normalize import EXTRA_FIELDS, INTEGER, decode_plain_page
from tap_optico.sandbox.api import MATCHERS
from tap_optico.sandbox.data import SandboxData
from tap_optico.streams import SCHEMAS, schema_directory
from tap_optico.tap import TapOptico
from tests.helpers import fast_type_of, normalizer_for
from tests.helpers_readme import ROOT


def test_the_schemas_are_read_from_the_top_level_directory() -> None:
    """The one copy: a clone's (editable) install reads schemas/ itself, nothing inside the package."""
    assert Path(str(schema_directory())) == ROOT / "schemas"
    stems = sorted(path.stem for path in (ROOT / "schemas").glob("*.json"))
    assert stems == ["calls", "daily_calls", "reconciliation"]
    assert list((ROOT / "tap_optico").rglob("*.json")) == []


@pytest.mark.parametrize("name", ["calls", "daily_calls"])
def test_records_hold_exactly_the_schema_fields(name: str) -> None:
    normalize = normalizer_for(name)
    schema = SCHEMAS.get_schema(name)
    # extra_fields only when the API sent a field the schema lacks.
    assert normalize.properties == tuple(field for field in schema["properties"] if field != EXTRA_FIELDS)
    assert set(normalize({})) == set(normalize.properties)
    assert set(normalize({"unlisted": "1"})) == set(schema["properties"])
    # Every field of the record, in its order: the fields read, null ones the tap computes, and
    # extra_fields, left out until set.
    record_type = normalize.record_type
    assert record_type.__struct_fields__ == (*normalize.properties, EXTRA_FIELDS)
    assert normalize.as_dict(record_type()) == dict.fromkeys(normalize.properties)
    assert msgspec.json.decode(msgspec.json.encode(record_type())) == dict.fromkeys(normalize.properties)


def test_the_sandbox_sends_every_field_the_schemas_read() -> None:
    day = dt.date(2026, 4, 1)
    data = SandboxData(first_day=day, last_day=day, calls_per_day=50)
    calls = data.calls_of_day(day)
    sent = {key for call in calls for key in call.as_dict()}
    assert sent == set(normalizer_for("calls").fields)
    daily = data.daily_total(calls).as_dict("strings")
    assert set(daily) == set(normalizer_for("daily_calls").fields)


def test_a_field_added_to_the_schema_is_read_typed_on_both_paths() -> None:
    schema = copy.deepcopy(SCHEMAS.get_schema("calls"))
    schema["properties"]["queue_seconds"] = {"type": ["integer", "null"]}
    normalize = normalizer_for("calls", schema=schema)
    raw = {"start_date": "2026-01-15 09:30:00", "caller": "0612345678", "queue_seconds": "42"}
    assert normalize(raw)["queue_seconds"] == 42
    page = decode_plain_page(fast_type_of(normalize), msgspec.json.encode({"results": [raw]}))
    assert page is not None
    assert normalize(page["results"][0]) == normalize(raw)
    assert normalize({**raw, "queue_seconds": "3,0"})["queue_seconds"] == 3


def test_a_field_whose_type_needs_a_conversion_fails_until_one_is_declared() -> None:
    schema = copy.deepcopy(SCHEMAS.get_schema("calls"))
    schema["properties"]["answered_at"] = {"type": ["string", "null"], "format": "date-time"}
    with pytest.raises(TypeError, match=r"'answered_at'.*needs a declared conversion"):
        normalizer_for("calls", schema=schema)
    with pytest.raises(TypeError, match="the schema lacks: \\['ringing'\\]"):
        normalizer_for("calls", conversions={"ringing": INTEGER})


def test_extra_fields_and_derived_fields_are_not_read_from_the_api() -> None:
    normalize = normalizer_for("calls")
    assert EXTRA_FIELDS not in normalize.fields
    assert "call_id" not in normalize.fields
    assert normalize({"call_id": "forged"})["call_id"] != "forged"


def test_every_filter_is_a_setting_and_a_sandbox_filter() -> None:
    settings = TapOptico.config_jsonschema["properties"]
    assert set(FILTERS) <= set(settings)
    assert set(MATCHERS) == set(FILTERS)
