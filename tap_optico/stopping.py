"""Stopping on SIGTERM or SIGINT: promptly (orchestrators kill a job seconds later), never mid-line:
the signal handler raises :class:`Stopped` at once, unless a line is being written, which the writer
finishes first. Nothing is flushed on the way out: the next run resumes from the last STATE message.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class Stopped(BaseException):
    """The run was stopped from outside; like KeyboardInterrupt, no ``except Exception`` catches it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_requested: int | None = None
_writing = False


def request(signum: int) -> None:
    """Called by the signal handler: stop now, or once the line being written is complete."""
    global _requested
    if _requested is not None:
        return  # already stopping: a second signal must not interrupt the way out
    _requested = signum
    if not _writing:
        raise Stopped(signum)


def check() -> None:
    """Raise :class:`Stopped` if a stop was requested."""
    if _requested is not None:
        raise Stopped(_requested)


@contextmanager
def writing() -> Iterator[None]:
    """A stretch of output during which a stop waits for :func:`check`."""
    global _writing
    _writing = True
    try:
        yield
    finally:
        _writing = False
