"""Reading date windows page by page, several requests in flight, as a one-way flow of values.

A :class:`Window` says what to read; where its read stands is the pager's own (:class:`_Read`); the
pager yields what it finds (:class:`Rows`, :class:`WindowEnd`, :class:`Failure`) and the reader
writes nothing back. When a read ends is one pure policy (:func:`next_step`, :func:`after_read`):
only when every signal agrees there is nothing more. Pages up to what ``total_results`` justifies
are requested ahead; a page past that once the page before says there is more. Windows are handed
over whole and in order, so a bookmark never passes a window not read.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import KW_ONLY, dataclass, field, replace
from enum import Enum
from typing import Any

from singer_sdk.exceptions import FatalAPIError

from tap_optico.api import FIRST_PAGE, MAX_PAGE_SIZE
from tap_optico.reconcile import Reconciled, edge_repeat, reconcile, row_key, unseen
from tap_optico.settings import Account

#: What a request asks: the account, a window's first and last day, and the page.
Ask = tuple[str, dt.date, dt.date, int]

#: Pages read past the point where a read whose total_results moved reaches its first count.
SLACK_PAGES = 1
#: Rows one read of a window holds in memory (its pages are kept until it ends, to reconcile them):
#: a read that would go on past it fails the window, whose days are then too many for one read.
MAX_READ_ROWS = 500_000
#: Rows handed over at a time: between two hand-overs the pager takes answers and fills free slots.
HANDED_ROWS = 1000


@dataclass(frozen=True)
class Window:
    """What to read: an account's days, read with one paged request sequence."""

    index: int
    start: dt.date
    end: dt.date
    account: Account


def ask(window: Window, number: int = FIRST_PAGE) -> Ask:
    """What asking page ``number`` of ``window`` asks: one key for the pager that makes a request
    ahead and the pager that takes it over."""
    return (window.account.name, window.start, window.end, number)


@dataclass(frozen=True)
class Page:
    """One decoded answer of the API."""

    number: int
    results: Sequence[Any]
    total_results: int | None
    next_page: int | None


class Step(Enum):
    """What a read does after a page."""

    MORE = "ask the next page"
    END = "the read is over"
    SAME_ANSWER = "the API ignores 'page'"
    TOO_LONG = "the read passed MAX_READ_ROWS"


@dataclass(frozen=True)
class ReadFacts:
    """What the pages of a read taken so far (in page order) say."""

    #: Rows the read holds (in a read whose count moved, rows that no earlier page gave).
    rows: int
    #: The first total_results of the read, and whether it changed since.
    total: int | None
    moved: bool
    #: Rows of the last page that are new to the read (not repeats beyond total_results).
    new: int
    #: The last page is an earlier page's answer again.
    same: bool
    #: The page before the last said it was the last (the last page was asked as rows were short).
    probing: bool
    #: A forward ``next_page`` of the last page (one that does not move forward is none).
    next_page: int | None
    #: The last page held no row at all (``empty``), the page before it neither (``after_empty``).
    empty: bool = False
    after_empty: bool = False
    #: The last page is full: as many rows as the read's page size.
    full: bool = False


def more_said(facts: ReadFacts) -> bool:
    """Whether a signal of the last page says rows are still to come: a forward ``next_page``, rows
    short of ``total_results``, or a full page with no count that bounds the read (none, or one the
    rows already passed)."""
    counted = facts.total is not None and facts.rows < facts.total
    uncounted = facts.total is None or facts.rows > facts.total
    return facts.next_page is not None or counted or (facts.full and uncounted)


def next_step(facts: ReadFacts) -> Step:
    """Whether a read goes on after its last page: it ends only when the signals agree.

    A page with no new row ends it, but for an empty page while rows are short (of the count, or no
    count) and ``next_page`` or the count says more: it is followed, once in a row and not after a
    page that said it was the last. An earlier answer again, rows missing and the count still, means
    the API ignores ``page``. A moved count reads on to a page past its first count. Otherwise the
    read goes on while a signal says more (:func:`more_said`), up to :data:`MAX_READ_ROWS`.
    """
    short = facts.total is None or facts.rows < facts.total
    if facts.same:
        return Step.SAME_ANSWER if short and not facts.probing and not facts.moved else Step.END
    if facts.new == 0:
        hole = facts.empty and short and (facts.next_page is not None or facts.total is not None)
        return Step.MORE if hole and not facts.probing and not facts.after_empty else Step.END
    if facts.moved and facts.total is not None and facts.rows - facts.new >= facts.total:
        return Step.END  # a page past the first count
    if not more_said(facts):
        return Step.END
    return Step.TOO_LONG if facts.rows > MAX_READ_ROWS else Step.MORE


class Outcome(Enum):
    """What a read of a window, over, makes of it."""

    COMPLETE = "every row the count promised, or more"
    AGAIN = "read again: short of its count, or its count moved, with reads left"
    COUNT_WRONG = "every page the API offers read, in every read, still short: the count is wrong"
    UNSETTLED = (
        "the count moved, or the API held rows back, up to the last read: rows handed over once "
        "each, the bookmark stays before"
    )


def after_read(result: Reconciled, reads: int, max_reads: int, *, moved: bool, held_back: bool) -> Outcome:
    """The outcome of a window's ``reads``-th read, which ended as ``result``: a read whose count
    ``moved`` (on any page) is complete only when its rows add up to the count.

    A last read still short is the count's fault only when the API gave every page it offered
    whole; one that ``held_back`` rows (an empty page where a signal said more) may give them to a
    later read, so its bookmark stays before the window, as for a moving count.
    """
    if not result.short_by and not (moved and result.beyond):
        return Outcome.COMPLETE
    if reads < max_reads:
        return Outcome.AGAIN
    return Outcome.UNSETTLED if moved or held_back else Outcome.COUNT_WRONG


@dataclass(frozen=True)
class Rows:
    """Kept rows of a page of ``window`` (at most :data:`HANDED_ROWS`), whose read is over, in order."""

    window: Window
    rows: Sequence[Any]


@dataclass(frozen=True)
class WindowEnd:
    """``window`` is read: every :class:`Rows` of it came before this."""

    window: Window
    result: Reconciled
    reads: int
    outcome: Outcome
    #: The last read met an empty page where a signal said more (why an UNSETTLED window is one).
    held_back: bool = False


@dataclass(frozen=True)
class Failure:
    """``window`` cannot be read (a request failed for good, or the answers make no sense)."""

    window: Window
    error: FatalAPIError


@dataclass(eq=False)
class _Read:
    """Where the read of one window stands: the pager's alone."""

    window: Window
    reads: int
    pages: list[Page] = field(default_factory=list)
    #: Pages that arrived before the pages before them.
    early: dict[int, Page] = field(default_factory=dict)
    #: The next page to request, and the last that may be requested now.
    next_unrequested: int = FIRST_PAGE
    last_page: int = FIRST_PAGE
    #: Rows handed, rows new to the read, total and moved as in :class:`ReadFacts`.
    handed: int = 0
    rows: int = 0
    total: int | None = None
    moved: bool = False
    #: An empty page came where a signal said more (the API held rows back).
    held_back: bool = False
    #: The page size the server really gives (learned from a short page that says there is more).
    page_size: int = 0
    #: Non-empty pages by their length and first row, to find an answer given twice.
    answers: dict[bytes, list[Page]] = field(default_factory=dict)
    #: Keys of the rows read, once the count moved.
    seen: set[bytes] | None = None
    #: Once the read is over: its kept rows, HANDED_ROWS at a time, to hand over, and the window's end.
    parts: list[Sequence[Any]] = field(default_factory=list)
    end: WindowEnd | None = None

    def start(self, page_size: int) -> None:
        """Begin the window's next read: every other field back to its declared start."""
        vars(self).update(vars(_Read(self.window, self.reads + 1, page_size=page_size)))

    @property
    def held(self) -> int:
        """Rows this read holds in memory (its pages while it goes on, then its kept rows)."""
        pages = [*self.pages, *self.early.values()]
        return sum(map(len, self.parts)) + sum(len(page.results) for page in pages)


@dataclass(eq=False)
class _Schedule:
    """Which read may request its next page, and which window is handed over next: the pager's.

    Windows start, and are handed over, in order; ``reads[reported]`` is first in line and may always
    request, and so may the first window still read while it holds under ``room`` rows; the others,
    and a new window, only while the windows after the first in line hold under ``room`` rows.
    """

    reads: list[_Read]
    room: int
    #: Windows started; windows handed over (or given up); each failed account's first failure.
    started: int = 0
    reported: int = 0
    failed: dict[str, Failure] = field(default_factory=dict)
    #: Requests under way: the read each is for, and which read of its window it belongs to.
    in_flight: dict[Future[Page], tuple[_Read, int]] = field(default_factory=dict)

    def live(self, read: _Read) -> bool:
        """Whether the read comes before its account's first failed window (if any)."""
        failure = self.failed.get(read.window.account.name)
        return failure is None or read.window.index < failure.window.index

    def next_to_request(self) -> _Read | None:
        """The first read with a page to request now (starting a new window if need be)."""
        held = sum(read.held for read in self.reads[self.reported + 1 : self.started])
        active = [read for read in self.reads[self.reported : self.started] if self.live(read)]
        reading = next((read for read in active if read.end is None), None)
        for read in active:
            if read.end is not None or read.next_unrequested > read.last_page:
                continue
            first = read is self.reads[self.reported] or (read is reading and read.held < self.room)
            return read if first or held < self.room else None
        while self.started < len(self.reads) and (self.started <= self.reported or held < self.room):
            self.started += 1
            if self.live(read := self.reads[self.started - 1]):
                return read
        return None

    def first(self) -> _Read | None:
        """The window to hand over next (or whose failure to report), the windows after an
        account's failure skipped."""
        while self.reported < len(self.reads) and self.after_failure(self.reads[self.reported]):
            self.reported += 1
        return self.reads[self.reported] if self.reported < len(self.reads) else None

    def after_failure(self, read: _Read) -> bool:
        failure = self.failed.get(read.window.account.name)
        return failure is not None and read.window.index > failure.window.index

    def handed(self) -> None:
        self.reported += 1
        self.started = max(self.started, self.reported)


@dataclass
class WindowPager:
    """Reads windows page by page with up to ``max_concurrency`` requests in flight; a window that
    cannot be read fails its account only (a :class:`Failure`).

    Slots it cannot fill with requests of its own (at the end of its windows, or while later windows
    hold their room) are filled with ``spare`` requests: the next stream's first pages, made ahead
    and never judged here; after :meth:`read` they are in ``made``, for the next stream's pager to
    take over as its ``ahead`` (a cancelled one is asked again). Until they end, requests made ahead
    count as in flight in both pagers: never more than ``max_concurrency`` at once.
    """

    fetch: Callable[[Window, int], Page]
    _: KW_ONLY
    page_size: int
    max_concurrency: int
    max_reads: int
    logger: logging.Logger
    describe: Callable[[Window], str] = lambda window: f"window {window.start}..{window.end}"
    #: Rows the windows after the first in line may hold (0: pages of the largest size).
    room: int = 0
    #: Requests of the stream synced next, in its order, to make in slots left idle.
    spare: Sequence[tuple[Ask, Callable[[], Page]]] = ()
    #: Requests made ahead for these windows by the pager before, by what they ask.
    ahead: dict[Ask, Future[Page]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.room = self.room or self.max_concurrency * MAX_PAGE_SIZE
        self._schedule = _Schedule([], self.room)
        self._spare = iter(self.spare)
        #: The spare requests made, by what they ask; made ahead either way and not known to be over.
        self.made: dict[Ask, Future[Page]] = {}
        self._pending: set[Future[Page]] = set(self.ahead.values())

    def held(self, window: Window) -> int:
        """Rows the pager holds in memory for ``window`` now."""
        return sum(read.held for read in self._schedule.reads if read.window.index == window.index)

    def read(self, windows: Sequence[Window]) -> Iterator[Rows | WindowEnd | Failure]:
        """The windows' rows and ends, and an account's failure in place of its failed window: in
        window order, whichever answer comes first."""
        reads = [_Read(window, 1, page_size=self.page_size) for window in windows]
        schedule = self._schedule = _Schedule(reads, self.room)
        pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="optico")
        try:
            while (first := schedule.first()) is not None:
                self._keep_busy(schedule, pool)
                if not schedule.live(first):  # the window where its account failed
                    yield schedule.failed[first.window.account.name]
                    schedule.handed()
                    continue
                if first.end is None:  # wait for an answer only while the window first in line is read
                    if not schedule.in_flight and not self._pending:
                        msg = f"nothing to request for {self.describe(first.window)}, which is not read"
                        raise RuntimeError(msg)
                    # A request made ahead that ends frees a slot too.
                    wait({*schedule.in_flight, *self._pending}, return_when=FIRST_COMPLETED)
                    continue
                while first.parts:  # each piece let go as it is handed over; requests go on meanwhile
                    yield Rows(first.window, first.parts.pop(0))
                    self._keep_busy(schedule, pool)
                yield first.end
                schedule.handed()
        finally:
            # Never wait here for a request that hangs: a failed or stopped run ends promptly.
            pool.shutdown(wait=False, cancel_futures=True)

    def _keep_busy(self, schedule: _Schedule, pool: ThreadPoolExecutor) -> None:
        """Take the answers that arrived, in window order, then request what the schedule allows."""
        in_flight = schedule.in_flight
        for future in sorted((f for f in in_flight if f.done()), key=lambda f: in_flight[f][0].window.index):
            read, nth = in_flight.pop(future)
            if read.end is not None or nth != read.reads or not schedule.live(read):
                continue  # a page past the end of its read, or of an earlier read
            try:
                answer = future.result()
                read.early[answer.number] = answer
                while read.end is None and (page := read.early.pop(FIRST_PAGE + len(read.pages), None)):
                    self._take(read, page)  # in page order, while the read goes on
            except FatalAPIError as error:  # the account's first failure: live() says it is before any
                schedule.failed[read.window.account.name] = Failure(read.window, error)
        while (asking := self._next_to_request(schedule)) is not None:
            number = asking.next_unrequested
            asking.next_unrequested += 1
            request = self.ahead.pop(ask(asking.window, number), None)
            if request is None or request.cancelled():  # cancelled: it never started
                request = pool.submit(self.fetch, asking.window, number)
            self._pending.discard(request)
            in_flight[request] = (asking, asking.reads)
        # Nothing of its own to request now: the next stream's, but none of an account that failed.
        while self._busy(in_flight) < self.max_concurrency and (spare := next(self._spare, None)):
            key, fetch = spare
            if key[0] not in schedule.failed:
                self.made[key] = pool.submit(fetch)
                self._pending.add(self.made[key])

    def _next_to_request(self, schedule: _Schedule) -> _Read | None:
        """The read whose next page to request now: while a slot is free, or, slots full, when that
        page was made ahead (taking it over asks nothing more)."""
        if self._busy(schedule.in_flight) < self.max_concurrency:
            return schedule.next_to_request()
        # Asking the schedule starts no window it would not start anyway: one with no request yet
        # is asked for as soon as a slot is free.
        asking = schedule.next_to_request() if self.ahead else None
        made = asking and self.ahead.get(ask(asking.window, asking.next_unrequested))
        return asking if made and not made.cancelled() else None

    def _busy(self, in_flight: dict[Future[Page], tuple[_Read, int]]) -> int:
        """Requests in flight: this pager's own, and those made ahead (by it or for it) not over."""
        self._pending = {future for future in self._pending if not future.done()}
        return len(in_flight) + len(self._pending)

    def _take(self, read: _Read, page: Page) -> None:
        """Judge one page of the read under way (the pages before it are taken): go on, or end it."""
        if page.next_page is not None and page.next_page <= page.number:  # says nothing of a next page
            page = replace(page, next_page=None)
        results = page.results
        earlier = self._same_answer(read, page) if results else None
        probing = bool(read.pages) and read.pages[-1].next_page is None
        after_empty = bool(read.pages) and not read.pages[-1].results
        if page.total_results is not None:
            if read.total is None:
                read.total = page.total_results
            read.moved = read.moved or page.total_results != read.total
        new = 0
        if earlier is None:
            read.pages.append(page)
            read.handed += len(results)
            if read.moved:
                if read.seen is None:  # a row identical to one of an earlier page is a repeat
                    read.seen = set()
                    read.rows = sum(len(unseen(before.results, read.seen)) for before in read.pages[:-1])
                new = len(unseen(results, read.seen))
                read.rows += new
            else:
                repeated = edge_repeat(read.pages[-2].results, results) if len(read.pages) > 1 else 0
                if read.total is not None:  # rows up to total_results are all calls, twins too
                    repeated = min(repeated, max(0, read.handed - read.total))
                new = len(results) - repeated
                read.rows = read.handed
            # A short page that says there is more, rows still missing: the server's own page size.
            short = read.total is not None and read.handed < read.total
            if page.next_page is not None and 0 < len(results) < read.page_size and short:
                read.page_size = len(results)
        facts = ReadFacts(
            rows=read.rows,
            total=read.total,
            moved=read.moved,
            new=new,
            same=earlier is not None,
            probing=probing,
            next_page=page.next_page,
            empty=not results,
            after_empty=after_empty,
            full=len(results) >= read.page_size,
        )
        if facts.empty and not probing and more_said(facts):
            read.held_back = True
        step = next_step(facts)
        if step is Step.MORE:
            justified = 0 if read.total is None else math.ceil(read.total / max(1, read.page_size))
            read.last_page = max(read.last_page, page.number + 1, justified)
        elif step is Step.END:
            self._close(read)
        else:
            raise FatalAPIError(self._unreadable(read, page, earlier))

    def _same_answer(self, read: _Read, page: Page) -> Page | None:
        """The earlier page of the read with the very same rows, if any (else this one is noted)."""
        key = len(page.results).to_bytes(4, "big") + row_key(page.results[0])
        alike = read.answers.setdefault(key, [])
        earlier = next((other for other in alike if list(other.results) == list(page.results)), None)
        if earlier is None:
            alike.append(page)
        return earlier

    def _unreadable(self, read: _Read, page: Page, earlier: Page | None) -> str:
        """Why the read cannot go on: it is too long, or the API gave ``earlier`` page's answer again."""
        where = f"{self.describe(read.window)} cannot be read"
        if earlier is None:
            return f"{where}: {self._too_long(read)}"
        missing = (
            f"while {read.total - read.rows} of its {read.total} results are missing"
            if read.total is not None
            else "and no total_results says whether rows are missing"
        )
        same = f"page {page.number} is the same answer as page {earlier.number}"
        return f"{where}: {same} {missing} (the API ignores 'page')"

    @staticmethod
    def _too_long(read: _Read) -> str:
        """Why a read that would go on past :data:`MAX_READ_ROWS` stops: too many days for one read,
        or pages that go on past any count."""
        if read.total is not None and read.rows < read.total:
            days = (read.window.end - read.window.start).days + 1
            fit = days * MAX_READ_ROWS // read.total
            fix = (
                f"lower window_days to at most {fit} (this window has {days} days)"
                if fit
                else "even one day holds more"
            )
            return (
                f"its total_results is {read.total} rows, more than one read of a window holds "
                f"({MAX_READ_ROWS}): {fix}"
            )
        bound = (
            "no total_results bounds the read"
            if read.total is None
            else f"its total_results {read.total} was passed {read.rows - read.total} rows ago"
        )
        more = f"after {read.handed} rows the API still says there is more"
        return f"{more}, and {bound} (at most {MAX_READ_ROWS} rows are read so)"

    def _close(self, read: _Read) -> None:
        result = reconcile(read.pages)
        outcome = after_read(result, read.reads, self.max_reads, moved=read.moved, held_back=read.held_back)
        if outcome is Outcome.AGAIN:
            why = (
                "its total_results moved while it was paged"
                if read.moved
                else f"it gave {result.kept} rows but total_results is {result.total}"
                + (" (a page came empty while more was said)" if read.held_back else "")
            )
            where, again = self.describe(read.window), read.reads + 1
            self.logger.warning("%s: %s; reading it again (%d/%d)", where, why, again, self.max_reads)
            read.start(self.page_size)
            return
        read.parts = [p[at : at + HANDED_ROWS] for p in result.parts for at in range(0, len(p), HANDED_ROWS)]
        read.end = WindowEnd(read.window, replace(result, parts=()), read.reads, outcome, read.held_back)
        read.pages, read.early, read.answers, read.seen = [], {}, {}, None
