"""Paging through date windows, with several requests in flight.

Each window is paged to its end; pages (of one window or several) may be
fetched by several workers at once, and a window is reported complete only
when it and every window before it have been read in full, which is what
lets the reader move its bookmark without ever passing data it has not read.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from singer_sdk.exceptions import FatalAPIError

from tap_optico.api import FIRST_PAGE
from tap_optico.settings import Account


@dataclass
class Window:
    """A date range read with one paged request sequence, and where its paging stands."""

    index: int
    start: dt.date
    end: dt.date
    #: Whose data: the account whose key requests it.
    account: Account
    reads: int = 0
    total: int | None = None
    last_page: int = FIRST_PAGE
    next_unrequested: int = FIRST_PAGE
    outstanding: int = 0
    done: bool = False
    #: A request of this account's failed for good: its windows are not read, nor checkpointed.
    failed: bool = False
    #: Read up to max_reads times, still fewer distinct records than total_results.
    short: bool = False
    #: Pages that arrived before an earlier page of the same read, by number.
    held: dict[int, Page] = field(default_factory=dict)
    next_to_hand: int = FIRST_PAGE

    def start_read(self) -> None:
        self.reads += 1
        self.total = None
        self.last_page = self.next_unrequested = self.next_to_hand = FIRST_PAGE
        self.outstanding = 0


@dataclass(frozen=True)
class Page:
    """One decoded answer of the API."""

    window: Window
    number: int
    results: list[Any]
    total_results: int | None
    next_page: int | None


@dataclass(frozen=True)
class Failure:
    """A request for ``window`` failed for good: the account's remaining windows are given up."""

    window: Window
    error: FatalAPIError


Fetch = Callable[[Window, int], Page]
#: How many distinct records the consumer has seen in a window so far.
Distinct = Callable[[Window], int]


class WindowPager:
    """Reads windows page by page with up to ``max_concurrency`` requests in flight.

    :meth:`read` yields the pages of each read of a window in page order (a
    page that arrives early is held, and counts against ``max_concurrency``
    while it waits), and each :class:`Window` once it and all windows before
    it are complete. A request that fails for good (``FatalAPIError``) fails
    its account only: :meth:`read` yields a :class:`Failure`, gives up the
    account's windows (reported with ``failed`` set) and reads the others. A read
    that ends with fewer distinct records (as the consumer counts them,
    through ``distinct``, once it has taken every page) than the API's
    ``total_results`` (data that changed while it was paged) is repeated, up
    to ``max_reads`` times.
    """

    def __init__(
        self,
        fetch: Fetch,
        distinct: Distinct,
        *,
        page_size: int,
        max_concurrency: int,
        max_reads: int,
        logger: logging.Logger,
    ) -> None:
        self.fetch = fetch
        self.distinct = distinct
        self.page_size = page_size
        self.max_concurrency = max_concurrency
        self.max_reads = max_reads
        self.logger = logger

    def read(self, windows: list[Window]) -> Iterator[Page | Window | Failure]:
        in_flight: dict[Future[Page], Window] = {}
        started = 0
        reported = 0

        def request_more() -> None:
            """Fill every free slot, so requests stay in flight while a page is consumed."""
            nonlocal started
            while len(in_flight) + sum(len(w.held) for w in windows[reported:started]) < self.max_concurrency:
                window = self._next_to_request(windows[reported:started])
                while window is None and started < len(windows):
                    started += 1
                    if not windows[started - 1].done:  # an account that failed is not read
                        window = windows[started - 1]
                        window.start_read()
                if window is None:
                    return
                number = window.next_unrequested
                window.next_unrequested += 1
                window.outstanding += 1
                in_flight[pool.submit(self.fetch, window, number)] = window

        pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="optico")
        try:
            while reported < len(windows):
                request_more()
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=lambda f: in_flight[f].index):
                    window = in_flight.pop(future)
                    if window.failed:
                        continue
                    try:
                        arrived = future.result()
                    except FatalAPIError as error:
                        yield Failure(window, error)
                        for other in windows[reported:]:
                            if other.account == window.account:
                                other.failed = other.done = True
                                other.held.clear()
                        continue
                    self._plan_after(arrived)
                    window.held[arrived.number] = arrived
                    while page := window.held.pop(window.next_to_hand, None):
                        window.next_to_hand += 1
                        request_more()
                        yield page
                        window.outstanding -= 1
                    if window.outstanding == 0 and window.next_unrequested > window.last_page:
                        self._close_read(window)
                while reported < started and windows[reported].done:
                    yield windows[reported]
                    reported += 1
        finally:
            # Never wait here for a request that hangs: a failed or stopped run ends promptly.
            pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _next_to_request(active: list[Window]) -> Window | None:
        for window in active:
            if not window.done and window.next_unrequested <= window.last_page:
                return window
        return None

    def _plan_after(self, page: Page) -> None:
        """Learn from a page how far its window goes."""
        window = page.window
        if page.total_results is not None:
            window.total = max(window.total or 0, page.total_results)
            if page.number == FIRST_PAGE and page.results:
                window.last_page = max(window.last_page, math.ceil(page.total_results / self.page_size))
        if page.next_page is not None and page.results:
            window.last_page = max(window.last_page, page.next_page)
        elif len(page.results) < self.page_size:
            # A short page with no next page (or an empty one) ends the read, whatever
            # total_results or next_page said.
            window.last_page = min(window.last_page, page.number)
            window.next_unrequested = max(window.next_unrequested, window.last_page + 1)

    def _close_read(self, window: Window) -> None:
        total, seen = window.total, self.distinct(window)
        if total is None or seen >= total:
            window.done = True
            return
        if window.reads < self.max_reads:
            self.logger.warning(
                "Window %s..%s returned %d distinct records but total_results is %d "
                "(the data changed while it was paged); reading it again (%d/%d)",
                window.start,
                window.end,
                seen,
                total,
                window.reads + 1,
                self.max_reads,
            )
            window.start_read()
            return
        window.short = True
        self.logger.warning(
            "Window %s..%s still returned %d distinct records for total_results %d after "
            "%d reads; moving on, but the bookmark stays before these days: the next run reads them again",
            window.start,
            window.end,
            seen,
            total,
            window.reads,
        )
        window.done = True
