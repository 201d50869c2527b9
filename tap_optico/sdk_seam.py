"""Every private singer-sdk name the tap relies on, and nothing else.

singer-sdk offers no public hook for four things this tap must do: move a
bookmark per complete window instead of per record, write records without
the SDK's per-record message objects, word setting errors itself, and stop
on a signal without writing into the output. The
overrides that do it live here, together; ``tests/test_sdk_contract.py``
checks on the installed singer-sdk that each name still exists with the
signature used, so an SDK upgrade that changes one fails CI instead of
silently switching the behaviour off.
"""

from __future__ import annotations

import json
from functools import cached_property
from types import FrameType
from typing import IO, Any

from singer_sdk import Stream, Tap
from singer_sdk.helpers._catalog import pop_deselected_record_properties
from singer_sdk.helpers.types import Context
from typing_extensions import override

from tap_optico import stopping
from tap_optico.errors import AccountsFailedError, SettingsError
from tap_optico.normalize import is_later
from tap_optico.writer import OpticoWriter


class WindowedStream(Stream):
    """A stream whose bookmark moves only when :meth:`checkpoint` says so."""

    @property
    def failed_accounts(self) -> dict[str, str]:
        """The accounts that failed in this run, shared by the tap's streams: name -> what failed."""
        tap = self._tap
        return tap.failed_accounts if isinstance(tap, TapSeam) else {}

    @override
    def _increment_stream_state(
        self, latest_record: dict[str, Any], *, context: Context | None = None
    ) -> None:
        """Records of a window arrive in no order and from concurrent pages: a
        per-record bookmark could pass calls not read yet, so it stays put."""

    def checkpoint(self, context: Context | None, bookmark: Any) -> None:
        """Move the bookmark forward to ``bookmark`` (if it is further) and emit STATE."""
        state = self.get_context_state(context)
        current = state.get("replication_key_value")
        if bookmark is not None and (current is None or is_later(bookmark, current)):
            state["replication_key"] = self.replication_key
            state["replication_key_value"] = bookmark
            self.state_manager.is_flushed = False
        self._write_state_message()

    @cached_property
    def _block_writer(self) -> OpticoWriter | None:
        writer = self._tap.message_writer
        return writer if isinstance(writer, OpticoWriter) else None

    @cached_property
    def _deselects_fields(self) -> bool:
        return not all(self.mask.values())

    @override
    def _write_record_message(self, record: dict[str, Any]) -> None:
        """Write a record with the least per-record work (the SDK's path costs more than the API).

        Records are already typed against the schema, so they are not conformed
        again, and they are walked for deselected fields only when the catalog
        deselects some. Stream maps apply as usual.
        """
        writer = self._block_writer
        if writer is None:
            super()._write_record_message(record)
            return
        if self._deselects_fields:
            pop_deselected_record_properties(record, self.schema, self.mask)
        for stream_map in self.stream_maps:
            mapped = stream_map.transform(record)
            if mapped is not None:
                writer.write_record(stream_map.stream_alias, mapped, self._stream_version)
        # As the SDK's own path: the stream's last STATE then follows (and flushes) these records.
        self.state_manager.is_flushed = False


class TapSeam(Tap):
    """A tap whose settings are checked by :meth:`setting_problems`, one line each, which
    stops on SIGTERM or SIGINT without writing anything more, and whose run fails at its end
    when an account failed (after every stream has read the other accounts)."""

    @cached_property
    def failed_accounts(self) -> dict[str, str]:
        """The accounts that failed in this run: name -> what failed."""
        return {}

    @classmethod
    def read_state_file(cls, state: IO[str]) -> dict[str, Any] | None:
        """The state in ``state``; None for no state."""
        parsed: dict[str, Any] = json.loads(state.read())
        return parsed

    @classmethod
    @override
    def invoke(  # type: ignore[override]  # the signature of singer-sdk's own Tap.invoke
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: Any = None,
        state: IO[str] | None = None,
        catalog: IO[str] | None = None,
    ) -> None:
        """As singer-sdk's Tap.invoke, with the state file read by :meth:`read_state_file`,
        then a failure if an account failed."""
        super(Tap, cls).invoke(about=about, about_format=about_format)  # --about
        cls.print_version(print_fn=cls.logger.info)
        tap = cls(
            config=config.config if config else {},
            state=None if state is None else cls.read_state_file(state),
            catalog=None if catalog is None else json.load(catalog),
            parse_env_config=config.parse_env if config else False,
            validate_config=True,
        )
        tap.sync_all()
        if tap.failed_accounts:
            raise AccountsFailedError(tap.failed_accounts)

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
