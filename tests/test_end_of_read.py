"""Every row the API can give is read: the end-of-read rule from every signal (paging.next_step),
in-process over a fake API's misbehaviours, then over HTTP against the sandbox's."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_optico.normalize import decode_plain_page
from tap_optico.paging import (
    MAX_READ_ROWS,
    Outcome,
    Page,
    ReadFacts,
    Step,
    Window,
    WindowPager,
    next_step,
)
from tap_optico.reading import plan_windows
from tap_optico.reconcile import reconcile
from tap_optico.sandbox import Misbehaviour
from tap_optico.sandbox.api import MisbehaviourKind
from tests.helpers import (
    ACCOUNT,
    FIRST_DAY,
    SandboxFactory,
    TapRun,
    fast_type_of,
    normalizer_for,
    run_tap,
    sandbox_call_ids,
    tap_config,
)
from tests.test_reading_core import Got, collect

LOGGER = logging.getLogger("test")


@dataclass
class Server:
    """An API double: ``rows`` newest first, read with its own page size ``cap`` (None: the limit
    asked), a ``total_results`` capped at ``count_cap``, ``next_page`` only when ``next_pages``, and
    ``arriving`` new rows at the top before each answer until ``late`` rows have arrived."""

    rows: list[dict[str, int]]
    limit: int
    cap: int | None = None
    count_cap: int | None = None
    next_pages: bool = True
    arriving: int = 0
    late: int = 0
    asked: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def visible(self) -> list[dict[str, int]]:
        arrived = min(self.late, self.arriving * len(self.asked))
        return [{"late": n} for n in reversed(range(arrived))] + self.rows

    def fetch(self, window: Window, number: int) -> Page:
        with self.lock:
            self.asked.append(number)
            rows = self.visible()
        size = min(self.limit, self.cap or self.limit)
        page = rows[(number - 1) * size : number * size]
        total = len(rows) if self.count_cap is None else min(len(rows), self.count_cap)
        more = self.next_pages and number * size < len(rows)
        return Page(number, page, total, number + 1 if more else None)


def read(server: Server, concurrency: int, max_reads: int = 3) -> Got:
    [window] = plan_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 7), 7, ACCOUNT)
    pager = WindowPager(
        server.fetch, page_size=server.limit, max_concurrency=concurrency, max_reads=max_reads, logger=LOGGER
    )
    return collect(pager.read([window]))[0]


ROWS = st.integers(0, 120).map(lambda count: [{"call": n} for n in range(count)])


@settings(max_examples=150, deadline=None)
@given(
    rows=ROWS,
    limit=st.sampled_from([10, 17, 50]),
    cap=st.sampled_from([None, 5, 10, 13]),
    count_cap=st.sampled_from([None, 10, 30]),
    next_pages=st.booleans(),
    concurrency=st.sampled_from([1, 4]),
    descending=st.booleans(),
)
def test_every_row_the_api_can_give_is_read_once_whatever_the_signals_say(
    rows: list[dict[str, int]],
    limit: int,
    cap: int | None,
    count_cap: int | None,
    next_pages: bool,
    concurrency: int,
    descending: bool,
) -> None:
    """A server page size below the limit, a capped count, a missing next_page: while one signal
    says more exists, the read goes on; every row comes once, and only when next_page is missing
    and the count capped is there nothing to show the rows past it (the count is then wrong)."""
    server = Server(rows[::-1] if descending else rows, limit, cap, count_cap, next_pages)
    window = read(server, concurrency)
    assert window.end is not None, window.failure
    size = min(limit, cap or limit)
    pages = max(1, math.ceil(len(rows) / size))
    counted = len(rows) if count_cap is None else min(len(rows), count_cap)
    if next_pages or counted == len(rows):
        assert window.rows == server.rows
        assert window.end.outcome is Outcome.COMPLETE
        assert window.result.beyond == len(rows) - counted  # the reader warns of rows past the count
        assert len(server.asked) == len(set(server.asked)), "a page asked twice"
        # The pages that hold rows, and at most one past them (asked as rows were still short).
        assert max(server.asked) <= pages + 1
    else:  # no next_page and a count below the rows: the read stops at the count, as it must
        assert window.rows == server.rows[: len(window.rows)]
        assert len(window.rows) >= counted


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(20, 80).map(lambda count: [{"call": n} for n in range(count)]),
    limit=st.sampled_from([10, 17]),
    arriving=st.integers(1, 17),
    late=st.integers(1, 60),
    concurrency=st.sampled_from([1, 4]),
)
def test_rows_arriving_while_a_window_is_paged_are_never_emitted_twice(
    rows: list[dict[str, int]], limit: int, arriving: int, late: int, concurrency: int
) -> None:
    """Newest first, rows arriving between the page requests shift the pages down: the count moves,
    the window is read again, and a read that never settles gives each row once, none invented."""
    server = Server(rows, limit, arriving=arriving, late=late)
    window = read(server, concurrency)
    assert window.end is not None, window.failure
    everything = server.visible()
    assert all(row in everything for row in window.rows)
    assert len({tuple(row.items()) for row in window.rows}) == len(window.rows), "a row emitted twice"
    if window.end.outcome is Outcome.COMPLETE:  # rows that add up to the count: every row of its time
        assert window.rows == everything[len(everything) - len(window.rows) :]
        assert len(window.rows) == window.result.total
    else:
        assert window.end.outcome is Outcome.UNSETTLED
        assert window.reads == 3


FACTS = st.builds(
    ReadFacts,
    rows=st.integers(0, 2 * MAX_READ_ROWS),
    total=st.none() | st.integers(0, 2 * MAX_READ_ROWS),
    moved=st.booleans(),
    new=st.integers(0, 5000),
    same=st.booleans(),
    probing=st.booleans(),
    next_page=st.none() | st.integers(2, 100),
    empty=st.booleans(),
    after_empty=st.booleans(),
    full=st.booleans(),
).filter(lambda facts: not (facts.empty and (facts.new or facts.same or facts.full)))


@settings(max_examples=1000, deadline=None)
@given(facts=FACTS)
def test_a_read_ends_only_when_every_signal_agrees(facts: ReadFacts) -> None:
    step = next_step(facts)
    short = facts.total is None or facts.rows < facts.total
    counted = facts.total is not None and facts.rows < facts.total
    # A full page is evidence of more unless a count the rows have not passed bounds the read.
    uncounted = facts.total is None or facts.rows > facts.total
    more_said = facts.next_page is not None or counted or (facts.full and uncounted)
    if step is Step.END:
        # Nothing new came (and an empty page was followed already, or after a page said it was the
        # last), or no signal says more (or a moving count's read passed its first count).
        empty_followed = facts.empty and short and (facts.next_page is not None or facts.total is not None)
        assert not empty_followed or facts.probing or facts.after_empty
        assert facts.new == 0 or facts.same or not more_said or facts.moved
    if step is Step.MORE:
        assert more_said
        assert facts.new > 0 or (facts.empty and short and not facts.probing and not facts.after_empty)
        assert not facts.same
        assert facts.rows <= MAX_READ_ROWS
    if step is Step.SAME_ANSWER:
        assert facts.same
        assert not facts.probing
        assert not facts.moved
    if step is Step.TOO_LONG:  # only a read that would go on: one that ends there is handed over
        assert facts.rows > MAX_READ_ROWS
        assert more_said
        assert facts.new > 0


def test_a_row_is_the_same_whatever_page_it_comes_in() -> None:
    """A result is typed, or not, by its own values: the same call on a compact page of plain
    results and on a spaced page with an odd result (a decimal comma) decodes to equal rows, so a
    row repeated across the two is seen as one."""
    fast_type = fast_type_of(normalizer_for("calls"))
    call = {
        "start_date": "2026-01-01 10:00:00",
        "caller": "0612345678",
        "tracking_number": "0182880101",
        "phone": "0142685300",
        "duration": "134",
        "keyword": "",
    }
    other, odd = {**call, "caller": "0700000000"}, {**call, "caller": "3", "revenue": "12,50"}
    compact = json.dumps({"results": [other, call]}, separators=(",", ":")).encode()
    spaced = json.dumps({"results": [call, odd]}).encode()
    first, second = (decode_plain_page(fast_type, body) for body in (compact, spaced))
    assert first is not None
    assert second is not None
    assert second["results"][1] == odd  # not plain: left to the converters
    assert first["results"][1] == second["results"][0]
    assert type(first["results"][1]) is fast_type
    pages = [Page(1, first["results"], 3, 2), Page(2, second["results"], 3, None)]
    assert reconcile(pages).kept == 3


# Over HTTP: the sandbox's misbehaviours, each alone.
THIRD_DAY = FIRST_DAY + dt.timedelta(days=2)


def misbehaving(*kinds: MisbehaviourKind, **options: Any) -> Misbehaviour:
    return Misbehaviour(frozenset(kinds), **options)


def warnings(run: TapRun) -> list[str]:
    return [line for line in run.stderr.splitlines() if " WARNING " in line]


@pytest.mark.parametrize(
    ("kind", "page_size", "warned"),
    [
        ("page-cap", 50, False),  # 10 rows a page, next_page true
        ("capped-count", 20, True),  # total_results 50 of 150, next_page true
        ("no-next-page", 40, False),  # total_results true, next_page null
    ],
)
@pytest.mark.parametrize("concurrency", [1, 4])
def test_every_call_is_read_when_one_signal_says_more(
    make_sandbox: SandboxFactory,
    tmp_path: Path,
    kind: MisbehaviourKind,
    page_size: int,
    warned: bool,
    concurrency: int,
) -> None:
    server = make_sandbox(last_day=THIRD_DAY, misbehaviour=misbehaving(kind, count_cap=50))
    config = tap_config(server, page_size=page_size, window_days=3, max_concurrency=concurrency)
    run = run_tap(config, tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    ids = [record["call_id"] for record in run.records("calls")]
    assert len(ids) == len(set(ids)) == 150
    assert set(ids) == sandbox_call_ids(server)
    assert run.bookmark("calls").startswith(f"{THIRD_DAY}T")
    said = [line for line in warnings(run) if "calls: window" in line]
    if warned:
        assert len(said) == 1
        assert "gave 150 rows, 100 more than its total_results 50" in said[0]
    else:
        assert said == []


@pytest.mark.parametrize("step", [99, 100])
def test_calls_arriving_a_page_at_a_time_newest_first_are_read_once_each(
    make_sandbox: SandboxFactory, tmp_path: Path, step: int
) -> None:
    """About a page of new calls between two page requests makes the next page repeat the page
    before, wholly when a page arrives: that is a count that moved, not an API that ignores 'page'.
    The window is read again; each call comes once under its own call_id."""
    today = dt.date(2026, 4, 8)
    server = make_sandbox(calls_per_day=400, first_day=today, last_day=today, live_step=step, order="desc")
    run = run_tap(tap_config(server, page_size=100, max_concurrency=1), tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    ids = [record["call_id"] for record in run.records("calls")]
    assert len(ids) == len(set(ids)) == 400
    assert set(ids) == sandbox_call_ids(server)
    assert "total_results moved while it was paged; reading it again" in run.stderr
    assert run.bookmark("calls").startswith(f"{today}T")


def test_a_repeat_across_pages_of_both_decoders_is_one_call(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    """Even pages spaced (with empty texts: the converters read them), odd pages compact (the fast
    path), each page starting with the last row of the page before, newest first."""
    server = make_sandbox(
        calls_per_day=51,
        last_day=FIRST_DAY,
        order="desc",
        misbehaviour=misbehaving("spaced-json", "repeat-last-row"),
    )
    run = run_tap(tap_config(server, page_size=10), tmp_path)
    assert run.returncode == 0, run.stderr
    ids = [record["call_id"] for record in run.records("calls")]
    assert len(ids) == len(set(ids)) == 51
    assert set(ids) == sandbox_call_ids(server)
