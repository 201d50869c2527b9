"""Limits the Optico Data API documents."""

from __future__ import annotations

MIN_PAGE_SIZE = 10
MAX_PAGE_SIZE = 5_000
