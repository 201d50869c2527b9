"""Reconciling one read of a window: its pages, the rows they hand and the count the API gives.

A pure function of the pages, so that each rule is checked in one place:

- rows at the top of a page identical, in every field and in order, to the
  rows at the bottom of the page before are *edge repeats*: the same rows
  handed twice when the API's offset slipped (an off-by-one, or data that
  moved while it was paged);
- when ``total_results`` moved during the read, or is not given, every edge
  repeat is dropped (the pages are no snapshot: a row at a page break may
  have shifted onto the next page);
- when ``total_results`` stayed the same, edge repeats are dropped only as
  far as the rows exceed it (one per page in turn): rows that add up to
  ``total_results`` are all calls, identical ones included, wherever the
  page breaks fall;
- what is left is compared with ``total_results``: fewer rows make the read
  *short* (the pager reads it again, and the bookmark rule decides).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, pairwise
from typing import Any, Protocol


class PageRows(Protocol):
    """What reconciliation needs of a page: its rows and the count the API gave with them."""

    @property
    def results(self) -> Sequence[Any]: ...

    @property
    def total_results(self) -> int | None: ...


def edge_repeat(before: Sequence[Any], page: Sequence[Any]) -> int:
    """How many rows at the top of ``page`` repeat, identical and in order, the bottom of ``before``."""
    if not before or not page:
        return 0
    first = page[0]
    longest = min(len(before), len(page))
    for start in range(len(before) - longest, len(before)):
        if before[start] == first:
            size = len(before) - start
            if before[start:] == page[:size]:
                return size
    return 0


@dataclass(frozen=True)
class Reconciled:
    """The rows of one read of a window, repeats dropped, and how they compare with ``total_results``."""

    #: Each page's rows and how many at its top are dropped as repeats, in page order.
    parts: tuple[tuple[Sequence[Any], int], ...]
    #: Rows the API handed, repeats included.
    handed: int
    #: Rows dropped as edge repeats.
    repeats: int
    #: The highest ``total_results`` of the read (None when the API gave none).
    total: int | None
    #: ``total_results`` moved while the read was paged.
    changed: bool

    @property
    def kept(self) -> int:
        return self.handed - self.repeats

    @property
    def short_by(self) -> int:
        """How many rows ``total_results`` promised that the read did not give (0 when complete)."""
        return 0 if self.total is None else max(0, self.total - self.kept)

    def rows(self) -> Iterator[Any]:
        """The kept rows, in the API's order."""
        return chain.from_iterable(kept_rows(results, dropped) for results, dropped in self.parts)


def kept_rows(results: Sequence[Any], dropped: int) -> Sequence[Any]:
    """A page's rows less the ``dropped`` repeats at its top."""
    return results[dropped:] if dropped else results


def reconcile(pages: Sequence[PageRows]) -> Reconciled:
    """The rows of a read's ``pages`` (in page order), as the rules of this module say."""
    runs = [0] + [edge_repeat(a.results, b.results) for a, b in pairwise(pages)]
    handed = sum(len(page.results) for page in pages)
    totals = {page.total_results for page in pages if page.total_results is not None}
    total = max(totals, default=None)
    changed = len(totals) > 1
    candidates = sum(runs)
    to_drop = candidates if total is None or changed else min(candidates, max(0, handed - total))
    dropped = _spread(to_drop, runs)
    parts = tuple((page.results, drop) for page, drop in zip(pages, dropped, strict=True))
    return Reconciled(parts, handed, to_drop, total, changed)


def _spread(count: int, runs: list[int]) -> list[int]:
    """``count`` rows to drop from the tops of pages whose edge repeats are ``runs``: one per page
    in turn, as an offset that slipped repeats a row per page (a longer run may hold real
    identical calls)."""
    dropped = [0] * len(runs)
    while count:
        for index, run in enumerate(runs):
            if count and dropped[index] < run:
                dropped[index] += 1
                count -= 1
    return dropped
