"""Fixtures: an in-process sandbox on a free port, and the real tap executable."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tap_optico.sandbox import SANDBOX_API_KEY, SandboxServer, build_server

BIN = Path(sys.executable).parent
TAP = str(BIN / "tap-optico")
FIRST_DAY = dt.date(2026, 3, 20)
LAST_DAY = dt.date(2026, 4, 8)


@dataclass
class TapRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def records(self, stream: str) -> list[dict[str, Any]]:
        return [m["record"] for m in self.messages if m["type"] == "RECORD" and m["stream"] == stream]

    @property
    def states(self) -> list[dict[str, Any]]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def final_state(self) -> dict[str, Any]:
        return self.states[-1]


def run_tap(
    config: dict[str, Any],
    tmp_path: Path,
    *,
    state: dict[str, Any] | None = None,
    catalog: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> TapRun:
    """Run ``tap-optico`` as a user would, in a subprocess."""
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    args = [TAP, "--config", str(config_file)]
    if state is not None:
        state_file = tmp_path / "state.json"
        state_file.write_text(json.dumps(state))
        args += ["--state", str(state_file)]
    if catalog is not None:
        catalog_file = tmp_path / "catalog.json"
        catalog_file.write_text(json.dumps(catalog))
        args += ["--catalog", str(catalog_file)]
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return TapRun(proc.returncode, proc.stdout, proc.stderr)


def tap_config(server: SandboxServer, **overrides: Any) -> dict[str, Any]:
    data = server.api.data
    return {
        "api_key": SANDBOX_API_KEY,
        "api_url": server.url,
        "start_date": data.first_day.isoformat(),
        "end_date": data.last_day.isoformat(),
        "page_size": 100,
        "max_wait_seconds": 2,
        **overrides,
    }


SandboxFactory = Callable[..., SandboxServer]


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


def expected_call_count(
    server: SandboxServer, start: dt.date | None = None, end: dt.date | None = None
) -> int:
    data = server.api.data
    return sum(
        server.api.visible_count(day) for day in data.days(start or data.first_day, end or data.last_day)
    )
