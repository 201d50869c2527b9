"""tap-optico: settings and streams."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError

from tap_optico.limits import MAX_PAGE_SIZE, MIN_PAGE_SIZE
from tap_optico.secrets import install, register_secret
from tap_optico.streams import CallsStream, DailyCallsStream
from tap_optico.writer import OpticoWriter

DEFAULT_API_URL = "https://www.optico.fr/data-api"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
install()


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


def _filter(name: str, description: str) -> th.Property[Any]:
    return th.Property(name, th.StringType, description=description)


class TapOptico(Tap):
    """Extracts calls and daily totals from the Optico call-tracking Data API."""

    name = "tap-optico"
    message_writer_class = OpticoWriter

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_key",
            th.StringType(min_length=1),
            required=True,
            secret=True,
            title="API key",
            description="Your Optico Data API key. Sent in the query string; never logged.",
        ),
        th.Property(
            "start_date",
            th.DateType,
            required=True,
            title="Start date",
            description="First day to extract (YYYY-MM-DD) when there is no state.",
        ),
        th.Property(
            "end_date",
            th.DateType,
            title="End date",
            description="Last day to extract, inclusive. Default: today in `timezone`.",
        ),
        th.Property(
            "api_url",
            th.StringType,
            default=DEFAULT_API_URL,
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
        _filter("phone", "Only calls to this destination number."),
        _filter("tracking_phone", "Only calls on this tracking number."),
        _filter("caller_phone", "Only calls from this caller number."),
        _filter(
            "offline_phone_description",
            "Only calls on static (offline) numbers whose description matches.",
        ),
        th.Property(
            "timezone",
            th.StringType,
            default="Europe/Paris",
            title="Time zone",
            description="IANA time zone in which the API's naive call times are read.",
        ),
        _integer("window_days", 7, 1, "Days covered by one paged request window."),
        _integer(
            "lookback_days",
            1,
            0,
            "On an incremental run, days before the bookmark that are read again "
            "(late changes to a call; today's growing totals).",
        ),
        _integer(
            "max_concurrency",
            4,
            1,
            "Requests in flight at once (pages and windows). 1 reads strictly in order.",
        ),
        _integer("max_tries", 6, 1, "Tries per request before the run fails (429, 5xx, time-outs)."),
        _integer("max_wait_seconds", 60, 1, "Longest wait between two tries, Retry-After included."),
        _integer("request_timeout", 120, 1, "Seconds to wait for an answer before retrying."),
    ).to_dict()

    def discover_streams(self) -> list[Stream]:
        register_secret(str(self.config.get("api_key") or ""))
        return [CallsStream(self), DailyCallsStream(self)]

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """One line per invalid setting, naming it; secret values are never echoed."""
        register_secret(str(self.config.get("api_key") or ""))
        # The SDK checks the built-in settings (stream maps, flattening, ...);
        # ours get the clearer messages of _setting_errors().
        builtin_errors = [
            error
            for error in super()._validate_config(raise_errors=False)
            if not any(f"'{name}'" in error for name in OWN_SETTINGS)
        ]
        errors = [*self._setting_errors(), *builtin_errors]
        self._warn_clear_text_url()
        if errors and raise_errors:
            raise ConfigValidationError("Invalid settings", errors=errors)
        return errors

    def _setting_errors(self) -> list[str]:
        config = self.config
        errors = []
        key = config.get("api_key")
        if not isinstance(key, str) or not key.strip():
            errors.append("Setting 'api_key' is required: set it to your Optico Data API key")
        dates: dict[str, dt.date] = {}
        for name in ("start_date", "end_date"):
            value = config.get(name)
            if value is None and name == "end_date":
                continue
            try:
                dates[name] = dt.date.fromisoformat(str(value))
            except ValueError:
                errors.append(f"Setting '{name}' must be a date as YYYY-MM-DD, got {value!r}")
        if "start_date" in dates and "end_date" in dates and dates["end_date"] < dates["start_date"]:
            errors.append("Setting 'end_date' must not be before 'start_date'")
        for name, low, high in (
            ("page_size", MIN_PAGE_SIZE, MAX_PAGE_SIZE),
            ("window_days", 1, None),
            ("lookback_days", 0, None),
            ("max_concurrency", 1, None),
            ("max_tries", 1, None),
            ("max_wait_seconds", 1, None),
            ("request_timeout", 1, None),
        ):
            value = config.get(name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < low
                or (high and value > high)
            ):
                bound = f"from {low} to {high}" if high else f"at least {low}"
                errors.append(f"Setting '{name}' must be a whole number {bound}, got {value!r}")
        try:
            ZoneInfo(str(config.get("timezone")))
        except (ZoneInfoNotFoundError, ValueError):
            errors.append(
                "Setting 'timezone' must be an IANA time zone such as Europe/Paris, "
                f"got {config.get('timezone')!r}"
            )
        url = urlsplit(str(config.get("api_url")))
        if url.scheme not in ("http", "https") or not url.hostname:
            errors.append(f"Setting 'api_url' must be an http(s) URL, got {config.get('api_url')!r}")
        return errors

    def _warn_clear_text_url(self) -> None:
        url = urlsplit(str(self.config.get("api_url")))
        if url.scheme == "http" and url.hostname not in LOCAL_HOSTS:
            self.logger.warning(
                "Setting 'api_url' uses plain http:// to %s: the API key would travel in clear text; use https://",
                url.hostname,
            )


OWN_SETTINGS = tuple(TapOptico.config_jsonschema["properties"])


def main() -> None:
    """Run the tap; a failure the tap understands ends with one line, not a traceback."""
    try:
        TapOptico.cli()
    except FatalAPIError as error:
        logging.getLogger("tap-optico").error("%s", error)  # noqa: TRY400 - the line is the message
        sys.exit(1)
