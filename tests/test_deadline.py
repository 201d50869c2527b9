"""The whole-try deadline (deadline.py) against a real HTTP server: redirects, kept connections."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from typing_extensions import override

from tap_optico.deadline import DeadlineAdapter, bounded

BODY = b'{"status": "OK"}'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # connections are kept between requests

    def do_GET(self) -> None:
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/slow")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/slow":  # the status line and headers, a byte every 0.2 s
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
            for byte in answer:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        elif self.path in ("/http10", "/close"):  # headers at once, then the body a byte every 0.2 s
            if self.path == "/http10":
                self.protocol_version = "HTTP/1.0"
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.send_header("Connection", "close")
            self.end_headers()
            with contextlib.suppress(ConnectionError):  # the client cut it
                for byte in BODY:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

    @override
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def session() -> requests.Session:
    http = requests.Session()
    http.mount("http://", DeadlineAdapter())
    return http


def test_a_try_is_cut_at_its_deadline_after_a_redirect_too(server: str) -> None:
    started = time.monotonic()
    with bounded(time.monotonic() + 1.0), pytest.raises(requests.ConnectionError):
        session().get(f"{server}/moved", timeout=5)
    assert time.monotonic() - started < 3, "the answer after the redirect was not cut"


def test_a_connection_back_in_its_pool_is_not_cut_at_the_deadline_of_its_last_try(server: str) -> None:
    http = session()
    with bounded(time.monotonic() + 0.3):
        assert http.get(f"{server}/", timeout=5).content == BODY
    time.sleep(0.6)  # past the first try's deadline: the kept connection serves the next try
    with bounded(time.monotonic() + 5):
        assert http.get(f"{server}/", timeout=5).content == BODY
    adapter = http.get_adapter(server)
    assert isinstance(adapter, DeadlineAdapter)
    [pool] = adapter.poolmanager.pools._container.values()
    assert pool.num_connections == 1, "the kept connection was cut and replaced"


@pytest.mark.parametrize("path", ["/http10", "/close"])
def test_a_body_is_cut_at_the_deadline_when_the_connection_closes_after_the_answer(
    server: str, path: str
) -> None:
    """http.client closes such a connection once the headers are in; the body still reads from it."""
    started = time.monotonic()
    with bounded(time.monotonic() + 1.0), pytest.raises(requests.RequestException):
        session().get(f"{server}{path}", timeout=5)
    assert time.monotonic() - started < 2, "the body was read past the deadline"
