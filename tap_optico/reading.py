"""Reading: which windows to read, the records of their pages, and the stream that reads them.

:class:`WindowReader` is the one owner of what a read has seen: it drops the
records a window already gave and tracks each window's newest record, which
becomes the bookmark once the pager reports the window (and every window
before it) complete. A record dated outside the days its window asked for is
still emitted (once per run), but never moves a bookmark: one call dated
years ahead must not make every later run skip the days in between.
"""

from __future__ import annotations

import datetime as dt
import logging
import operator
import time
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.helpers.types import Context
from typing_extensions import override

from tap_optico.client import OpticoClient
from tap_optico.normalize import ACCOUNT, Normalizer
from tap_optico.paging import Failure, Page, Window, WindowPager
from tap_optico.sdk_seam import WindowedStream
from tap_optico.secrets import shorten
from tap_optico.settings import Account, Settings, read_day

#: Reads of one window whose records fall short of its total_results, before moving on.
MAX_WINDOW_READS = 3
#: Longest silence, in seconds, between two progress lines of a long read.
PROGRESS_SECONDS = 10.0


def plan_windows(
    start: dt.date, end: dt.date, days: int, account: Account, first_index: int = 0
) -> list[Window]:
    """``[start, end]`` cut into windows of ``days`` days, numbered from ``first_index``."""
    windows: list[Window] = []
    while start <= end:
        stop = min(end, start + dt.timedelta(days=days - 1))
        windows.append(Window(index=first_index + len(windows), start=start, end=stop, account=account))
        start = stop + dt.timedelta(days=1)
    return windows


@dataclass(frozen=True)
class Plan:
    """The days a run reads of one account, cut into windows."""

    account: Account
    first: dt.date
    last: dt.date
    windows: list[Window]

    @property
    def days(self) -> int:
        return max(0, (self.last - self.first).days + 1)


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
            "these settings; set end_date, or set the bookmark back (meltano state set) or clear it"
        )
    return None


def plan(settings: Settings, account: Account, bookmark: Any, first_index: int = 0) -> Plan:
    """The account's windows from its start date (or the bookmark minus ``lookback_days``) to the last day."""
    start = account.start_date
    if bookmark is not None:
        lookback = dt.timedelta(days=settings.lookback_days)
        start = max(start, read_day(bookmark, settings.timezone) - lookback)
    last = settings.last_day
    return Plan(account, start, last, plan_windows(start, last, settings.window_days, account, first_index))


class Progress:
    """INFO lines a person can follow: after each complete window, and every ``every`` seconds."""

    def __init__(
        self, name: str, plans: list[Plan], logger: logging.Logger, every: float = PROGRESS_SECONDS
    ) -> None:
        self.name, self.logger, self.every = name, logger, every
        self.days = sum(plan.days for plan in plans)
        self.windows = sum(len(plan.windows) for plan in plans)
        self.several_accounts = len(plans) > 1
        self.started = self.last_line = time.monotonic()
        self.records = 0
        self.days_done = 0
        self.windows_done = 0

    def page(self, records: int) -> None:
        self.records += records
        if time.monotonic() - self.last_line >= self.every:
            self._line("reading")

    def window_done(self, window: Window) -> None:
        self.windows_done += 1
        self.days_done += (window.end - window.start).days + 1
        whose = f"account {window.account.name} " if self.several_accounts else ""
        self._line(f"read {whose}{window.start}..{window.end}")

    def _line(self, doing: str) -> None:
        now = time.monotonic()
        self.last_line = now
        elapsed = max(now - self.started, 1e-6)
        to_go = elapsed / self.days_done * (self.days - self.days_done) if self.days_done else None
        self.logger.info(
            "%s: %s; %d records and %d of %d days so far (%.0f records/s); %d window(s) left%s",
            self.name,
            doing,
            self.records,
            self.days_done,
            self.days,
            self.records / elapsed,
            self.windows - self.windows_done,
            "" if to_go is None else f", about {to_go:.0f} s to go",
        )


@dataclass(frozen=True)
class Checkpoint:
    """Every window of the account up to ``window`` is read: its bookmark may move to ``bookmark``."""

    window: Window
    bookmark: Any


class WindowReader:
    """Records from pages: normalised, each distinct one once, bookmarks per window.

    A record dated outside its window's days (a stray) is emitted at once and
    marked as claimed for the window its day belongs to, so that this window
    does not emit it again; strays dated outside the account's plan are
    emitted once per run. Seen records are kept for the windows being read
    and the last one completed, which is where edge-of-day strays come from.
    Every record gets the name of its account.
    """

    def __init__(
        self,
        normalize: Normalizer,
        *,
        identity_fields: tuple[str, ...],
        replication_key: str,
        day_key: str,
        logger: logging.Logger,
    ) -> None:
        self.normalize = normalize
        self.identity = operator.itemgetter(*identity_fields)
        self.replication_key = replication_key
        self.day_key = day_key
        self.logger = logger
        self._plans: dict[str, Plan] = {}
        # Window index -> identities that window returned, and the newest replication value among them.
        self._seen: dict[int, set[Hashable]] = {}
        self._newest: dict[int, Any] = {}
        # Window index -> identities of its days that another window returned and emitted.
        self._claimed: dict[int, set[Hashable]] = {}
        self._strays: set[tuple[str, Hashable]] = set()
        # Accounts with a window read short: their bookmark moves no further in this run.
        self._held_back: set[str] = set()
        # Windows 0 .. _complete - 1 are read and checkpointed.
        self._complete = 0
        self._stray_days: Counter[str] = Counter()
        # Window index -> the read under way and, per look-alike key, its first page, that page's
        # total_results and how many records of that key the read gave.
        self._lookalikes: dict[int, tuple[int, dict[Any, tuple[int, int | None]], Counter[Any]]] = {}

    def distinct(self, window: Window) -> int:
        """How many distinct records ``window`` has given so far."""
        return len(self._seen.get(window.index, ()))

    def read(self, pager: WindowPager, plans: list[Plan]) -> Iterator[dict[str, Any] | Checkpoint | Failure]:
        """Every distinct record of the plans' windows, a :class:`Checkpoint` after each complete
        window, and the :class:`Failure` of an account whose requests failed for good."""
        name = self.normalize.stream_name
        self._plans = {plan.account.name: plan for plan in plans}
        windows = [window for plan in plans for window in plan.windows]
        if windows:
            first, last = min(plan.first for plan in plans), max(plan.last for plan in plans)
            accounts = f" of {len(plans)} accounts" if len(plans) > 1 else ""
            self.logger.info(
                "%s: reading %s..%s%s in %d window(s)", name, first, last, accounts, len(windows)
            )
        for plan in plans:
            if not plan.windows:
                whose = f" of account {plan.account.name}" if len(plans) > 1 else ""
                self.logger.warning(
                    "%s: no day to read%s: the first day, %s, is after the last, %s",
                    name,
                    whose,
                    plan.first,
                    plan.last,
                )
        progress = Progress(name, plans, self.logger)
        for item in pager.read(windows):
            if isinstance(item, Window):
                self._complete = item.index + 1
                self._seen.pop(item.index - 1, None)
                self._claimed.pop(item.index, None)
                self._lookalikes.pop(item.index, None)
                newest = self._newest.pop(item.index, None)
                if item.failed:
                    continue
                progress.window_done(item)
                if item.short:
                    self._held_back.add(item.account.name)
                if item.account.name not in self._held_back:
                    yield Checkpoint(item, newest)
            elif isinstance(item, Failure):
                yield item
            else:
                yield from self._records(item)
                progress.page(len(item.results))
        if self._stray_days:
            days = sorted(self._stray_days)
            self.logger.warning(
                "%s: %d record(s) dated outside the days requested (%s%s): emitted once each; "
                "no bookmark moves past the days read",
                name,
                sum(self._stray_days.values()),
                ", ".join(days[:5]),
                f" and {len(days) - 5} more day(s)" if len(days) > 5 else "",
            )
        self.normalize.log_summary()

    def _records(self, page: Page) -> Iterator[dict[str, Any]]:
        window = page.window
        account = window.account.name
        first, last = window.start.isoformat(), window.end.isoformat()
        seen = self._seen.setdefault(window.index, set())
        claimed = self._claimed.get(window.index, ())
        newest = self._newest.get(window.index)
        normalize, identity, replication_key = self.normalize, self.identity, self.replication_key
        day_key = self.day_key
        lookalike = normalize.lookalike_key
        try:
            for raw in page.results:
                if not normalize.accepts(raw):
                    self.logger.error(
                        "%s: skipped a result that is not a JSON object: %s",
                        normalize.stream_name,
                        shorten(repr(raw), 80),
                    )
                    continue
                record = normalize(raw)
                record[ACCOUNT] = account
                if lookalike is not None and not self._number(record, lookalike, page):
                    continue
                key = identity(record)
                if key in seen:
                    continue
                seen.add(key)
                value = record[replication_key]
                if value is not None:
                    day = str(record[day_key])[:10]
                    if not first <= day <= last:
                        if self._first_time_stray(key, day, account):
                            yield record
                        continue
                    if newest is None or value > newest:
                        newest = value
                if key not in claimed:
                    yield record
        finally:
            self._newest[window.index] = newest

    def _number(self, record: dict[str, Any], lookalike: str, page: Page) -> bool:
        """Key a record that looks like an earlier one of the same read as a call of its own.

        Pages reach the reader in page order, so the n-th look-alike of a read
        is the n-th in the API's order, and keeps its key on every read.
        False for the same row handed again: it looks like a record of an
        earlier page whose total_results differs (the data changed, so rows
        shifted from one page to the next between the two requests).
        """
        window = page.window
        read, first, counts = self._lookalikes.get(window.index, (0, {}, Counter()))
        if read != window.reads:
            first, counts = {}, Counter()
            self._lookalikes[window.index] = (window.reads, first, counts)
        key = record[lookalike]
        earlier = first.get(key)
        if earlier is None:
            first[key] = (page.number, page.total_results)
            counts[key] = 1
            return True
        first_page, first_total = earlier
        if (
            first_page != page.number
            and None not in (first_total, page.total_results)
            and first_total != page.total_results
        ):
            return False
        self.normalize.renumber(record, counts[key])
        counts[key] += 1
        return True

    def _first_time_stray(self, key: Hashable, day: str, account: str) -> bool:
        """Whether a record dated ``day``, outside its window, is to be emitted now (and count it)."""
        home = self._window_of(day, account)
        if home is None or home.index < self._complete - 1:
            # Outside the plan, or its window is done and its records forgotten: once per run.
            if (account, key) in self._strays:
                return False
            self._strays.add((account, key))
        elif key in self._seen.get(home.index, ()) or key in self._claimed.get(home.index, ()):
            return False
        else:
            self._claimed.setdefault(home.index, set()).add(key)
        self._stray_days[day] += 1
        return True

    def _window_of(self, day: str, account: str) -> Window | None:
        try:
            date = dt.date.fromisoformat(day)
        except ValueError:
            return None
        windows = self._plans[account].windows
        if not windows or not windows[0].start <= date <= windows[-1].end:
            return None
        span = (windows[0].end - windows[0].start).days + 1
        return windows[(date - windows[0].start).days // span]


class OpticoStream(WindowedStream, OpticoClient):
    """A stream of the Data API: reads its accounts' windows, moves their bookmarks."""

    # The normaliser already typed every value against the schema.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE
    #: Fields that tell two records apart when a window is read again.
    identity_fields: ClassVar[tuple[str, ...]]
    #: The field whose first ten characters are a record's day as the API counts days (in
    #: ``timezone``, the days a window asks for), when the replication key's are not.
    day_key: ClassVar[str | None] = None

    def bookmark(self, account: Account) -> Any:
        """The account's bookmark: its partition's, or, with one account, the stream's own from before
        accounts existed (so that upgrading reads no history again)."""
        state = self.tap_state.get("bookmarks", {}).get(self.name, {})
        context = {ACCOUNT: account.name}
        value = next(
            (
                p.get("replication_key_value")
                for p in state.get("partitions", ())
                if p.get("context") == context
            ),
            None,
        )
        return (
            value
            if value is not None or self.settings.several_accounts
            else state.get("replication_key_value")
        )

    @property
    @override
    def partitions(self) -> list[dict[str, Any]] | None:
        """None: the SDK would otherwise sync once per account partition found in the state,
        while :meth:`get_records` reads every account in one go."""
        return None

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """The records of every account, read together under one ``max_concurrency``.

        The accounts are not declared as SDK partitions, which the SDK would
        read one after the other; each still has its own bookmark in the
        SDK's partition format (``{"context": {"account": name}, ...}``).
        """
        reader = WindowReader(
            self.normalizer,
            identity_fields=self.identity_fields,
            replication_key=str(self.replication_key),
            day_key=self.day_key or str(self.replication_key),
            logger=self.logger,
        )
        pager = WindowPager(
            self.fetch_page,
            reader.distinct,
            page_size=self.settings.page_size,
            max_concurrency=self.settings.max_concurrency,
            max_reads=MAX_WINDOW_READS,
            logger=self.logger,
        )
        plans: list[Plan] = []
        for account in self.settings.accounts:
            if account.name in self.failed_accounts:
                self.logger.error(
                    "%s: account %s is skipped: it failed earlier in this run", self.name, account.name
                )
                continue
            first = sum(len(plan.windows) for plan in plans)
            plans.append(plan(self.settings, account, self.bookmark(account), first))
        # A dry run (`--test`) takes this many records: stop there rather than be aborted with an ERROR.
        limit = self.ABORT_AT_RECORD_COUNT
        emitted = 0
        for item in reader.read(pager, plans):
            if isinstance(item, Checkpoint):
                self.checkpoint({ACCOUNT: item.window.account.name}, item.bookmark)
            elif isinstance(item, Failure):
                if limit is not None:  # a connection test (`--test`) fails on any account
                    raise item.error
                name = item.window.account.name
                self.failed_accounts[name] = str(item.error)
                self.logger.error(
                    "%s: account %s failed, its bookmark stays: %s", self.name, name, item.error
                )
            else:
                yield item
                emitted += 1
                if emitted == limit:
                    return

    @override
    def get_batch_config(self, config: Mapping[str, Any]) -> None:
        """Never batch files: the tap does not advertise batch mode (see TapOptico.capabilities)."""
        return None

    @override
    def generate_child_contexts(
        self, record: dict[str, Any], context: Context | None
    ) -> Iterable[Context | None]:
        """No stream of this tap has child streams."""
        return ()
