"""Upgrading to UTC instants: a state written with local offsets is read as before.

Releases before start_date was written in UTC wrote it, and so the calls
bookmark, with the offset of ``timezone`` (``2026-04-06T23:52:10+02:00``). A run
from such a state must read the same days as the old release would have: no
day skipped, none read again beyond ``lookback_days``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tap_optico.bookmarks import is_later
from tap_optico.sandbox import SandboxServer
from tap_optico.settings import read_day
from tests.helpers import SandboxFactory, run_tap, sandbox_call_ids, tap_config


def last_call(server: SandboxServer, day: dt.date) -> dt.datetime:
    """The naive local time of the day's last call, as the API sends it."""
    return max(dt.datetime.fromisoformat(call.start_date) for call in server.api.data.calls_of_day(day))


def old_state(calls_bookmark: str, daily_bookmark: str) -> dict[str, object]:
    """A state as the previous release wrote it (one account, the SDK's partition format)."""
    partition = {"context": {"account": "default"}}
    return {
        "bookmarks": {
            "calls": {
                "partitions": [
                    {**partition, "replication_key": "start_date", "replication_key_value": calls_bookmark}
                ]
            },
            "daily_calls": {
                "partitions": [
                    {**partition, "replication_key": "date", "replication_key_value": daily_bookmark}
                ]
            },
        }
    }


def local_days(records: list[dict[str, object]]) -> set[str]:
    return {str(record["start_date_local"])[:10] for record in records}


# New York: a call late in the evening is on the next day in UTC, so a day read off the UTC
# text would be wrong there.
@pytest.mark.parametrize("timezone", ["Europe/Paris", "America/New_York"])
def test_a_state_with_local_offsets_skips_nothing_and_reads_nothing_again(
    make_sandbox: SandboxFactory, tmp_path: Path, timezone: str
) -> None:
    zone = ZoneInfo(timezone)
    server = make_sandbox(last_day=dt.date(2026, 4, 8))
    # The old release read up to 2026-04-06: its bookmark is that day's last call, with its offset.
    bookmarked = last_call(server, dt.date(2026, 4, 6)).replace(tzinfo=zone)
    state = old_state(bookmarked.isoformat(), "2026-04-06")
    run = run_tap(tap_config(server, timezone=timezone), tmp_path, state=state)
    assert run.returncode == 0, run.stderr
    # As before: from the bookmark's day minus lookback_days (1), to the last day.
    assert {request.params["start_date"] for request in server.requests} == {"2026-04-05"}
    calls = run.records("calls")
    assert local_days(calls) == {"2026-04-05", "2026-04-06", "2026-04-07", "2026-04-08"}
    ids = [record["call_id"] for record in calls]
    assert len(ids) == len(set(ids))
    assert set(ids) == sandbox_call_ids(server, dt.date(2026, 4, 5), dt.date(2026, 4, 8))
    # Each call is on its local day: a call just after midnight is no stray, its UTC day apart.
    assert "outside the days requested" not in run.stderr
    # The new bookmark stands for the last day read, in the time zone (written in UTC).
    assert read_day(run.bookmark("calls"), zone) == dt.date(2026, 4, 8)
    assert run.bookmark("daily_calls") == "2026-04-08"

    # The next day, from the state in UTC: from the last day read minus lookback_days, as before.
    tomorrow = make_sandbox(last_day=dt.date(2026, 4, 9))
    again = run_tap(tap_config(tomorrow, timezone=timezone), tmp_path, state=run.final_state)
    assert again.returncode == 0, again.stderr
    assert {request.params["start_date"] for request in tomorrow.requests} == {"2026-04-07"}
    assert local_days(again.records("calls")) == {"2026-04-07", "2026-04-08", "2026-04-09"}
    assert {r["call_id"] for r in again.records("calls")} == sandbox_call_ids(
        tomorrow, dt.date(2026, 4, 7), dt.date(2026, 4, 9)
    )


def test_a_bookmark_kept_in_the_old_form_moves_on_the_instant_not_the_text(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    """A later call whose UTC text sorts before the old bookmark's text still moves the bookmark."""
    server = make_sandbox(first_day=dt.date(2026, 4, 8), last_day=dt.date(2026, 4, 8))
    last = last_call(server, dt.date(2026, 4, 8))
    # Ten minutes before the last call: "…T23:4x+02:00" sorts after "…T21:5x+00:00" as text.
    earlier = (last - dt.timedelta(minutes=10)).replace(tzinfo=ZoneInfo("Europe/Paris"))
    run = run_tap(
        tap_config(server, lookback_days=0), tmp_path, state=old_state(earlier.isoformat(), "2026-04-08")
    )
    assert run.returncode == 0, run.stderr
    assert is_later(run.bookmark("calls"), earlier.isoformat())
