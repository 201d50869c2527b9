"""A local HTTP server that behaves as the Optico Data API.

Run ``tap-optico-sandbox --port 8765`` and point the tap's ``api_url`` at the
URL it prints, with the sandbox key ``45ebcbe224c4bbb8d1882654b33b9823``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import gzip
import itertools
import json
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlsplit

from typing_extensions import override

from tap_optico.sandbox.api import (
    CONTROL_CHARS,
    MISBEHAVIOURS,
    SANDBOX_API_KEY,
    Misbehaviour,
    MisbehaviourKind,
    Order,
    SandboxApi,
    account_key,
)
from tap_optico.sandbox.data import DISAGREEMENTS, RAW_STYLES, Disagreement, RawStyle, SandboxData

FaultKind = Literal["429", "500", "503", "timeout", "truncated", "html"]
FAULT_KINDS: tuple[FaultKind, ...] = ("429", "500", "503", "timeout", "truncated", "html")
DEFAULT_SPAN_DAYS = 90
TRICKLE_PIECES_PER_SECOND = 4
#: The size of a piece of an answer sent chunked (the "chunked" misbehaviour).
CHUNK_BYTES = 8 << 10
HTML_ERROR_PAGE = (
    b"<!DOCTYPE html><html><head><title>Erreur</title></head>"
    b"<body><h1>Service momentan\xc3\xa9ment indisponible</h1></body></html>"
)


@dataclass
class Faults:
    """Faults to inject: every ``every``-th request fails with the next kind in turn.

    Requests up to ``start_after`` are served normally (a server that breaks
    mid-run). ``stall_seconds`` is how long a "timeout" fault holds the answer
    back. ``latency`` is added to every request.
    """

    every: int = 0
    start_after: int = 0
    kinds: Sequence[FaultKind] = FAULT_KINDS
    latency: float = 0.0
    retry_after: int = 1
    stall_seconds: float = 3.0

    def kind_for(self, request_number: int) -> FaultKind | None:
        number = request_number - self.start_after
        if self.every <= 0 or number <= 0 or number % self.every or not self.kinds:
            return None
        return self.kinds[(number // self.every - 1) % len(self.kinds)]


@dataclass(frozen=True)
class RecordedRequest:
    number: int
    path: str
    params: dict[str, str]
    fault: FaultKind | None
    received_at: float = field(default_factory=time.monotonic)


@dataclass
class SandboxServer:
    """The sandbox HTTP server; a context manager that serves from a thread."""

    api: SandboxApi
    host: str = "127.0.0.1"
    port: int = 0
    faults: Faults = field(default_factory=Faults)
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._httpd = _QuietServer((self.host, self.port), _handler_for(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/data-api"

    def next_request(self, path: str, params: dict[str, str]) -> RecordedRequest:
        with self._lock:
            number = next(self._counter)
            request = RecordedRequest(number, path, params, self.faults.kind_for(number))
            self.requests.append(request)
        return request

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.1)

    def start(self) -> SandboxServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.server_close()

    def stop(self) -> None:
        self._httpd.shutdown()
        self.close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    """A client that goes away mid-request (a tap that was stopped) is no error of the sandbox."""

    @override
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(server: SandboxServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "OpticoSandbox/1"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            request = server.next_request(url.path, params)
            if server.faults.latency:
                time.sleep(server.faults.latency)
            if url.path.rstrip("/") != "/data-api":
                self._send(HTTPStatus.NOT_FOUND, "text/html", HTML_ERROR_PAGE)
                return
            misbehaves = server.api.misbehaves
            if misbehaves("http10", params):
                self.protocol_version = "HTTP/1.0"
                self.close_connection = True
            self.close_connection |= misbehaves("connection-close", params)
            if misbehaves("redirect", params) and "redirected" not in params:
                moved = f"{url.path}?{url.query}&redirected=1"
                self._send(HTTPStatus.TEMPORARY_REDIRECT, "text/plain", b"", {"Location": moved})
            elif misbehaves("control-chars", params) and "group_by_day" in params:
                self._send(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    f"text/html{CONTROL_CHARS}",
                    f"<h1>Erreur{CONTROL_CHARS}</h1>".encode(),
                    reason=f"Erreur{CONTROL_CHARS}",
                )
            elif request.fault is None:
                body = server.api.answer(params)
                if misbehaves("gzip", params) and "gzip" in self.headers.get("Accept-Encoding", ""):
                    body, encoded = gzip.compress(body), {"Content-Encoding": "gzip"}
                else:
                    encoded = {}
                self._send(
                    HTTPStatus.OK,
                    "application/json",
                    body,
                    encoded,
                    trickle=misbehaves("trickle", params),
                    chunked=misbehaves("chunked", params) and self.protocol_version == "HTTP/1.1",
                )
            else:
                self._inject(request.fault, params)

        def _inject(self, fault: FaultKind, params: dict[str, str]) -> None:
            if fault == "429":
                headers = {"Retry-After": str(server.faults.retry_after)}
                self._send(HTTPStatus.TOO_MANY_REQUESTS, "text/plain", b"Too Many Requests", headers)
            elif fault in ("500", "503"):
                self._send(HTTPStatus(int(fault)), "text/html", HTML_ERROR_PAGE)
            elif fault == "html":
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", HTML_ERROR_PAGE)
            elif fault == "truncated":
                body = server.api.answer(params)
                self._send(HTTPStatus.OK, "application/json", body[: max(1, len(body) // 2)])
            else:  # timeout: hold the answer back, then drop the connection
                time.sleep(server.faults.stall_seconds)
                self.close_connection = True

        def _send(
            self,
            status: HTTPStatus,
            content_type: str,
            body: bytes,
            headers: dict[str, str] | None = None,
            *,
            trickle: bool = False,
            chunked: bool = False,
            reason: str | None = None,
        ) -> None:
            fields = {"Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})}
            if self.close_connection:
                fields["Connection"] = "close"
            if chunked:
                del fields["Content-Length"]
                fields["Transfer-Encoding"] = "chunked"
                pieces = (body[start : start + CHUNK_BYTES] for start in range(0, len(body), CHUNK_BYTES))
                body = b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
            try:
                if not trickle:
                    self.send_response(status, reason)
                    for name, value in fields.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                    return
                # The whole answer, status line and headers included, a few bytes at a time, each
                # piece flushed: the answer never stalls, it crawls.
                head = f"{self.protocol_version} {status.value} {status.phrase}\r\n" + "".join(
                    f"{name}: {value}\r\n" for name, value in fields.items()
                )
                answer = (head + "\r\n").encode("latin-1") + body
                piece = max(
                    1, round(server.api.misbehaviour.trickle_bytes_per_second / TRICKLE_PIECES_PER_SECOND)
                )
                for start in range(0, len(answer), piece):
                    self.wfile.write(answer[start : start + piece])
                    self.wfile.flush()
                    time.sleep(1 / TRICKLE_PIECES_PER_SECOND)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        @override
        def log_message(self, format: str, *args: Any) -> None:
            """Silent: request lines carry the API key."""

    return Handler


def build_server(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 42,
    calls_per_day: int = 200,
    first_day: dt.date | None = None,
    last_day: dt.date | None = None,
    style: RawStyle = "strings",
    lookalikes: int = 0,
    order: Order = "asc",
    live_step: int = 0,
    api_key: str = SANDBOX_API_KEY,
    accounts: int = 1,
    faults: Faults | None = None,
    misbehaviour: Misbehaviour | None = None,
    disagree: Mapping[dt.date, Disagreement] | None = None,
) -> SandboxServer:
    """A sandbox with data from ``first_day`` (default: 89 days ago) to ``last_day`` (today).

    Account 1 answers to ``api_key``, account n > 1 to ``account_key(n)``; each has calls of its own.
    On the days ``disagree`` lists, every account's daily totals disagree with its calls as it says.
    """
    last_day = last_day or dt.date.today()
    first_day = first_day or last_day - dt.timedelta(days=DEFAULT_SPAN_DAYS - 1)
    datasets = {
        (api_key if number == 1 else account_key(number)): SandboxData(
            seed=seed + number - 1,
            calls_per_day=calls_per_day,
            first_day=first_day,
            last_day=last_day,
            style=style,
            lookalikes=lookalikes,
            disagree=disagree,
        )
        for number in range(1, accounts + 1)
    }
    api = SandboxApi(datasets, order=order, live_step=live_step, misbehaviour=misbehaviour)
    return SandboxServer(api=api, host=host, port=port, faults=faults or Faults())


def _group(text: str) -> tuple[int, int]:
    """``K/N``: group K of N, from 1."""
    try:
        group, groups = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected K/N, such as 1/4") from None
    if not 1 <= group <= groups:
        raise argparse.ArgumentTypeError(f"{text!r}: K must be from 1 to N")
    return group, groups


def _disagreement(text: str) -> tuple[dt.date, Disagreement]:
    """``DAY=KIND``: a day whose daily totals disagree with its calls."""
    day, _, kind = text.partition("=")
    try:
        when = dt.date.fromisoformat(day)
    except ValueError:
        when = None
    if when is None or kind not in DISAGREEMENTS:
        msg = f"{text!r}: expected DAY=KIND, such as 2026-03-29=revenue (KIND: {', '.join(DISAGREEMENTS)})"
        raise argparse.ArgumentTypeError(msg)
    return when, kind


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tap-optico-sandbox",
        description="Serve a local Optico Data API with deterministic synthetic calls.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--calls-per-day", type=int, default=200)
    parser.add_argument("--first-day", type=dt.date.fromisoformat, help="default: 89 days ago")
    parser.add_argument("--last-day", type=dt.date.fromisoformat, help="default: today")
    parser.add_argument("--style", choices=RAW_STYLES, default="strings")
    parser.add_argument(
        "--lookalikes",
        type=int,
        default=0,
        help="after every 10th call, this many distinct calls that share its second, caller and numbers",
    )
    parser.add_argument("--order", choices=("asc", "desc"), default="asc")
    parser.add_argument("--live-step", type=int, default=0, help="calls added to the last day per request")
    parser.add_argument("--api-key", default=SANDBOX_API_KEY, help="the key of account 1")
    parser.add_argument(
        "--accounts", type=int, default=1, help="accounts served, each with a key and calls of its own"
    )
    parser.add_argument(
        "--print-accounts",
        action="store_true",
        help="print the accounts as the tap's `accounts` setting (JSON) and exit",
    )
    parser.add_argument(
        "--group",
        type=_group,
        default=(1, 1),
        metavar="K/N",
        help="with --print-accounts: only group K of N (accounts K, K+N, K+2N, ...)",
    )
    parser.add_argument(
        "--misbehave",
        default="",
        metavar="KIND[,KIND]",
        help="off by default; any of: "
        + "; ".join(f"{kind}: {text}" for kind, text in MISBEHAVIOURS.items()),
    )
    parser.add_argument(
        "--misbehaving-accounts",
        default="",
        metavar="N[,N]",
        help="the accounts (by number, from 1) that misbehave; default: all",
    )
    parser.add_argument(
        "--disagree",
        type=_disagreement,
        action="append",
        default=[],
        metavar="DAY=KIND",
        help="off by default; the daily totals of DAY disagree with its calls, KIND one of: "
        + "; ".join(f"{kind}: {text}" for kind, text in DISAGREEMENTS.items()),
    )
    parser.add_argument("--trickle-bytes-per-second", type=float, default=64.0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--fault-every", type=int, default=0, help="every Nth request fails")
    parser.add_argument(
        "--fault-kinds",
        default=",".join(FAULT_KINDS),
        help=f"comma-separated, used in turn: {','.join(FAULT_KINDS)}",
    )
    return parser


def _cannot_listen(host: str, port: int, error: OSError) -> str:
    """Why the sandbox cannot listen, and what to do about it."""
    if error.errno == errno.EADDRINUSE:
        return f"port {port} is in use: pick another with --port, or stop the sandbox already running"
    return f"cannot listen on {host}:{port} ({error.strerror or error}): pick another --host or --port"


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    kinds = [kind for kind in args.fault_kinds.split(",") if kind]
    unknown = sorted(set(kinds) - set(FAULT_KINDS))
    if unknown:
        _parser().error(f"unknown fault kinds: {', '.join(unknown)}")
    misbehaving = [kind for kind in args.misbehave.split(",") if kind]
    if unknown := sorted(set(misbehaving) - set(MISBEHAVIOURS)):
        _parser().error(f"unknown misbehaviours: {', '.join(unknown)}")
    try:
        numbers = frozenset(int(n) for n in args.misbehaving_accounts.split(",") if n)
    except ValueError:
        _parser().error("--misbehaving-accounts takes account numbers, such as 2,3")
    misbehaviour = Misbehaviour(
        frozenset(cast("list[MisbehaviourKind]", misbehaving)), numbers, args.trickle_bytes_per_second
    )
    if args.print_accounts:
        group, groups = args.group
        keys = [args.api_key] + [account_key(number) for number in range(2, args.accounts + 1)]
        accounts = [{"name": f"account-{n}", "api_key": key} for n, key in enumerate(keys, 1)]
        print(json.dumps(accounts[group - 1 :: groups]))
        sys.exit(0)
    try:
        server = build_server(
            host=args.host,
            port=args.port,
            seed=args.seed,
            calls_per_day=args.calls_per_day,
            first_day=args.first_day,
            last_day=args.last_day,
            style=args.style,
            lookalikes=args.lookalikes,
            order=args.order,
            live_step=args.live_step,
            api_key=args.api_key,
            accounts=args.accounts,
            faults=Faults(every=args.fault_every, kinds=kinds, latency=args.latency),
            misbehaviour=misbehaviour,
            disagree=dict(args.disagree),
        )
    except OSError as error:  # the port is taken, or not ours to take: one line, no traceback
        print(f"tap-optico-sandbox: {_cannot_listen(args.host, args.port, error)}", file=sys.stderr)
        sys.exit(1)

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    data = server.api.data
    more = f", {args.accounts} accounts (--print-accounts lists their keys)" if args.accounts > 1 else ""
    print(
        f"Optico sandbox serving {data.calls_per_day} calls/day from {data.first_day} "
        f"to {data.last_day} at {server.url} (api_key {args.api_key}{more})",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    sys.exit(0)
