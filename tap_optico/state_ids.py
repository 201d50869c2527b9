"""Meltano's state ids, written once: for the tap's hints and for the orchestration code."""

from __future__ import annotations


def meltano_state_id(environment: str | None, extractor: str, loader: str, *suffixes: str) -> str:
    """The state id of ``meltano run <extractor> <loader>`` in ``environment``, with ``suffixes``
    after it as ``--state-id-suffix`` adds them (a group, a backfill range)."""
    job = f"{extractor}-to-{loader}"
    return ":".join((f"{environment}:{job}" if environment else job, *suffixes))
