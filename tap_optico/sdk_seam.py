"""Every private singer-sdk name the tap relies on, and nothing else.

singer-sdk has no public hook to move a bookmark per complete window, write records a batch at a
time or without per-record message objects, word setting errors, stop on a signal without writing
into the output, or not announce start_date as where a run starts. ``tests/test_sdk_contract.py``
checks each name on the installed SDK, so an upgrade that changes one fails CI.
"""

from __future__ import annotations

import sys
from concurrent.futures import Future
from functools import cached_property
from types import FrameType, TracebackType
from typing import Any

from singer_sdk import Stream, Tap, metrics
from singer_sdk.helpers._catalog import pop_deselected_record_properties
from singer_sdk.helpers.types import Context
from singer_sdk.mapper import SameRecordTransform
from typing_extensions import Self, override

from tap_optico import stopping
from tap_optico.client import SharedPause
from tap_optico.errors import SettingsError
from tap_optico.paging import Ask, Page
from tap_optico.totals import Reconciliation, Tally
from tap_optico.writer import OpticoWriter


class DerivedStream(Stream):
    """A stream that announces no starting value; as it is, its records come from other streams'."""

    @property
    def source(self) -> TapSeam:
        """The tap this stream belongs to (singer-sdk keeps it in a private attribute)."""
        tap = self._tap
        assert isinstance(tap, TapSeam)
        return tap

    @override
    def _write_state_message(self) -> None:
        """The SDK's, then the records written so far flushed, even when the SDK leaves out a STATE
        equal to the last one (a run whose bookmarks stay where they were, the end of a ``--test``
        run): no record waits for a STATE."""
        super()._write_state_message()
        if self._block_writer is not None:
            self._block_writer.flush()

    @cached_property
    def _block_writer(self) -> OpticoWriter | None:
        writer = self._tap.message_writer
        return writer if isinstance(writer, OpticoWriter) else None

    @override
    def _write_starting_replication_value(self, context: Context | None) -> None:
        """Not the SDK's, which logs and stores start_date as the start: each account has its bookmark."""


class WindowedStream(DerivedStream):
    """A stream whose bookmarks move by :meth:`set_bookmark` only, STATE also by :meth:`write_state`."""

    # Not every 10,000 records: a STATE holds every account's bookmark (see bookmarks.StateCadence).
    STATE_MSG_FREQUENCY = sys.maxsize
    _record_counter: metrics.Counter | None = None
    _syncing = False

    @override
    def _increment_stream_state(
        self, latest_record: dict[str, Any], *, context: Context | None = None
    ) -> None:
        """Never per record: a bookmark moves once a window and all before it are read (bookmarks.py)."""

    def set_bookmark(self, context: Context | None, bookmark: Any) -> None:
        """Set the partition's bookmark (bookmarks.py decides where), for the next STATE message."""
        state = self.get_context_state(context)
        state["replication_key"] = self.replication_key
        state["replication_key_value"] = bookmark
        self.state_manager.is_flushed = False

    def write_state(self) -> None:
        """Emit a STATE message now (after the records written so far)."""
        self._write_state_message()

    @cached_property
    def _deselects_fields(self) -> bool:
        return not all(self.mask.values()) or bool(self._left_out)

    @cached_property
    def _left_out(self) -> frozenset[str]:
        """Fields of the stream that a catalog's schema leaves out: its SCHEMA message leaves them out,
        so its records do too (as if deselected)."""
        given = self.effective_schema.get("properties", {})
        return frozenset(self.schema["properties"]) - frozenset(given)

    @override
    def get_record_counter(
        self, *, endpoint: str | None = None, log_interval: float = metrics.DEFAULT_LOG_INTERVAL
    ) -> metrics.Counter:
        """The SDK's record counter, kept so that :meth:`write_records` counts what it writes."""
        self._record_counter = super().get_record_counter(endpoint=endpoint, log_interval=log_interval)
        return self._record_counter

    @cached_property
    def fast_path(self) -> bool:
        """Whether records may skip the SDK's per-record loop (:meth:`write_records`): only when it would
        just write them (no stream map or flattening, deselected field, child stream, ``post_process``)."""
        maps = self.stream_maps
        return (
            self._block_writer is not None
            and self.selected
            and not self._deselects_fields
            and len(maps) == 1
            and type(maps[0]) is SameRecordTransform
            and maps[0].stream_alias == self.name
            and not maps[0].flattening_enabled
            and not self.child_streams
            and type(self).post_process is Stream.post_process
        )

    @property
    def writes_batches(self) -> bool:
        """Whether :meth:`get_records` writes its records itself: on the fast path, in the SDK's sync loop."""
        return self._syncing and self.fast_path

    def write_records(self, records: list[Any]) -> None:
        """Write ``records`` and count them, as the SDK's loop would one by one."""
        assert self.writes_batches
        assert self._block_writer is not None
        self._block_writer.write_records(self.name, records, self._stream_version)
        if self._record_counter is not None:
            self._record_counter.increment(len(records))
        self.state_manager.is_flushed = False  # the stream's last STATE follows (and flushes) them

    @override
    def _write_record_message(self, record: dict[str, Any]) -> None:
        """Write a record with the least per-record work: records are already typed, so not
        conformed again, and walked for deselected fields only when the catalog deselects some."""
        writer = self._block_writer
        if writer is None:
            super()._write_record_message(record)
            return
        if self._deselects_fields:
            pop_deselected_record_properties(record, self.schema, self.mask)
            for name in self._left_out:
                record.pop(name, None)
        for stream_map in self.stream_maps:
            mapped = stream_map.transform(record)
            if mapped is not None:
                writer.write_record(stream_map.stream_alias, mapped, self._stream_version)
        self.state_manager.is_flushed = False  # as in write_records

    @override
    def get_sync_timer(self) -> metrics.Timer:
        """singer-sdk's sync_duration timer, whose status says failed when an account was not read."""
        return _AccountsTimer(self)


class _AccountsTimer(metrics.Timer):
    """A stream's sync_duration: failed when an account failed, though no exception ended the
    stream. While it runs, the SDK's sync loop runs: records may be written by the batch."""

    def __init__(self, stream: WindowedStream) -> None:
        super().__init__(metrics.Metric.SYNC_DURATION, {metrics.Tag.STREAM: stream.name})
        self.stream = stream

    @override
    def __enter__(self) -> Self:
        self.stream._syncing = True
        return super().__enter__()

    @override
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.stream._syncing = False
        if self.stream.source.failed_accounts:
            self.tags[metrics.Tag.STATUS] = metrics.Status.FAILED
        super().__exit__(exc_type, exc_val, exc_tb)


class TapSeam(Tap):
    """A tap whose settings are checked by :meth:`setting_problems`, one line each, and which stops on
    SIGTERM or SIGINT without writing more."""

    @cached_property
    def failed_accounts(self) -> dict[str, str]:
        """The accounts that failed in this run: name -> what failed."""
        return {}

    @cached_property
    def tallies(self) -> dict[str, Tally]:
        """What each stream delivered in this run: stream name -> its tally."""
        return {}

    @cached_property
    def rate_limit_pauses(self) -> dict[str, SharedPause]:
        """The pause a 429 starts, shared by every stream: account name -> its pause."""
        return {}

    @cached_property
    def made_ahead(self) -> dict[str, dict[Ask, Future[Page]]]:
        """Requests made for a stream in the slots the stream before left idle: its name -> its
        requests by what they ask (paging.WindowPager's ``made``, then the next pager's ``ahead``)."""
        return {}

    @cached_property
    def reconciliation(self) -> Reconciliation | None:
        """The run's tallies compared, once every stream has been synced (None: not compared)."""
        return None

    def setting_problems(self) -> list[str]:
        """One line per invalid setting of the tap itself."""
        raise NotImplementedError

    @override
    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        own = self.config_jsonschema["properties"]
        # The SDK checks its built-in settings (stream maps, flattening, ...).
        builtin = [
            error
            for error in super()._validate_config(raise_errors=False)
            if not any(f"'{name}'" in error for name in own)
        ]
        errors = [*self.setting_problems(), *builtin]
        if errors and raise_errors:
            # Not the SDK's ConfigValidationError, whose CLI handler ends on a generic line.
            raise SettingsError(errors)
        return errors

    @override
    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """The SDK's handler writes STATE into the output, maybe mid-line, and exits 0."""
        stopping.request(signum)
