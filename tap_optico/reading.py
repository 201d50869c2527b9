"""Reading a date range: which windows to read, and the records of their pages.

:class:`WindowReader` is the one owner of what a read has seen: it drops the
records a window already gave and tracks each window's newest record, which
becomes the bookmark once the pager reports the window (and every window
before it) complete.
"""

from __future__ import annotations

import datetime as dt
import logging
import operator
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

from tap_optico.normalize import Normalizer
from tap_optico.paging import Page, Window, WindowPager
from tap_optico.secrets import shorten
from tap_optico.settings import Settings

#: Reads of one window whose records fall short of its total_results, before moving on.
MAX_WINDOW_READS = 3


def plan_windows(start: dt.date, end: dt.date, days: int) -> list[Window]:
    """``[start, end]`` cut into windows of ``days`` days."""
    windows: list[Window] = []
    while start <= end:
        stop = min(end, start + dt.timedelta(days=days - 1))
        windows.append(Window(index=len(windows), start=start, end=stop))
        start = stop + dt.timedelta(days=1)
    return windows


def plan(settings: Settings, bookmark: Any) -> list[Window]:
    """The windows from ``start_date`` (or the bookmark minus ``lookback_days``) to the last day."""
    start = settings.start_date
    if bookmark:
        lookback = dt.timedelta(days=settings.lookback_days)
        start = max(start, dt.date.fromisoformat(str(bookmark)[:10]) - lookback)
    return plan_windows(start, settings.last_day, settings.window_days)


@dataclass(frozen=True)
class Checkpoint:
    """Every window up to ``window`` is read: the bookmark may move to ``bookmark``."""

    window: Window
    bookmark: Any


class WindowReader:
    """Records from pages: normalised, each distinct one once, bookmarks per window."""

    def __init__(
        self,
        normalize: Normalizer,
        *,
        identity_fields: tuple[str, ...],
        replication_key: str,
        logger: logging.Logger,
    ) -> None:
        self.normalize = normalize
        self.identity = operator.itemgetter(*identity_fields)
        self.replication_key = replication_key
        self.logger = logger
        self._seen: dict[int, set[Hashable]] = {}
        self._newest: dict[int, Any] = {}

    def distinct(self, window: Window) -> int:
        """How many distinct records ``window`` has given so far."""
        return len(self._seen.get(window.index, ()))

    def read(self, pager: WindowPager, windows: list[Window]) -> Iterator[dict[str, Any] | Checkpoint]:
        """Every distinct record of ``windows``, and a :class:`Checkpoint` after each complete window."""
        name = self.normalize.stream_name
        if windows:
            self.logger.info(
                "%s: reading %s..%s in %d window(s)", name, windows[0].start, windows[-1].end, len(windows)
            )
        for item in pager.read(windows):
            if isinstance(item, Window):
                self._seen.pop(item.index, None)
                yield Checkpoint(item, self._newest.pop(item.index, None))
            else:
                yield from self._records(item)
        self.normalize.log_summary()

    def _records(self, page: Page) -> Iterator[dict[str, Any]]:
        index = page.window.index
        seen = self._seen.setdefault(index, set())
        newest = self._newest.get(index)
        normalize, identity, replication_key = self.normalize, self.identity, self.replication_key
        try:
            for raw in page.results:
                if not normalize.accepts(raw):
                    self.logger.error(
                        "%s: skipped a result that is not a JSON object: %s",
                        normalize.stream_name,
                        shorten(repr(raw), 80),
                    )
                    continue
                record = normalize(raw)
                key = identity(record)
                if key in seen:
                    continue
                seen.add(key)
                value = record[replication_key]
                if value is not None and (newest is None or value > newest):
                    newest = value
                yield record
        finally:
            self._newest[index] = newest
