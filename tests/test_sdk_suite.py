"""singer-sdk's built-in tap tests, run against a sandbox over HTTP."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from singer_sdk.testing import get_tap_test_class

from tap_optico.sandbox import SANDBOX_API_KEY, build_server
from tap_optico.tap import TapOptico

# The suite takes its config when the class is built, so this sandbox starts
# at import; the module fixture below stops it.
SERVER = build_server(
    calls_per_day=30,
    first_day=dt.date(2026, 5, 1),
    last_day=dt.date(2026, 5, 10),
    style="mixed",
).start()

_SdkSuite = get_tap_test_class(
    TapOptico,
    config={
        "api_key": SANDBOX_API_KEY,
        "api_url": SERVER.url,
        "start_date": "2026-05-01",
        "end_date": "2026-05-10",
        "page_size": 50,
        # The suite's dry run stops each stream at 150 records: windows of two days (60 calls) are
        # read whole before that, so their days are reconciled (a window cut short is not).
        "window_days": 2,
    },
)


@pytest.fixture(scope="module", autouse=True)
def _stop_sandbox() -> Iterator[None]:
    yield
    SERVER.stop()


# extra_fields is left out of a record unless the API sent an unlisted field (so that targets
# store SQL NULL), and the sandbox sends none in daily rows.
@pytest.mark.filterwarnings(
    r"ignore:Fields in transformed catalog but not in records. \(\{'extra_fields'\}\)$:UserWarning"
)
class TestTapOptico(_SdkSuite):  # type: ignore[misc,valid-type]
    """The SDK's standard checks: discovery, sync, schema conformance, keys."""
