"""tap-optico: settings and streams."""

from __future__ import annotations

import logging
import sys
from typing import Any

from singer_sdk import Stream
from singer_sdk import typing as th
from singer_sdk.exceptions import FatalAPIError
from typing_extensions import override

from tap_optico import secrets
from tap_optico.api import DEFAULT_URL, FILTERS, MAX_PAGE_SIZE, MIN_PAGE_SIZE
from tap_optico.sdk_seam import CheckedSettingsTap
from tap_optico.settings import DATE_FORMS, clear_text_host, problems
from tap_optico.streams import CallsStream, DailyCallsStream
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


class TapOptico(CheckedSettingsTap):
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
            description=f"First day to extract when there is no state: {DATE_FORMS} (its day in `timezone`).",
        ),
        th.Property(
            "end_date",
            th.DateType,
            title="End date",
            description="Last day to extract, inclusive, in the same forms. Default: today in `timezone`.",
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

    @override
    def discover_streams(self) -> list[Stream]:
        return [CallsStream(self), DailyCallsStream(self)]

    @override
    def setting_problems(self) -> list[str]:
        """One line per invalid setting of this tap, naming it."""
        secrets.register(self.config.get("api_key"))
        if host := clear_text_host(self.config.get("api_url")):
            self.logger.warning(
                "Setting 'api_url' uses plain http:// to %s: the API key would travel in clear text; use https://",
                host,
            )
        return problems(self.config, self.config_jsonschema)


def main() -> None:
    """Run the tap; a failure the tap understands ends with one line, not a traceback."""
    secrets.install()
    try:
        TapOptico.cli()
    except FatalAPIError as error:
        logging.getLogger("tap-optico").error("%s", error)  # noqa: TRY400 - the line is the message
        sys.exit(1)
