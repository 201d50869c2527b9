"""An API that misbehaves about paging, counts and timing: the tap over HTTP against the sandbox's
misbehaviours (``--misbehave``), one test per rule of the README's Reliability section."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typing_extensions import override

from tap_optico.paging import SLACK_PAGES
from tap_optico.reading import MAX_WINDOW_READS
from tap_optico.sandbox import SANDBOX_API_KEY, Misbehaviour, SandboxServer, account_key, build_server
from tap_optico.sandbox.api import MisbehaviourKind, Order
from tests.helpers import (
    FIRST_DAY,
    SandboxFactory,
    TapRun,
    bookmark,
    run_tap,
    sandbox_call_ids,
    send_answer,
    tap_config,
)
from tests.test_accounts import account_ids, accounts_config, ids_by_account
from tests.test_integrity import read_calls

THIRD_DAY = FIRST_DAY + dt.timedelta(days=2)


def misbehaving(*kinds: MisbehaviourKind, accounts: tuple[int, ...] = (), **options: Any) -> Misbehaviour:
    return Misbehaviour(frozenset(kinds), frozenset(accounts), **options)


def page_requests(server: SandboxServer, account: int = 1) -> list[int]:
    """The pages of the calls stream the tap asked for with account ``account``'s key."""
    key = account_key(account)
    return [
        int(r.params["page"])
        for r in server.requests
        if r.params.get("api_key") == key and "group_by_day" not in r.params
    ]


def errors(run: TapRun) -> list[str]:
    return [line for line in run.stderr.splitlines() if " ERROR " in line]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_pages_that_never_end_are_read_as_far_as_total_results_justifies(
    make_sandbox: SandboxFactory, tmp_path: Path, concurrency: int
) -> None:
    server = make_sandbox(last_day=THIRD_DAY, misbehaviour=misbehaving("endless-pages"))
    config = tap_config(server, page_size=10, window_days=3, max_concurrency=concurrency)
    run = run_tap(config, tmp_path, timeout=60)
    assert run.returncode == 0, run.stderr
    records = run.records("calls")
    assert len(records) == 150
    assert {r["call_id"] for r in records} == sandbox_call_ids(server)
    # 150 calls by 10: 15 pages, and one of slack, which repeats page 15 and ends the read.
    assert sorted(page_requests(server)) == list(range(1, 15 + SLACK_PAGES + 1))


def test_an_api_that_ignores_page_fails_its_account_only(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    server = make_sandbox(
        accounts=2, last_day=THIRD_DAY, misbehaviour=misbehaving("ignore-page", accounts=(2,))
    )
    config = accounts_config(server, 1, 2, page_size=10, window_days=3, max_concurrency=4)
    run = run_tap(config, tmp_path, timeout=60)
    assert run.returncode == 1
    [line] = [line for line in errors(run) if "cannot be read" in line]
    assert "account marseille" in line
    assert "window 2026-03-20..2026-03-22 cannot be read: page 2 is the same answer as page 1" in line
    assert "(the API ignores 'page')" in line
    assert errors(run)[-1].endswith("1 account(s) failed, the others were read: marseille")
    found = ids_by_account(run)
    assert set(found) == {"lyon"}, "nothing of the window that cannot be read is emitted"
    assert found["lyon"] == account_ids(server, 1)
    assert bookmark(run.final_state, "calls", "lyon").startswith("2026-03-22T")
    assert bookmark(run.final_state, "calls", "marseille") is None
    assert len(page_requests(server, 2)) <= 15  # what total_results justifies, no more


@settings(max_examples=12, deadline=None)
@given(
    page_size=st.sampled_from([10, 13, 37]),
    concurrency=st.sampled_from([1, 4]),
    order=st.sampled_from(["asc", "desc"]),
    lookalikes=st.integers(0, 3),
)
def test_a_page_that_repeats_the_last_row_of_the_page_before_gives_each_call_once(
    page_size: int, concurrency: int, order: Order, lookalikes: int
) -> None:
    server = build_server(
        first_day=FIRST_DAY,
        last_day=FIRST_DAY + dt.timedelta(days=1),
        calls_per_day=60,
        lookalikes=lookalikes,
        order=order,
        misbehaviour=misbehaving("repeat-last-row"),
    ).start()
    try:
        config = tap_config(server, page_size=page_size, max_concurrency=concurrency, window_days=2)
        records = read_calls(config)
    finally:
        server.stop()
    ids = [record["call_id"] for record in records]
    assert len(ids) == len(set(ids)) == 120
    assert set(ids) == sandbox_call_ids(server)


def test_a_count_that_is_never_met_moves_the_bookmark_once_every_page_is_read_with_a_warning(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    """Rewritten (issue 29): the bookmark no longer stays for some runs and then gives the rows up.
    The tap reads every page the API offers (the page after the last one too, as rows are short of
    total_results), in every read: then it is the API's count that is wrong, and the run says so."""
    server = make_sandbox(misbehaviour=misbehaving("phantom-call"))
    end = FIRST_DAY + dt.timedelta(days=2)
    run = run_tap(tap_config(server, end_date=end.isoformat(), window_days=7), tmp_path)
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if "short)" in line and " WARNING " in line]
    assert len(warnings) == 2  # calls and daily_calls
    assert f"gave 150 rows for total_results 151 after {MAX_WINDOW_READS} reads" in warnings[0]
    assert "of every page the API offers (1 short)" in warnings[0]
    assert "the bookmark moves past it" in warnings[0]
    summary = [line for line in run.stderr.splitlines() if "stayed short of total_results after" in line]
    assert len(summary) == 2
    assert "calls: 1 window(s) stayed short of total_results" in summary[0]
    assert run.bookmark("daily_calls") == end.isoformat()
    assert run.bookmark("calls").startswith(f"{end}T")
    reads = [r for r in server.requests if "group_by_day" not in r.params]
    # Each read asks for pages 1 and 2 (100 a page), then page 3, which is empty.
    assert sorted(int(r.params["page"]) for r in reads) == sorted([1, 2, 3] * MAX_WINDOW_READS)


# At 64 bytes/s the headers arrive within the deadline and the body does not; at 8 bytes/s not
# even the status line and headers do.
@pytest.mark.parametrize("rate", [64.0, 8.0], ids=["body", "headers"])
def test_an_answer_that_trickles_is_cut_at_request_timeout_and_fails_its_account_only(
    make_sandbox: SandboxFactory, tmp_path: Path, rate: float
) -> None:
    server = make_sandbox(
        accounts=2,
        last_day=THIRD_DAY,
        misbehaviour=misbehaving("trickle", accounts=(2,), trickle_bytes_per_second=rate),
    )
    config = accounts_config(server, 1, 2, request_timeout=2, max_tries=2, max_wait_seconds=1)
    started = time.monotonic()
    run = run_tap(config, tmp_path, timeout=60)
    elapsed = time.monotonic() - started
    assert run.returncode == 1
    assert elapsed < 20, "two tries of 2 s each, and a wait, for the account that trickles"
    [line] = [line for line in errors(run) if "account marseille failed" in line]
    assert "after 2 tries" in line
    assert "took more than request_timeout (2 s)" in line
    assert ids_by_account(run) == {"lyon": account_ids(server, 1)}
    assert bookmark(run.final_state, "calls", "lyon").startswith("2026-03-22T")
    assert bookmark(run.final_state, "daily_calls", "lyon") == "2026-03-22"


@pytest.mark.parametrize("connection", ["http10", "connection-close", "redirect"])
def test_a_body_that_trickles_is_cut_at_request_timeout_on_every_kind_of_connection(
    make_sandbox: SandboxFactory, tmp_path: Path, connection: MisbehaviourKind
) -> None:
    """HTTP/1.0 and 'Connection: close' make http.client close the connection before the body is
    read; a redirect makes two answers of one try: the deadline holds for the whole try all the same."""
    server = make_sandbox(
        last_day=THIRD_DAY, misbehaviour=misbehaving("trickle", connection, trickle_bytes_per_second=64)
    )
    config = tap_config(server, request_timeout=2, max_tries=2, max_wait_seconds=1)
    started = time.monotonic()
    run = run_tap(config, tmp_path, timeout=60)
    elapsed = time.monotonic() - started
    assert run.returncode == 1
    assert elapsed < 20, "two tries of 2 s each, and a wait"
    [line] = [line for line in errors(run) if "failed, its bookmark stays" in line]
    assert "after 2 tries" in line
    assert "took more than request_timeout (2 s)" in line


@pytest.mark.parametrize("concurrency", [1, 4])
def test_answers_gzipped_and_chunked_as_web_servers_send_them_give_the_same_records_and_state(
    make_sandbox: SandboxFactory, tmp_path: Path, concurrency: int
) -> None:
    """An answer's body is read in one go as it arrives: in the server's chunks, decompressed."""
    runs = []
    for name, kinds in (("plain", ()), ("encoded", ("gzip", "chunked"))):
        server = make_sandbox(last_day=THIRD_DAY, misbehaviour=misbehaving(*kinds))
        (tmp_path / name).mkdir()
        config = tap_config(server, page_size=50, window_days=2, max_concurrency=concurrency)
        runs.append(run_tap(config, tmp_path / name, timeout=60))
    plain, encoded = runs
    assert plain.returncode == encoded.returncode == 0, encoded.stderr
    for stream in ("calls", "daily_calls"):
        assert encoded.records(stream) == plain.records(stream)
    assert len(plain.records("calls")) == len(sandbox_call_ids(server)) > 100
    assert encoded.final_state == plain.final_state


def test_a_null_inside_results_is_skipped_with_a_warning_and_the_bookmark_moves(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    server = make_sandbox(last_day=THIRD_DAY, misbehaviour=misbehaving("null-row"))
    run = run_tap(tap_config(server, window_days=3), tmp_path)
    assert run.returncode == 0, run.stderr
    assert errors(run) == []
    skipped = [line for line in run.stderr.splitlines() if "not a JSON object" in line]
    assert len(skipped) == 2  # one window of each stream
    assert all(" WARNING " in line and ": None (1 in 2026-03-20..2026-03-22" in line for line in skipped)
    assert len(run.records("calls")) == 149
    assert len(run.records("daily_calls")) == 2
    assert run.bookmark("calls").startswith("2026-03-22T")
    assert run.bookmark("daily_calls") == "2026-03-22"


@pytest.mark.parametrize("calls_per_day", [0, 50])
def test_an_account_without_calls_lately_moves_its_bookmark_like_a_busy_one(
    make_sandbox: SandboxFactory, tmp_path: Path, calls_per_day: int
) -> None:
    # The sandbox has calls up to 2026-03-22 (or none at all); the runs read on to the 27th, then the 28th.
    server = make_sandbox(last_day=THIRD_DAY, calls_per_day=calls_per_day)
    first = run_tap(tap_config(server, end_date="2026-03-27"), tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.bookmark("daily_calls") == "2026-03-27"
    assert first.bookmark("calls") == "2026-03-26T23:00:00+00:00"  # the day's first instant, in UTC
    server.requests.clear()
    second = run_tap(tap_config(server, end_date="2026-03-28"), tmp_path, state=first.final_state)
    assert second.returncode == 0, second.stderr
    assert {r.params["start_date"] for r in server.requests} == {"2026-03-26"}
    assert second.bookmark("calls") == "2026-03-27T23:00:00+00:00"


def state_and_record_bytes(run: TapRun) -> tuple[int, int]:
    lines = run.stdout.splitlines()
    state = sum(len(line) for line in lines if line.startswith('{"type":"STATE"'))
    records = sum(len(line) for line in lines if line.startswith('{"type":"RECORD"'))
    return state, records


def test_state_grows_with_the_accounts_not_their_square(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    server = make_sandbox(accounts=32, calls_per_day=10, last_day=FIRST_DAY + dt.timedelta(days=1))
    sizes = {}
    for count in (8, 32):
        config = {k: v for k, v in tap_config(server).items() if k != "api_key"}
        config["accounts"] = [{"name": f"client-{n}", "api_key": account_key(n)} for n in range(1, count + 1)]
        run = run_tap(config, tmp_path)
        assert run.returncode == 0, run.stderr
        assert all(bookmark(run.final_state, "calls", f"client-{n}") for n in range(1, count + 1))
        sizes[count] = state_and_record_bytes(run)
    for state, records in sizes.values():
        assert state < records
    assert sizes[32][0] / sizes[8][0] < 5  # 4x the accounts, about 4x the STATE


# Paging signals that disagree, over HTTP: a small API of its own (the sandbox's misbehaviours are
# the sandbox's), honest but for what ``twist`` does to each answer.

#: An answer (a JSON object), from the honest one: its page, the limit, every row of the request,
#: and how many requests came before it.
Twist = Callable[[dict[str, Any], int, int, list[dict[str, Any]], int], dict[str, Any]]
DAYS = ("2026-03-01", "2026-03-03")


class PagedApi:
    """``per_day`` calls a day (a row a day for ``group_by_day``), paged as ``twist`` says."""

    def __init__(self, twist: Twist, per_day: int) -> None:
        self.asked: list[tuple[bool, int]] = []  # (daily, page) of each request, in order
        lock, api = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                daily, page, limit = query.get("group_by_day") == "1", int(query["page"]), int(query["limit"])
                rows = api.rows(query["start_date"], query["end_date"], per_day, daily)
                with lock:
                    before = len(api.asked)
                    api.asked.append((daily, page))
                body: dict[str, Any] = {"status": "OK", "total_results": len(rows), "errors": []}
                body["results"] = rows[(page - 1) * limit : page * limit]
                if page * limit < len(rows):
                    body["next_page"] = page + 1
                send_answer(self, json.dumps(twist(body, page, limit, rows, before)).encode())

            @override
            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data-api"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def rows(start: str, end: str, per_day: int, daily: bool) -> list[dict[str, Any]]:
        day, last, rows = dt.date.fromisoformat(start), dt.date.fromisoformat(end), []
        while day <= last:
            if daily:
                rows.append({"date": str(day), "calls": per_day, "duration": 5 * per_day, "revenue": "0.00"})
            for n in range(0 if daily else per_day):
                rows.append(
                    {"start_date": f"{day} 10:{n:02d}:00", "caller": f"06{day:%m%d}{n:04d}", "duration": "5"}
                )
            day += dt.timedelta(days=1)
        return rows

    def pages(self, *, daily: bool = False) -> list[int]:
        return [page for each, page in self.asked if each == daily]

    def run(self, tmp_path: Path, state: dict[str, Any] | None = None) -> TapRun:
        config = {
            "api_key": SANDBOX_API_KEY,
            "api_url": self.url,
            "start_date": DAYS[0],
            "end_date": DAYS[1],
            "page_size": 10,
            "max_concurrency": 1,
            "max_wait_seconds": 1,
        }
        return run_tap(config, tmp_path, state=state, timeout=60)


@pytest.fixture
def paged_api() -> Iterator[Callable[[Twist, int], PagedApi]]:
    made: list[PagedApi] = []

    def make(twist: Twist, per_day: int) -> PagedApi:
        made.append(PagedApi(twist, per_day))
        return made[-1]

    yield make
    for api in made:
        api.httpd.shutdown()
        api.httpd.server_close()


def first_page_empty(
    body: dict[str, Any], page: int, limit: int, rows: list[Any], before: int
) -> dict[str, Any]:
    """Page 1 is empty and says page 2 follows; the rows start on page 2."""
    if page == 1:
        return {**body, "results": [], "next_page": 2}
    body["results"] = rows[(page - 2) * limit : (page - 1) * limit]
    body.pop("next_page", None)
    return {**body, "next_page": page + 1} if (page - 1) * limit < len(rows) else body


def second_page_empty(
    body: dict[str, Any], page: int, limit: int, rows: list[Any], before: int
) -> dict[str, Any]:
    """Page 2 is always empty, and says page 3 follows."""
    return {**body, "results": []} if page == 2 else body


def first_answers_empty(
    body: dict[str, Any], page: int, limit: int, rows: list[Any], before: int
) -> dict[str, Any]:
    """The first six answers have no rows and no next_page, the count right: a hiccup."""
    return {**body, "results": [], "next_page": None} if before < 6 else body


def test_an_empty_page_that_says_more_is_followed_to_the_rows_after_it(
    paged_api: Callable[[Twist, int], PagedApi], tmp_path: Path
) -> None:
    """Before, the empty page 1 ended every read: 0 of 30 calls, and the bookmark moved past them."""
    api = paged_api(first_page_empty, 10)
    run = api.run(tmp_path)
    assert run.returncode == 0, run.stderr
    calls = run.records("calls")
    assert len(calls) == len({c["call_id"] for c in calls}) == 30
    assert sorted(api.pages()) == [1, 2, 3, 4]
    assert run.bookmark("calls").startswith("2026-03-03T")
    assert len(run.records("daily_calls")) == 3


def test_rows_after_a_page_that_is_always_empty_are_kept_and_the_bookmark_stays_before_them(
    paged_api: Callable[[Twist, int], PagedApi], tmp_path: Path
) -> None:
    """Before, page 3 was asked and its 10 calls thrown away: 10 of 30, and the bookmark moved past
    the 20 the API held back. Now pages 1 and 3 give 20 calls; the 10 of page 2 may come later."""
    api = paged_api(second_page_empty, 10)
    run = api.run(tmp_path)
    assert run.returncode == 0, run.stderr
    calls = run.records("calls")
    assert len(calls) == len({c["call_id"] for c in calls}) == 20
    assert {c["start_date"][:10] for c in calls} == {"2026-03-01", "2026-03-03"}  # page 2: the 2nd
    # Each read asks page 4 once (rows short, page 3 the last), which is empty: no further.
    assert sorted(api.pages()) == sorted([1, 2, 3, 4] * MAX_WINDOW_READS)
    [held] = [line for line in run.stderr.splitlines() if "rows held back" in line]
    assert " WARNING " in held
    assert "gave 20 rows for total_results 30 after 3 reads, the last with an empty page" in held
    assert "the bookmark stays before it" in held
    assert run.bookmark("calls") is None


def test_a_window_whose_pages_came_empty_is_read_again_by_the_next_run(
    paged_api: Callable[[Twist, int], PagedApi], tmp_path: Path
) -> None:
    """Before, the three reads of empty answers moved the bookmark past the window: its calls were
    never read again."""
    api = paged_api(first_answers_empty, 3)
    first = api.run(tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.records("calls") == []
    assert api.pages()[:6] == [1, 2] * MAX_WINDOW_READS  # each empty page 1 followed once, no more
    assert first.bookmark("calls") is None
    assert first.bookmark("daily_calls") == DAYS[1]
    second = api.run(tmp_path, state=first.final_state)
    assert second.returncode == 0, second.stderr
    assert len({c["call_id"] for c in second.records("calls")}) == 9
    assert second.bookmark("calls").startswith("2026-03-03T")


def no_count_no_next_page(
    body: dict[str, Any], page: int, limit: int, rows: list[Any], before: int
) -> dict[str, Any]:
    body.pop("next_page", None)
    body.pop("total_results")
    return body


def count_zero_no_next_page(
    body: dict[str, Any], page: int, limit: int, rows: list[Any], before: int
) -> dict[str, Any]:
    body.pop("next_page", None)
    return {**body, "total_results": 0}


@pytest.mark.parametrize("twist", [no_count_no_next_page, count_zero_no_next_page])
def test_a_full_page_with_no_next_page_nor_a_count_that_bounds_it_asks_the_next_page(
    paged_api: Callable[[Twist, int], PagedApi], tmp_path: Path, twist: Twist
) -> None:
    """Before, a full page 1 ended the read: 10 of 15 calls."""
    api = paged_api(twist, 5)
    run = api.run(tmp_path)
    assert run.returncode == 0, run.stderr
    assert len({c["call_id"] for c in run.records("calls")}) == 15
    assert api.pages() == [1, 2]  # page 2 is short: it ends the read
    assert run.bookmark("calls").startswith("2026-03-03T")
