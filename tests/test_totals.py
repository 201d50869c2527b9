"""Each day's delivered calls checked against Optico's own daily totals (totals.py, setting 'reconcile').

The comparison is tested in-process as a pure function; the whole check is
tested over HTTP, the tap against the sandbox whose daily totals can be made
to disagree with its calls on chosen days.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tap_optico import totals
from tap_optico.sandbox import account_key
from tap_optico.sandbox.data import Disagreement
from tap_optico.sandbox.server import _parser
from tap_optico.totals import CallTally, TotalsTally, compare
from tests.helpers import SandboxFactory, TapRun, run_tap, tap_config
from tests.test_tap import discover

NOW = dt.datetime(2026, 4, 9, 6, 0, tzinfo=dt.timezone.utc)
D1, D2, D3 = dt.date(2026, 3, 28), dt.date(2026, 3, 29), dt.date(2026, 3, 30)


def call(day: str | None, duration: int | None = 60, revenue: float | None = 12.5, account: str = "a") -> Any:
    local = None if day is None else f"{day} 10:00:00"
    return SimpleNamespace(account=account, start_date_local=local, duration=duration, revenue=revenue)


def total(
    day: str, calls: int | None, duration: int | None, revenue: float | None, account: str = "a"
) -> Any:
    return SimpleNamespace(account=account, date=day, calls=calls, duration=duration, revenue=revenue)


def tallies(
    calls: list[Any], rows: list[Any], first: dt.date = D1, last: dt.date = D3
) -> tuple[CallTally, TotalsTally]:
    mine, theirs = CallTally(), TotalsTally()
    mine.add(calls)
    theirs.add(rows)
    for tally in (mine, theirs):
        for account in {"a", *(record.account for record in calls + rows)}:
            tally.read(account, first, last)
    return mine, theirs


def test_days_that_add_up_match_and_a_day_without_calls_matches_no_row() -> None:
    calls = [call("2026-03-28"), call("2026-03-28", 30, 0.1), call("2026-03-29", None, None)]
    rows = [total("2026-03-28", 2, 90, 12.6), total("2026-03-29", 1, 0, 0.0)]
    result = compare(*tallies(calls, rows), NOW)
    assert [(check.day, check.differs) for check in result.checks] == [
        ("2026-03-28", ()),
        ("2026-03-29", ()),
        ("2026-03-30", ()),  # read by both, no call and no row: zero against zero
    ]
    assert result.not_checked == 0
    assert totals.summary(result).startswith(
        "reconciled 3 account-days against Optico's daily totals: 3 match"
    )


@pytest.mark.parametrize(
    ("row", "differs"),
    [
        (total("2026-03-28", 3, 120, 25.0), ("calls",)),  # a call missing
        (total("2026-03-28", 2, 121, 25.0), ("duration",)),  # a second off
        (total("2026-03-28", 2, 120, 25.01), ("revenue",)),  # a cent off
        (total("2026-03-28", 2, 120, 24.99), ("revenue",)),
        (total("2026-03-28", 2, 120, 25.004), ()),  # less than half a cent: the same to the cent
        (total("2026-03-28", None, None, None), ()),  # totals Optico left empty are not compared
        (total("2026-03-28", 1, 60, 12.5), ("calls", "duration", "revenue")),
    ],
)
def test_each_kind_of_difference(row: Any, differs: tuple[str, ...]) -> None:
    calls = [call("2026-03-28", 60, 12.5), call("2026-03-28", 60, 12.5)]
    [check] = [c for c in compare(*tallies(calls, [row]), NOW).checks if c.day == "2026-03-28"]
    assert check.differs == differs


def test_revenue_is_summed_exactly_before_it_is_rounded_to_the_cent() -> None:
    """Ten calls of 0.1 are 1.00, not 0.9999999999999999; a thousand of 0.004 are 4.00."""
    calls = [call("2026-03-28", 1, 0.1)] * 10 + [call("2026-03-29", 1, 0.004)] * 1000
    rows = [total("2026-03-28", 10, 10, 1.0), total("2026-03-29", 1000, 1000, 4.0)]
    result = compare(*tallies(calls, rows, D1, D2), NOW)
    assert [check.differs for check in result.checks] == [(), ()]


def test_days_read_by_one_stream_only_are_not_judged_but_counted() -> None:
    mine, theirs = CallTally(), TotalsTally()
    mine.add([call("2026-03-28"), call("2026-03-29"), call("2026-04-02")])  # 04-02: a stray, never read whole
    theirs.add([total("2026-03-29", 1, 60, 12.5), total("2026-03-30", 5, 1, 1.0)])
    mine.read("a", D1, D2)  # calls read 28..29
    theirs.read("a", D2, D3)  # totals read 29..30
    theirs.read("b", D2, D2)  # another account read by one stream only
    result = compare(mine, theirs, NOW)
    assert [(c.account, c.day) for c in result.checks] == [("a", "2026-03-29")]
    assert result.checks[0].differs == ()
    assert result.not_checked == 4  # a 28, a 30, a 04-02, b 29
    assert compare(mine, None, NOW).not_checked == 3  # daily_calls deselected: nothing is judged
    assert compare(mine, None, NOW).checks == []


def test_the_latest_version_of_a_days_totals_is_the_one_compared() -> None:
    calls = [call("2026-03-28")] * 2
    rows = [total("2026-03-28", 1, 60, 12.5), total("2026-03-28", 2, 120, 25.0)]  # the day grew
    [check, *_] = compare(*tallies(calls, rows), NOW).checks
    assert check.differs == ()


def test_one_warning_per_differing_day_the_first_twenty_then_a_count() -> None:
    days = [dt.date(2026, 1, 1) + dt.timedelta(days=n) for n in range(25)]
    calls = [call(day.isoformat()) for day in days]
    rows = [total(day.isoformat(), 1, 61, 12.5) for day in days]
    result = compare(*tallies(calls, rows, days[0], days[-1]), NOW)
    lines = list(totals.warnings(result))
    assert len(lines) == 21
    assert lines[0] == (
        "reconciliation: account a, 2026-01-01 (delivered vs Optico's daily totals): calls 1 vs 1, "
        "duration 60 s vs 61 s (differs), revenue 12.50 vs 12.50"
    )
    assert lines[-1].startswith("reconciliation: 5 more account-day(s) differ")
    assert "a 2026-01-20 and 5 more" in totals.failure(result)
    assert [p["value"] for p in totals.metric_points(result)] == [0, 25, 0]


def test_memory_grows_with_account_days_not_calls() -> None:
    mine = CallTally()
    mine.add([call("2026-03-28", account=f"acct-{n % 3}") for n in range(10_000)])
    assert len(mine.figures) == 3
    assert mine.figures["acct-0", "2026-03-28"][0] == 3334


# Over HTTP: the tap against the sandbox, its daily totals made to disagree on chosen days.
FIRST, LAST = dt.date(2026, 3, 20), dt.date(2026, 4, 8)
DISAGREE: dict[dt.date, Disagreement] = {
    dt.date(2026, 3, 25): "missing-call",
    dt.date(2026, 3, 29): "duration",  # the spring clock change in Europe/Paris
    dt.date(2026, 4, 2): "revenue",
}


def verdicts(run: TapRun) -> dict[tuple[str, str], list[str]]:
    return {(r["account"], r["date"]): r["differs"] for r in run.records("reconciliation")}


def line(run: TapRun) -> str:
    [found] = [text for text in run.stderr.splitlines() if "reconciled " in text]
    return found.split(" | ")[-1]


@pytest.mark.parametrize("max_concurrency", [1, 4])
def test_many_accounts_each_disagreeing_day_is_found(
    make_sandbox: SandboxFactory, tmp_path: Path, max_concurrency: int
) -> None:
    server = make_sandbox(accounts=3, first_day=FIRST, last_day=LAST, calls_per_day=60, disagree=DISAGREE)
    names = [f"acct-{n}" for n in (1, 2, 3)]
    config = {
        **{k: v for k, v in tap_config(server).items() if k != "api_key"},
        "accounts": [{"name": name, "api_key": account_key(n)} for n, name in enumerate(names, 1)],
        "window_days": 3,
        "max_concurrency": max_concurrency,
    }
    run = run_tap(config, tmp_path)
    assert run.returncode == 0, run.stderr
    found = verdicts(run)
    days = (LAST - FIRST).days + 1
    assert len(found) == 3 * days
    kinds = {"missing-call": ["calls"], "duration": ["duration"], "revenue": ["revenue"]}
    expected = {(name, day.isoformat()): kinds[kind] for name in names for day, kind in DISAGREE.items()}
    assert {key: differs for key, differs in found.items() if differs} == expected
    assert line(run) == (
        f"reconciled {3 * days} account-days against Optico's daily totals: {3 * days - 9} match, 9 differ, "
        "0 not checked (read completely by one stream only)"
    )
    warnings = [text for text in run.stderr.splitlines() if "WARNING" in text and "reconciliation:" in text]
    assert len(warnings) == 9
    assert any(
        "account acct-2, 2026-03-25 (delivered vs Optico's daily totals): calls 60 vs 61 (differs)" in w
        for w in warnings
    )
    metrics = [
        json.loads(text.split("METRIC: ", 1)[1])
        for text in run.stderr.splitlines()
        if "reconciled_account_days" in text
    ]
    assert {m["tags"]["result"]: m["value"] for m in metrics} == {
        "match": 3 * days - 9,
        "differ": 9,
        "not_checked": 0,
    }
    record = next(
        r for r in run.records("reconciliation") if (r["account"], r["date"]) == ("acct-1", "2026-04-02")
    )
    assert record["status"] == "differ"
    assert round(record["revenue_optico"] - record["revenue_delivered"], 2) == 0.01
    assert record["calls_delivered"] == record["calls_optico"] == 60
    # Its bookmark is the last day checked, and no WARNING that means nothing comes with it on every
    # run (the SDK's note that the stream's records are not in bookmark order: only at DEBUG).
    assert "unsorted" not in run.stderr
    assert run.final_state["bookmarks"]["reconciliation"]["replication_key_value"] == LAST.isoformat()


def test_lookalikes_and_twins_count_and_the_autumn_clock_change_days_are_local(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    """Calls count in their local day: around the autumn change (2026-10-25 in Europe/Paris) and far
    from UTC (Pacific/Auckland), days match; twins (identical calls) count each."""
    first, last = dt.date(2026, 10, 23), dt.date(2026, 10, 27)
    server = make_sandbox(first_day=first, last_day=last, calls_per_day=48, lookalikes=3)
    for zone in ("Europe/Paris", "Pacific/Auckland"):
        run = run_tap(tap_config(server, timezone=zone), tmp_path)
        assert run.returncode == 0, run.stderr
        records = run.records("reconciliation")
        assert len(records) == 5
        assert all(r["status"] == "match" and r["calls_delivered"] == 48 for r in records), records


def test_fail_delivers_everything_then_exits_non_zero_naming_the_days(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    server = make_sandbox(first_day=FIRST, last_day=LAST, calls_per_day=30, disagree=DISAGREE)
    warned = run_tap(tap_config(server), tmp_path)
    failed = run_tap(tap_config(server, reconcile="fail"), tmp_path)
    assert warned.returncode == 0, warned.stderr
    assert failed.returncode == 1
    for stream in ("calls", "daily_calls", "reconciliation"):
        assert len(failed.records(stream)) == len(warned.records(stream)) > 0
    assert failed.final_state["bookmarks"]["calls"] == warned.final_state["bookmarks"]["calls"]
    assert failed.final_state["bookmarks"]["daily_calls"] == warned.final_state["bookmarks"]["daily_calls"]
    [error] = [text for text in failed.stderr.splitlines() if "ERROR" in text]
    assert (
        "3 account-day(s) do not add up to Optico's daily totals: "
        "default 2026-03-25, default 2026-03-29, default 2026-04-02" in error
    )
    assert "Traceback" not in failed.stderr


def test_fail_with_days_that_add_up_exits_zero(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    run = run_tap(tap_config(make_sandbox(calls_per_day=20), reconcile="fail"), tmp_path)
    assert run.returncode == 0, run.stderr
    assert all(r["status"] == "match" for r in run.records("reconciliation"))


def test_off_checks_nothing(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    run = run_tap(tap_config(make_sandbox(calls_per_day=20, disagree=DISAGREE), reconcile="off"), tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.records("reconciliation") == []
    assert "reconciled " not in run.stderr
    assert "Reconciliation with Optico's daily totals is off (setting 'reconcile')" in run.stderr


def test_a_deselected_stream_leaves_every_day_not_checked(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    server = make_sandbox(calls_per_day=20, disagree=DISAGREE)
    config = tap_config(server)
    catalog = discover(config, tmp_path)
    for entry in catalog["streams"]:
        for metadata in entry["metadata"]:
            if entry["tap_stream_id"] == "daily_calls" and metadata["breadcrumb"] == []:
                metadata["metadata"]["selected"] = False
    run = run_tap(config, tmp_path, catalog=catalog)
    assert run.returncode == 0, run.stderr
    assert run.records("reconciliation") == []
    days = (server.api.data.last_day - server.api.data.first_day).days + 1
    assert line(run).startswith(
        f"reconciled 0 account-days against Optico's daily totals: 0 match, 0 differ, {days} not checked"
    )


def test_a_wrong_setting_is_one_line(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    run = run_tap(tap_config(make_sandbox(calls_per_day=10), reconcile="strict"), tmp_path)
    assert run.returncode == 1
    assert "Setting 'reconcile' must be one of warn, fail, off, got 'strict'" in run.stderr


def test_the_sandbox_flag_is_off_by_default_and_read_from_the_command_line() -> None:
    assert _parser().parse_args([]).disagree == []
    args = _parser().parse_args(["--disagree", "2026-03-29=revenue", "--disagree", "2026-03-30=missing-call"])
    assert dict(args.disagree) == {D2: "revenue", D3: "missing-call"}
    with pytest.raises(SystemExit):
        _parser().parse_args(["--disagree", "2026-03-29=cents"])


def test_a_run_whose_bookmarks_stay_where_they_were_still_writes_its_verdicts(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    """Each run's verdict replaces the last: a run that reads the last days again, its bookmarks
    staying where they were (so no STATE differs from the one it was given), writes its records."""
    server = make_sandbox(first_day=FIRST, last_day=LAST, calls_per_day=30, disagree=DISAGREE)
    config = tap_config(server, lookback_days=7)
    first = run_tap(config, tmp_path)
    again = run_tap(config, tmp_path, state=first.final_state)
    assert again.returncode == 0, again.stderr
    assert again.final_state == first.final_state
    assert line(again).startswith(
        "reconciled 8 account-days against Optico's daily totals: 7 match, 1 differ"
    )
    found = verdicts(again)
    assert len(found) == 8
    assert found["default", "2026-04-02"] == ["revenue"]
