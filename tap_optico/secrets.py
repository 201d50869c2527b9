"""Keep the API key, in any encoding, out of every log record and uncaught exception.

The key travels in the query string, so any URL printed carries it; an answer may echo it escaped
(JSON, percent, HTML), in another case, with separators between its characters (``45eb-cbe2-…``,
``4 5 e b …``), as the hex or base64 of its bytes, or reversed. Text is read with its escapes
decoded, without case and without separators, and each run of PIECE characters of any of those
forms of a key is masked in the original text. Control characters (which could erase or forge log
lines) are then shown as ``\\xNN``.

The trade-off is in PIECE: a run shorter than it is not masked (seven characters of a 32-character
key tell little of it), and text that matches by chance is masked (eight characters of a random key
almost never do). A key shorter than PIECE (``2026``) cannot be split so: it is masked where it
stands on its own, not inside a longer word or number, nor as a part of a date or a time
(``2026-03-01``, ``01/03/2026``), so that logs stay readable; what is left unmasked
there does not tell which of the many numbers is the key.
"""

from __future__ import annotations

import base64
import html.entities
import logging
import re
import sys
import threading
import traceback
from collections.abc import Sequence
from types import TracebackType
from typing import Any

MASK = "***"
#: No run of this many characters of a key may be printed: a message quoting part of a key is masked too.
PIECE = 8
#: Characters read past an excerpt's end before it is masked: more than the widest form of a piece of
#: a key too short to mask (PIECE - 1 characters, each written as a 12-character escape).
CUT_MARGIN = 256
_KEY_IN_QUERY = re.compile(r"(api_key=)[^&\s'\"<>)]+", re.IGNORECASE)
#: One character written as an escape: a JSON surrogate pair or \uXXXX or \/, a run of %XX
#: bytes, an HTML entity (decimal, hex or named).
_ESCAPE = re.compile(
    r"\\u(?P<high>d[89ab][0-9a-f]{2})\\u(?P<low>d[c-f][0-9a-f]{2})"
    r"|\\u(?P<unicode>[0-9a-f]{4})"
    r"|\\(?P<escaped>[\\/\"'])"
    r"|(?P<percent>(?:%[0-9a-f]{2})+)"
    r"|&#(?P<decimal>[0-9]{1,7});|&#x(?P<hex>[0-9a-f]{1,6});|&(?P<name>[a-z][a-z0-9]{1,31});",
    re.IGNORECASE,
)
#: HTML entity names (and XML's &apos;), as code points.
_ENTITIES = html.entities.name2codepoint | {"apos": ord("'")}
#: C0 control characters but tab, DEL and C1, and the invisible ones that reorder or hide text (bidi
#: overrides and isolates, zero-width marks, line and paragraph separators, the BOM): shown escaped
#: in every log message, so that a line reads as it is stored.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")
#: A run of text between separators: what may stand between the characters of a key that still
#: reads as the key ("45eb-cbe2", "4 5 e b", "45:eb", base64's "+" and "/" or "-" and "_"). A
#: space is read as its form-encoding "+".
_WORD = re.compile(r"[^\s\-_.:,;|/+\\'\"]+")
#: Every piece of PIECE characters of every form of every key, as :func:`_decode` and :data:`_WORD`
#: read text; keys shorter than PIECE, matched where they stand on their own (:func:`_short_keys_pattern`).
_pieces: set[str] = set()
_short: re.Pattern[str] | None = None
_short_keys: set[str] = set()
_lock = threading.Lock()
_installed = False


def redact(text: str) -> str:
    """``text`` with any API key, or any piece of one, replaced by ``***``, whatever its encoding."""
    text = _KEY_IN_QUERY.sub(r"\1" + MASK, text)
    pieces, short = _pieces, _short
    if not pieces and short is None:
        return text
    chars, starts, ends = _decode(text)
    hidden: list[tuple[int, int]] = []  # spans of text to mask
    if pieces:
        words = list(_WORD.finditer(chars))
        kept: list[int] = []  # where each character of ``compact`` is in ``chars``
        for word in words:
            kept += range(*word.span())
        compact = "".join(word[0] for word in words)
        for start in range(len(compact) - PIECE + 1):
            if compact[start : start + PIECE] in pieces:
                hidden.append((starts[kept[start]], ends[kept[start + PIECE - 1]]))
    if short is not None:
        hidden += [(starts[match.start()], ends[match.end() - 1]) for match in short.finditer(chars)]
    if not hidden:
        return text
    out: list[str] = []
    done = 0  # text[:done] is written
    for start, end in sorted(hidden):
        if start > done or not out:
            out += [text[done:start], MASK]
        done = max(done, end)
    out.append(text[done:])
    return "".join(out)


def escape_controls(text: str, *, lines: bool = False) -> str:
    """``text`` with each control character written ``\\xNN``; newlines kept when ``lines`` (a traceback)."""
    if lines:
        return "\n".join(escape_controls(line) for line in text.split("\n"))
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shorten(text: str, limit: int, *, whole: bool = True) -> str:
    """``text`` redacted, then cut to ``limit`` characters; ``whole=False`` when ``text`` is itself
    only the start of a longer text. Only its first ``limit + CUT_MARGIN`` characters are read, so a
    text of megabytes costs no more than a short one. Masking comes before the cut (a key cut first
    could leave a piece too short to mask), and a text read only in part loses its last
    ``CUT_MARGIN`` characters after masking: they may end with the start of a key."""
    window = text[: limit + CUT_MARGIN]
    masked = redact(window)
    if whole and len(window) == len(text):
        return masked if len(masked) <= limit else masked[: limit - 1] + "…"
    return masked[: max(0, min(limit - 1, len(masked) - CUT_MARGIN))] + "…"


def register(secret: object) -> None:
    """Mask ``secret`` (a number, as its digits) in every form it may take, wherever it would be printed."""
    if isinstance(secret, int) and not isinstance(secret, bool):
        secret = str(secret)
    if not isinstance(secret, str) or not secret:
        return
    global _short
    forms, short = _forms(secret)
    with _lock:
        for form in forms:
            _pieces.update(form[i : i + PIECE] for i in range(len(form) - PIECE + 1))
        if short:
            _short_keys.update(short)
            _short = _short_keys_pattern(_short_keys)
    install()


def _forms(key: str) -> tuple[set[str], set[str]]:
    """The forms a key may be echoed in, read as :func:`redact` reads text: as written and as its own
    escapes would read (a key holding "%41" or "&amp;"), both reversed; the hex of its bytes, and
    their base64 from each of the three offsets a longer text may put them at; all without case or
    separators. Then the key itself, as written, if it is too short to be cut in pieces."""
    written = {_fold(key), _decode(key)[0]}
    raw = key.encode()
    encoded = {raw.hex()} | {
        base64.b64encode(raw[shift : shift + (len(raw) - shift) // 3 * 3]).decode() for shift in range(3)
    }
    forms = {_compact(form) for form in written | {form[::-1] for form in written}}
    forms |= {_compact(_fold(form)) for form in encoded}
    short = written if min(len(_compact(form)) for form in written) < PIECE else set()
    return {form for form in forms if len(form) >= PIECE}, short


def _compact(text: str) -> str:
    return "".join(_WORD.findall(text))


def _short_keys_pattern(keys: set[str]) -> re.Pattern[str]:
    """Keys shorter than PIECE, where they stand on their own: not inside a word or a number, nor a
    part of a date or a time (a year before "-03", a number after "01/")."""
    alternatives = "|".join(re.escape(key) for key in sorted(keys, key=len, reverse=True))
    return re.compile(rf"(?<![^\W_])(?<![0-9][-/:.])(?:{alternatives})(?![^\W_])(?![-/:.][0-9])")


def _fold(text: str) -> str:
    """``text`` to compare without case, a space as its form-encoding ``+``; as long as ``text``."""
    lower = text.lower()
    if len(lower) != len(text):  # a character whose lower case is longer keeps its case
        lower = "".join(char.lower() if len(char.lower()) == 1 else char for char in text)
    return lower.replace(" ", "+")


def _decode(text: str) -> tuple[str, Sequence[int], Sequence[int]]:
    """``text`` with its escapes decoded, folded (:func:`_fold`), and where each character of it
    starts and ends in ``text``."""
    if "\\" not in text and "%" not in text and "&" not in text:  # no escape: each character is itself
        return _fold(text), range(len(text)), range(1, len(text) + 1)
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []

    def plain(stop: int) -> None:  # text[position:stop] as it is
        chars.extend(text[position:stop])
        starts.extend(range(position, stop))
        ends.extend(range(position + 1, stop + 1))

    position = 0  # text[:position] is decoded
    for match in _ESCAPE.finditer(text):
        unescaped = _unescape(match)
        if unescaped is None:  # an unknown entity name: plain text
            continue
        plain(match.start())
        for char, (start, end) in unescaped:
            chars.append(char)
            starts.append(start)
            ends.append(end)
        position = match.end()
    plain(len(text))
    return _fold("".join(chars)), starts, ends


def _unescape(match: re.Match[str]) -> list[tuple[str, tuple[int, int]]] | None:
    """The characters one escape stands for, each with its span in the text."""
    span = match.span()
    if match["high"]:
        return [(bytes.fromhex(match["high"] + match["low"]).decode("utf-16-be"), span)]
    if match["percent"]:
        return _percent_decoded(match["percent"], span[0])
    if match["name"]:
        point = _ENTITIES.get(match["name"]) or _ENTITIES.get(match["name"].lower())
        return None if point is None else [(chr(point), span)]
    code = match["unicode"] or match["hex"]
    point = int(code, 16) if code else int(match["decimal"]) if match["decimal"] else None
    if point is None:
        return [(match["escaped"], span)]
    return [(chr(point) if point <= sys.maxunicode else "\ufffd", span)]


def _percent_decoded(run: str, offset: int) -> list[tuple[str, tuple[int, int]]]:
    """A run of ``%XX`` bytes as UTF-8 characters (a byte that is not UTF-8 as itself)."""
    decoded: list[tuple[str, tuple[int, int]]] = []
    start = offset
    for char in bytes.fromhex(run.replace("%", "")).decode("utf-8", "surrogateescape"):
        end = start + 3 * len(char.encode("utf-8", "surrogateescape"))
        byte = "\udc80" <= char <= "\udcff"  # a byte that is not UTF-8, escaped by the decoder
        decoded.append((chr(ord(char) - 0xDC00) if byte else char, (start, end)))
        start = end
    return decoded


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
        message = escape_controls(redact(message))
        if record.exc_info and record.exc_info[1] is not None:
            # Formatters may render exc_info raw: the traceback goes redacted into the message.
            trace = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            message += "\n" + escape_controls(redact(trace), lines=True)
            record.exc_info = record.exc_text = None
        if record.stack_info:
            record.stack_info = escape_controls(redact(record.stack_info), lines=True)
        record.msg, record.args = message, None
        return record

    logging.setLogRecordFactory(factory)
    previous_hook = sys.excepthook

    def excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            previous_hook(kind, error, tb)
            return
        trace = "".join(traceback.format_exception(kind, error, tb))
        sys.stderr.write(escape_controls(redact(trace), lines=True))

    sys.excepthook = excepthook
