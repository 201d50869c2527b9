"""Stopping on SIGTERM or SIGINT: promptly, and never in the middle of a line.

Orchestrators kill a job a few seconds after SIGTERM. The signal handler raises :class:`Stopped` at
once, which unwinds whatever the tap waits on, except while output is being written: then the
writer finishes its line and raises it itself. Nothing is flushed on the way out: the next run
resumes from the last STATE message.
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


class _Stop:
    requested: int | None = None
    writing = False


_stop = _Stop()


def request(signum: int) -> None:
    """Called by the signal handler: stop now, or once the line being written is complete."""
    if _stop.requested is not None:
        return  # already stopping: a second signal must not interrupt the way out
    _stop.requested = signum
    if not _stop.writing:
        raise Stopped(signum)


def check() -> None:
    """Raise :class:`Stopped` if a stop was requested."""
    if _stop.requested is not None:
        raise Stopped(_stop.requested)


@contextmanager
def writing() -> Iterator[None]:
    """A stretch of output during which a stop waits for :func:`check`."""
    _stop.writing = True
    try:
        yield
    finally:
        _stop.writing = False
