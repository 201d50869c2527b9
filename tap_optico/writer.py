"""Singer output: the SDK's msgspec encoder, records encoded straight into 1 MiB blocks."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

from singer_sdk.contrib.msgspec import MsgSpecWriter, encoder
from singer_sdk.singerlib import Message, SingerMessageType
from typing_extensions import override

BLOCK_BYTES = 1 << 20


class OpticoWriter(MsgSpecWriter):
    """Writes messages to stdout in blocks of about 1 MiB.

    The SDK's writer builds a message object per record and flushes stdout
    after each: a system call per record and, while pages are fetched
    concurrently, a hand-over of the GIL each time. Here records are encoded
    into one buffer that is written when it is full or when any other message
    (STATE above all) is written, so every STATE still follows the records it
    covers. Each stream ends with a STATE message, which writes what is left.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending = bytearray()

    def write_record(self, stream: str, record: dict[str, Any], version: int | None) -> None:
        """A RECORD message, as the SDK's RecordMessage would serialise it."""
        message: dict[str, Any] = {"type": "RECORD", "stream": stream, "record": record}
        if version is not None:
            message["version"] = version
        message["time_extracted"] = dt.datetime.now(dt.timezone.utc)
        encoder.encode_into(message, self._pending, -1)
        self._pending += b"\n"
        if len(self._pending) >= BLOCK_BYTES:
            self.flush()

    @override
    def write_message(self, message: Message) -> None:
        self._pending += self.format_message(message)
        if message.type != SingerMessageType.RECORD or len(self._pending) >= BLOCK_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            sys.stdout.buffer.write(self._pending)
            self._pending.clear()
        sys.stdout.flush()
