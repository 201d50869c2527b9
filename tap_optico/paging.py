"""Paging through date windows, with several requests in flight, bounded by evidence.

One read of a window takes its pages in page order and ends at the first of:

- a page shorter than ``page_size`` (an empty one too) or without ``next_page``;
- a page that brings no new row: the same answer as an earlier page of the
  read once its rows reach ``total_results``, such as a page past the end
  answered with the last page again (it is dropped);
- :data:`SLACK_PAGES` page(s) past the point where the rows read reach the
  first page's ``total_results`` (data that grew while it was paged).

The ``total_results`` that bounds a read is its first page's: one that grows
with every page cannot make a read go on for ever (what it adds is left to the
re-read). A read whose first page gives no ``total_results`` follows
``next_page`` for at most :data:`MAX_ROWS_WITHOUT_TOTAL` rows, then its account
fails.

Pages up to ``ceil(total_results / page_size)`` are requested ahead, several
at a time; a page past that only once the page before says there is more
and its rows, less those that repeat the page before them, are still short
of ``total_results``. An answer identical to
an earlier page of the read while rows are still missing (or with no
``total_results`` to tell) means the API ignores ``page``: the window cannot
be read and its account fails.

The pages of a read are reconciled as one (:func:`~tap_optico.reconcile.reconcile`);
a read still short of ``total_results`` is repeated, up to ``max_reads`` times.
Windows are handed over whole and in order, so that a bookmark never passes
a window that is not read; a window waits in memory only while the windows
before it are read, and new windows start only while few pages are held.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
from singer_sdk.exceptions import FatalAPIError

from tap_optico.api import FIRST_PAGE
from tap_optico.reconcile import Reconciled, edge_repeat, kept_rows, reconcile
from tap_optico.settings import Account

#: Pages read once the rows reach total_results while next_page still says more (data growing).
SLACK_PAGES = 1
#: Rows a read follows next_page for when its first page gives no total_results to bound it.
MAX_ROWS_WITHOUT_TOTAL = 100_000


@dataclass(frozen=True)
class Page:
    """One decoded answer of the API."""

    window: Window
    number: int
    results: list[Any]
    total_results: int | None
    next_page: int | None


@dataclass(eq=False)
class Window:
    """A date range read with one paged request sequence, and where its read stands."""

    index: int
    start: dt.date
    end: dt.date
    #: Whose data: the account whose key requests it.
    account: Account
    reads: int = 0
    #: The read under way: its pages in page order, those that arrived early, how far it may go.
    pages: list[Page] = field(default_factory=list)
    early: dict[int, Page] = field(default_factory=dict)
    last_page: int = FIRST_PAGE
    next_unrequested: int = FIRST_PAGE
    ended: bool = False
    #: Rows of the read so far, those that do not repeat the page before, the highest total_results.
    handed: int = 0
    new_rows: int = 0
    total: int | None = None
    #: total_results of the read's first page: what bounds the pages of the read.
    first_total: int | None = None
    slack: int = 0
    #: Non-empty pages of the read by their length and first row, to find an answer given twice.
    answers: dict[bytes, list[Page]] = field(default_factory=dict)
    #: The last read, reconciled: the window is read.
    result: Reconciled | None = None
    #: A request of this account's failed for good: its windows are not read, nor checkpointed.
    failed: bool = False

    @property
    def done(self) -> bool:
        return self.failed or self.result is not None

    @property
    def held(self) -> int:
        """Pages this window holds in memory."""
        return len(self.result.parts) if self.result else len(self.pages) + len(self.early)

    def take_pages(self) -> Iterator[Sequence[Any]]:
        """The kept rows of the read, a page at a time, in the API's order: each page is let go
        as the next is taken, so that a window is freed while it is handed over (what the read
        counted stays)."""
        while self.result is not None and self.result.parts:
            (results, dropped), *rest = self.result.parts
            self.result = replace(self.result, parts=tuple(rest))
            yield kept_rows(results, dropped)

    def start_read(self) -> None:
        self.reads += 1
        self.pages, self.early, self.answers = [], {}, {}
        self.last_page = self.next_unrequested = FIRST_PAGE
        self.ended = False
        self.handed, self.new_rows, self.total, self.first_total, self.slack = 0, 0, None, None, 0


@dataclass(frozen=True)
class Failure:
    """``window`` cannot be read (a request failed for good, or the answers make no sense):
    the account's remaining windows are given up."""

    window: Window
    error: FatalAPIError


Fetch = Callable[[Window, int], Page]


class WindowPager:
    """Reads windows page by page with up to ``max_concurrency`` requests in flight.

    :meth:`read` yields each :class:`Window` once it and every window before
    it are done: read (``result`` set) or given up (``failed`` set). A request
    that fails for good (``FatalAPIError``), or a window whose answers cannot
    be paged, fails its account only: :meth:`read` yields a :class:`Failure`,
    gives up the account's windows and reads the others.
    """

    def __init__(
        self,
        fetch: Fetch,
        *,
        page_size: int,
        max_concurrency: int,
        max_reads: int,
        logger: logging.Logger,
        describe: Callable[[Window], str] = lambda window: f"window {window.start}..{window.end}",
    ) -> None:
        self.fetch = fetch
        self.page_size = page_size
        self.max_concurrency = max_concurrency
        self.max_reads = max_reads
        self.logger = logger
        self.describe = describe
        self._keep_busy: Callable[[], None] | None = None

    def keep_busy(self) -> None:
        """Take the answers that arrived and fill the request slots they freed, while the consumer
        of :meth:`read` holds a window (it calls this between the pages it hands over)."""
        if self._keep_busy is not None:
            self._keep_busy()

    def read(
        self, windows: list[Window], on_page: Callable[[int], None] = lambda rows: None
    ) -> Iterator[Window | Failure]:
        """The windows, each once done, and the failures; ``on_page`` hears of each page taken."""
        in_flight: dict[Future[Page], tuple[Window, int]] = {}
        started = 0
        reported = 0

        def next_to_request() -> Window | None:
            """The first window with a page to request. The window first in line (read, or handed
            over) always may, and the first window still being read while it holds few pages; the
            others, and a new window, only while the windows after the first in line hold few
            pages. Memory holds one window and about ``max_concurrency`` pages of the next."""
            nonlocal started
            held = sum(w.held for w in windows[reported + 1 : started])
            reading = next((w for w in windows[reported:started] if not w.done), None)
            for window in windows[reported:started]:
                if window.done or window.ended or window.next_unrequested > window.last_page:
                    continue
                first = window is windows[reported] or (
                    window is reading and window.held < self.max_concurrency
                )
                return window if first or held < self.max_concurrency else None
            while started < len(windows):
                if started > reported and held >= self.max_concurrency:
                    return None
                started += 1
                window = windows[started - 1]
                if not window.done:  # an account that failed is not read
                    window.start_read()
                    return window
            return None

        def request_more() -> None:
            """Fill every free slot, so requests stay in flight while a window is handed over."""
            while len(in_flight) < self.max_concurrency and (window := next_to_request()):
                number = window.next_unrequested
                window.next_unrequested += 1
                in_flight[pool.submit(self.fetch, window, number)] = (window, window.reads)

        def take_answers() -> None:
            """Take the answers that arrived into their windows, in window order; a window that
            cannot be read is noted in ``failures``."""
            for future in sorted(
                (future for future in in_flight if future.done()), key=lambda f: in_flight[f][0].index
            ):
                window, read = in_flight.pop(future)
                if window.done or window.ended or read != window.reads:
                    continue  # a page past the end of its read, or of an earlier read
                try:
                    page = future.result()
                    window.early[page.number] = page
                    self._take_pages(window, on_page)
                except FatalAPIError as error:
                    failures.append(Failure(window, error))
                    continue
                if window.ended:
                    self._close_read(window)

        def keep_busy() -> None:
            take_answers()
            request_more()

        def fail() -> Iterator[Failure]:
            """The failures noted, each followed by giving up the rest of its account's windows."""
            while failures:
                failure = failures.pop(0)
                yield failure
                for other in windows[reported:]:
                    if other.account == failure.window.account:
                        other.failed = True
                        other.pages, other.early, other.answers = [], {}, {}

        failures: list[Failure] = []
        pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="optico")
        self._keep_busy = keep_busy
        try:
            while reported < len(windows):
                yield from fail()  # found while a window was handed over
                request_more()
                if in_flight:
                    wait(in_flight, return_when=FIRST_COMPLETED)
                    take_answers()
                    yield from fail()
                elif not windows[reported].done:
                    msg = f"nothing to request for {self.describe(windows[reported])}, which is not read"
                    raise RuntimeError(msg)
                while reported < len(windows) and windows[reported].done:
                    request_more()  # requests stay in flight while the window is handed over
                    yield windows[reported]  # read, or of an account that failed
                    reported += 1
                    started = max(started, reported)
        finally:
            self._keep_busy = None
            # Never wait here for a request that hangs: a failed or stopped run ends promptly.
            pool.shutdown(wait=False, cancel_futures=True)

    def _take_pages(self, window: Window, on_page: Callable[[int], None]) -> None:
        """Take the pages that arrived, in page order, until the read ends."""
        while not window.ended and (page := window.early.pop(FIRST_PAGE + len(window.pages), None)):
            self._take(window, page)
            on_page(len(page.results))
        if window.ended:
            window.early.clear()

    def _take(self, window: Window, page: Page) -> None:
        """Judge one page of the read under way (the pages before it are taken): keep it, end the read
        before or after it, or find the window unreadable (FatalAPIError)."""
        results = page.results
        if page.total_results is not None:
            window.total = max(window.total or 0, page.total_results)
        # Rows total_results says are still to come, even if every row handed so far is a call.
        missing = 0 if window.total is None else window.total - window.handed
        if results:
            earlier = self._same_answer(window, page)
            if earlier is not None:
                if missing > 0 or window.total is None:
                    missing_rows = (
                        f"while {missing} of its {window.total} results are missing"
                        if window.total is not None
                        else "and no total_results says whether rows are missing"
                    )
                    msg = (
                        f"{self.describe(window)} cannot be read: page {page.number} is the same answer "
                        f"as page {earlier.number} {missing_rows} (the API ignores 'page')"
                    )
                    raise FatalAPIError(msg)
                window.ended = True  # a page past the end, answered with an earlier one again
                return
        repeated = edge_repeat(window.pages[-1].results, results) if window.pages else 0
        if not window.pages:
            window.first_total = page.total_results
        window.pages.append(page)
        window.handed += len(results)
        window.new_rows += len(results) - repeated
        if len(results) < self.page_size or page.next_page is None:
            window.ended = True
            return
        if window.first_total is None:
            if window.new_rows >= MAX_ROWS_WITHOUT_TOTAL:
                msg = (
                    f"{self.describe(window)} cannot be read: after {window.new_rows} rows next_page still "
                    f"says there is more, and no total_results bounds the read "
                    f"(at most {MAX_ROWS_WITHOUT_TOTAL} rows are read so)"
                )
                raise FatalAPIError(msg)
        elif window.new_rows >= window.first_total:
            # What the first page promised is read: a total_results that grew since is data
            # that arrived while the window was paged (the re-read takes it), or a count that lies.
            if window.slack >= SLACK_PAGES:
                window.ended = True
                return
            window.slack += 1
        justified = 0 if window.first_total is None else math.ceil(window.first_total / self.page_size)
        window.last_page = max(window.last_page, page.number + 1, justified)

    @staticmethod
    def _same_answer(window: Window, page: Page) -> Page | None:
        """An earlier page of the read with the very same rows, if any."""
        key = len(page.results).to_bytes(4, "big") + msgspec.json.encode(page.results[0])
        alike = window.answers.setdefault(key, [])
        earlier = next((other for other in alike if other.results == page.results), None)
        if earlier is None:
            alike.append(page)
        return earlier

    def _close_read(self, window: Window) -> None:
        result = reconcile(window.pages)
        if result.short_by and window.reads < self.max_reads:
            self.logger.warning(
                "%s gave %d rows but total_results is %d (the data changed while it was paged, "
                "or the API counts rows it does not return); reading it again (%d/%d)",
                self.describe(window),
                result.kept,
                result.total,
                window.reads + 1,
                self.max_reads,
            )
            window.start_read()
            return
        if result.short_by:
            self.logger.warning(
                "%s still gave %d rows for total_results %d after %d reads (%d short)",
                self.describe(window),
                result.kept,
                result.total,
                window.reads,
                result.short_by,
            )
        window.result = result
        window.pages, window.answers = [], {}
