"""Turn the API's loosely typed values into typed records.

The API reference gives no formats, so every converter accepts each form it lists (numbers as strings,
French decimal commas, ``"0"``/``"1"`` booleans, ``HH:MM:SS`` durations, naive local times) and raises
``ValueError`` on anything else; the :class:`Normalizer` turns that into a null and a warning, so that a
record is never lost over one odd value.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import hashlib
import logging
import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, ClassVar, Generic, NamedTuple, TypeVar
from zoneinfo import ZoneInfo

import msgspec
from typing_extensions import override

from tap_optico.secrets import shorten

Converter = Callable[[Any], Any]
#: A record: an instance of its stream's ``record_struct`` (fields read by name).
Record = Any

BOOLEAN_WORDS = dict.fromkeys(("1", "true", "t", "yes", "y", "oui", "vrai"), True)
BOOLEAN_WORDS |= dict.fromkeys(("0", "false", "f", "no", "n", "non", "faux"), False)
_CLOCK = re.compile(r"^(\d+):([0-5]?\d)(?::([0-5]?\d))?$")
_SPACES = re.compile(r"[\s\u00a0\u202f']")
EXTRA_FIELDS = "extra_fields"
#: The field that names a record's account: set by the reader, never read from the API.
ACCOUNT = "account"
UNREADABLE = (ValueError, TypeError, OverflowError, OSError, AttributeError)
#: The integers a warehouse's BIGINT holds.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Raw values repeat (flags, types, durations): a field remembers the immutable conversions of this many.
MEMO_SIZE = 4096
MEMOIZABLE = frozenset({int, float, bool, str})
_UNSEEN = object()
HOURS_KEPT = 1024
#: Minutes and seconds as a plain local time ends: ``:MM:SS``.
_CLOCKS = frozenset(f":{minute:02d}:{second:02d}" for minute in range(60) for second in range(60))
_HOUR = dt.timedelta(hours=1)
_KeyRule = tuple[str | None, Converter | None, dict[str, Any] | None]
_UNKNOWN: _KeyRule = (None, None, None)


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


def to_number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            text = _SPACES.sub("", value)
            if "," in text:  # "12,50" is 12.50; in "1.234,50" and "1,234.50" the first mark groups digits
                decimal_comma = text.rfind(",") > text.rfind(".")
                text = text.replace(".", "").replace(",", ".") if decimal_comma else text.replace(",", "")
            number = float(text)
    else:
        number = float(value)
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def to_integer(value: Any) -> int:
    number = to_number(value)
    if isinstance(number, float) and not number.is_integer():
        raise ValueError("not a whole number")
    return int64(int(number))


def int64(whole: int) -> int:
    """``whole``, if a warehouse's 64-bit integer (BIGINT) holds it: a larger one would fail the load."""
    if not INT64_MIN <= whole <= INT64_MAX:
        raise ValueError("beyond a 64-bit integer")
    return whole


def to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in BOOLEAN_WORDS:
            return BOOLEAN_WORDS[word]
    raise ValueError("not a boolean")


def to_duration(value: Any) -> int:
    """Seconds, from ``134``, ``"134"``, ``"134.0"``, ``"00:02:14"`` or ``"02:14"``."""
    if isinstance(value, str) and ":" in value:
        match = _CLOCK.match(value.strip())
        if not match:
            raise ValueError("not a duration")
        first, second, third = match.groups()
        if third is None:  # MM:SS
            return int64(int(first) * 60 + int(second))
        return int64(int(first) * 3600 + int(second) * 60 + int(third))
    number = to_number(value)
    if number < 0:
        raise ValueError("a negative duration")
    return int64(round(number))


def to_call_path(value: Any) -> list[str]:
    """The pages of a visit, in order: the API separates them with newlines."""
    if isinstance(value, list):
        return [to_text(page) for page in value if page not in (None, "")]
    return list(_pages(value if value.__class__ is str else to_text(value)))


@functools.lru_cache(maxsize=MEMO_SIZE)  # visits follow the same paths: a path is split once
def _pages(text: str) -> tuple[str, ...]:
    return tuple(filter(str.strip, (text.replace("\r\n", "\n") if "\r" in text else text).split("\n")))


def to_date(value: Any) -> str:
    return dt.date.fromisoformat(value.strip()[:10]).isoformat()


class LocalTime:
    """Reads the API's times, naive ones as wall-clock time in ``timezone``.

    A time that carries its instant (an offset, ``Z``, epoch seconds) keeps that instant. A naive time
    in the hour the autumn clock change repeats is its first occurrence (summer time), as in ``zoneinfo``.
    """

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        # Local "YYYY-MM-DDTHH" and "YYYY-MM-DD HH" -> how that hour's identity, wall time and UTC
        # instant begin (None: the text itself), for hours of one offset of whole hours only.
        self._hours: dict[str, tuple[str | None, str | None, str]] = {}

    def read(self, value: Any) -> tuple[str, str, str]:
        """The time's identity (``call_id``'s input: the naive local ISO text, with the offset in the
        repeated hour's second occurrence), its wall time ``YYYY-MM-DD HH:MM:SS`` and its UTC instant."""
        if value.__class__ is str:
            # The API's plain form, "YYYY-MM-DD HH:MM:SS" (or with a T), in an hour read before: sliced.
            hour = self._hours.get(value[:13])
            if hour is not None and (clock := value[13:]) in _CLOCKS:
                identity, wall, utc = hour
                return (
                    value if identity is None else identity + clock,
                    value if wall is None else wall + clock,
                    f"{utc}{clock}+00:00",
                )
            try:
                moment = dt.datetime.fromisoformat(value)
            except ValueError:
                pass
            else:
                if moment.tzinfo is None and not moment.microsecond:
                    return self._naive(moment)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self._aware(dt.datetime.fromtimestamp(value, dt.timezone.utc))
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        moment = dt.datetime.fromisoformat(text).replace(microsecond=0)
        return self._naive(moment) if moment.tzinfo is None else self._aware(moment)

    def _naive(self, naive: dt.datetime) -> tuple[str, str, str]:
        local = naive.isoformat()
        wall = local.replace("T", " ")
        hour = self._hours.get(local[:13])
        if hour is not None:
            return local, wall, f"{hour[2]}{local[13:]}+00:00"
        moment = naive.replace(tzinfo=self.zone)
        utc = moment.astimezone(dt.timezone.utc).isoformat()
        offset = moment.utcoffset()
        if offset is not None and not offset % _HOUR and self._single_offset(naive):
            if len(self._hours) >= 2 * HOURS_KEPT:
                self._hours.clear()
            self._hours[local[:13]] = (None, wall[:13], utc[:13])
            self._hours[wall[:13]] = (local[:13], None, utc[:13])
        return local, wall, utc

    def _aware(self, moment: dt.datetime) -> tuple[str, str, str]:
        local = moment.astimezone(self.zone).replace(microsecond=0)
        naive = local.replace(tzinfo=None).isoformat()
        identity = local.isoformat() if local.fold else naive
        return identity, naive.replace("T", " "), local.astimezone(dt.timezone.utc).isoformat()

    def _single_offset(self, naive: dt.datetime) -> bool:
        """Whether every time of ``naive``'s hour has one and the same UTC offset."""
        offsets = {
            naive.replace(minute=minute, second=second, tzinfo=self.zone, fold=fold).utcoffset()
            for minute, second in ((0, 0), (59, 59))
            for fold in (0, 1)
        }
        return len(offsets) == 1


class Conversion(NamedTuple):
    """How the raw values of one field become the field's schema type."""

    #: Raises one of UNREADABLE on a value it cannot read; None keeps text as it is.
    convert: Converter | None
    #: The type msgspec decodes the field's plain raw form into; None where it has none.
    plain: Any = None
    #: The plain form is text that still goes through ``convert``.
    after_plain: bool = False


_Finite = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
_Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
#: Text of one character or more: an empty text is a missing value (``empty_values_to_null``).
NON_EMPTY = Annotated[str, msgspec.Meta(min_length=1)]
TEXT = Conversion(None, NON_EMPTY)
INTEGER = Conversion(to_integer, _Int64)
NUMBER = Conversion(to_number, int | _Finite)
BOOLEAN = Conversion(to_boolean, bool)
DAY = Conversion(to_date)
DURATION = Conversion(to_duration, Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)])
PAGE_LIST = Conversion(to_call_path, NON_EMPTY, after_plain=True)
#: Kept as received here; the normaliser's ``finish`` reads it.
RAW = Conversion(keep, NON_EMPTY)
_BY_TYPE = {("string", None): TEXT, ("string", "date"): DAY, ("integer", None): INTEGER}
_BY_TYPE |= {("number", None): NUMBER, ("boolean", None): BOOLEAN}


def schema_conversion(stream: str, name: str, spec: Mapping[str, Any]) -> Conversion:
    """The conversion a field's schema type implies (plain strings, numbers, booleans, days)."""
    types = spec.get("type")
    kinds = [kind for kind in ([types] if isinstance(types, str) else types or []) if kind != "null"]
    conversion = _BY_TYPE.get((kinds[0], spec.get("format")) if len(kinds) == 1 else ("", None))
    if conversion is None:
        msg = f"{stream}: field '{name}' ({types}, format {spec.get('format')}) needs a declared conversion"
        raise TypeError(msg)
    return conversion


class Normalizer:
    """Typed records from raw results: the stream's schema is the list of fields.

    Each field's conversion is the one its schema type implies unless the stream declares another.
    Unknown fields are kept under ``extra_fields`` and named once in a warning; unreadable values
    become null, warned once per field and counted for :meth:`log_summary`.
    """

    #: Fields this normaliser computes in :meth:`finish` instead of reading them.
    derived: ClassVar[tuple[str, ...]] = ()
    #: The field two distinct records may share (calls that look alike), or None: see :meth:`renumber`.
    lookalike_key: ClassVar[str | None] = None

    def __init__(
        self,
        schema: Mapping[str, Any],
        conversions: Mapping[str, Conversion],
        *,
        stream_name: str,
        logger: logging.Logger,
        timezone: ZoneInfo,
    ) -> None:
        self.stream_name = stream_name
        self.logger = logger
        self.local_time = LocalTime(timezone)
        self.unreadable: Counter[str] = Counter()
        self.unknown_fields: set[str] = set()
        properties = schema["properties"]
        #: The fields every record holds, in schema order. ``extra_fields`` is only there when
        #: the API sent unlisted fields, so that targets store SQL NULL, not a JSON null.
        self.properties = tuple(name for name in properties if name != EXTRA_FIELDS)
        self._keeps_extra = EXTRA_FIELDS in properties
        if unknown := set(conversions) - set(properties):
            msg = f"{stream_name}: conversions for fields the schema lacks: {sorted(unknown)}"
            raise TypeError(msg)
        #: The fields read from the API, with their conversions.
        self.fields: dict[str, Conversion] = {
            name: conversions.get(name) or schema_conversion(stream_name, name, spec)
            for name, spec in properties.items()
            if name not in (*self.derived, EXTRA_FIELDS, ACCOUNT)
        }
        #: The record as a struct (``record_struct``): what the reader keys and the writer encodes.
        plain = {name: field.plain for name, field in self.fields.items()}
        self.record_type = record_struct(
            tuple((name, plain.get(name, COMPUTED)) for name in self.properties), extra=self._keeps_extra
        )
        #: The fast path's type, a plain page's results decode into (None: a field has no plain form).
        self.fast_type = None if None in plain.values() else self.record_type
        self._after_plain = tuple(
            (name, field.convert or to_text) for name, field in self.fields.items() if field.after_plain
        )
        # Raw key -> (field, converter, memo); (None, None, None) for keys the schema lacks.
        self._key_rules: dict[str, _KeyRule] = {
            name: (name, field.convert, None if field.convert in (None, keep) else {})
            for name, field in self.fields.items()
        }

    def records(self, rows: Iterable[Any], account: str | None) -> tuple[list[Record], list[Any]]:
        """The typed records of ``rows``, in order, with their ``account``, and the rows that are not
        JSON objects. A plain result is typed in place: it becomes the record (a row is read once)."""
        fast_type, after_plain, from_raw = self.fast_type, self._after_plain, self._from_raw
        records: list[Record] = []
        not_objects: list[Any] = []
        for raw in rows:
            if raw.__class__ is fast_type:
                record = raw
                for name, convert in after_plain:
                    value = getattr(record, name)
                    if value is not None:
                        try:
                            setattr(record, name, convert(value))
                        except UNREADABLE:
                            setattr(record, name, None)
                            self._warn_unreadable(name, value)
            elif isinstance(raw, dict):
                record = from_raw(raw)
            else:
                not_objects.append(raw)
                continue
            setattr(record, ACCOUNT, account)
            records.append(record)
        self.finish(records)
        return records, not_objects

    def __call__(self, raw: Any) -> dict[str, Any]:
        """The record of the result ``raw`` as a dict, with no account; ``raw`` stays as it is."""
        [record], _ = self.records([copy.copy(raw) if raw.__class__ is self.fast_type else raw], None)
        return self.as_dict(record)

    @staticmethod
    def as_dict(record: Record) -> dict[str, Any]:
        """``record``'s fields in order; ``extra_fields`` only when set (see ``record_struct``)."""
        values = msgspec.structs.asdict(record)
        if values.get(EXTRA_FIELDS) is msgspec.UNSET:
            del values[EXTRA_FIELDS]
        return values

    def _from_raw(self, raw: Mapping[str, Any]) -> Record:
        record: dict[str, Any] = {}
        extra: dict[str, Any] | None = None
        rules = self._key_rules
        for key, value in raw.items():
            try:
                name, convert, memo = rules[key]
            except KeyError:
                name, convert, memo = self._resolve(key)
            if name is None:
                extra = extra or {}
                extra[canonical_key(key)] = value
                continue
            if value.__class__ is str:
                if not value:
                    continue
                if convert is None:
                    record[name] = value
                    continue
                if memo is not None:
                    converted = memo.get(value, _UNSEEN)
                    if converted is not _UNSEEN:
                        record[name] = converted
                        continue
            elif value is None:
                continue
            elif convert is None:
                record[name] = to_text(value)
                continue
            try:
                converted = convert(value)
            except UNREADABLE:
                self._warn_unreadable(name, value)
                continue
            record[name] = converted
            if (
                memo is not None
                and value.__class__ is str
                and converted.__class__ in MEMOIZABLE
                and len(memo) < MEMO_SIZE
            ):
                memo[value] = converted
        typed = self.record_type(**record)
        if extra is not None and self._keeps_extra:
            setattr(typed, EXTRA_FIELDS, extra)
        return typed

    def finish(self, records: list[Record]) -> None:
        """Derive fields of ``records`` from their converted ones (keys, for instance)."""

    def renumber(self, record: Record, occurrence: int) -> None:
        """Key ``record`` as the ``occurrence``-th (from 1) record after the first with the same key."""

    def _resolve(self, key: str) -> _KeyRule:
        name = canonical_key(key)
        rule = self._key_rules[key] = self._key_rules[name] if name in self.fields else _UNKNOWN
        if rule is _UNKNOWN and name not in self.unknown_fields:
            self.unknown_fields.add(name)
            self.logger.warning(
                "%s: the API sent the field '%s', which the schema does not list; it is kept under '%s'",
                self.stream_name,
                name,
                EXTRA_FIELDS,
            )
        return rule

    def _warn_unreadable(self, name: str, value: Any) -> None:
        self.unreadable[name] += 1
        if self.unreadable[name] == 1:
            self.logger.warning(
                "%s: could not read %s=%s; it is set to null (further ones are counted)",
                self.stream_name,
                name,
                shorten(repr(value), 80),
            )

    def log_summary(self) -> None:
        for name, count in sorted(self.unreadable.items()):
            self.logger.warning(
                "%s: %d value(s) of %s could not be read and were set to null", self.stream_name, count, name
            )


_EMPTY_VALUE = re.compile(rb':[ \t\n\r]*""')


def empty_values_to_null(content: bytes) -> bytes:
    """``content`` with every empty string value a null (no plain field takes an empty text). In JSON a
    quote in a string is escaped: ``""`` after a colon (and JSON's whitespace) is an empty value."""
    return _EMPTY_VALUE.sub(b":null", content)


PlainRecord = TypeVar("PlainRecord")
#: The plain type of a record field the tap computes (a key, the account): never read from the API.
COMPUTED = object()


@functools.cache
def record_struct(fields: tuple[tuple[str, Any], ...], *, extra: bool) -> type[msgspec.Struct]:
    """The type of a stream's records, encoded with no dict in between: ``fields`` are all their
    fields, in order, with the type of each one's plain form (``"437"``, ``"0"``, text), ``COMPUTED``
    or None. A plain result decodes straight into it (``decode_plain_page``), in C. ``COMPUTED`` fields
    and ``extra_fields`` take no value from an answer; ``extra_fields`` is left out unless set."""
    return msgspec.defstruct(
        "Record",
        [
            (name, msgspec.UnsetType, None)
            if plain is COMPUTED
            else (name, Any if plain is None else plain | None, None)
            for name, plain in fields
        ]
        + ([(EXTRA_FIELDS, msgspec.UnsetType, msgspec.UNSET)] if extra else []),
        forbid_unknown_fields=True,
        gc=False,
    )


class _PlainPage(msgspec.Struct, Generic[PlainRecord]):
    results: list[PlainRecord]
    status: Any = None
    total_results: Any = None
    next_page: Any = None
    errors: Any = None


@functools.cache
def _decoders(plain: type[msgspec.Struct]) -> tuple[msgspec.json.Decoder[Any], msgspec.json.Decoder[Any]]:
    page = msgspec.json.Decoder(_PlainPage[plain], strict=False)  # type: ignore[valid-type]
    return page, msgspec.json.Decoder(plain, strict=False)


_RESULTS = msgspec.json.Decoder(_PlainPage[msgspec.Raw])


def decode_plain_page(plain: type[msgspec.Struct], content: bytes) -> dict[str, Any] | None:
    """An answer with its plain results typed (``plain``) and any other result as it is in JSON;
    None for an ERROR, or an answer with no ``results`` list. msgspec types a plain result in C
    whatever the JSON's spacing, key order or escapes, numbers as numbers or as text."""
    whole, single = _decoders(plain)
    try:
        try:
            page = whole.decode(empty_values_to_null(content))
        except msgspec.ValidationError:  # not all plain: each result is read on its own
            page = _RESULTS.decode(content)
            page.results = [_plain_or_json(single, result) for result in page.results]
    except msgspec.DecodeError:
        return None
    return None if str(page.status).upper() == "ERROR" else msgspec.structs.asdict(page)


def _plain_or_json(single: msgspec.json.Decoder[Any], result: msgspec.Raw) -> Any:
    try:
        return single.decode(empty_values_to_null(result))
    except msgspec.ValidationError:
        return msgspec.json.decode(result)


class CallNormalizer(Normalizer):
    """Calls: ``start_date`` as an instant in UTC and as local wall time, and the ``call_id``
    that keys a call (from the local time, as it always was: keys never change)."""

    derived = ("call_id", "start_date_local")
    lookalike_key = "call_id"

    @override
    def finish(self, records: list[Record]) -> None:
        read = self.local_time.read
        for record in records:
            start = record.start_date
            identity = None
            if start is not None:
                try:
                    identity, record.start_date_local, record.start_date = read(start)
                except UNREADABLE:
                    identity = to_text(start)
                    record.start_date = None
                    self._warn_unreadable("start_date", start)
            record.call_id = call_id(identity, record.tracking_number, record.caller, record.phone)

    @override
    def renumber(self, record: Record, occurrence: int) -> None:
        record.call_id = lookalike_call_id(record.call_id, occurrence)


_KEY = hashlib.blake2b(digest_size=16)


def call_id(start: str | None, tracking_number: str | None, caller: str | None, phone: str | None) -> str:
    """A stable key for a call: the same call read twice gets the same id."""
    key = _KEY.copy()  # a copy of a hash set up once: its parameters are read once
    key.update(f"{start or ''}\x1f{tracking_number or ''}\x1f{caller or ''}\x1f{phone or ''}".encode())
    return key.hexdigest()


def lookalike_call_id(first: str, occurrence: int) -> str:
    """The key of the ``occurrence``-th call after the first (whose key is ``first``) that looks the same."""
    return hashlib.blake2b(f"{first}#{occurrence}".encode(), digest_size=16).hexdigest()
