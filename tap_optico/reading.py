"""Reading: which windows to read, the records they hand over, and the stream that reads them.

A run cuts each account's days into windows (:func:`plan`); the pager yields each window's rows and
end; :class:`WindowReader` makes records of the rows; ``bookmarks.py`` moves the bookmarks. A record
dated outside its window's days is emitted (once per run) but never moves a bookmark: one call dated
years ahead must not make every later run skip the days in between.
"""

from __future__ import annotations

import datetime as dt
import logging
import operator
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, ClassVar

from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.helpers.types import Context
from typing_extensions import override

from tap_optico.api import FIRST_PAGE
from tap_optico.bookmarks import Days, Mark, StateCadence, WindowRead, after_window
from tap_optico.client import OpticoClient, SharedPause
from tap_optico.normalize import ACCOUNT, Record
from tap_optico.paging import Ask, Failure, Outcome, Page, Rows, Window, WindowEnd, WindowPager, ask
from tap_optico.sdk_seam import WindowedStream
from tap_optico.secrets import shorten
from tap_optico.settings import Account, Settings, read_day
from tap_optico.totals import Tally

#: Reads of a window short of its total_results, or whose count moved, before its outcome stands.
MAX_WINDOW_READS = 3
#: Longest silence, in seconds, between two progress lines of a long read.
PROGRESS_SECONDS = 10.0
ONE_DAY = dt.timedelta(days=1)
#: Records the fast path encodes in one call (a bound on the bytes it holds: windows can be large).
BATCH_RECORDS = 1000


def plan_windows(
    start: dt.date, end: dt.date, days: int, account: Account, first_index: int = 0
) -> list[Window]:
    """``[start, end]`` cut into windows of ``days`` days, numbered from ``first_index``."""
    windows: list[Window] = []
    while start <= end:
        stop = min(end, start + dt.timedelta(days=days - 1))
        windows.append(Window(index=first_index + len(windows), start=start, end=stop, account=account))
        start = stop + ONE_DAY
    return windows


@dataclass(frozen=True)
class Plan:
    """The days a run reads of one account, cut into windows."""

    account: Account
    first: dt.date
    last: dt.date
    windows: list[Window]
    #: The account's bookmark the plan starts from (None: none yet): the run's first ``Mark``.
    bookmark: Any = None


def bookmark_problem(where: str, bookmark: Any, settings: Settings) -> str | None:
    """What makes ``bookmark`` unusable for a run with ``settings``, in one line; None if nothing."""
    if bookmark is None:
        return None
    where = f"State: the bookmark of {where} is {bookmark!r}"
    try:
        day = read_day(bookmark, settings.timezone)
    except (TypeError, ValueError):
        return f"{where}, which is not a date: fix the state or clear it to read from start_date"
    if day > settings.last_day:
        # A run would read nothing and exit 0: the state belongs to other data or a stray call set it.
        return (
            f"{where}, after the last day to read ({settings.last_day}): this state does not match "
            "these settings; set end_date, or set the bookmark back or clear it"
        )
    return None


def plan(settings: Settings, account: Account, bookmark: Any, first_index: int = 0) -> Plan:
    """The account's windows from its start date (or the bookmark minus ``lookback_days``) to the last day."""
    start = account.start_date
    if bookmark is not None:
        start = max(start, read_day(bookmark, settings.timezone) - dt.timedelta(days=settings.lookback_days))
    last = settings.last_day
    windows = plan_windows(start, last, settings.window_days, account, first_index)
    return Plan(account, start, last, windows, bookmark)


class Progress:
    """INFO lines: what a run reads, then progress (with an ETA) after each window and every ``every`` s."""

    def __init__(
        self, name: str, plans: list[Plan], logger: logging.Logger, every: float = PROGRESS_SECONDS
    ) -> None:
        self.name, self.logger, self.every = name, logger, every
        self.day_count = sum(max(0, (plan.last - plan.first).days + 1) for plan in plans)
        self.windows = sum(len(plan.windows) for plan in plans)
        self.several_accounts = len(plans) > 1
        self.started = self.last_line = time.monotonic()
        self.first_window: float | None = None
        self.records = self.days_done = self.windows_done = self.first_days = 0
        if self.windows:
            first, last = min(plan.first for plan in plans), max(plan.last for plan in plans)
            accounts = f" of {len(plans)} accounts" if self.several_accounts else ""
            logger.info("%s: reading %s..%s%s in %d window(s)", name, first, last, accounts, self.windows)
        for empty in (plan for plan in plans if not plan.windows):
            whose = f" of account {empty.account.name}" if self.several_accounts else ""
            logger.warning(
                "%s: no day to read%s: the first day, %s, is after the last, %s",
                name,
                whose,
                empty.first,
                empty.last,
            )

    def emitted(self, records: int) -> None:
        self.records += records
        if time.monotonic() - self.last_line >= self.every:
            self._line("reading")

    def window_done(self, window: Window) -> None:
        self.windows_done += 1
        self.days_done += (window.end - window.start).days + 1
        whose = f"account {window.account.name} " if self.several_accounts else ""
        self._line(f"read {whose}{window.start}..{window.end}")
        if self.first_window is None:
            self.first_window, self.first_days = self.last_line, self.days_done

    def _line(self, doing: str) -> None:
        """A progress line; once a tenth of the days are read, its ETA extrapolates the pace since the
        first window was handed over (not the start-up and the first answer)."""
        now = self.last_line = time.monotonic()
        to_go = ""
        if self.first_window is not None and self.days_done >= max(self.day_count / 10, self.first_days + 1):
            pace = (now - self.first_window) / (self.days_done - self.first_days)
            to_go = f", about {pace * (self.day_count - self.days_done):.0f} s to go"
        self.logger.info(
            "%s: %s; %d records handed over and %d of %d days so far (%.0f records/s); %d window(s) left%s",
            self.name,
            doing,
            self.records,
            self.days_done,
            self.day_count,
            self.records / max(now - self.started, 1e-6),
            self.windows - self.windows_done,
            to_go,
        )


class WindowReader:
    """Records from the values the pager yields: normalised, keyed, each call once.

    Look-alike calls (sharing the normaliser's ``lookalike_key``) are numbered by their rank in the
    API's order, so each keeps its key on every read; other streams drop a repeated identity. A
    non-object row is skipped with a WARNING.
    """

    def __init__(self, stream: OpticoStream, days: Days) -> None:
        self.normalize = normalize = stream.normalizer
        self.day_value = stream.day_value
        self.identity = operator.attrgetter(*stream.identity_fields)
        self.replication_value = operator.attrgetter(str(stream.replication_key))
        self.lookalike = (
            None if normalize.lookalike_key is None else operator.attrgetter(normalize.lookalike_key)
        )
        self.days = days
        self.logger = stream.logger
        self._several = False
        # Of the window handed over (its rows come together, then its end).
        self._ranks: dict[Any, int] = {}
        self._keys: set[Hashable] = set()
        self._newest: Any = None
        self._not_objects: list[Any] = []
        # The account of the last window handed over and its identities (where edge-of-day strays
        # come from); per account, the identities of the strays emitted in this run.
        self._previous: tuple[str, set[Hashable]] = ("", set())
        self._strays: dict[str, set[Hashable]] = {}
        self._stray_days: Counter[dt.date] = Counter()

    def read(
        self, pager: WindowPager, plans: list[Plan]
    ) -> Iterator[list[Record] | tuple[WindowEnd, WindowRead] | Failure]:
        """Records (a page's at a time), each window's end with its :class:`WindowRead`, and failures."""
        self._several = len(plans) > 1
        for item in pager.read([window for plan in plans for window in plan.windows]):
            if isinstance(item, Rows):
                if records := self._records(item.window, item.rows):  # no empty list of records
                    yield records
            elif isinstance(item, WindowEnd):
                yield self._delivered(item)
            else:
                yield item
        if self._stray_days:
            days = sorted(map(str, self._stray_days))
            self.logger.warning(
                "%s: %d record(s) dated outside the days requested (%s%s): emitted once each; "
                "no bookmark moves past the days read",
                self.normalize.stream_name,
                sum(self._stray_days.values()),
                ", ".join(days[:5]),
                f" and {len(days) - 5} more day(s)" if len(days) > 5 else "",
            )
        self.normalize.log_summary()

    def _records(self, window: Window, rows: Sequence[Any]) -> list[Record]:
        """The records to emit of a page of ``window``."""
        normalize, identity, lookalike = self.normalize, self.identity, self.lookalike
        value_of, ranks, keys, newest = self.replication_value, self._ranks, self._keys, self._newest
        account = window.account.name
        strays = self._strays.setdefault(account, set())
        # Replication values and day_value's bounds share one form (an instant in UTC, or a date): a
        # value between them as text is in the window's days (days() has the last word on any other).
        first, after = self.day_value(window.start), self.day_value(window.end + ONE_DAY)
        form = len(first)
        typed, odd = normalize.records(rows, account)
        self._not_objects += odd
        records: list[Record] = []
        for record in typed:
            if lookalike is not None:
                look = lookalike(record)
                rank = ranks.get(look, 0)
                ranks[look] = rank + 1
                if rank:
                    normalize.renumber(record, rank)
            key = identity(record)
            if key in keys:
                continue
            keys.add(key)
            value = value_of(record)
            if value is not None:
                if not (first <= value < after and len(value) == form):
                    day = self.days(value)
                    if not window.start <= day <= window.end:
                        last, last_keys = self._previous
                        if key not in strays and not (last == account and key in last_keys):
                            strays.add(key)
                            self._stray_days[day] += 1
                            records.append(record)
                        continue
                if newest is None or value > newest:
                    newest = value
            if key not in strays:
                records.append(record)
        self._newest = newest
        return records

    def _delivered(self, end: WindowEnd) -> tuple[WindowEnd, WindowRead]:
        """``end``'s window is handed over: what it says, and a clean slate for the next window."""
        window, account = end.window, end.window.account.name
        if self._not_objects:
            self.logger.warning(
                "%s: skipped a result that is not a JSON object: %s (%d in %s..%s%s; counted as read)",
                self.normalize.stream_name,
                shorten(repr(self._not_objects[0]), 80),
                len(self._not_objects),
                window.start,
                window.end,
                f" of account {account}" if self._several else "",
            )
        delivered = end, WindowRead(window.end, self._newest, unsettled=end.outcome is Outcome.UNSETTLED)
        self._previous = (account, self._keys)
        self._ranks, self._keys, self._newest, self._not_objects = {}, set(), None, []
        return delivered


class OpticoStream(WindowedStream, OpticoClient):
    """A stream of the Data API: reads its accounts' windows, moves their bookmarks."""

    # The normaliser already typed every value against the schema.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE
    #: Fields that tell two records apart when a window is read again.
    identity_fields: ClassVar[tuple[str, ...]]
    #: What the stream's delivered records add up to, per account-day (totals.py).
    tally_type: ClassVar[type[Tally]]

    def bookmark(self, account: Account) -> Any:
        """The account's bookmark: its partition's, or, with one account, the stream's own from before
        accounts existed (so that upgrading reads no history again)."""
        state = self.tap_state.get("bookmarks", {}).get(self.name, {})
        context = {ACCOUNT: account.name}
        partitions = state.get("partitions", ())
        partition: dict[str, Any] = next((p for p in partitions if p.get("context") == context), {})
        value = partition.get("replication_key_value")
        if value is None and not self.settings.several_accounts:
            return state.get("replication_key_value")
        return value

    @cached_property
    @override
    def rate_limit_pauses(self) -> dict[str, SharedPause]:
        """The tap's, one per account for every stream: a stream's first pages may be asked while the
        stream before is read, and a 429 is the limit of the key, whichever stream's request saw it."""
        pauses = self.source.rate_limit_pauses
        for account in self.settings.accounts:
            pauses.setdefault(account.name, SharedPause())
        return pauses

    @property
    @override
    def partitions(self) -> list[dict[str, Any]] | None:
        """None: the SDK would sync once per account partition in the state; get_records reads all."""
        return None

    def plans(self) -> list[Plan]:
        """The windows this stream reads of each account that did not fail earlier in the run."""
        plans: list[Plan] = []
        first = 0
        for account in self.settings.accounts:
            if account.name not in self.source.failed_accounts:
                plans.append(plan(self.settings, account, self.bookmark(account), first))
                first += len(plans[-1].windows)
        return plans

    def following(self) -> OpticoStream | None:
        """The stream singer-sdk syncs next (it syncs the tap's streams in order, skipping those not
        selected), if it reads the API."""
        streams = list(self.source.streams.values())
        later = (s for s in streams[streams.index(self) + 1 :] if s.selected or s.has_selected_descendents)
        stream = next((s for s in later if not s.parent_stream_type), None)
        return stream if isinstance(stream, OpticoStream) else None

    def spare(self, following: OpticoStream | None) -> list[tuple[Ask, Callable[[], Page]]]:
        """The first page of each window ``following`` will read, to request in the slots this
        stream's pager leaves idle; none in a connection test, nor at max_concurrency 1 (which reads
        strictly in order)."""
        if following is None or self.ABORT_AT_RECORD_COUNT is not None or self.settings.max_concurrency == 1:
            return []
        return [
            (ask(window), partial(following.fetch_page, window, FIRST_PAGE))
            for next_plan in following.plans()
            for window in next_plan.windows
        ]

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """The records of every account, read together under one ``max_concurrency`` (SDK partitions
        are read one after the other); each still has its bookmark in the SDK's partition format.
        The next stream's first pages fill the slots left idle, and this stream takes over those made
        ahead for it."""
        days = Days(self.settings.timezone)
        reader = WindowReader(self, days)
        following = self.following()
        pager = WindowPager(
            self.fetch_page,
            page_size=self.settings.page_size,
            max_concurrency=self.settings.max_concurrency,
            max_reads=MAX_WINDOW_READS,
            logger=self.logger,
            describe=self.describe,
            spare=self.spare(following),
            ahead=self.source.made_ahead.pop(self.name, {}),
        )
        for account in self.settings.accounts:
            if account.name in self.source.failed_accounts:
                self.logger.error(
                    "%s: account %s is skipped: it failed earlier in this run", self.name, account.name
                )
        plans = self.plans()
        marks = {each.account.name: Mark(each.bookmark) for each in plans}
        cadence = StateCadence(len(plans))
        # A dry run (`--test`) takes this many records: stop there rather than be aborted with an ERROR.
        limit = self.ABORT_AT_RECORD_COUNT
        short: list[WindowEnd] = []
        tally = None if self.settings.reconcile == "off" else self.tally_type()
        progress = Progress(self.name, plans, self.logger)
        for item in reader.read(pager, plans):
            if isinstance(item, list):  # records: all of them before the STATE that covers them
                records = item if limit is None else item[: limit - progress.records]
                progress.emitted(len(records))
                if tally is not None:
                    tally.add(records)
                if self.writes_batches:  # the fast path: a batch at a time
                    for start in range(0, len(records), BATCH_RECORDS):
                        self.write_records(records[start : start + BATCH_RECORDS])
                else:  # the ordinary path: record by record, through singer-sdk's loop
                    yield from map(self.normalizer.as_dict, records)
                if progress.records == limit:
                    break
            elif isinstance(item, Failure):
                if limit is not None:  # a connection test (`--test`) fails on any account
                    raise item.error
                name = item.window.account.name
                self.source.failed_accounts[name] = str(item.error)
                self.logger.error(
                    "%s: account %s failed, its bookmark stays: %s", self.name, name, item.error
                )
            else:
                end, read = item
                name = end.window.account.name
                progress.window_done(end.window)
                if warning := self._say(end):
                    self.logger.warning("%s", warning)
                if end.outcome is Outcome.COUNT_WRONG:
                    short.append(end)
                if tally is not None and end.outcome is not Outcome.UNSETTLED:
                    tally.read(name, end.window.start, end.window.end)
                mark = after_window(marks[name], read, days=days, day_value=self.day_value)
                if mark.value != marks[name].value:
                    self.set_bookmark({ACCOUNT: name}, mark.value)
                    if cadence.moved():
                        self.write_state()
                marks[name] = mark
        if pager.made and following is not None:
            self.source.made_ahead[following.name] = pager.made
        if tally is not None:
            self.source.tallies[self.name] = tally
        if short:
            self.logger.warning(
                "%s: %d window(s) stayed short of total_results after every page the API offers was read "
                "(%d row(s) in all): the API counts rows it does not return; the bookmark moved past them",
                self.name,
                len(short),
                sum(end.result.short_by for end in short),
            )

    def _say(self, end: WindowEnd) -> str | None:
        """The WARNING a window's end calls for, with its figures (None: nothing to say)."""
        result, where = end.result, self.describe(end.window)
        if end.outcome is Outcome.COUNT_WRONG:
            return (
                f"{where} gave {result.kept} rows for total_results {result.total} after {end.reads} reads "
                f"of every page the API offers ({result.short_by} short): the API counts rows it does not "
                "return; the bookmark moves past it"
            )
        if end.outcome is Outcome.UNSETTLED:
            why = (
                f"gave {result.kept} rows for total_results {result.total} after {end.reads} reads, the "
                "last with an empty page where the API said more exist (rows held back)"
                if end.held_back
                else f"total_results moved while it was paged in each of {end.reads} reads (calls "
                "arriving or leaving)"
            )
            return (
                f"{where}: {why}; its {result.kept} distinct rows are emitted once each, and the "
                "bookmark stays before it: the next run reads it again"
            )
        if result.beyond:
            return (
                f"{where} gave {result.kept} rows, {result.beyond} more than its total_results "
                f"{result.total}: every row is emitted (the API's count is capped or wrong)"
            )
        return None

    def day_value(self, day: dt.date) -> Any:
        """``day`` as a value of the replication key: the day, or its first instant written in UTC."""
        if self.schema["properties"][self.replication_key].get("format") == "date":
            return day.isoformat()
        midnight = dt.datetime.combine(day, dt.time(), self.settings.timezone)
        return midnight.astimezone(dt.timezone.utc).isoformat()

    @override
    def generate_child_contexts(
        self, record: dict[str, Any], context: Context | None
    ) -> Iterable[Context | None]:
        """No stream of this tap has child streams."""
        return ()
