"""Singer output: the SDK's msgspec encoder, records encoded straight into 1 MiB blocks."""

from __future__ import annotations

import datetime as dt
import signal
import sys
from typing import Any

from singer_sdk.contrib.msgspec import MsgSpecWriter, encoder
from singer_sdk.singerlib import Message, SingerMessageType
from typing_extensions import override

from tap_optico import stopping

BLOCK_BYTES = 1 << 20
#: A block is written in pieces of about this size, each ending a line: a stop waits one piece at most.
#: A Linux pipe holds 64 KiB: a piece fills it in one system call (16 KiB pieces cost 40% more CPU).
PIECE_BYTES = 64 << 10


class OpticoWriter(MsgSpecWriter):
    """Writes messages to stdout in blocks of about 1 MiB, not a system call (and a hand-over of the GIL)
    per record as the SDK's writer does. A block is written when full or with any other message (STATE
    above all): every STATE follows the records it covers, and a stream's last STATE writes the rest."""

    def __init__(self) -> None:
        super().__init__()
        self._pending = bytearray()

    def write_record(self, stream: str, record: dict[str, Any], version: int | None) -> None:
        """A RECORD message, as the SDK's RecordMessage would serialise it: its keys, in its order."""
        message: dict[str, Any] = {"type": "RECORD", "stream": stream, "record": record}
        if version is not None:
            message["version"] = version
        message["time_extracted"] = dt.datetime.now(dt.timezone.utc)
        encoder.encode_into(message, self._pending, -1)
        self._pending += b"\n"
        if len(self._pending) >= BLOCK_BYTES:
            self.flush()

    def write_records(self, stream: str, records: list[Any], version: int | None) -> None:
        """The RECORD messages of ``records``, byte for byte as :meth:`write_record` writes each, but
        encoded in one call and put in their envelopes by one ``replace``, with one ``time_extracted``."""
        if not records:
            return
        # What comes before and after a record in its message: the message's other keys, in order.
        start = b'{"type":"RECORD","stream":' + encoder.encode(stream) + b',"record":'
        end = b"" if version is None else b',"version":' + encoder.encode(version)
        end += b',"time_extracted":' + encoder.encode(dt.datetime.now(dt.timezone.utc)) + b"}\n"
        # A JSON text holds no raw newline: each one ends a record.
        lines = encoder.encode_lines(records).replace(b"\n", end + start)
        self._pending += start
        self._pending += memoryview(lines)[: -len(start)]
        if len(self._pending) >= BLOCK_BYTES:
            self.flush()

    @override
    def write_message(self, message: Message) -> None:
        self._pending += self.format_message(message)
        if message.type != SingerMessageType.RECORD or len(self._pending) >= BLOCK_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the pending lines, whole, in pieces; between two pieces a requested stop is honoured."""
        data, self._pending = self._pending, bytearray()
        view, start, size = memoryview(data), 0, len(data)
        try:
            with stopping.writing():
                while start < size:  # every message ends its line: so do the pieces, the last one too
                    end = data.rfind(b"\n", start, start + PIECE_BYTES) + 1
                    if end <= start:  # one line longer than a piece: up to its end
                        end = data.find(b"\n", start + PIECE_BYTES) + 1 or size
                    while start < end:  # an unbuffered stdout (PYTHONUNBUFFERED) may take part of it only
                        start += sys.stdout.buffer.write(view[start:end]) or 0
                    sys.stdout.buffer.flush()
                    stopping.check()
        except BrokenPipeError:  # the reader is gone (`tap-optico ... | head`): stop as a shell does
            raise stopping.Stopped(signal.SIGPIPE) from None
