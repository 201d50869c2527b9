"""A deadline for one whole HTTP try (status line, headers, body): ``requests`` bounds only the
silence between two bytes, so an answer that trickles never times out. Within :func:`bounded`, one
watchdog thread shuts the socket of a :class:`DeadlineAdapter` connection not answered in full by
the deadline: the blocked read ends at once.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from requests.adapters import HTTPAdapter
from typing_extensions import override
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class _Watchdog:
    """Shuts a socket at its deadline unless the try it belongs to ended first."""

    def __init__(self) -> None:
        self._due: dict[int, tuple[float, socket.socket]] = {}
        self._numbers = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, when: float, sock: socket.socket) -> int:
        with self._changed:
            number = next(self._numbers)
            self._due[number] = (when, sock)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="optico-deadline", daemon=True)
                self._thread.start()
            self._changed.notify()
            return number

    def disarm(self, number: int) -> None:
        with self._changed:
            self._due.pop(number, None)

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for number, (when, sock) in list(self._due.items()):
                    if when <= now:
                        del self._due[number]
                        # Under the lock: a connection disarmed on its way back to the pool is never cut.
                        with contextlib.suppress(OSError):  # already closed: the try ended on its own
                            sock.shutdown(socket.SHUT_RDWR)
                soonest = min((when for when, _ in self._due.values()), default=None)
                self._changed.wait(None if soonest is None else soonest - now)


_watchdog = _Watchdog()
_try = threading.local()


@contextlib.contextmanager
def bounded(deadline: float) -> Iterator[None]:
    """Requests of :class:`DeadlineAdapter` made in this thread end by ``deadline`` (time.monotonic),
    redirects included, on every kind of connection."""
    _try.deadline, _try.watched = deadline, []
    try:
        yield
    finally:
        for number in _try.watched:
            _watchdog.disarm(number)
        _try.deadline, _try.watched = None, []


class _Bounded:
    """An HTTP connection whose answer is watched from the request sent until it goes back to its
    pool or the try ends; closing it does not stop the watch (over HTTP/1.0 or ``Connection: close``,
    ``http.client`` closes it once the headers are in, and the body is read from the same socket)."""

    sock: socket.socket | None
    _watched: int | None = None

    def getresponse(self) -> Any:
        deadline = getattr(_try, "deadline", None)
        if deadline is not None and self.sock is not None:
            self.unwatch()
            self._watched = _watchdog.arm(deadline, self.sock)
            _try.watched.append(self._watched)
        return super().getresponse()  # type: ignore[misc]

    def unwatch(self) -> None:
        if self._watched is not None:
            _watchdog.disarm(self._watched)
            self._watched = None


class _HTTPConnection(_Bounded, HTTPConnection):
    pass


class _HTTPSConnection(_Bounded, HTTPSConnection):
    pass


class _Returning:
    """A pool that stops watching a connection before another try can take it from the pool."""

    def _put_conn(self, conn: Any) -> None:
        if isinstance(conn, _Bounded):
            conn.unwatch()
        super()._put_conn(conn)  # type: ignore[misc]


class _HTTPPool(_Returning, HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(_Returning, HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter, with connections that :func:`bounded` can cut at a deadline."""

    @override
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
