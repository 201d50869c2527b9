"""Handing a window over: a large page goes in pieces, and the pager keeps requests going between them."""

from __future__ import annotations

import datetime as dt
import threading
import time

from tap_optico.api import MAX_PAGE_SIZE
from tap_optico.paging import HANDED_ROWS, Page, Rows, Window, WindowPager
from tap_optico.reading import plan_windows
from tests.helpers import ACCOUNT
from tests.test_reading_core import LOGGER, FakeApi, collect


def test_a_large_page_is_handed_over_in_pieces_with_requests_between_them() -> None:
    """A page of 2,500 rows reaches the consumer :data:`HANDED_ROWS` at a time, and between two pieces
    the pager takes the answers that arrived and asks the pages they reveal: a request slot freed
    while a large page is written is filled before the whole page is."""
    big = [{"call": n} for n in range(2500)]
    api = FakeApi([{"call": n} for n in range(15)], 10, "exact")  # window 1: two pages
    windows = plan_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 2), 1, ACCOUNT)
    release = threading.Event()
    asked: list[tuple[int, int]] = []

    def fetch(window: Window, number: int) -> Page:
        asked.append((window.index, number))
        if window.index == 0:
            return Page(number, big, len(big), None)
        release.wait(10)
        return api.fetch(window, number)

    pager = WindowPager(fetch, page_size=MAX_PAGE_SIZE, max_concurrency=4, max_reads=1, logger=LOGGER)
    items = pager.read(windows)
    first = next(items)
    assert isinstance(first, Rows)
    assert (first.window, len(first.rows)) == (windows[0], HANDED_ROWS)
    release.set()
    while api.asked[1] < 1:  # window 1's first answer on its way
        time.sleep(0.01)
    time.sleep(0.1)
    second = next(items)  # the pager takes that answer before it hands over the next piece
    assert isinstance(second, Rows)
    assert second.window is windows[0], "window 0's page was handed over in one piece"
    for _ in range(200):
        if (1, 2) in asked:
            break
        time.sleep(0.01)
    assert (1, 2) in asked, "window 1's second page was not asked for while window 0's page was handed over"
    got = collect([first, second, *items])
    assert (got[0].rows, got[1].rows) == (big, api.rows)
