"""The private singer-sdk names the tap relies on still exist, as used, on the installed SDK.

``tap_optico/sdk_seam.py`` holds every such use. If a singer-sdk release
renames or reshapes one, an override there would silently stop applying
(per-record bookmarks would come back); these tests make that upgrade fail.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from singer_sdk import RESTStream, Stream, Tap
from singer_sdk.helpers import _catalog
from singer_sdk.plugin_base import PluginBase

from tap_optico import sdk_seam
from tap_optico.client import RETRIABLE_ERRORS
from tap_optico.tap import TapOptico

PACKAGE = Path(sdk_seam.__file__).parent
SDK_CLASSES = (Stream, RESTStream, Tap, PluginBase)

#: name -> (owner, parameters after self as (name, kind), where the SDK calls it)
METHODS: dict[str, tuple[type[Any], list[tuple[str, inspect._ParameterKind]], Any]] = {
    "_increment_stream_state": (
        Stream,
        [
            ("latest_record", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            ("context", inspect.Parameter.KEYWORD_ONLY),
        ],
        Stream._sync_records,
    ),
    "_write_record_message": (
        Stream,
        [("record", inspect.Parameter.POSITIONAL_OR_KEYWORD)],
        Stream._sync_records,
    ),
    "_write_state_message": (Stream, [], Stream._sync_records),
    "_write_starting_replication_value": (
        Stream,
        [("context", inspect.Parameter.POSITIONAL_OR_KEYWORD)],
        Stream._sync_records,
    ),
    "_handle_termination": (
        PluginBase,
        [
            ("signum", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            ("frame", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ],
        PluginBase._setup_signal_handlers,
    ),
    "_validate_config": (
        PluginBase,
        [("raise_errors", inspect.Parameter.KEYWORD_ONLY)],
        PluginBase.__init__,
    ),
}
#: Instance attributes the seam reads.
ATTRIBUTES = ("_tap", "_stream_version")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_private_method_exists_with_the_signature_used_and_is_still_called(name: str) -> None:
    owner, expected, caller = METHODS[name]
    method = getattr(owner, name)
    parameters = [(p.name, p.kind) for p in inspect.signature(method).parameters.values()][1:]
    assert parameters == expected
    assert f"self.{name}" in inspect.getsource(caller), f"singer-sdk no longer calls {name}"


@functools.cache
def _sdk_stream() -> Stream:
    """A stream as the SDK builds it (no request is made)."""
    tap = TapOptico(config={"api_key": "k", "start_date": "2026-01-01"}, validate_config=False)
    return tap.streams["calls"]


def test_each_private_attribute_is_set_on_a_stream() -> None:
    stream = _sdk_stream()
    for name in ATTRIBUTES:
        assert hasattr(stream, name), name
    assert stream._tap.message_writer is not None


def test_the_deselection_helper_takes_record_schema_and_mask() -> None:
    parameters = list(inspect.signature(_catalog.pop_deselected_record_properties).parameters)
    assert parameters[:3] == ["record", "schema", "mask"]


def _private_sdk_names_used(path: Path) -> set[str]:
    """``x._name`` uses and ``def _name`` overrides in ``path`` that are private singer-sdk names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names |= {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    names |= {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    private = {name for name in names if name.startswith("_") and not name.startswith("__")}
    set_by_sdk = set(vars(_sdk_stream()))
    sdk = {name for name in private if name in set_by_sdk or any(hasattr(cls, name) for cls in SDK_CLASSES)}
    modules = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("singer_sdk")
    }
    sdk |= {module for module in modules if any(part.startswith("_") for part in module.split("."))}
    return sdk


def test_private_sdk_names_are_used_in_the_seam_only_and_all_checked_here() -> None:
    seam = Path(sdk_seam.__file__)
    elsewhere = {
        str(path.relative_to(PACKAGE)): used
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != seam and (used := _private_sdk_names_used(path))
    }
    assert elsewhere == {}
    checked = {*METHODS, *ATTRIBUTES, "singer_sdk.helpers._catalog"}
    assert _private_sdk_names_used(seam) == checked


def test_the_tap_retries_exactly_what_the_sdk_retries() -> None:
    """The client builds its own retry decorator (to log each retry once): same errors as the SDK's."""
    source = inspect.getsource(RESTStream.request_decorator)
    listed = source[source.index("backoff.on_exception(") : source.index("max_tries=")]
    names = set(re.findall(r"([A-Za-z]+(?:Error|Exception)|Timeout)\b", listed))
    assert names == {error.__name__ for error in RETRIABLE_ERRORS}


def test_the_cli_run_the_seam_repeats_is_still_the_sdks() -> None:
    """TapOptico.invoke repeats singer-sdk's Tap.invoke (to fail after every stream ran when an account
    failed): the SDK's must still build the tap from the same inputs and run sync_all."""
    source = inspect.getsource(Tap.invoke)
    for piece in (
        "super().invoke(about=about, about_format=about_format)",
        "cls.print_version(print_fn=cls.logger.info)",
        "config=config.config",
        "parse_env_config=config.parse_env",
        "validate_config=True",
        "tap.sync_all()",
    ):
        assert piece in source, piece
    parameters = list(inspect.signature(Tap.invoke).parameters)
    assert parameters == ["about", "about_format", "config", "state", "catalog"]


#: What singer-sdk's sync loop calls, and what of it the fast path (WindowedStream.fast_path) does
#: itself or finds has nothing to do: a new call in an SDK upgrade must be looked at here.
SYNC_LOOP_CALLS = {
    "get_record_counter": "kept, to count the records written (write_records)",
    "get_sync_timer": "while it runs, records are written by the batch",
    "get_records": "writes the records itself",
    "_check_max_record_limit": "get_records stops at the limit",
    "post_process": "fast_path: only when not overridden",
    "_process_record": "fast_path: no child streams; the context is None, nothing to add",
    "_write_record_message": "write_records writes the same bytes",
    "_increment_stream_state": "a no-op in the seam",
    "_write_state_message": "called by the loop after the records as usual",
    "_get_state_partition_context": "once per context",
    "_write_starting_replication_value": "once per context, a no-op in the seam",
    "get_context_state": "once per context",
    "_finalize_state": "once per context",
}


def test_the_sdk_sync_loop_does_nothing_the_fast_path_leaves_out() -> None:
    source = inspect.getsource(Stream._sync_records)
    assert set(re.findall(r"self\.(\w+)\(", source)) == set(SYNC_LOOP_CALLS)
    assert set(re.findall(r"record_counter\.(\w+)\(", source)) == {"with_context", "increment"}
    assert "self.selected" in source  # fast_path requires a selected stream
