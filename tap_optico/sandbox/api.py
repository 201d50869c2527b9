"""The Data API's semantics: parameters in, a JSON body out (no HTTP here)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Literal

import msgspec

from tap_optico.api import DATA_TYPE, FILTERS, FIRST_PAGE, LAST_PAGE_MARKERS, MAX_PAGE_SIZE, MIN_PAGE_SIZE
from tap_optico.sandbox.data import SandboxCall, SandboxData

SANDBOX_API_KEY = "45ebcbe224c4bbb8d1882654b33b9823"
DEFAULT_LIMIT = 100
TRUE_VALUES = frozenset({"1", "true", "True", "yes", "on"})

Order = Literal["asc", "desc"]
MisbehaviourKind = Literal[
    "endless-pages",
    "ignore-page",
    "repeat-last-row",
    "phantom-call",
    "null-row",
    "trickle",
    "http10",
    "connection-close",
    "redirect",
    "control-chars",
    "page-cap",
    "capped-count",
    "no-next-page",
    "spaced-json",
    "gzip",
    "chunked",
]
#: Terminal escape sequences (erase a line, move up, a forged line, a window title, a bell, C1 CSI).
CONTROL_CHARS = "\x1b[2K\x1b[1A\x1b[32mINFO ok\x1b[0m\x1b]0;TITLE\x07\x9b\x00\x08\x7f"
#: What each misbehaviour does (all are off unless asked for).
MISBEHAVIOURS: dict[MisbehaviourKind, str] = {
    "endless-pages": "next_page is always page + 1; a page past the end answers the last page again",
    "ignore-page": "every page answers the rows of page 1 (with next_page after the page asked)",
    "repeat-last-row": "each page starts with the last row of the page before (an off-by-one offset)",
    "phantom-call": "total_results counts a call more than it returns, when the days asked include the first",
    "null-row": "the first row of each answer's first page is null (and counted)",
    "trickle": "the whole answer, headers included, is sent at trickle_bytes_per_second",
    "http10": "answers as an HTTP/1.0 server (the connection closes after each answer)",
    "connection-close": "every answer says 'Connection: close' (as many proxies do)",
    "redirect": "every request is first redirected (HTTP 307) to the same URL",
    "page-cap": "a page holds at most a fifth of the limit asked (its own maximum), with a true next_page",
    "capped-count": "total_results stops at count_cap, as search-backed APIs report, while next_page goes on",
    "no-next-page": "next_page is null on every page, while total_results says rows remain",
    "spaced-json": "even pages are written with spaces after ':' and ',' (empty texts need the converters)",
    "gzip": "answers are gzip-compressed (Content-Encoding) when the request accepts it, as most web "
    "servers send JSON",
    "chunked": "answers come in pieces of 8 KiB with no Content-Length (Transfer-Encoding: chunked), as "
    "servers that stream their output send them",
    "control-chars": "terminal escape sequences in each call's field names and, for daily totals, in an "
    "HTTP 500's reason phrase, Content-Type and body",
}
# How the last page says there is no next one (None: no next_page key); the mixed style cycles them all.
_NO_NEXT_PAGE_FORMS: tuple[bytes | None, ...] = (None, *map(msgspec.json.encode, LAST_PAGE_MARKERS))


@dataclass(frozen=True)
class Misbehaviour:
    """Ways the API misbehaves, for some accounts (by number, from 1) or, with none listed, all."""

    kinds: frozenset[MisbehaviourKind] = frozenset()
    accounts: frozenset[int] = frozenset()
    trickle_bytes_per_second: float = 64.0
    count_cap: int = 500

    def applies(self, kind: MisbehaviourKind, account: int) -> bool:
        return kind in self.kinds and (not self.accounts or account in self.accounts)


class QueryError(ValueError):
    """A request the API answers with ``status: "ERROR"``."""


@dataclass(frozen=True)
class Query:
    start: dt.date
    end: dt.date
    page: int
    limit: int
    group_by_day: bool
    filters: tuple[tuple[str, str], ...]


def _parse_day(params: Mapping[str, str], name: str) -> dt.date:
    value = params.get(name, "")
    if not value:
        msg = f"Le paramètre {name} est obligatoire"
        raise QueryError(msg)
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        msg = f"Le paramètre {name} doit être une date AAAA-MM-JJ"
        raise QueryError(msg) from None


def _parse_int(params: Mapping[str, str], name: str, default: int) -> int:
    value = params.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        msg = f"Le paramètre {name} doit être un entier"
        raise QueryError(msg) from None


def parse_query(params: Mapping[str, str]) -> Query:
    """Check every parameter but the key as the API reference describes it."""
    if params.get("type") != DATA_TYPE:
        msg = "Type de données inconnu (uniquement calls)"
        raise QueryError(msg)
    start, end = _parse_day(params, "start_date"), _parse_day(params, "end_date")
    if end < start:
        msg = "end_date doit être postérieure ou égale à start_date"
        raise QueryError(msg)
    limit = _parse_int(params, "limit", DEFAULT_LIMIT)
    if not MIN_PAGE_SIZE <= limit <= MAX_PAGE_SIZE:
        msg = f"limit doit être compris entre {MIN_PAGE_SIZE} et {MAX_PAGE_SIZE}"
        raise QueryError(msg)
    page = _parse_int(params, "page", FIRST_PAGE)
    if page < FIRST_PAGE:
        msg = f"page doit être supérieure ou égale à {FIRST_PAGE}"
        raise QueryError(msg)
    return Query(
        start=start,
        end=end,
        page=page,
        limit=limit,
        group_by_day=params.get("group_by_day", "") in TRUE_VALUES,
        filters=tuple((name, params[name]) for name in FILTERS if params.get(name)),
    )


#: How each filter of the API reference selects calls.
MATCHERS: dict[str, Callable[[SandboxCall, str], bool]] = {
    "phone": lambda call, value: call.profile.phone == value,
    "tracking_phone": lambda call, value: call.profile.tracking_number == value,
    "caller_phone": lambda call, value: call.caller == value,
    "offline_phone_description": lambda call, value: (
        call.profile.static_description is not None
        and value.casefold() in call.profile.static_description.casefold()
    ),
}


def _matches(call: SandboxCall, filters: tuple[tuple[str, str], ...]) -> bool:
    return all(MATCHERS[name](call, value) for name, value in filters)


def error_body(*messages: str) -> bytes:
    return msgspec.json.encode(
        {"status": "ERROR", "total_results": 0, "results": [], "errors": list(messages)}
    )


def account_key(number: int) -> str:
    """The sandbox key of account ``number`` (from 1): the documented key, then keys of the same shape."""
    if number == 1:
        return SANDBOX_API_KEY
    return hashlib.md5(f"optico-sandbox-account-{number}".encode(), usedforsecurity=False).hexdigest()


class SandboxApi:
    """Answers Data API requests from one :class:`SandboxData` per API key.

    ``live_step`` > 0 makes the last day grow: it starts half full and gains
    that many calls with every request, up to ``calls_per_day``.
    """

    def __init__(
        self,
        accounts: Mapping[str, SandboxData],
        *,
        order: Order = "asc",
        live_step: int = 0,
        misbehaviour: Misbehaviour | None = None,
    ) -> None:
        self.accounts = dict(accounts)
        self.misbehaviour = misbehaviour or Misbehaviour()
        self._numbers = {key: number for number, key in enumerate(self.accounts, 1)}
        #: The first account's data.
        self.data = next(iter(self.accounts.values()))
        self.order = order
        self.live_step = live_step
        self._served = 0
        self._lock = threading.Lock()

    def visible_count(self, day: dt.date, data: SandboxData | None = None) -> int:
        """How many calls of ``day`` exist now, without generating them."""
        data = data or self.data
        if not data.first_day <= day <= data.last_day:
            return 0
        if self.live_step and day == data.last_day:
            grown = data.calls_per_day // 2 + self.live_step * self._served
            return min(data.calls_per_day, grown)
        return data.calls_per_day

    def visible_calls(self, day: dt.date, data: SandboxData | None = None) -> tuple[SandboxCall, ...]:
        data = data or self.data
        return data.calls_of_day(day)[: self.visible_count(day, data)]

    def misbehaves(self, kind: MisbehaviourKind, params: Mapping[str, str]) -> bool:
        """Whether the account whose key ``params`` holds misbehaves in this way."""
        number = self._numbers.get(params.get("api_key", ""))
        return number is not None and self.misbehaviour.applies(kind, number)

    def answer(self, params: Mapping[str, str]) -> bytes:
        """The JSON body for one request's query parameters."""
        with self._lock:
            self._served += 1
            served = self._served
        data = self.accounts.get(params.get("api_key", ""))
        if data is None:
            return error_body("Clef API invalide")
        try:
            query = parse_query(params)
        except QueryError as error:
            return error_body(str(error))
        if self.misbehaves("page-cap", params):
            query = replace(query, limit=max(1, query.limit // 5))
        stride = query.limit - 1 if self.misbehaves("repeat-last-row", params) else query.limit
        if self.misbehaves("ignore-page", params):  # page 1's rows, next_page as asked
            items, total = self._page(replace(query, page=FIRST_PAGE), data, stride)
        else:
            items, total = self._page(query, data, stride)
        more = (query.page - 1) * stride + query.limit < total
        if self.misbehaves("endless-pages", params):
            last = max(FIRST_PAGE, -(-total // query.limit))
            if query.page > last:
                items, _ = self._page(replace(query, page=last), data, stride)
            more = True
        if self.misbehaves("null-row", params) and query.page == FIRST_PAGE and items:
            items[0] = b"null"
        if self.misbehaves("phantom-call", params) and query.start <= data.first_day <= query.end:
            total += 1
        if self.misbehaves("control-chars", params):
            field = msgspec.json.encode(f"note{CONTROL_CHARS}")
            items = [item[:-1] + b"," + field + b':"x"}' if item.endswith(b"}") else item for item in items]
        if self.misbehaves("capped-count", params):
            total = min(total, self.misbehaviour.count_cap)
        if self.misbehaves("no-next-page", params):
            more = False
        if self.misbehaves("spaced-json", params) and query.page % 2 == 0:
            items = [json.dumps(json.loads(item), ensure_ascii=False).encode() for item in items]
        body = bytearray(b'{"status":"OK","total_results":%d,' % total)
        if more:
            body += b'"next_page":%d,' % (query.page + 1)
        elif data.style == "mixed":
            form = _NO_NEXT_PAGE_FORMS[served % len(_NO_NEXT_PAGE_FORMS)]
            if form is not None:
                body += b'"next_page":' + form + b","
        body += b'"results":[' + b",".join(items) + b'],"errors":[]}'
        return bytes(body)

    def _page(self, query: Query, data: SandboxData, stride: int) -> tuple[list[bytes], int]:
        """The items of a page that starts ``stride`` rows after the one before, and the total."""
        days = data.days(query.start, query.end)
        if self.order == "desc":
            days.reverse()
        first = (query.page - 1) * stride
        if query.group_by_day:
            rows = list(self._daily_rows(days, query, data))
            return rows[first : first + query.limit], len(rows)
        if query.filters:
            matching = [
                call for day in days for call in self._ordered(day, data) if _matches(call, query.filters)
            ]
            return [call.encoded for call in matching[first : first + query.limit]], len(matching)
        return self._slice(days, first, query.limit, data)

    def _ordered(self, day: dt.date, data: SandboxData) -> Iterator[SandboxCall]:
        calls = self.visible_calls(day, data)
        return reversed(calls) if self.order == "desc" else iter(calls)

    def _slice(
        self, days: list[dt.date], first: int, limit: int, data: SandboxData
    ) -> tuple[list[bytes], int]:
        """One page of the unfiltered calls, touching only the days it covers."""
        items: list[bytes] = []
        total = 0
        for day in days:
            count = self.visible_count(day, data)
            lo, hi = max(first - total, 0), min(first + limit - total, count)
            if lo < hi:
                calls = self.visible_calls(day, data)
                if self.order == "desc":
                    calls = calls[::-1]
                items.extend(call.encoded for call in calls[lo:hi])
            total += count
        return items, total

    def _daily_rows(self, days: list[dt.date], query: Query, data: SandboxData) -> Iterator[bytes]:
        for day in days:
            calls = self.visible_calls(day, data)
            if query.filters:
                calls = tuple(call for call in calls if _matches(call, query.filters))
            if calls:
                yield msgspec.json.encode(data.daily_total(calls).as_dict(data.style))
