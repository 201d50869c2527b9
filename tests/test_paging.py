"""Where paging stops: next_page's last-page forms and no-progress cases, also on a real sandbox."""

from __future__ import annotations

import pytest
import requests
from singer_sdk.exceptions import FatalAPIError

from tap_optico.client import read_next_page
from tap_optico.reading import plan_windows
from tap_optico.sandbox import SANDBOX_API_KEY, SandboxServer
from tests.helpers import ACCOUNT


@pytest.mark.parametrize("last", [None, 0, "", "0"])
def test_stops_on_every_last_page_form(last: object) -> None:
    assert read_next_page(last) is None


@pytest.mark.parametrize("value", [2, "2", 2.0])
def test_follows_next_page(value: object) -> None:
    assert read_next_page(value) == 2


@pytest.mark.parametrize("value", ["trois", 2.5, True, [4], "²"])
def test_next_page_that_is_not_a_number_is_an_error(value: object) -> None:
    with pytest.raises(FatalAPIError, match="not a page number"):
        read_next_page(value)


def test_follows_the_sandbox_to_the_last_page(sandbox: SandboxServer) -> None:
    params: dict[str, str | int] = {
        "api_key": SANDBOX_API_KEY,
        "type": "calls",
        "start_date": "2026-03-20",
        "end_date": "2026-03-22",
        "limit": 40,
    }
    page: int | None = 1
    pages = 0
    while page is not None:
        response = requests.get(sandbox.url, params={**params, "page": page}, timeout=10)
        page = read_next_page(response.json().get("next_page"))
        pages += 1
    assert pages == 4  # 150 calls by 40


@pytest.mark.parametrize("body", [{}, {"next_page": None}, {"next_page": ""}, {"next_page": 0}])
def test_the_last_page_is_found_in_every_form_of_body(body: dict[str, object]) -> None:
    assert read_next_page(body.get("next_page")) is None


def test_windows_cover_the_range_without_overlap() -> None:
    import datetime as dt

    windows = plan_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 20), 7, ACCOUNT)
    assert [(w.start.day, w.end.day) for w in windows] == [(1, 7), (8, 14), (15, 20)]
    assert plan_windows(dt.date(2026, 1, 2), dt.date(2026, 1, 1), 7, ACCOUNT) == []
