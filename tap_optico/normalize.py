"""Turn the API's loosely typed values into typed records.

The API reference gives no formats, so every converter accepts each form it
lists (numbers as strings, French decimal commas, ``"0"``/``"1"`` booleans,
``HH:MM:SS`` durations, naive local times) and raises ``ValueError`` on
anything else; the :class:`Normalizer` turns that into a null and a warning,
so that a record is never lost over one odd value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

Converter = Callable[[Any], Any]

TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "oui", "vrai"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "non", "faux"})
_CLOCK = re.compile(r"^(\d+):([0-5]?\d)(?::([0-5]?\d))?$")
_SPACES = re.compile(r"[\s\u00a0\u202f']")
EXTRA_FIELDS = "extra_fields"
UNREADABLE = (ValueError, TypeError, OverflowError, OSError, AttributeError)


def canonical_key(key: str) -> str:
    """``"tracking number"`` and ``"Tracking-Number"`` both become ``tracking_number``."""
    return re.sub(r"[\s\-]+", "_", key.strip()).lower()


def keep(value: Any) -> Any:
    return value


def to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return msgspec.json.encode(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number_text(value: str) -> str:
    text = _SPACES.sub("", value)
    if "," in text:
        # "12,50" is French for 12.50; in "1.234,50" the dot groups thousands.
        text = (
            text.replace(".", "").replace(",", ".")
            if text.rfind(",") > text.rfind(".")
            else text.replace(",", "")
        )
    return text


def to_number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, int):
        return value
    number = float(_number_text(value)) if isinstance(value, str) else float(value)
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def to_integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = to_number(value)
    if isinstance(number, float) and not number.is_integer():
        raise ValueError("not a whole number")
    return int(number)


def to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ValueError("not a boolean")


def to_duration(value: Any) -> int:
    """Seconds, from ``134``, ``"134"``, ``"134.0"``, ``"00:02:14"`` or ``"02:14"``."""
    if isinstance(value, str) and ":" in value:
        match = _CLOCK.match(value.strip())
        if not match:
            raise ValueError("not a duration")
        first, second, third = match.groups()
        if third is None:  # MM:SS
            return int(first) * 60 + int(second)
        return int(first) * 3600 + int(second) * 60 + int(third)
    number = to_number(value)
    if number < 0:
        raise ValueError("a negative duration")
    return round(number)


def to_call_path(value: Any) -> list[str]:
    """The pages of a visit, in order: the API separates them with newlines."""
    if isinstance(value, list):
        return [to_text(page) for page in value if page not in (None, "")]
    return [page for page in to_text(value).replace("\r\n", "\n").split("\n") if page.strip()]


def to_date(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a date")
    return dt.date.fromisoformat(value.strip()[:10]).isoformat()


class LocalTime:
    """Reads the API's times, naive ones as wall-clock time in ``timezone``."""

    def __init__(self, timezone: str) -> None:
        self.zone = ZoneInfo(timezone)

    def parse(self, value: Any) -> dt.datetime:
        """The time as a naive local datetime (the form that identifies a call)."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return dt.datetime.fromtimestamp(value, self.zone).replace(tzinfo=None)
        if not isinstance(value, str):
            raise TypeError("not a date-time")
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        moment = dt.datetime.fromisoformat(text)
        if moment.tzinfo is not None:
            moment = moment.astimezone(self.zone).replace(tzinfo=None)
        return moment.replace(microsecond=0)

    def to_rfc3339(self, naive: dt.datetime) -> str:
        return naive.replace(tzinfo=self.zone).isoformat()


class Normalizer:
    """Base for the per-stream normalisers: typed fields, nulls, warnings.

    Subclasses declare ``fields``: canonical name → converter, ``None`` for
    plain text. Unknown fields are kept under ``extra_fields`` and named once
    in a warning; unreadable values become null, warned once per field and
    counted for :meth:`log_summary`.
    """

    fields: Mapping[str, Converter | None]

    def __init__(self, stream_name: str, logger: logging.Logger, timezone: str) -> None:
        self.stream_name = stream_name
        self.logger = logger
        self.local_time = LocalTime(timezone)
        self.unreadable: Counter[str] = Counter()
        self.unknown_fields: set[str] = set()
        self._aliases: dict[str, str | None] = {name: name for name in self.fields if name != EXTRA_FIELDS}

    def __call__(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = dict.fromkeys(self.fields)
        extra: dict[str, Any] | None = None
        fields, aliases = self.fields, self._aliases
        for key, value in raw.items():
            try:
                name = aliases[key]
            except KeyError:
                name = self._resolve(key)
            if name is None:
                extra = extra or {}
                extra[canonical_key(key)] = value
                continue
            if value is None or value == "":
                continue
            convert = fields[name]
            if convert is None:
                record[name] = value if value.__class__ is str else to_text(value)
                continue
            try:
                record[name] = convert(value)
            except UNREADABLE:
                self._warn_unreadable(name, value)
        if EXTRA_FIELDS in record:
            record[EXTRA_FIELDS] = extra
        self.finish(record, raw)
        return record

    def finish(self, record: dict[str, Any], raw: Mapping[str, Any]) -> None:
        """Derive fields from the converted ones (keys, for instance)."""

    def _resolve(self, key: str) -> str | None:
        name = canonical_key(key)
        resolved = name if name in self.fields and name != EXTRA_FIELDS else None
        self._aliases[key] = resolved
        if resolved is None and name not in self.unknown_fields:
            self.unknown_fields.add(name)
            self.logger.warning(
                "%s: the API sent the field '%s', which the schema does not list; it is kept under '%s'",
                self.stream_name,
                name,
                EXTRA_FIELDS,
            )
        return resolved

    def _warn_unreadable(self, name: str, value: Any) -> None:
        self.unreadable[name] += 1
        if self.unreadable[name] == 1:
            self.logger.warning(
                "%s: could not read %s=%.80r; it is set to null (further ones are counted)",
                self.stream_name,
                name,
                value,
            )

    def log_summary(self) -> None:
        for name, count in sorted(self.unreadable.items()):
            self.logger.warning(
                "%s: %d value(s) of %s could not be read and were set to null",
                self.stream_name,
                count,
                name,
            )


class CallNormalizer(Normalizer):
    fields: Mapping[str, Converter | None] = {
        "call_id": None,
        "start_date": keep,  # parsed with the call's identity in finish()
        "caller": None,
        "tracking_number": None,
        "phone": None,
        "trigger_type": to_integer,
        "source": None,
        "url": None,
        "referer": None,
        "keyword": None,
        "call_path": to_call_path,
        "status": None,
        "duration": to_duration,
        "revenue": to_number,
        "keypad": None,
        "is_redirect": to_boolean,
        "expired_redirect": to_boolean,
        "client_data": None,
        "visit_id": None,
        EXTRA_FIELDS: None,
    }

    def finish(self, record: dict[str, Any], raw: Mapping[str, Any]) -> None:
        start = record["start_date"]
        identity = None if start is None else to_text(start)
        if start is not None:
            try:
                moment = self.local_time.parse(start)
            except UNREADABLE:
                record["start_date"] = None
                self._warn_unreadable("start_date", start)
            else:
                record["start_date"] = self.local_time.to_rfc3339(moment)
                identity = moment.isoformat()
        record["call_id"] = call_id(identity, record["tracking_number"], record["caller"], record["phone"])


def call_id(start: str | None, tracking_number: str | None, caller: str | None, phone: str | None) -> str:
    """A stable key for a call: the same call read twice gets the same id."""
    text = "\x1f".join(part or "" for part in (start, tracking_number, caller, phone))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class DailyNormalizer(Normalizer):
    fields: Mapping[str, Converter | None] = {
        "date": to_date,
        "calls": to_integer,
        "duration": to_duration,
        "revenue": to_number,
        EXTRA_FIELDS: None,
    }
