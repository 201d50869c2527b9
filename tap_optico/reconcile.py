"""Reconciling one read of a window: its pages, the rows they hand and the count the API gives.

- Rows are compared as decoded (:func:`row_key`), whatever page and formatting they come in.
- Rows at the top of a page identical, in order, to the bottom of the page before are *edge
  repeats*: the API's offset slipped. While ``total_results`` stays the same, they are dropped only
  as far as the rows exceed it (rows that add up to it are all calls, identical ones included);
  without ``total_results``, all are dropped.
- When ``total_results`` moved during the read, the pages are no snapshot: a row identical to a row
  of an earlier page is a repeat, wherever it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from tap_optico.paging import Page


def row_key(row: Any) -> bytes:
    """A row as bytes to hash (rows are compared as decoded)."""
    return msgspec.json.encode(row)


def unseen(rows: Sequence[Any], seen: set[bytes]) -> list[Any]:
    """The ``rows`` that no row of ``seen`` (keys) is identical to; ``seen`` then holds theirs too."""
    keys = [row_key(row) for row in rows]
    kept = [row for row, key in zip(rows, keys, strict=True) if key not in seen]
    seen.update(keys)
    return kept


def edge_repeat(before: Sequence[Any], page: Sequence[Any]) -> int:
    """How many rows at the top of ``page`` repeat, identical and in order, the bottom of ``before``."""
    longest = min(len(before), len(page))
    sizes = (n for n in range(longest, 0, -1) if before[-n] == page[0])
    return next((n for n in sizes if list(before[-n:]) == list(page[:n])), 0)


@dataclass(frozen=True)
class Reconciled:
    """The rows of one read of a window, repeats dropped, and how they compare with ``total_results``."""

    #: Each page's kept rows, in page order (none once handed over: the figures stay).
    parts: tuple[Sequence[Any], ...]
    #: Rows the API handed, repeats included.
    handed: int
    #: Rows dropped as repeats.
    repeats: int
    #: The highest ``total_results`` of the read (None when the API gave none).
    total: int | None

    @property
    def kept(self) -> int:
        return self.handed - self.repeats

    @property
    def short_by(self) -> int:
        """How many rows ``total_results`` promised that the read did not give (0 when complete)."""
        return 0 if self.total is None else max(0, self.total - self.kept)

    @property
    def beyond(self) -> int:
        """How many rows the read gave beyond ``total_results``."""
        return 0 if self.total is None else max(0, self.kept - self.total)


def reconcile(pages: Sequence[Page]) -> Reconciled:
    """The rows of a read's ``pages`` (in page order), as the rules of this module say."""
    handed = sum(len(page.results) for page in pages)
    totals = {page.total_results for page in pages if page.total_results is not None}
    total = max(totals, default=None)
    if len(totals) > 1:  # no snapshot: a row an earlier page gave is a repeat
        seen: set[bytes] = set()
        kept = tuple(unseen(page.results, seen) for page in pages)
        return Reconciled(kept, handed, handed - sum(map(len, kept)), total)
    runs = [0] + [edge_repeat(a.results, b.results) for a, b in pairwise(pages)]
    candidates = sum(runs)
    to_drop = candidates if total is None else min(candidates, max(0, handed - total))
    dropped = _spread(to_drop, runs)
    parts = [page.results[drop:] if drop else page.results for page, drop in zip(pages, dropped, strict=True)]
    return Reconciled(tuple(parts), handed, to_drop, total)


def _spread(count: int, runs: list[int]) -> list[int]:
    """``count`` rows to drop from the tops of pages whose edge repeats are ``runs``: one per page in
    turn, as a slipped offset repeats a row per page (a longer run may hold real identical calls)."""
    dropped = [0] * len(runs)
    while count:
        for index, run in enumerate(runs):
            if count and dropped[index] < run:
                dropped[index] += 1
                count -= 1
    return dropped
