"""Where an account's bookmark goes: one rule, decided window by window, in window order.

A bookmark follows the days read completely, held data or not: the newest record of the last such
day, else the day itself. A window whose ``total_results`` moved in every read holds it before the
window for the rest of the run; one read through every page the API offers moves it even if short.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tap_optico.settings import read_day, read_instant

#: A STATE once bookmarks moved for 1/STATE_SHARE of the accounts, or STATE_SECONDS after the last.
STATE_SHARE = 4
STATE_SECONDS = 30.0
#: Hours whose day is remembered (the values of a page share a few hours).
DAYS_KEPT = 4096


class Days:
    """The day of a replication value in the configured time zone (``read_day``), remembered per hour
    when all of the hour falls on one local day (not so with an offset of half an hour, say)."""

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
    """Whether the replication value ``value`` comes after ``than``: date-times as instants, whatever
    their offsets (a bookmark written before instants were in UTC has the offset of ``timezone``),
    dates as dates, anything else as text."""
    try:
        return read_instant(value) > read_instant(than)
    except (TypeError, ValueError):
        return bool(value > than)


@dataclass(frozen=True)
class Mark:
    """An account's bookmark in a run."""

    #: The replication key value (None: no bookmark yet).
    value: Any
    #: Pinned before a window in this run: no later window of the run moves it.
    pinned: bool = False


@dataclass(frozen=True)
class WindowRead:
    """What the bookmark rule needs of a window read to its end."""

    end: dt.date
    #: The newest replication value among the window's records dated inside it (None: none).
    newest: Any
    #: The window's rows could not be settled: the bookmark stays before it.
    unsettled: bool = False


def after_window(mark: Mark, window: WindowRead, *, days: Days, day_value: Callable[[dt.date], Any]) -> Mark:
    """The account's mark once ``window`` (and every window before it) has been read.
    ``day_value`` writes a day as a value of the replication key."""
    if mark.pinned or window.unsettled:
        return Mark(mark.value, pinned=True)
    newest = window.newest
    value = newest if newest is not None and days(newest) == window.end else day_value(window.end)
    return Mark(value) if mark.value is None or is_later(value, mark.value) else mark


class StateCadence:
    """When a moved bookmark is worth a STATE: each holds every account's bookmark, so one per window
    grows with the square of the accounts; a stopped run loses a quarter of them or half a minute at most."""

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
