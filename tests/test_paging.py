"""The paginator's stop and no-progress cases, on real responses from a sandbox."""

from __future__ import annotations

import json

import pytest
import requests
from singer_sdk.exceptions import FatalAPIError

from tap_optico.client import OpticoPaginator
from tap_optico.reading import plan_windows
from tap_optico.sandbox import SANDBOX_API_KEY, SandboxServer
from tests.helpers import ACCOUNT


def response_with(next_page: object, absent: bool = False) -> requests.Response:
    response = requests.Response()
    body = {"status": "OK", "total_results": 30, "results": []}
    if not absent:
        body["next_page"] = next_page
    response._content = json.dumps(body).encode()
    return response


@pytest.mark.parametrize("last", [None, 0, "", "0"])
def test_stops_on_every_last_page_form(last: object) -> None:
    paginator = OpticoPaginator(3)
    paginator.advance(response_with(last))
    assert paginator.finished


def test_stops_when_next_page_is_absent() -> None:
    paginator = OpticoPaginator()
    paginator.advance(response_with(None, absent=True))
    assert paginator.finished


@pytest.mark.parametrize("value", [2, "2"])
def test_follows_next_page(value: object) -> None:
    paginator = OpticoPaginator()
    paginator.advance(response_with(value))
    assert (paginator.finished, paginator.current_value) == (False, 2)


@pytest.mark.parametrize("value", [3, 2, "1"])
def test_next_page_that_does_not_move_forward_is_an_error(value: object) -> None:
    with pytest.raises(FatalAPIError, match="does not move forward"):
        OpticoPaginator(3).advance(response_with(value))


@pytest.mark.parametrize("value", ["trois", 2.5, True, [4]])
def test_next_page_that_is_not_a_number_is_an_error(value: object) -> None:
    with pytest.raises(FatalAPIError, match="not a page number"):
        OpticoPaginator(1).advance(response_with(value))


def test_follows_the_sandbox_to_the_last_page(sandbox: SandboxServer) -> None:
    paginator = OpticoPaginator()
    params: dict[str, str | int] = {
        "api_key": SANDBOX_API_KEY,
        "type": "calls",
        "start_date": "2026-03-20",
        "end_date": "2026-03-22",
        "limit": 40,
    }
    pages = 0
    while not paginator.finished:
        paginator.advance(
            requests.get(sandbox.url, params={**params, "page": paginator.current_value}, timeout=10)
        )
        pages += 1
    assert pages == 4  # 150 calls by 40


def test_windows_cover_the_range_without_overlap() -> None:
    import datetime as dt

    windows = plan_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 20), 7, ACCOUNT)
    assert [(w.start.day, w.end.day) for w in windows] == [(1, 7), (8, 14), (15, 20)]
    assert plan_windows(dt.date(2026, 1, 2), dt.date(2026, 1, 1), 7, ACCOUNT) == []
