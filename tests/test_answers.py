"""How the client judges what comes back: answers that are not a page of calls, bodies without
end, redirects away from HTTPS, text in odd encodings, and Retry-After."""

from __future__ import annotations

import codecs
import contextlib
import datetime as dt
import email.utils
import ipaddress
import json
import re
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from singer_sdk.exceptions import FatalAPIError
from typing_extensions import override

from tap_optico import client, secrets
from tap_optico.client import MAX_ANSWER_BYTES, QUOTE_READ_CHARS
from tap_optico.paging import Window
from tap_optico.reading import OpticoStream
from tap_optico.sandbox import SANDBOX_API_KEY
from tap_optico.tap import TapOptico
from tests.helpers import ACCOUNT, CannedApi, run_tap
from tests.test_reliability import CALL, canned_config


def failed_line(stderr: str) -> str:
    """The run's last line: the one that says why the run failed."""
    return stderr.splitlines()[-1]


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({}, "has no 'results' list (got NoneType)"),
        ({"errors": ["Service en maintenance"]}, "Optico API error: Service en maintenance"),
        ({"status": "KO", "message": "Maintenance"}, "answered status 'KO' instead of OK: Maintenance"),
        (
            {"status": "OK", "results": [], "total_results": 0, "errors": ["Date invalide"]},
            "Optico API error: Date invalide",
        ),
        (  # a page of calls (the fast decoder's path) that also says something went wrong
            {"status": "OK", "results": [CALL], "total_results": 1, "errors": ["Limite invalide"]},
            "Optico API error: Limite invalide",
        ),
    ],
)
def test_an_answer_that_is_not_a_page_of_calls_fails_its_account_and_moves_no_bookmark(
    canned: Callable[..., CannedApi], tmp_path: Path, body: dict[str, Any], said: str
) -> None:
    """Read as "no calls" before: exit 0, and the bookmarks moved past days never read."""
    run = run_tap(canned_config(canned([body]).url), tmp_path)
    assert run.returncode == 1
    assert said in failed_line(run.stderr)
    assert "Traceback" not in run.stderr
    assert not run.records("calls")
    assert all(run.bookmark(stream) is None for stream in ("calls", "daily_calls") if run.states)


def test_an_answer_with_ok_in_any_case_and_empty_errors_is_a_page(
    canned: Callable[..., CannedApi], tmp_path: Path
) -> None:
    body = {"status": "ok", "results": [CALL], "total_results": 1, "errors": [], "message": "1 result"}
    run = run_tap(canned_config(canned([body]).url), tmp_path)
    assert run.returncode == 0, run.stderr
    assert len(run.records("calls")) == 1


class Server:
    """An HTTP(S) server on 127.0.0.1 whose ``answer(path)`` gives each request's status, headers
    and body (bytes, or pieces sent as they come); it keeps the paths it was asked."""

    def __init__(
        self,
        answer: Callable[[str], tuple[int, dict[str, str], bytes | Iterable[bytes]]],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.paths.append(self.path)
                status, headers, body = answer(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if isinstance(body, bytes):
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_header("Connection", "close")
                self.end_headers()
                with contextlib.suppress(OSError):  # the client hung up
                    for piece in body:
                        self.wfile.write(piece)

            @override
            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}/data-api"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(*args: Any, **kwargs: Any) -> Server:
        servers.append(Server(*args, **kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return folder / "cert.pem", folder / "key.pem"


def tls_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def calls_stream(url: str, verify: Path | None = None, **settings: Any) -> OpticoStream:
    """The calls stream of a tap reading ``url`` (trusting the test's certificate ``verify``)."""
    tap = TapOptico(
        config={"api_key": SANDBOX_API_KEY, "api_url": url, "start_date": "2026-01-01", **settings}
    )
    calls = tap.streams["calls"]
    assert isinstance(calls, OpticoStream)
    if verify:
        calls.requests_session.verify = str(verify)
    return calls


DAY = dt.date(2026, 1, 1)
PAGE = json.dumps({"status": "OK", "total_results": 1, "results": [CALL]}).encode()


def test_a_redirect_from_https_to_plain_http_is_not_followed(
    serve: Callable[..., Server], certificate: tuple[Path, Path]
) -> None:
    """requests followed it before, and sent the key in clear text with no warning."""
    plain = serve(lambda path: (200, {"Content-Type": "application/json"}, PAGE))
    secure = serve(
        lambda path: (301, {"Location": f"{plain.url}?{path.partition('?')[2]}"}, b""),
        tls=tls_context(certificate),
    )
    calls = calls_stream(secure.url, certificate[0])
    with pytest.raises(FatalAPIError) as failed:
        calls.fetch_page(Window(0, DAY, DAY, ACCOUNT), 1)
    assert str(failed.value) == (
        "Optico API at 127.0.0.1 redirected to http:// on 127.0.0.1: not followed, "
        "the API key would travel in clear text"
    )
    assert len(secure.paths) == 1
    assert plain.paths == []


def test_a_redirect_from_https_to_https_is_followed(
    serve: Callable[..., Server], certificate: tuple[Path, Path]
) -> None:
    def answer(path: str) -> tuple[int, dict[str, str], bytes]:
        if path.startswith("/data-api"):
            return 302, {"Location": "/moved?" + path.partition("?")[2]}, b""
        return 200, {"Content-Type": "application/json"}, PAGE

    secure = serve(answer, tls=tls_context(certificate))
    page = calls_stream(secure.url, certificate[0]).fetch_page(Window(0, DAY, DAY, ACCOUNT), 1)
    assert len(page.results) == 1
    assert [path.partition("?")[0] for path in secure.paths] == ["/data-api", "/moved"]


def test_an_error_that_is_not_retried_says_it_ended_the_first_try(serve: Callable[..., Server]) -> None:
    """A redirect loop is not retried: "after 6 tries" said tries that were never made."""
    loop = serve(lambda path: (302, {"Location": path}, b""))
    with pytest.raises(FatalAPIError) as failed:
        calls_stream(loop.url).fetch_page(Window(0, DAY, DAY, ACCOUNT), 1)
    assert "page 1 after its first try: Exceeded 30 redirects" in str(failed.value)
    assert len(loop.paths) == 31  # one try: the request and its 30 redirects


def spaces(mebibytes: int) -> Iterator[bytes]:
    """A page of no calls with ``mebibytes`` MiB of spaces in its results."""
    yield b'{"status": "OK", "total_results": 0, "results": ['
    for _ in range(mebibytes):
        yield b" " * (1 << 20)
    yield b"]}"


def gzip_bomb(mebibytes: int) -> bytes:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip format
    return b"".join(squeeze.compress(piece) for piece in spaces(mebibytes)) + squeeze.flush()


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_an_answer_larger_than_the_bound_fails_its_account_before_it_fills_memory(
    serve: Callable[..., Server], encoding: str
) -> None:
    """Accepted before as a page of no calls (read whole: 1.5 GB inflated from a 1.5 MB gzip body,
    or as much of an endless body as arrived by the deadline, then joined)."""
    mebibytes = (MAX_ANSWER_BYTES >> 20) * 4
    body = gzip_bomb(mebibytes) if encoding == "gzip" else spaces(mebibytes)
    api = serve(lambda path: (200, {"Content-Encoding": encoding}, body))
    calls = calls_stream(api.url, request_timeout=30, max_tries=1)
    started = time.monotonic()
    with pytest.raises(FatalAPIError, match=r"answered more than 64 MiB for page 1 .*: stopped reading it"):
        calls.fetch_page(Window(0, DAY, DAY, ACCOUNT), 1)
    assert time.monotonic() - started < 10


def test_an_answer_just_under_the_bound_is_read(serve: Callable[..., Server]) -> None:
    body = gzip_bomb((MAX_ANSWER_BYTES >> 20) - 1)
    api = serve(lambda path: (200, {"Content-Encoding": "gzip"}, body))
    page = calls_stream(api.url, max_tries=1).fetch_page(Window(0, DAY, DAY, ACCOUNT), 1)
    assert page.results == []


KEY = "9f3c1e7a5b2d4f6e8a0c1b3d5f7e9a2c"


def pieces_of_the_key(text: str, size: int = 5) -> list[str]:
    return [KEY[i : i + size] for i in range(len(KEY) - size + 1) if KEY[i : i + size] in text.lower()]


def error_page(body: bytes, status: int = 503) -> requests.Response:
    response = requests.Response()
    response.status_code, response.reason = status, "Service Unavailable"
    response.headers["Content-Type"] = "text/html"
    response._content = body
    return response


def test_an_error_page_of_megabytes_is_cut_before_it_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole body was masked before (a 9.4 MB page took 11 s and 2 GB), then cut to 200
    characters."""
    masked: list[int] = []

    def redact(text: str) -> str:
        masked.append(len(text))
        return original(text)

    original = secrets.redact
    monkeypatch.setattr(secrets, "redact", redact)
    monkeypatch.setattr(client, "redact", redact)
    message = calls_stream("http://127.0.0.1:9/data-api").response_error_message(
        error_page(b"<p>Service Unavailable</p> " * 350_000)
    )
    assert message.startswith("Optico API answered HTTP 503 Service Unavailable (text/html): <p>Service")
    assert len(message) < 300
    assert max(masked) <= 2 * QUOTE_READ_CHARS


@pytest.mark.parametrize("read", [QUOTE_READ_CHARS, 4 * QUOTE_READ_CHARS])
def test_a_key_cut_where_api_text_stops_being_read_prints_no_piece_of_it(read: int) -> None:
    """Whitespace collapses, so what is left of a key at the end of what is read may reach the
    excerpt: it is cut off with a margin, masked or not."""
    secrets.register(KEY)
    calls = calls_stream("http://127.0.0.1:9/data-api")
    for left in range(1, len(KEY)):
        text = " " * (read - left) + KEY + " and more" * 1000
        quoted = [calls.response_error_message(error_page(text.encode()))] if read > QUOTE_READ_CHARS else []
        quoted.append(client.quote(["Clef invalide", text]))
        assert [pieces_of_the_key(line) for line in quoted] == [[]] * len(quoted), left


def test_error_messages_of_megabytes_are_quoted_in_one_short_line(
    canned: Callable[..., CannedApi], tmp_path: Path
) -> None:
    """Logged whole before: a line of 6 MB."""
    body = {"status": "ERROR", "errors": ["%41" * 1_000_000, "y" * 3_000_000]}
    run = run_tap(canned_config(canned([body]).url), tmp_path)
    assert run.returncode == 1
    assert "Optico API error: %41%41" in failed_line(run.stderr)
    assert max(len(line) for line in run.stderr.splitlines()) < 1000


LATIN_CALL = {**CALL, "status": "succès", "keyword": "café"}
LATIN_PAGE = json.dumps({"status": "OK", "total_results": 1, "results": [LATIN_CALL]}, ensure_ascii=False)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json; charset=iso-8859-1", LATIN_PAGE.encode("latin-1")),
        ("application/json; charset=windows-1252", LATIN_PAGE.encode("cp1252")),
        ("application/json", codecs.BOM_UTF8 + LATIN_PAGE.encode()),
        ("application/json; charset=utf-16", LATIN_PAGE.encode("utf-16")),
    ],
)
def test_an_answer_in_its_declared_charset_or_after_a_byte_order_mark_is_read(
    serve: Callable[..., Server], content_type: str, body: bytes
) -> None:
    """Each failed every run before, as "not valid JSON"."""
    api = serve(lambda path: (200, {"Content-Type": content_type}, body))
    page = calls_stream(api.url, max_tries=1).fetch_page(Window(0, DAY, DAY, ACCOUNT), 1)
    assert [(call.status, call.keyword) for call in page.results] == [("succès", "café")]


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (
            LATIN_PAGE.encode("latin-1"),
            "byte {} is not UTF-8, and the answer declares no other charset",
        ),
        (
            LATIN_PAGE.encode() + b"\n<!-- 0.2 s -->",
            "JSON is malformed: trailing characters (byte {})",
        ),
    ],
)
def test_an_answer_that_is_not_json_says_what_is_wrong_and_where(
    serve: Callable[..., Server], body: bytes, said: str
) -> None:
    """Before: only "answered HTTP 200 with application/json that is not valid JSON"."""
    api = serve(lambda path: (200, {"Content-Type": "application/json"}, body))
    # msgspec counts from the byte after the first it cannot read.
    where = body.index(b"\xe8") if b"\xe8" in body else body.index(b"<!--") + 1
    with pytest.raises(FatalAPIError) as failed:
        calls_stream(api.url, max_tries=1).fetch_page(Window(0, DAY, DAY, ACCOUNT), 1)
    assert f"that is not valid JSON: {said.format(where)}" in str(failed.value)
    assert f"(in a body of {len(body)} bytes)" in str(failed.value)


NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("Sun, 01 Mar 2026 12:00:30 GMT", 30.0),
        ("Sun, 01 Mar 2026 11:00:00 GMT", 0.0),  # past: now
        ("Sun, 01 Mar 2026 12:00:30 -0000", 30.0),
        (None, None),
        ("-5", None),
        ("nan", None),
        ("inf", None),
        ("", None),
        ("soon", None),
        ("1\x1b[31m", None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date_and_anything_else_is_absent(
    value: str | None, seconds: float | None
) -> None:
    assert client.retry_after_seconds(value, NOW) == seconds


@pytest.mark.parametrize(
    ("retry_after", "waits"),
    [("nan", (0.5, 0.6)), ("-3", (0.5, 0.6)), ("in 2 s", (0.5, 0.6)), ("http-date", (1.5, 3.5))],
)
def test_a_429_with_an_unusable_retry_after_waits_as_if_there_were_none(
    serve: Callable[..., Server],
    caplog: pytest.LogCaptureFixture,
    retry_after: str,
    waits: tuple[float, float],
) -> None:
    """Before: a negative or nan Retry-After gave no wait at all, and the HTTP-date form was ignored."""
    asked: list[str] = []

    def answer(path: str) -> tuple[int, dict[str, str], bytes]:
        asked.append(path)
        if len(asked) == 1:
            when = email.utils.format_datetime(
                dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3), usegmt=True
            )
            return 429, {"Retry-After": when if retry_after == "http-date" else retry_after}, b"slow down"
        return 200, {"Content-Type": "application/json"}, PAGE

    api = serve(answer)
    with caplog.at_level("WARNING"):
        page = calls_stream(api.url, max_tries=2, max_wait_seconds=10).fetch_page(
            Window(0, DAY, DAY, ACCOUNT), 1
        )
    assert len(page.results) == 1
    [waited] = [float(m) for m in re.findall(r"retrying in ([0-9.]+) s", caplog.text)]
    assert waits[0] <= waited <= waits[1]
