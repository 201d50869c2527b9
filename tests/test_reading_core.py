"""The reading core in-process: the paging bound, reconciliation and the bookmark rule, against a
fake API that misbehaves (no HTTP here; tests/test_misbehaving_api.py runs the same over HTTP)."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from singer_sdk.exceptions import FatalAPIError

from tap_optico import paging, secrets
from tap_optico.api import FIRST_PAGE, MAX_PAGE_SIZE
from tap_optico.bookmarks import Days, Mark, StateCadence, WindowRead, after_window
from tap_optico.paging import (
    MAX_READ_ROWS,
    SLACK_PAGES,
    Failure,
    Outcome,
    Page,
    Rows,
    Window,
    WindowEnd,
    WindowPager,
    ask,
)
from tap_optico.reading import OpticoStream, plan_windows
from tap_optico.reconcile import Reconciled, edge_repeat, reconcile
from tap_optico.sandbox import SANDBOX_API_KEY
from tap_optico.tap import TapOptico
from tests.helpers import ACCOUNT

Mode = Literal["exact", "off-by-one", "endless", "ignore-page", "phantom"]
LOGGER = logging.getLogger("test")
PARIS = ZoneInfo("Europe/Paris")


@dataclass
class FakeApi:
    """Serves ``rows`` to every window, misbehaving as ``mode`` says; counts the pages asked."""

    rows: list[dict[str, int]]
    page_size: int
    mode: Mode
    asked: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fetch(self, window: Window, number: int) -> Page:
        with self.lock:
            self.asked[number] += 1
        size, rows = self.page_size, self.rows
        stride = size - 1 if self.mode == "off-by-one" else size
        total = len(rows) + (self.mode == "phantom")
        shown = 1 if self.mode == "ignore-page" else number
        if self.mode == "endless":
            shown = min(number, max(1, math.ceil(len(rows) / size)))
        first = (shown - 1) * stride
        more = self.mode == "endless" or (number - 1) * stride + size < len(rows)
        return Page(number, rows[first : first + size], total, number + 1 if more else None)


@dataclass
class Got:
    """What the pager yielded for one window: its rows, its end, or its failure."""

    rows: list[Any] = field(default_factory=list)
    end: WindowEnd | None = None
    failure: Failure | None = None

    @property
    def result(self) -> Reconciled:
        assert self.end is not None, self.failure
        return self.end.result

    @property
    def reads(self) -> int:
        assert self.end is not None
        return self.end.reads


def collect(items: Iterable[Rows | WindowEnd | Failure]) -> dict[int, Got]:
    """The pager's values by window index, checking their order: a window's rows, then its end."""
    got: dict[int, Got] = {}
    for item in items:
        mine = got.setdefault(item.window.index, Got())
        assert mine.end is None, "a value after the window's end"
        if isinstance(item, Rows):
            mine.rows += item.rows
        elif isinstance(item, WindowEnd):
            mine.end = item
        else:
            mine.failure = item
    return got


def read(api: FakeApi, concurrency: int, max_reads: int = 3) -> Got:
    [window] = plan_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 7), 7, ACCOUNT)
    pager = WindowPager(
        api.fetch, page_size=api.page_size, max_concurrency=concurrency, max_reads=max_reads, logger=LOGGER
    )
    return collect(pager.read([window]))[0]


# Calls come in small groups of identical rows (anonymous calls in the same second), never a page of them.
ROWS = st.lists(
    st.tuples(st.integers(0, 10**6), st.integers(1, 3)), max_size=60, unique_by=lambda group: group[0]
).map(lambda groups: [{"call": call} for call, copies in groups for _ in range(copies)])


@settings(max_examples=200, deadline=None)
@given(
    rows=ROWS,
    page_size=st.sampled_from([10, 11, 17]),
    concurrency=st.sampled_from([1, 4]),
    mode=st.sampled_from(["exact", "off-by-one", "endless"]),
    descending=st.booleans(),
)
def test_a_readable_api_gives_every_row_once_within_the_pages_justified(
    rows: list[dict[str, int]], page_size: int, concurrency: int, mode: Mode, descending: bool
) -> None:
    api = FakeApi(rows[::-1] if descending else rows, page_size, mode)
    window = read(api, concurrency)
    assert window.failure is None
    assert window.rows == api.rows
    assert window.result.short_by == 0
    assert window.reads == 1
    assert set(api.asked.values()) <= {1}, "a page asked twice in one read"
    needed = max(1, math.ceil(len(rows) / page_size))
    if mode == "off-by-one":
        needed = max(1, math.ceil((len(rows) - 1) / (page_size - 1)))
    assert max(api.asked) <= needed + SLACK_PAGES


@settings(max_examples=50, deadline=None)
@given(rows=ROWS, page_size=st.sampled_from([10, 17]), concurrency=st.sampled_from([1, 4]))
def test_an_api_that_ignores_page_fails_the_window_when_rows_are_missing(
    rows: list[dict[str, int]], page_size: int, concurrency: int
) -> None:
    api = FakeApi(rows, page_size, "ignore-page")
    window = read(api, concurrency)
    if len(rows) <= page_size:  # one page: nothing to tell
        assert window.end is not None
        assert window.rows == rows
        return
    failure = window.failure
    assert failure is not None
    assert "is the same answer as page 1" in str(failure.error)
    assert "(the API ignores 'page')" in str(failure.error)
    assert window.end is None
    assert window.rows == []
    assert max(api.asked) <= math.ceil(len(rows) / page_size)


def test_a_count_never_met_is_read_again_then_handed_over_short() -> None:
    api = FakeApi([{"call": n} for n in range(25)], 10, "phantom")
    window = read(api, 4, max_reads=3)
    assert (window.reads, window.result.short_by, window.result.total) == (3, 1, 26)
    assert window.end is not None
    assert window.end.outcome is Outcome.COUNT_WRONG
    # Page 3 says it is the last while a row is missing: page 4 is asked once a read, and is empty.
    assert api.asked == {1: 3, 2: 3, 3: 3, 4: 3}


def answer(results: list[Any], total_results: int | None) -> Page:
    return Page(1, results, total_results, None)


def test_identical_rows_that_add_up_to_total_results_are_all_calls_wherever_the_break_falls() -> None:
    twin = {"caller": "anonymous", "start_date": "2026-01-01 10:00:00"}
    rows = [{"n": n} for n in range(8)] + [twin, twin, twin] + [{"n": n} for n in range(8, 17)]
    for cut in range(1, len(rows)):
        pages = [answer(rows[:cut], len(rows)), answer(rows[cut:], len(rows))]
        assert [row for part in reconcile(pages).parts for row in part] == rows


def test_edge_repeats_are_dropped_when_total_results_moved_or_is_missing() -> None:
    rows = [{"n": n} for n in range(12)]
    shifted = [answer(rows[:6], 11), answer(rows[4:12], 12)]  # two rows moved onto the next page
    assert [row for part in reconcile(shifted).parts for row in part] == rows
    unknown = [answer(rows[:6], None), answer(rows[5:12], None)]
    assert [row for part in reconcile(unknown).parts for row in part] == rows
    assert reconcile(unknown).short_by == 0


def test_edge_repeat_is_the_longest_run_the_page_before_ends_with() -> None:
    assert edge_repeat([1, 2, 3], [2, 3, 4]) == 2
    assert edge_repeat([1, 2, 3], [3, 3, 4]) == 1
    assert edge_repeat([1, 2, 3], [4, 5]) == 0
    assert edge_repeat([1, 2], [1, 2]) == 2
    assert edge_repeat([], [1]) == edge_repeat([1], []) == 0


def day_value(day: dt.date) -> str:
    return dt.datetime.combine(day, dt.time(), PARIS).isoformat()


def window_read(end: str, newest: str | None = None, *, unsettled: bool = False) -> WindowRead:
    return WindowRead(dt.date.fromisoformat(end), newest, unsettled=unsettled)


def advance(mark: Mark, window: WindowRead) -> tuple[Mark, None]:
    return after_window(mark, window, days=Days(PARIS), day_value=day_value), None


def test_a_bookmark_follows_the_days_read_whether_or_not_they_held_calls() -> None:
    mark, _ = advance(Mark(None), window_read("2026-01-07", "2026-01-05T10:00:00+01:00"))
    assert mark == Mark("2026-01-07T00:00:00+01:00")
    mark, _ = advance(mark, window_read("2026-01-14", "2026-01-14T09:30:00+01:00"))
    assert mark == Mark("2026-01-14T09:30:00+01:00")
    # A window read again behind the bookmark (lookback) never moves it back.
    assert advance(mark, window_read("2026-01-13"))[0] == mark


def test_the_day_of_a_value_written_in_utc_is_its_day_in_the_time_zone() -> None:
    days = Days(PARIS)
    assert days("2026-01-14T23:30:00+00:00") == dt.date(2026, 1, 15)
    assert days("2026-01-14T23:30:00Z") == dt.date(2026, 1, 15)
    assert days("2026-01-14T23:30:00+01:00") == dt.date(2026, 1, 14)
    assert days("2026-01-14") == dt.date(2026, 1, 14)
    mark, _ = advance(Mark(None), window_read("2026-01-15", "2026-01-14T23:30:00+00:00"))
    assert mark.value == "2026-01-14T23:30:00+00:00"


def test_an_unsettled_window_holds_the_bookmark_before_it_for_the_rest_of_the_run() -> None:
    """Rewritten (issue 29): a window short of a count the API never meets no longer holds the
    bookmark for some runs (the reader moves past it once every page is read); a window whose count
    moved in every read holds it, in this run only: the next run reads it again."""
    start = Mark("2026-01-07T00:00:00+01:00")
    mark, _ = advance(start, window_read("2026-01-14", unsettled=True))
    assert (mark.value, mark.pinned) == (start.value, True)
    # Held in this run: a later window, complete, does not move it.
    assert advance(mark, window_read("2026-01-21"))[0] == mark
    # The next run starts from the bookmark as it was; once read settled, the window moves it.
    mark, _ = advance(Mark(mark.value), window_read("2026-01-14"))
    assert mark == Mark("2026-01-14T00:00:00+01:00")


@pytest.mark.parametrize(("accounts", "every"), [(1, 1), (3, 1), (8, 2), (2000, 500)])
def test_state_is_written_once_a_quarter_of_the_accounts_moved(accounts: int, every: int) -> None:
    cadence = StateCadence(accounts, clock=lambda: 0.0)
    due = [cadence.moved() for _ in range(every * 3)]
    assert due == ([False] * (every - 1) + [True]) * 3


def test_state_is_written_at_least_every_half_minute_when_a_bookmark_moved() -> None:
    now = [0.0]
    cadence = StateCadence(2000, clock=lambda: now[0])
    assert not cadence.moved()
    now[0] = 31.0
    assert cadence.moved()
    assert not cadence.moved()


def test_redaction_masks_every_key_of_thousands_of_accounts() -> None:
    keys = [f"{n:08x}{'f00dcafe' * 3}"[::-1] for n in range(2000)]
    for key in keys:
        secrets.register(key)
    line = f"error for {keys[1234]} and {keys[7].upper()[3:14]} near the end"
    assert secrets.redact(line) == "error for *** and *** near the end"


def full_pages(total: int | None, page_size: int = 10) -> Callable[[Window, int], Page]:
    """A fetch whose every page is full of new rows and says there is more; ``total`` (None: none)
    grows by a page with each page when it is given."""

    def fetch(window: Window, number: int) -> Page:
        rows = [{"call": number * 1000 + n} for n in range(page_size)]
        grown = None if total is None else total + number * page_size
        return Page(number, rows, grown, number + 1)

    return fetch


def read_with(fetch: Callable[[Window, int], Page], page_size: int = 10) -> Got:
    [window] = plan_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 7), 7, ACCOUNT)
    pager = WindowPager(fetch, page_size=page_size, max_concurrency=4, max_reads=3, logger=LOGGER)
    return collect(pager.read([window]))[0]


def test_a_total_results_that_grows_with_every_page_cannot_make_a_read_go_on_for_ever() -> None:
    asked: Counter[int] = Counter()
    fetch = full_pages(30)

    def counted(window: Window, number: int) -> Page:
        asked[number] += 1
        return fetch(window, number)

    window = read_with(counted)
    # Each read stops a page of slack past what its first page's total_results (40) justifies.
    assert max(asked) <= math.ceil(40 / 10) + SLACK_PAGES
    assert window.reads == 3
    assert window.result.short_by > 0
    assert window.end is not None
    assert window.end.outcome is Outcome.UNSETTLED  # the bookmark rule holds it (bookmarks.py)


def test_a_read_without_total_results_follows_next_page_for_a_bounded_number_of_rows() -> None:
    window = read_with(full_pages(None, page_size=5000), page_size=5000)
    assert window.failure is not None
    assert f"no total_results bounds the read (at most {MAX_READ_ROWS} rows" in str(window.failure.error)
    assert window.end is None


def test_an_api_that_ignores_page_without_total_results_fails_the_window() -> None:
    def same_page(window: Window, number: int) -> Page:
        return Page(number, [{"call": n} for n in range(10)], None, number + 1)

    window = read_with(same_page)
    assert window.failure is not None
    assert "is the same answer as page 1 and no total_results says whether rows are missing" in str(
        window.failure.error
    )
    assert window.end is None


def test_a_window_is_handed_over_a_page_at_a_time_and_each_page_let_go() -> None:
    api = FakeApi([{"call": n} for n in range(25)], 10, "exact")
    [window] = plan_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 7), 7, ACCOUNT)
    pager = WindowPager(api.fetch, page_size=10, max_concurrency=4, max_reads=3, logger=LOGGER)
    items = pager.read([window])
    first = next(items)
    assert isinstance(first, Rows)
    assert first.rows == api.rows[:10]
    assert pager.held(window) == 15  # the page handed over is no longer held by the pager
    rest = list(items)
    assert [row for item in rest if isinstance(item, Rows) for row in item.rows] == api.rows[10:]
    assert pager.held(window) == 0
    end = rest[-1]
    assert isinstance(end, WindowEnd)
    assert (end.result.kept, end.result.short_by) == (25, 0)  # what the read counted stays


def test_a_value_between_the_bounds_of_a_window_as_text_is_in_its_days() -> None:
    """The reader's shortcut: UTC text between a window's first instant and the next day's, both as
    day_value writes them, is in the window's days as Days reads it (here around both clock changes)."""
    days = Days(PARIS)
    start, end = dt.date(2026, 3, 28), dt.date(2026, 3, 30)

    def day_value(day: dt.date) -> str:
        return dt.datetime.combine(day, dt.time(), PARIS).astimezone(dt.timezone.utc).isoformat()

    for first_day in (start, dt.date(2026, 10, 24)):
        last_day = first_day + (end - start)
        first, after = day_value(first_day), day_value(last_day + dt.timedelta(days=1))
        moment = dt.datetime.combine(first_day - dt.timedelta(days=1), dt.time(), dt.timezone.utc)
        while moment < dt.datetime.combine(last_day + dt.timedelta(days=2), dt.time(), dt.timezone.utc):
            value = moment.isoformat()
            assert (first <= value < after) == (first_day <= days(value) <= last_day), value
            moment += dt.timedelta(minutes=7)


@pytest.mark.parametrize(("asked", "served"), [(10, 10), (10, 30), (30, 10)])
def test_later_windows_hold_few_rows_while_the_first_is_read(asked: int, served: int) -> None:
    """Memory is bounded by ``room`` rows beyond the window being read, whatever the size of the
    pages asked and the size the API really serves: the next windows wait for theirs."""
    api = FakeApi([{"call": n} for n in range(300)], served, "exact")
    windows = plan_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 3), 1, ACCOUNT)

    def fetch(window: Window, number: int) -> Page:
        if window.index == 0:  # the first window's answers are slow, the others' come at once
            time.sleep(0.02)
        return api.fetch(window, number)

    room = 60
    pager = WindowPager(fetch, page_size=asked, max_concurrency=2, max_reads=1, logger=LOGGER, room=room)
    rows: dict[int, list[Any]] = {}
    most = 0
    for item in pager.read(windows):
        if isinstance(item, Rows):
            index = item.window.index
            if index not in rows:  # the whole window is read before any of it is handed over
                assert pager.held(item.window) == 300 - served  # the page handed over is let go
            later = sum(pager.held(other) for other in windows[index + 1 :])
            most = max(most, later)
            # Under the room, then the answers of the requests in flight.
            assert later < room + 2 * served, (
                f"{later} rows of later windows held while {index} is handed over"
            )
            rows.setdefault(index, []).extend(item.rows)
    assert rows == {window.index: api.rows for window in windows}
    assert most >= room  # the bound is the room, not a number of pages


def test_small_pages_are_asked_as_far_ahead_as_large_ones() -> None:
    """The default room is max_concurrency pages of the API's largest size, in rows: with small
    pages, the next windows are read ahead by more pages than max_concurrency (requests stay in
    flight while the first window is read)."""
    api = FakeApi([{"call": n} for n in range(100)], 10, "exact")
    windows = plan_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 3), 1, ACCOUNT)

    def fetch(window: Window, number: int) -> Page:
        if window.index == 0:
            time.sleep(0.02)
        return api.fetch(window, number)

    pager = WindowPager(fetch, page_size=10, max_concurrency=2, max_reads=1, logger=LOGGER)
    assert pager.room == 2 * MAX_PAGE_SIZE
    ahead = 0
    for item in pager.read(windows):
        if isinstance(item, Rows) and item.window.index == 0:
            ahead = max(ahead, sum(pager.held(other) for other in windows[1:]))
    assert ahead > 2 * 2 * 10, f"only {ahead} rows of the next windows were read while the first was"


def test_requests_go_on_while_a_window_is_handed_over() -> None:
    """Between the pages of the window it hands over, the pager takes the answers that arrived
    and asks for the pages they reveal."""
    api = FakeApi([{"call": n} for n in range(15)], 10, "exact")  # two pages a window
    windows = plan_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 6), 1, ACCOUNT)
    release = threading.Event()
    asked: list[tuple[int, int]] = []

    def fetch(window: Window, number: int) -> Page:
        asked.append((window.index, number))
        if window.index > 0:  # the next windows' answers come once released
            release.wait(10)
        return api.fetch(window, number)

    pager = WindowPager(fetch, page_size=10, max_concurrency=4, max_reads=1, logger=LOGGER)
    items = pager.read(windows)
    first = next(items)
    assert isinstance(first, Rows)
    assert first.window is windows[0]
    # Window 0's two pages, and the first page of the next windows in the slots it freed (the
    # request for window 4 may or may not have reached its worker thread yet).
    assert sorted(asked)[:5] == [(0, 1), (0, 2), (1, 1), (2, 1), (3, 1)]
    assert sorted(asked)[5:] in ([], [(4, 1)])
    release.set()
    while api.asked[1] < 4:  # the answers of windows 1 to 3 on their way
        time.sleep(0.01)
    time.sleep(0.1)
    second = next(items)  # the consumer takes the next page of windows[0]: the pager goes on meanwhile
    for _ in range(200):  # the request, made, starts in a worker thread
        if (1, 2) in asked:
            break
        time.sleep(0.01)
    assert (1, 2) in asked, "the second page of the next window was not asked for during the hand-over"
    assert isinstance(second, Rows)
    assert [*first.rows, *second.rows] == api.rows
    got = collect([first, second, *items])
    assert [got[window.index].rows for window in windows] == [api.rows] * len(windows)
    assert all(got[window.index].result.kept == 15 for window in windows)


def test_a_window_already_read_is_handed_over_without_waiting_for_another_answer() -> None:
    """Once the window first in line is handed over, the next one, read meanwhile, follows at once:
    the pager waits for an answer only when the window first in line is still being read (each wait
    is a round of the API's latency)."""
    api = FakeApi([{"call": n} for n in range(5)], 10, "exact")  # one page a window
    windows = plan_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 3), 1, ACCOUNT)
    release = threading.Event()

    def fetch(window: Window, number: int) -> Page:
        if window.index == 2:  # the last window's answer comes only once released
            release.wait(10)
        return api.fetch(window, number)

    pager = WindowPager(fetch, page_size=10, max_concurrency=4, max_reads=1, logger=LOGGER)
    ended: list[int] = []
    items = pager.read(windows)
    started = time.monotonic()
    try:
        for item in items:
            if isinstance(item, WindowEnd):
                ended.append(item.window.index)
            if ended == [0, 1]:
                break
            if isinstance(item, Rows) and item.window.index == 0:
                time.sleep(0.1)  # window 1 is read while window 0 is handed over
        waited = time.monotonic() - started
    finally:
        release.set()
    assert ended == [0, 1]
    assert waited < 5, f"window 1 was held back {waited:.1f} s, until window 2's answer came"
    assert [item.window.index for item in items if isinstance(item, WindowEnd)] == [2]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_an_account_fails_at_its_failed_window_whatever_answers_first(concurrency: int) -> None:
    """A window that cannot be read fails its account there: the windows before it, read in full,
    are handed over whole even when the failure's answer came first, and nothing after it is; the
    same values at any concurrency, whichever answer arrives first."""
    api = FakeApi([{"call": n} for n in range(15)], 10, "exact")  # two pages a window
    windows = plan_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 4), 1, ACCOUNT)

    def fetch(window: Window, number: int) -> Page:
        if window.index == 0:
            time.sleep(0.3)  # the first window's answers come after the failure
        if window.index == 2:
            raise FatalAPIError("the API's answer makes no sense")
        return api.fetch(window, number)

    pager = WindowPager(fetch, page_size=10, max_concurrency=concurrency, max_reads=1, logger=LOGGER)
    items = list(pager.read(windows))
    assert [(type(item).__name__, item.window.index) for item in items] == [
        ("Rows", 0),
        ("Rows", 0),
        ("WindowEnd", 0),
        ("Rows", 1),
        ("Rows", 1),
        ("WindowEnd", 1),
        ("Failure", 2),
    ]
    got = collect(items)
    assert got[0].rows == got[1].rows == api.rows
    assert got[2].failure is not None
    assert "makes no sense" in str(got[2].failure.error)


def test_idle_slots_ask_the_next_streams_first_pages_which_its_pager_takes_over() -> None:
    """Three one-page windows leave a slot of four idle: the next stream's first pages are asked
    there, never more than max_concurrency requests at once across both pagers; the next pager takes
    them over (asking none twice), and asks again one that was cancelled before it started."""
    api = FakeApi([{"call": n} for n in range(5)], 10, "exact")  # one page a window
    windows = plan_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 3), 1, ACCOUNT)
    next_windows = plan_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 10), 1, ACCOUNT)
    lock = threading.Lock()
    asked: Counter[tuple[str, int, int]] = Counter()
    running = most = 0

    def fetch_of(stream: str) -> Callable[[Window, int], Page]:
        def fetch(window: Window, number: int) -> Page:
            nonlocal running, most
            with lock:
                asked[stream, window.index, number] += 1
                running += 1
                most = max(most, running)
            time.sleep(0.05)
            with lock:
                running -= 1
            return api.fetch(window, number)

        return fetch

    spare = [(ask(w), functools.partial(fetch_of("next"), w, FIRST_PAGE)) for w in next_windows]
    first = WindowPager(
        fetch_of("first"), page_size=10, max_concurrency=4, max_reads=1, logger=LOGGER, spare=spare
    )
    assert all(got.rows == api.rows for got in collect(first.read(windows)).values())
    assert ask(next_windows[0]) in first.made  # asked with the first windows' first pages
    last = ask(next_windows[-1])
    assert last not in first.made
    cancelled: Future[Page] = Future()
    cancelled.cancel()
    ahead = {**first.made, last: cancelled}
    second = WindowPager(
        fetch_of("next"), page_size=10, max_concurrency=4, max_reads=1, logger=LOGGER, ahead=ahead
    )
    got = collect(second.read(next_windows))
    assert [got[w.index].rows for w in next_windows] == [api.rows] * len(next_windows)
    assert asked == {
        **{("first", w.index, 1): 1 for w in windows},
        **{("next", w.index, 1): 1 for w in next_windows},
    }
    assert most <= 4


def tap_with(**settings: Any) -> TapOptico:
    """A tap as the CLI builds it (no request is made)."""
    config = {"api_key": SANDBOX_API_KEY, "start_date": "2026-03-20", "end_date": "2026-04-08", **settings}
    return TapOptico(config=config, validate_config=False)


def opticos(tap: TapOptico) -> tuple[OpticoStream, OpticoStream]:
    calls, daily = tap.streams["calls"], tap.streams["daily_calls"]
    assert isinstance(calls, OpticoStream)
    assert isinstance(daily, OpticoStream)
    return calls, daily


@pytest.mark.parametrize(
    ("concurrency", "dry_run", "asked_ahead"), [(4, False, True), (1, False, False), (4, True, False)]
)
def test_the_next_streams_first_pages_are_asked_ahead_only_by_a_concurrent_full_run(
    concurrency: int, dry_run: bool, asked_ahead: bool
) -> None:
    """calls asks daily_calls' first pages ahead, of every window daily_calls will read; not at
    max_concurrency 1 (strictly in order), nor in a connection test (`--test`)."""
    calls, daily = opticos(tap_with(max_concurrency=concurrency))
    if dry_run:
        calls.ABORT_AT_RECORD_COUNT = 1
    assert calls.following() is daily
    windows = [window for plan in daily.plans() for window in plan.windows]
    assert len(windows) == 3
    assert [key for key, _ in calls.spare(daily)] == (
        [ask(window) for window in windows] if asked_ahead else []
    )


def test_only_the_stream_synced_next_is_asked_ahead() -> None:
    """The next stream is the next one selected; reconciliation asks the API nothing."""
    tap = tap_with(max_concurrency=4)
    calls, daily = opticos(tap)
    assert daily.following() is None
    daily.selected = False
    assert calls.following() is None


def test_a_rate_limit_pauses_every_stream_of_the_account() -> None:
    """daily_calls' first pages may be asked while calls is read: a 429 either sees pauses both."""
    calls, daily = opticos(tap_with(max_concurrency=4))
    calls.rate_limit_pauses["default"].extend(0.3)
    started = time.monotonic()
    daily.rate_limit_pauses["default"].wait()
    assert time.monotonic() - started >= 0.25


def test_a_page_made_ahead_is_taken_over_while_the_slots_are_full() -> None:
    """Of three first pages made ahead, the first is answered and the others are still in flight,
    filling both slots: the first window is read at once (taking a page over asks nothing), and the
    next window's page is asked only once a slot is free."""
    api = FakeApi([{"call": n} for n in range(5)], 10, "exact")  # one page a window
    windows = plan_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 4), 1, ACCOUNT)
    made: list[Future[Page]] = [Future() for _ in windows[:3]]
    made[0].set_result(api.fetch(windows[0], FIRST_PAGE))
    asked: list[tuple[int, bool]] = []

    def fetch(window: Window, number: int) -> Page:
        asked.append((window.index, made[1].done() or made[2].done()))
        return api.fetch(window, number)

    ahead = {ask(window): future for window, future in zip(windows, made, strict=False)}
    pager = WindowPager(fetch, page_size=10, max_concurrency=2, max_reads=1, logger=LOGGER, ahead=ahead)

    def answer() -> None:
        for window, future in zip(windows[1:3], made[1:], strict=True):
            future.set_result(api.fetch(window, FIRST_PAGE))

    answered = threading.Timer(2, answer)
    answered.start()
    items = pager.read(windows)
    first = next(items)
    # Before windows 1 and 2 are answered: both slots are still theirs.
    assert not made[1].done(), "window 0 waited for a free slot"
    assert isinstance(first, Rows)
    assert first.window is windows[0]
    assert asked == []
    got = collect([first, *items])
    answered.join()
    assert [got[window.index].rows for window in windows] == [api.rows] * len(windows)
    assert asked == [(3, True)]


def test_no_page_is_asked_ahead_for_an_account_once_it_failed() -> None:
    """The next stream skips an account that failed: once its failure is known, none of its pages is
    asked ahead (one asked before is only waited for); the other accounts' still are."""
    other = replace(ACCOUNT, name="other")
    day = dt.date(2026, 1, 1)
    windows = [Window(0, day, day, ACCOUNT), Window(1, day, day, other)]
    next_windows = [
        Window(n, day + dt.timedelta(days=n), day + dt.timedelta(days=n), account)
        for n, account in enumerate([ACCOUNT, ACCOUNT, other])
    ]
    api = FakeApi([{"call": n} for n in range(5)], 10, "exact")

    def fetch(window: Window, number: int) -> Page:
        if window.account is ACCOUNT:
            raise FatalAPIError("the API's answer makes no sense")
        time.sleep(0.3)
        return api.fetch(window, number)

    def slow(window: Window) -> Page:
        time.sleep(0.3)
        return api.fetch(window, FIRST_PAGE)

    spare = [(ask(window), functools.partial(slow, window)) for window in next_windows]
    pager = WindowPager(fetch, page_size=10, max_concurrency=3, max_reads=1, logger=LOGGER, spare=spare)
    got = collect(pager.read(windows))
    assert got[0].failure is not None
    assert got[1].rows == api.rows
    # The first asked with the failing page, before its failure was known; the second not asked.
    assert list(pager.made) == [ask(next_windows[0]), ask(next_windows[2])]


def paged(
    rows: int, *, last_next_page: Callable[[int], int | None] = lambda number: None
) -> Callable[..., Page]:
    """Pages of 10 of ``rows`` rows, ``total_results`` true; the last page's next_page is
    ``last_next_page(its number)``."""

    def fetch(window: Window, number: int) -> Page:
        results = [{"call": n} for n in range((number - 1) * 10, min(rows, number * 10))]
        last = number * 10 >= rows
        return Page(number, results, rows, last_next_page(number) if last else number + 1)

    return fetch


@pytest.mark.parametrize("last_next_page", [lambda number: number, lambda number: FIRST_PAGE])
def test_a_next_page_that_does_not_move_forward_on_the_last_page_ends_a_read_whose_rows_are_all_there(
    last_next_page: Callable[[int], int | None],
) -> None:
    """Itself or page 1 on the last page: the rows add up to total_results, nothing more is asked
    (before, it was followed as a forward next_page, to a page past the end)."""
    asked: list[int] = []
    fetch = paged(15, last_next_page=last_next_page)

    def counted(window: Window, number: int) -> Page:
        asked.append(number)
        return fetch(window, number)

    window = read_with(counted)
    assert window.end is not None, window.failure
    assert window.end.outcome is Outcome.COMPLETE
    assert window.rows == [{"call": n} for n in range(15)]
    assert sorted(asked) == [1, 2]


def long_window(fetch: Callable[[Window, int], Page]) -> Got:
    [window] = plan_windows(dt.date(2026, 1, 1), dt.date(2026, 4, 11), 101, ACCOUNT)
    pager = WindowPager(fetch, page_size=10, max_concurrency=4, max_reads=3, logger=LOGGER)
    return collect(pager.read([window]))[0]


def test_a_read_that_ends_on_the_page_past_max_read_rows_is_handed_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, a window whose rows, consistent with total_results, passed MAX_READ_ROWS on its last
    page failed, saying next_page still said more (it did not)."""
    monkeypatch.setattr(paging, "MAX_READ_ROWS", 100)
    window = long_window(paged(105))
    assert window.end is not None, window.failure
    assert window.end.outcome is Outcome.COMPLETE
    assert len(window.rows) == 105


def test_a_window_too_large_for_one_read_fails_saying_how_many_days_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(paging, "MAX_READ_ROWS", 100)
    window = long_window(paged(200))
    assert window.failure is not None
    assert str(window.failure.error) == (
        "window 2026-01-01..2026-04-11 cannot be read: its total_results is 200 rows, more than one "
        "read of a window holds (100): lower window_days to at most 50 (this window has 101 days)"
    )
    assert window.rows == []
