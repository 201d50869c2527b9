"""tap-optico: settings and streams."""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from functools import cached_property
from typing import IO, Any, ClassVar, NoReturn

from singer_sdk import Stream, Tap, metrics
from singer_sdk import typing as th
from singer_sdk.exceptions import FatalAPIError
from singer_sdk.helpers.capabilities import CapabilitiesEnum, PluginCapabilities
from typing_extensions import override

from tap_optico import secrets, stopping, totals
from tap_optico.api import DEFAULT_URL, FILTERS, MAX_PAGE_SIZE, MIN_PAGE_SIZE
from tap_optico.errors import (
    AccountsFailedError,
    CatalogError,
    OpticoError,
    ReconciliationError,
    SettingsError,
    StateError,
)
from tap_optico.reading import OpticoStream, bookmark_problem
from tap_optico.sdk_seam import TapSeam
from tap_optico.settings import (
    DATE_FORMS,
    Settings,
    clear_text_host,
    config_file_problem,
    environment_problems,
    problems,
    unknown_settings,
)
from tap_optico.state_ids import meltano_state_id
from tap_optico.streams import CallsStream, DailyCallsStream, ReconciliationStream
from tap_optico.writer import OpticoWriter


def _integer(
    name: str, default: int, minimum: int, description: str, maximum: int | None = None
) -> th.Property[Any]:
    return th.Property(
        name,
        th.IntegerType(minimum=minimum, maximum=maximum),
        default=default,
        title=name.replace("_", " ").capitalize(),
        description=description,
    )


#: Longest window and lookback, in days (about ten years).
MAX_DAYS = 3660
#: Longest wait for an answer or between two tries: a day (longer ones overflow the clock's arithmetic).
MAX_SECONDS = 86_400
#: Most tries of one request.
MAX_TRIES = 100
ACCOUNT_NAME = "A short label, unique in the list: it is in every record (`account`), in state and in logs."


class TapOptico(TapSeam):
    """Extracts calls and daily totals from the Optico call-tracking Data API."""

    name = "tap-optico"
    message_writer_class = OpticoWriter

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_key",
            th.StringType(min_length=1),
            secret=True,
            title="API key",
            description="Your Optico Data API key, for one account (else use `accounts`). "
            "Sent in the query string; never logged.",
        ),
        th.Property(
            "account_name",
            th.StringType(min_length=1),
            default="default",
            title="Account name",
            description="The name of the `api_key` account in records (`account`), state and logs.",
        ),
        th.Property(
            "accounts",
            th.ArrayType(
                th.ObjectType(
                    th.Property("name", th.StringType(min_length=1), required=True, description=ACCOUNT_NAME),
                    th.Property("api_key", th.StringType(min_length=1), required=True, secret=True),
                    th.Property("start_date", th.DateType, description="This account's own start_date."),
                    *(th.Property(name, th.StringType, description=text) for name, text in FILTERS.items()),
                )
            ),
            secret=True,
            title="Accounts",
            description="Several Optico accounts, read in one run: a list of {name, api_key} objects, "
            "each maybe with its own start_date and filters. Instead of `api_key`.",
        ),
        th.Property(
            "start_date",
            th.DateType,
            required=True,
            title="Start date",
            description=f"First day to extract when there is no state: {DATE_FORMS} (its day in `timezone`).",
        ),
        th.Property(
            "end_date",
            th.DateType,
            title="End date",
            description=(
                "Last day to extract, inclusive, in the same forms; "
                "never after today in `timezone`, the default."
            ),
        ),
        th.Property(
            "api_url",
            th.URIType,
            default=DEFAULT_URL,
            title="API URL",
            description="The Data API endpoint. Point it at the sandbox to run offline.",
        ),
        _integer(
            "page_size",
            MAX_PAGE_SIZE,
            MIN_PAGE_SIZE,
            f"Results per request, sent as `limit` ({MIN_PAGE_SIZE}-{MAX_PAGE_SIZE}).",
            MAX_PAGE_SIZE,
        ),
        *(th.Property(name, th.StringType, description=text) for name, text in FILTERS.items()),
        th.Property(
            "timezone",
            th.StringType,
            default="Europe/Paris",
            title="Time zone",
            description="IANA time zone in which the API's naive call times are read.",
        ),
        _integer("window_days", 7, 1, "Days covered by one paged request window.", MAX_DAYS),
        _integer(
            "lookback_days",
            1,
            0,
            "On an incremental run, days before the bookmark that are read again "
            "(late changes to a call; today's growing totals).",
            MAX_DAYS,
        ),
        _integer(
            "max_concurrency",
            4,
            1,
            "Requests in flight at once (pages and windows). 1 reads strictly in order.",
        ),
        _integer(
            "max_tries", 6, 1, "Tries per request before the run fails (429, 5xx, time-outs).", MAX_TRIES
        ),
        _integer(
            "max_wait_seconds", 60, 1, "Longest wait between two tries, Retry-After included.", MAX_SECONDS
        ),
        _integer("request_timeout", 120, 1, "Seconds to wait for an answer before retrying.", MAX_SECONDS),
        th.Property(
            "reconcile",
            th.StringType(allowed_values=list(totals.MODES)),
            default="warn",
            title="Reconcile",
            description="Each day's calls checked against Optico's own daily totals: `warn` logs a "
            "WARNING per day that does not add up, `fail` also makes the run exit non-zero (after "
            "writing every record and bookmark), `off` checks nothing.",
        ),
    ).to_dict()

    # Batch files would be written before the STATE that covers them is safe; records only.
    capabilities: ClassVar[list[CapabilitiesEnum]] = [
        capability for capability in Tap.capabilities if capability is not PluginCapabilities.BATCH
    ]

    @override
    def __init__(self, *args: Any, parse_env_config: bool = False, **kwargs: Any) -> None:
        """As singer-sdk's, with ``--config ENV`` values checked first (the SDK fails on a traceback)."""
        if parse_env_config:
            prefix = self.name.upper().replace("-", "_") + "_"  # singer-sdk's TAP_OPTICO_<SETTING>
            if errors := environment_problems(os.environ, self.every_setting(), prefix):
                raise SettingsError(errors)
        super().__init__(*args, parse_env_config=parse_env_config, **kwargs)

    @classmethod
    def every_setting(cls) -> dict[str, Any]:
        """The settings' JSON schema, the SDK's own (stream maps, flattening, ...) included."""
        schema = copy.deepcopy(cls.config_jsonschema)
        cls.append_builtin_config(schema)
        return schema

    @override
    def discover_streams(self) -> list[Stream]:
        # singer-sdk syncs streams in the order of their names: reconciliation comes after both.
        return [CallsStream(self), DailyCallsStream(self), ReconciliationStream(self)]

    @cached_property
    @override
    def reconciliation(self) -> totals.Reconciliation | None:
        """The calls delivered against the daily totals delivered (None with ``reconcile: off``)."""
        if Settings.from_config(self.config).reconcile == "off":
            return None
        return totals.compare(
            self.tallies.get(CallsStream.name),
            self.tallies.get(DailyCallsStream.name),
            dt.datetime.now(dt.timezone.utc),
        )

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
        """As singer-sdk's, with the state file read by :meth:`read_state_file`, then :meth:`finish`."""
        super(Tap, cls).invoke(about=about, about_format=about_format)  # --about
        cls.print_version(print_fn=cls.logger.info)
        tap = cls(
            config=config.config if config else {},
            state=None if state is None else cls.read_state_file(state),
            catalog=None if catalog is None else cls.read_catalog_file(catalog),
            parse_env_config=config.parse_env if config else False,
            validate_config=True,
        )
        tap.sync_all()
        tap.finish()

    def finish(self) -> None:
        """Log the reconciliation, then fail if an account failed or (``reconcile: fail``) a day is off."""
        settings = Settings.from_config(self.config)
        result = self.reconciliation
        if result is None:
            self.logger.info("Reconciliation with Optico's daily totals is off (setting 'reconcile')")
        else:
            for warning in totals.warnings(result):
                self.logger.warning("%s", warning)
            self.logger.info("%s", totals.summary(result))
            for point in totals.metric_points(result):
                metrics.get_metrics_logger().info("METRIC: %s", json.dumps(point, separators=(",", ":")))
            if result.differing and settings.reconcile == "fail":
                if not self.failed_accounts:
                    raise ReconciliationError(totals.failure(result))
                self.logger.error("%s", totals.failure(result))  # the failed accounts end the run
        if self.failed_accounts:
            raise AccountsFailedError(self.failed_accounts, len(settings.accounts))

    @classmethod
    def read_state_file(cls, state: IO[str]) -> dict[str, Any] | None:
        """The state, checked: an empty file is no state; one that is not a Singer state stops the run.
        What ``meltano state get`` prints (``{"singer_state": ...}``) and a STATE message are taken as
        the state they hold: read as no state, they would read every day again from start_date."""
        name = getattr(state, "name", "the state file")
        try:
            text = state.read()
        except UnicodeDecodeError:
            msg = f"State file {name} is not UTF-8 text: fix it, or clear it to read from start_date"
            raise StateError(msg) from None
        if not text.strip():
            cls.logger.warning("State file %s is empty: reading as if there were no state", name)
            return None
        try:
            parsed = json.loads(text)
        except ValueError as error:
            msg = f"State file {name} is not JSON ({error}): fix it, or clear it to read from start_date"
            raise StateError(msg) from None
        if isinstance(parsed, dict) and parsed.keys() == {"singer_state"}:  # meltano state get
            parsed = parsed["singer_state"]
        elif isinstance(parsed, dict) and parsed.get("type") == "STATE" and "value" in parsed:
            parsed = parsed["value"]  # a STATE message, as a tap writes it
        if not isinstance(parsed, dict):
            msg = f"State file {name} holds a JSON {json_kind(parsed)}, not a Singer state object"
            raise StateError(msg)
        if parsed and not parsed.keys() & SINGER_STATE_KEYS:
            msg = (
                f"State file {name} holds no {' or '.join(map(repr, sorted(SINGER_STATE_KEYS)))} "
                f"(its keys: {', '.join(map(repr, sorted(parsed)[:5]))}): it is not a Singer state"
            )
            raise StateError(msg)
        return parsed

    @classmethod
    def read_catalog_file(cls, catalog: IO[str]) -> dict[str, Any]:
        """The catalog, checked as far as singer-sdk needs it: a ``streams`` list, each with its
        ``tap_stream_id`` and ``schema`` object (it fails on anything else with a bare KeyError)."""
        name = getattr(catalog, "name", "the catalog file")
        try:
            parsed = json.loads(catalog.read())
        except UnicodeDecodeError:
            msg = f"Catalog file {name} is not UTF-8 text"
            raise CatalogError(msg) from None
        except ValueError as error:
            msg = f"Catalog file {name} is not JSON ({error}): write it again with `tap-optico --discover`"
            raise CatalogError(msg) from None
        streams = parsed.get("streams") if isinstance(parsed, dict) else None
        if not isinstance(streams, list):
            msg = f"Catalog file {name} has no 'streams' list: it is not a Singer catalog"
            raise CatalogError(msg)
        for number, entry in enumerate(streams, 1):
            if not isinstance(entry, dict) or not isinstance(entry.get("tap_stream_id"), str):
                msg = f"Catalog file {name}: stream {number} has no 'tap_stream_id'"
                raise CatalogError(msg)
            if not isinstance(entry.get("schema"), dict):
                msg = f"Catalog file {name}: stream '{entry['tap_stream_id']}' has no 'schema' object"
                raise CatalogError(msg)
        return dict(parsed)

    @override
    def load_state(self, state: dict[str, Any]) -> None:
        """Take the state, refusing a form the SDK fails on, or a bookmark not a date or past the last day."""
        bookmarks = state.get("bookmarks", {})
        if problem := _form_problem(bookmarks):
            raise StateError(f"{problem} {state_hint()}")
        super().load_state(state)
        if not bookmarks or problems(self.config, self.config_jsonschema):
            return  # nothing to check, or settings that are wrong (discovery runs them unchecked)
        for stream in self.streams.values():
            if isinstance(stream, OpticoStream):
                for account in stream.settings.accounts:
                    where = f"'{stream.name}' for account {account.name!r}"
                    if problem := bookmark_problem(where, stream.bookmark(account), stream.settings):
                        raise StateError(f"{problem} {state_hint()}")

    @override
    def setting_problems(self) -> list[str]:
        """One line per invalid setting of this tap, naming it."""
        secrets.register(self.config.get("api_key"))
        for account in self.config.get("accounts") or ():
            secrets.register(account.get("api_key") if isinstance(account, dict) else None)
        if host := clear_text_host(self.config.get("api_url")):
            self.logger.warning(
                "Setting 'api_url' uses plain http:// to %s: the API key would travel in clear text; use https://",
                host,
            )
        # A mistyped setting would be ignored on every run: the run stops, naming the setting meant.
        errors = unknown_settings(self.config, self.every_setting()["properties"])
        errors += problems(self.config, self.config_jsonschema)
        if "batch_config" in self.config:
            errors.append("Setting 'batch_config' is not supported: tap-optico writes RECORD messages")
        if not errors:
            settings = Settings.from_config(self.config)
            late = start_after_last_day(settings, self.config)
            if len(late) == len(settings.accounts):  # the run would read nothing, every day until then
                errors += [f"{line}: set a start date up to {settings.last_day}" for line in late.values()]
            else:  # an account added ahead of its first day: the others are read
                for line in late.values():
                    self.logger.warning("%s", line)
        return errors


def start_after_last_day(settings: Settings, config: Mapping[str, Any]) -> dict[str, str]:
    """Each account whose start_date (the setting's, or the account's own) is after the last day to
    read, with the line that says so."""
    today = settings.end_date is None or settings.last_day < settings.end_date
    if today:
        last = f"today ({settings.last_day} in {settings.timezone})"
    else:
        last = f"'end_date' ({settings.end_date})"
    own = {entry.get("name") for entry in config.get("accounts") or () if entry.get("start_date")}
    late: dict[str, str] = {}
    for account in settings.accounts:
        if account.start_date > settings.last_day:
            setting = (
                f"Setting 'accounts': the start_date of account {account.name!r}"
                if account.name in own
                else "Setting 'start_date'"
            )
            late[account.name] = f"{setting} ({account.start_date}) is after {last}: nothing is read"
    return late


def _form_problem(bookmarks: object) -> str | None:
    """What in ``bookmarks`` the SDK would fail on (at its first STATE), in one line; None if nothing."""
    # Bookmarks that are not an object read as one stream whose state is not an object.
    for name, entry in bookmarks.items() if isinstance(bookmarks, dict) else [("", None)]:
        parts = entry.get("partitions", []) if isinstance(entry, dict) else None
        if not isinstance(parts, list) or not all(isinstance(part, dict) for part in parts):
            return (
                "State: 'bookmarks' is not as in a Singer state (objects, with lists of partitions): "
                "fix it or clear it"
            )
        contexts = [json.dumps(part.get("context"), sort_keys=True) for part in parts]
        if twice := next((context for context in contexts if contexts.count(context) > 1), None):
            return f"State: stream '{name}' lists the partition {twice} twice: keep one, the later bookmark"
    return None


#: The keys of a Singer state (a state without either is no Singer state).
SINGER_STATE_KEYS = frozenset({"bookmarks", "currently_syncing"})
_JSON_KINDS = {dict: "object", list: "list", str: "string", int: "number", float: "number", bool: "boolean"}


def json_kind(value: Any) -> str:
    """What ``value`` is called in JSON: a list, a string, null..."""
    return "null" if value is None else _JSON_KINDS.get(type(value), type(value).__name__)


def state_hint() -> str:
    """Where to act on a state: the command for the Meltano state id of this run, or the state file."""
    state_id = os.environ.get("MELTANO_STATE_ID")  # meltano el --state-id, given in the environment
    extractor = os.environ.get("MELTANO_EXTRACTOR_NAME")  # set by Meltano for its extractor
    if not (state_id or extractor):
        return "(in the state file given with --state)"
    listing = ""
    if not state_id:
        environment = os.environ.get("MELTANO_ENVIRONMENT")
        state_id = meltano_state_id(environment, str(extractor), "<loader>")
        listing = (
            f"; `meltano state list --pattern '{meltano_state_id(environment, str(extractor), '*')}'` "
            "lists the state ids of `meltano run`, `meltano el` uses its --state-id"
        )
    return (
        f"(with Meltano: `meltano state clear --force {state_id}`, or "
        f"`meltano state set --force {state_id} '<state>'`{listing})"
    )


#: singer-sdk's lines with nothing to act on, shown at DEBUG only: settings come from a file
#: (twice in a Meltano run); the summary before the tap's own line per invalid setting; a stream
#: whose records are not in bookmark order (the reconciliation, computed again by any run).
SDK_NOISE = (
    "Skipping parse of env var settings...",
    "Config validation failed",
    "Stream is assumed to be unsorted, progress is not resumable if interrupted",
)


def _debug_only(record: logging.LogRecord) -> bool:
    """Lets :data:`SDK_NOISE` through only when its logger shows DEBUG."""
    return record.msg not in SDK_NOISE or logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def main() -> None:
    """Run the tap; a failure the tap understands ends with one line, not a traceback."""
    secrets.install()
    logger = logging.getLogger("tap-optico")
    logger.addFilter(_debug_only)
    logging.getLogger("singer_sdk").addFilter(_debug_only)
    command = TapOptico.cli  # singer-sdk's command; getting it sets the log's format up
    # A --config file singer-sdk cannot read ends in a message that names no file.
    if unreadable := list(filter(None, map(config_file_problem, config_files(sys.argv[1:])))):
        for line in unreadable:
            logger.error("%s", line)
        _exit(1)
    try:
        command()
    except SystemExit as done:  # click ends every run this way, a successful one too
        _exit(done.code if isinstance(done.code, int) else int(done.code is not None))
    except (FatalAPIError, OpticoError) as error:
        for line in error.problems if isinstance(error, SettingsError) else [str(error)]:
            logger.error("%s", line)  # noqa: TRY400 - the line is the message
        _exit(1)
    except stopping.Stopped as stop:
        if stop.signum != signal.SIGPIPE:
            logger.error("tap-optico %s: a run resumed from the last STATE written loses nothing", stop)  # noqa: TRY400
        _exit(stop.exit_code, flush_stdout=stop.signum != signal.SIGPIPE)
    except Exception as error:  # anything else: one line too, the traceback at DEBUG only
        logger.debug("Where it failed:", exc_info=True)
        what = " ".join(str(error).split())
        logger.error("tap-optico failed: %s: %s", type(error).__name__, what)  # noqa: TRY400
        _exit(1)


def config_files(arguments: list[str]) -> list[str]:
    """The files named by ``--config`` (singer-sdk reads them; ``ENV`` is the environment)."""
    files = []
    for index, argument in enumerate(arguments):
        if argument == "--config" and index + 1 < len(arguments):
            files.append(arguments[index + 1])
        elif argument.startswith("--config="):
            files.append(argument.removeprefix("--config="))
    return [path for path in files if path != "ENV"]


def _exit(code: int, *, flush_stdout: bool = True) -> NoReturn:
    """Exit now: request threads still waiting on the API are not waited for."""
    if flush_stdout:
        sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
