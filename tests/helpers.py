"""What the tests share: running the real tap, configs for a sandbox, what a sandbox holds."""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import msgspec
from typing_extensions import override

from tap_optico.normalize import Conversion, Normalizer, call_id, lookalike_call_id
from tap_optico.reading import OpticoStream
from tap_optico.sandbox import SANDBOX_API_KEY, SandboxServer
from tap_optico.sandbox.data import SandboxCall
from tap_optico.settings import Account
from tap_optico.tap import TapOptico

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

    def bookmark(self, stream: str, account: str = "default") -> Any:
        """The account's bookmark of ``stream`` in the last STATE."""
        return bookmark(self.final_state, stream, account)


def run_command(
    args: Sequence[str | Path],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """A command run to its end as CI runs it: no stdin, its output captured as text, its exit
    status left to the test to judge."""
    return subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def run_tap(
    config: dict[str, Any],
    tmp_path: Path,
    *,
    state: dict[str, Any] | str | bytes | None = None,
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
        if isinstance(state, bytes):
            state_file.write_bytes(state)
        else:
            state_file.write_text(state if isinstance(state, str) else json.dumps(state))
        args += ["--state", str(state_file)]
    if catalog is not None:
        catalog_file = tmp_path / "catalog.json"
        catalog_file.write_text(json.dumps(catalog))
        args += ["--catalog", str(catalog_file)]
    proc = run_command(
        args,
        timeout=timeout,
        env={**os.environ, **(env or {})},
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


def expected_call_count(
    server: SandboxServer, start: dt.date | None = None, end: dt.date | None = None
) -> int:
    data = server.api.data
    return sum(
        server.api.visible_count(day) for day in data.days(start or data.first_day, end or data.last_day)
    )


def sandbox_call_id(call: SandboxCall) -> str:
    """The call_id the tap must give a sandbox call."""
    start_time = dt.datetime.fromisoformat(call.start_date).isoformat()
    return call_id(start_time, call.profile.tracking_number, call.caller, call.profile.phone)


def sandbox_calls_by_id(
    server: SandboxServer, start: dt.date | None = None, end: dt.date | None = None
) -> dict[str, SandboxCall]:
    """Every call the sandbox holds by the call_id the tap must give it, look-alikes keyed by their rank."""
    data = server.api.data
    calls = {}
    for day in data.days(start or data.first_day, end or data.last_day):
        ranks: Counter[str] = Counter()
        for call in server.api.visible_calls(day):
            first = sandbox_call_id(call)
            calls[lookalike_call_id(first, ranks[first]) if ranks[first] else first] = call
            ranks[first] += 1
    return calls


def sandbox_call_ids(
    server: SandboxServer, start: dt.date | None = None, end: dt.date | None = None
) -> set[str]:
    """The call_ids of every call the sandbox holds, look-alikes keyed by their rank."""
    return set(sandbox_calls_by_id(server, start, end))


def canonical_json(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


@functools.cache
def stream(name: str, timezone: str = "Europe/Paris") -> OpticoStream:
    """Stream ``name`` as the tap builds it (no request is made)."""
    tap = TapOptico(
        config={"api_key": SANDBOX_API_KEY, "start_date": "2026-01-01", "timezone": timezone},
        validate_config=False,
    )
    built = tap.streams[name]
    assert isinstance(built, OpticoStream)
    return built


def normalizer_for(
    name: str,
    timezone: str = "Europe/Paris",
    *,
    schema: dict[str, Any] | None = None,
    conversions: Mapping[str, Conversion] | None = None,
) -> Normalizer:
    """A new normaliser as stream ``name`` builds it; ``schema`` and ``conversions`` change it."""
    built = stream(name, timezone)
    return built.normalizer_class(
        schema or built.schema,
        {**built.conversions, **(conversions or {})},
        stream_name=name,
        logger=built.logger,
        timezone=built.settings.timezone,
    )


def fast_type_of(normalizer: Normalizer) -> type[msgspec.Struct]:
    """The type the normaliser's fast path decodes into, which the calls stream has."""
    assert normalizer.fast_type is not None
    return normalizer.fast_type


def send_answer(
    handler: BaseHTTPRequestHandler, data: bytes, *, status: int = 200, content_type: str = "application/json"
) -> None:
    """Answer the request ``handler`` serves with ``data``, whole and with its length: how the tests'
    small HTTP servers answer."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class CannedApi:
    """An HTTP server that answers each request with the next canned JSON body (a string: that
    text as it is; bytes as they are), with HTTP ``status`` and ``content_type``."""

    def __init__(self, bodies: list[Any], status: int = 200, content_type: str = "application/json") -> None:
        self.bodies = bodies
        self.served = 0
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = canned.bodies[min(canned.served, len(canned.bodies) - 1)]
                canned.served += 1
                data = (
                    body
                    if isinstance(body, bytes)
                    else (body if isinstance(body, str) else json.dumps(body)).encode()
                )
                send_answer(self, data, status=status, content_type=content_type)

            @override
            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data-api"
        Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def bookmark(state: dict[str, Any], stream: str, account: str = "default") -> Any:
    """The account's bookmark of ``stream`` in ``state`` (the SDK's partition format), or None."""
    partitions = state.get("bookmarks", {}).get(stream, {}).get("partitions", [])
    return next(
        (p.get("replication_key_value") for p in partitions if p.get("context") == {"account": account}), None
    )


ACCOUNT = Account(name="default", api_key=SANDBOX_API_KEY, start_date=FIRST_DAY, filters={})
