"""Fixtures: sandboxes in this process, on free ports, stopped after each test; the `quick` mark."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tap_optico.sandbox import SandboxServer, build_server
from tests.helpers import FIRST_DAY, LAST_DAY, CannedApi, SandboxFactory

#: The test files that run everything in this process (no tap, Meltano, Dagster or database
#: started as a process): `make test-quick` (`pytest -m quick`) runs them, in under a minute.
QUICK = frozenset(
    {
        "test_deadline.py",
        "test_fast_path.py",
        "test_fields.py",
        "test_normalize.py",
        "test_orchestrate.py",
        "test_paging.py",
        "test_reading_core.py",
        "test_sdk_contract.py",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in QUICK:
            item.add_marker(pytest.mark.quick)


@pytest.fixture
def make_sandbox() -> Iterator[SandboxFactory]:
    """Start sandboxes (in this process, on free ports); all are stopped after the test."""
    servers: list[SandboxServer] = []

    def make(**options: Any) -> SandboxServer:
        options.setdefault("first_day", FIRST_DAY)
        options.setdefault("last_day", LAST_DAY)
        options.setdefault("calls_per_day", 50)
        server = build_server(**options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def sandbox(make_sandbox: SandboxFactory) -> SandboxServer:
    return make_sandbox()


@pytest.fixture
def canned() -> Iterator[Callable[..., CannedApi]]:
    """Start canned APIs (each answers request N with body N, then the last body again)."""
    servers: list[CannedApi] = []

    def make(bodies: list[Any], status: int = 200, content_type: str = "application/json") -> CannedApi:
        servers.append(CannedApi(bodies, status, content_type))
        return servers[-1]

    yield make
    for server in servers:
        server.close()
