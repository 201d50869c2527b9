"""Where an account's bookmark goes: one rule, decided window by window, in window order.

A bookmark follows the days read completely: once every window of an account
up to a day has been read, its bookmark moves to that day, whether or not the
days held data (a quiet account moves on like a busy one). The value stays a
value of the replication key: the newest record of that day when there is
one, else the day itself (its start, for a date-time key). The next run
starts from the bookmark's day minus ``lookback_days``.

A window whose rows stay short of ``total_results`` after its re-reads holds
the bookmark before it, for this run and, counted in the state, for the next
ones; after :data:`HELD_RUNS` runs held at the same place the bookmark moves
past it, with a WARNING saying what was short and by how much, so that a
count the API never matches costs a bounded number of runs, not every run.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from tap_optico.settings import read_day, read_instant

#: Runs a bookmark stays before a window read short, the last of which moves it past the window.
HELD_RUNS = 3
#: With many accounts, a STATE once bookmarks moved for this share of them (each STATE holds them all).
STATE_SHARE = 4
#: ... or once this many seconds passed since the last STATE, if one moved.
STATE_SECONDS = 30.0
#: Hours whose day is remembered (the values of a page share a few hours).
DAYS_KEPT = 4096


class Days:
    """The day of a replication value in the configured time zone (``read_day``, remembered per hour).

    A value written in UTC maps to its local day all the same. An hour is
    remembered only when all of it falls on one local day (not so with an
    offset of half an hour, say), else each value is read on its own.
    """

    def __init__(self, zone: dt.tzinfo) -> None:
        self.zone = zone
        self._days: dict[str, dt.date] = {}

    def __call__(self, value: Any) -> dt.date:
        text = value if value.__class__ is str else str(value)
        hour = text[:13] + text[19:]  # the offset, or Z, stays part of it
        day = self._days.get(hour)
        if day is None:
            day = read_day(text, self.zone)
            if len(text) <= len("YYYY-MM-DD") or (
                read_day(f"{text[:13]}:00:00{text[19:]}", self.zone)
                == read_day(f"{text[:13]}:59:59{text[19:]}", self.zone)
                == day
            ):
                if len(self._days) >= DAYS_KEPT:
                    self._days.clear()
                self._days[hour] = day
        return day


def is_later(value: Any, than: Any) -> bool:
    """Whether the replication value ``value`` comes after ``than``.

    Date-times compare as instants, whatever their offsets: a bookmark written
    before ``start_date`` was in UTC carries the offset of ``timezone``, and
    is read as before. Dates compare as dates, anything else as text.
    """
    try:
        return read_instant(value) > read_instant(than)
    except (TypeError, ValueError):
        return bool(value > than)


@dataclass(frozen=True)
class Mark:
    """An account's bookmark in a run."""

    #: The replication key value (None: no bookmark yet).
    value: Any
    #: Runs, this one included once held, that a window read short has held the bookmark where it is.
    held_runs: int = 0
    #: Held in this run: no later window of the run moves it.
    held: bool = False


@dataclass(frozen=True)
class WindowRead:
    """What the bookmark rule needs of a window read in full, or given up as short."""

    label: str
    end: dt.date
    #: The newest replication value among the window's records dated inside it (None: none).
    newest: Any
    #: Rows ``total_results`` promised that no read of the window gave.
    short_by: int
    total: int | None


def after_window(
    mark: Mark, window: WindowRead, *, days: Days, day_value: Callable[[dt.date], Any]
) -> tuple[Mark, str | None]:
    """The account's mark once ``window`` (and every window before it) has been read, and a WARNING
    line to log, if any. ``day_value`` writes a day as a value of the replication key."""
    if mark.held:
        return mark, None
    warning = None
    if window.short_by:
        runs = mark.held_runs + 1
        short = (
            f"{window.label} stayed {window.short_by} row(s) short of total_results {window.total} "
            "(the API counts rows it does not return)"
        )
        if runs < HELD_RUNS:
            warning = (
                f"{short}: the bookmark stays before it and the next run reads it again "
                f"(run {runs} of {HELD_RUNS}; at run {HELD_RUNS} it moves past)"
            )
            return replace(mark, held_runs=runs, held=True), warning
        warning = f"{short} for {HELD_RUNS} runs: the bookmark moves past it; those rows are given up"
    newest = window.newest
    value = newest if newest is not None and days(newest) == window.end else day_value(window.end)
    if mark.value is None or is_later(value, mark.value):
        return Mark(value), warning
    # Not past the bookmark: it stays, and so does the count of runs held there (unless moved past).
    return replace(mark, held_runs=0 if warning else mark.held_runs), warning


class StateCadence:
    """When a moved bookmark is worth a STATE message.

    Every STATE holds the bookmark of every account, so a STATE per window
    would make STATE grow with the square of the accounts. A STATE is
    written once bookmarks moved for a quarter of the accounts (after every
    window with one account), or :data:`STATE_SECONDS` after the last if one
    moved: a run's STATE then grows with its windows, and an interrupted run
    loses at most a quarter of the accounts' progress or half a minute.
    """

    def __init__(self, accounts: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = max(1, accounts // STATE_SHARE)
        self.clock = clock
        self.moves = 0
        self.last = clock()

    def moved(self) -> bool:
        """Count a moved bookmark; True when a STATE is due now."""
        self.moves += 1
        now = self.clock()
        if self.moves < self.every and now - self.last < STATE_SECONDS:
            return False
        self.moves, self.last = 0, now
        return True
