"""Each day's delivered calls checked against Optico's own daily totals (the setting ``reconcile``):
a day both streams read completely is judged, the others (a failed account, a deselected stream, a
window cut short) are counted as not checked. Memory grows with account-days, never with calls.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, get_args

from typing_extensions import override

Mode = Literal["warn", "fail", "off"]
MODES: tuple[Mode, ...] = get_args(Mode)
#: Revenue is summed exactly in millionths, then compared in cents (half a cent rounds up).
MICROS = 1_000_000
CENT = MICROS // 100
#: Differing account-days given a WARNING each; the rest are counted.
SHOWN = 20
#: The measures compared, in the order of :data:`Figures`, each with how a figure of it is written.
MEASURES = {"calls": "{:,}", "duration": "{:,} s", "revenue": "{:,.2f}"}

#: An account and a local day (``YYYY-MM-DD``).
AccountDay = tuple[str, str]
#: A day's figures: calls, duration in seconds, revenue in millionths; None where Optico gave none.
Figures = tuple[int | None, int | None, int | None]
NOTHING: Figures = (0, 0, 0)


class Tally:
    """What one stream delivered in a run, per account-day, and the days it read completely."""

    def __init__(self) -> None:
        self.figures: dict[AccountDay, Any] = {}
        self.days_read: set[AccountDay] = set()

    def add(self, records: list[Any]) -> None:
        """Count ``records``, the typed records just handed to the target."""
        raise NotImplementedError

    def read(self, account: str, first: dt.date, last: dt.date) -> None:
        """The days ``first..last`` of ``account`` were read to their end (their records all added)."""
        days = range((last - first).days + 1)
        self.days_read.update((account, (first + dt.timedelta(days=n)).isoformat()) for n in days)

    def figures_of(self, key: AccountDay) -> Figures:
        return tuple(self.figures.get(key, NOTHING))


class CallTally(Tally):
    """Per local day (``start_date_local``): calls, duration, revenue; a call with no start is not counted."""

    @override
    def add(self, records: list[Any]) -> None:
        figures = self.figures
        for record in records:
            local = record.start_date_local
            if local is None:
                continue
            key = (record.account, local[:10])
            counts = figures.get(key)
            if counts is None:
                counts = figures[key] = [0, 0, 0]
            counts[0] += 1
            if duration := record.duration:
                counts[1] += duration
            if revenue := record.revenue:
                counts[2] += round(revenue * MICROS)


class TotalsTally(Tally):
    """Optico's daily totals: per day, the last version delivered (a day's totals grow while it lasts)."""

    @override
    def add(self, records: list[Any]) -> None:
        for record in records:
            revenue = None if record.revenue is None else round(record.revenue * MICROS)
            self.figures[record.account, record.date] = (record.calls, record.duration, revenue)


def cents(micros: int) -> int:
    return (micros + CENT // 2) // CENT


@dataclass(frozen=True)
class DayCheck:
    """One account-day judged: the calls delivered against Optico's totals."""

    account: str
    day: str
    delivered: Figures
    optico: Figures

    @property
    def differs(self) -> tuple[str, ...]:
        """The measures that do not add up (a total Optico left empty is not compared)."""
        return tuple(
            measure
            for measure, mine, theirs in zip(MEASURES, self.delivered, self.optico, strict=True)
            if theirs is not None
            and mine != theirs
            and (measure != "revenue" or cents(mine or 0) != cents(theirs))
        )


@dataclass(frozen=True)
class Reconciliation:
    """The verdict of a run: every account-day judged, and how many were read by one stream only."""

    checks: list[DayCheck]
    not_checked: int
    #: When the comparison was made (UTC, RFC 3339).
    checked_at: str

    @cached_property
    def differing(self) -> list[DayCheck]:
        return [check for check in self.checks if check.differs]

    @property
    def counts(self) -> dict[str, int]:
        """Account-days per result: match, differ, not_checked."""
        differ = len(self.differing)
        return {"match": len(self.checks) - differ, "differ": differ, "not_checked": self.not_checked}


def compare(calls: Tally | None, totals: Tally | None, checked_at: dt.datetime) -> Reconciliation:
    """The account-days both tallies read completely, each judged; the others counted as not checked.
    A day read completely with no record in it had none: its figures are zeros."""
    calls, totals = calls or CallTally(), totals or TotalsTally()
    both = calls.days_read & totals.days_read
    seen = calls.days_read | totals.days_read | calls.figures.keys() | totals.figures.keys()
    checks = [DayCheck(*key, calls.figures_of(key), totals.figures_of(key)) for key in sorted(both)]
    return Reconciliation(checks, len(seen) - len(both), checked_at.isoformat())


def summary(result: Reconciliation) -> str:
    """The run's one line."""
    counts = result.counts
    return (
        f"reconciled {len(result.checks):,} account-days against Optico's daily totals: "
        f"{counts['match']:,} match, {counts['differ']:,} differ, {counts['not_checked']:,} not checked "
        "(read completely by one stream only)"
    )


def _value(measure: str, value: int | None) -> float | None:
    """A figure as given to users: revenue in currency units, to the cent."""
    return cents(value) / 100 if measure == "revenue" and value is not None else value


def _figure(measure: str, value: int | None) -> str:
    return "none" if value is None else MEASURES[measure].format(_value(measure, value))


def warnings(result: Reconciliation) -> Iterator[str]:
    """A line per differing account-day (the first :data:`SHOWN`), both figures of each measure."""
    differing = result.differing
    for check in differing[:SHOWN]:
        figures = ", ".join(
            f"{measure} {_figure(measure, mine)} vs {_figure(measure, theirs)}"
            + (" (differs)" if measure in check.differs else "")
            for measure, mine, theirs in zip(MEASURES, check.delivered, check.optico, strict=True)
        )
        where = f"account {check.account}, {check.day}"
        yield f"reconciliation: {where} (delivered vs Optico's daily totals): {figures}"
    if len(differing) > SHOWN:
        yield (
            f"reconciliation: {len(differing) - SHOWN:,} more account-day(s) differ "
            "(the reconciliation stream holds every one)"
        )


def failure(result: Reconciliation) -> str:
    """The error line of a run with ``reconcile: fail`` whose account-days do not all add up."""
    differing = result.differing
    named = ", ".join(f"{check.account} {check.day}" for check in differing[:SHOWN])
    more = f" and {len(differing) - SHOWN:,} more" if len(differing) > SHOWN else ""
    return (
        f"{len(differing):,} account-day(s) do not add up to Optico's daily totals: {named}{more} "
        "(every record and bookmark was written; setting 'reconcile' is 'fail', 'warn' only warns)"
    )


def metric_points(result: Reconciliation) -> list[dict[str, Any]]:
    """The figures as singer-sdk METRIC points (a counter per result)."""
    return [
        {"type": "counter", "metric": "reconciled_account_days", "value": value, "tags": {"result": name}}
        for name, value in result.counts.items()
    ]


def records(result: Reconciliation) -> Iterable[dict[str, Any]]:
    """The ``reconciliation`` stream's records: one per account-day judged."""
    for check in result.checks:
        differs = check.differs
        record: dict[str, Any] = {
            "account": check.account,
            "date": check.day,
            "status": "differ" if differs else "match",
            "differs": list(differs),
            "checked_at": result.checked_at,
        }
        for measure, mine, theirs in zip(MEASURES, check.delivered, check.optico, strict=True):
            record[f"{measure}_delivered"] = _value(measure, mine)
            record[f"{measure}_optico"] = _value(measure, theirs)
        yield record
