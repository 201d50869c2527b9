"""Keep the API key out of every log line, message and traceback.

The key travels in the query string, so any URL that requests, urllib3 or
backoff prints carries it. Rather than chase every place a URL can surface,
redaction happens where text leaves the process: every log record (message,
arguments and formatted traceback) and uncaught exceptions.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from types import TracebackType
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
#: No run of this many characters of a key may be printed: a message quoting part of a key is masked too.
PIECE = 8
_KEY_IN_QUERY = re.compile(r"(api_key=)[^&\s'\"<>)]+", re.IGNORECASE)
#: Keys (in every form) too short to be cut into pieces; longer ones are masked through their pieces.
_short_secrets: set[str] = set()
_pieces: set[str] = set()
_lock = threading.Lock()
_installed = False


def redact(text: str) -> str:
    """``text`` with any API key, and any run of ``PIECE`` characters of one, replaced by ``***``.

    Each stretch of ``PIECE`` characters of ``text`` is looked up among the keys' pieces: the cost
    grows with the text, not with the number of keys (a run may hold thousands of accounts).
    """
    text = _KEY_IN_QUERY.sub(r"\1" + MASK, text)
    for secret in _short_secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    pieces = _pieces
    if not pieces:
        return text
    hits = [start for start in range(len(text) - PIECE + 1) if text[start : start + PIECE] in pieces]
    if not hits:
        return text
    stretches: list[list[int]] = []
    for start in hits:
        if stretches and start <= stretches[-1][1]:
            stretches[-1][1] = start + PIECE
        else:
            stretches.append([start, start + PIECE])
    out: list[str] = []
    cursor = 0
    for start, end in stretches:
        out += (text[cursor:start], MASK)
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


def shorten(text: str, limit: int) -> str:
    """``text`` redacted, then cut to ``limit`` characters (cutting first could split a key past its mask)."""
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def register(secret: object) -> None:
    """Mask ``secret`` (and its URL-encoded forms) wherever it would be printed."""
    if not isinstance(secret, str) or not secret:
        return
    encoded = {secret, quote(secret, safe=""), quote_plus(secret)}
    # An error page may echo the key in another case (hex keys, %xx escapes).
    forms = encoded | {form.lower() for form in encoded} | {form.upper() for form in encoded}
    with _lock:
        _short_secrets.update(form for form in forms if len(form) < PIECE)
        _pieces.update(form[i : i + PIECE] for form in forms for i in range(len(form) - PIECE + 1))
    install()


def install() -> None:
    """Redact every log record created from now on, and uncaught exceptions."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous_factory = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous_factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed log call must not crash the tap
            message = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            # Formatters may render exc_info themselves: fold the redacted
            # traceback into the message instead.
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            record.exc_info = record.exc_text = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record.msg, record.args = redact(message), None
        return record

    logging.setLogRecordFactory(factory)
    previous_hook = sys.excepthook

    def excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            previous_hook(kind, error, tb)
            return
        sys.stderr.write(redact("".join(traceback.format_exception(kind, error, tb))))

    sys.excepthook = excepthook
