"""Fixtures: sandboxes in this process, on free ports, stopped after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tap_optico.sandbox import SandboxServer, build_server
from tests.helpers import FIRST_DAY, LAST_DAY, CannedApi, SandboxFactory


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
