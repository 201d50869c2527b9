"""The Optico Data API client: the one REST stream every stream builds on.

All HTTP behaviour lives here: the URL and its parameters, the key in the
query string, retries with backoff, the API's error answers, and the loop
that reads a date range window by window and moves the bookmark.
"""

from __future__ import annotations

import datetime as dt
import operator
import random
import threading
import time
from collections.abc import Generator, Iterable, Iterator, Mapping
from functools import cached_property
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import msgspec
import requests
from singer_sdk import RESTStream
from singer_sdk.authenticators import APIKeyAuthenticator
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.helpers._catalog import pop_deselected_record_properties
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.helpers.types import Context
from singer_sdk.streams.rest import PageContext

from tap_optico.normalize import Normalizer, decode_plain_page
from tap_optico.paging import FIRST_PAGE, OpticoPaginator, Page, Window, WindowPager, plan_windows
from tap_optico.secrets import redact
from tap_optico.writer import OpticoWriter

FILTER_SETTINGS = ("phone", "tracking_phone", "caller_phone", "offline_phone_description")
MAX_WINDOW_READS = 3
FIRST_RETRY_WAIT_SECONDS = 0.5
MAX_REPORTED_BODY_CHARS = 200


class SharedPause:
    """A rate limit seen by one worker pauses them all."""

    def __init__(self) -> None:
        self._until = 0.0
        self._lock = threading.Lock()

    def extend(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, time.monotonic() + seconds)

    def wait(self) -> None:
        delay = self._until - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _retry_after(error: BaseException | None) -> float | None:
    response = getattr(error, "response", None)
    if response is None:
        return None
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


class OpticoStream(RESTStream[int]):
    """Reads ``type=calls`` answers of the Data API, window by window."""

    path = ""
    # The normaliser already typed every value against the schema.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE
    #: Query parameters that make this stream (``group_by_day`` for daily totals).
    extra_params: ClassVar[Mapping[str, str]] = {}
    #: Turns the API's raw rows into typed records.
    normalizer_class: ClassVar[type[Normalizer]]
    #: Fields that tell two records apart when a window is read again.
    identity_fields: ClassVar[tuple[str, ...]]

    @property
    def url_base(self) -> str:
        return str(self.config["api_url"])

    @cached_property
    def authenticator(self) -> APIKeyAuthenticator:
        return APIKeyAuthenticator(key="api_key", value=self.config["api_key"], location="params")

    @property
    def timeout(self) -> int:
        return int(self.config["request_timeout"])

    @cached_property
    def rate_limit_pause(self) -> SharedPause:
        return SharedPause()

    def get_url_params(self, context: Context | None, next_page_token: int | None) -> dict[str, Any]:
        if not context:
            msg = "a window context is required"
            raise ValueError(msg)
        params: dict[str, Any] = {
            "type": "calls",
            "start_date": context["start_date"],
            "end_date": context["end_date"],
            "page": next_page_token or FIRST_PAGE,
            "limit": self.config["page_size"],
        }
        params.update({name: self.config[name] for name in FILTER_SETTINGS if self.config.get(name)})
        params.update(self.extra_params)
        return params

    def get_new_paginator(self) -> OpticoPaginator:
        return OpticoPaginator()

    # Answers and errors

    def response_error_message(self, response: requests.Response) -> str:
        content_type = response.headers.get("Content-Type", "no content type")
        excerpt = " ".join(response.text[:MAX_REPORTED_BODY_CHARS].split())
        return redact(
            f"Optico API answered HTTP {response.status_code} {response.reason} ({content_type}): {excerpt}"
        )

    def decode_body(self, response: requests.Response) -> dict[str, Any]:
        """The JSON answer; an answer that is not JSON is retried, an ERROR is fatal."""
        plain = self.normalizer_class.plain
        if plain is not None and (body := decode_plain_page(plain, response.content)) is not None:
            return body
        try:
            body = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            content_type = response.headers.get("Content-Type", "no content type")
            msg = (
                f"Optico API answered HTTP {response.status_code} with {content_type} that is not valid JSON"
            )
            raise RetriableAPIError(msg, response) from None
        if not isinstance(body, dict):
            msg = f"Optico API answered a JSON {type(body).__name__} instead of an object"
            raise FatalAPIError(msg)
        if str(body.get("status", "OK")).upper() == "ERROR":
            errors = body.get("errors") or ["no message"]
            messages = errors if isinstance(errors, list) else [errors]
            msg = "Optico API error: " + "; ".join(" ".join(str(m).split()) for m in messages)
            raise FatalAPIError(redact(msg))
        return body

    def parse_response(self, response: requests.Response) -> Iterable[dict[str, Any]]:
        yield from self._results(self.decode_body(response), FIRST_PAGE)

    def _results(self, body: Mapping[str, Any], number: int) -> list[Any]:
        results = body.get("results")
        if results is None and _int_or_none(body.get("total_results")) in (0, None):
            return []
        if not isinstance(results, list):
            msg = f"Optico API answer for page {number} has no 'results' list (got {type(results).__name__})"
            raise FatalAPIError(msg)
        return results

    # Retries

    def backoff_max_tries(self) -> int:
        return int(self.config["max_tries"])

    def backoff_wait_generator(self) -> Generator[float, Any, None]:
        """Exponential waits, or the server's Retry-After, never above max_wait_seconds."""
        longest = float(self.config["max_wait_seconds"])
        wait = FIRST_RETRY_WAIT_SECONDS
        error = yield 0.0
        while True:
            retry_after = _retry_after(error)
            error = yield min(longest, wait if retry_after is None else retry_after)
            wait *= 2

    def backoff_jitter(self, value: float) -> float:
        return value + random.uniform(0, value / 10)

    def backoff_handler(self, details: Any) -> None:
        error = details.get("exception")
        wait = float(details.get("wait") or 0)
        response = getattr(error, "response", None)
        if response is not None and response.status_code == requests.codes.too_many_requests:
            self.rate_limit_pause.extend(wait)
        self.logger.warning(
            "%s: request failed (try %d of %d): %s; retrying in %.1f s",
            self.name,
            details.get("tries", 0),
            self.backoff_max_tries(),
            redact(str(error) or type(error).__name__),
            wait,
        )

    # Reading windows

    def _send(
        self, prepared: requests.PreparedRequest, context: Context | None
    ) -> tuple[requests.Response, dict[str, Any]]:
        self.rate_limit_pause.wait()
        response = self._request(prepared, context)
        return response, self.decode_body(response)

    @cached_property
    def _send_with_retries(self) -> Any:
        # The SDK types the decorated function as returning a Response; backoff does not care.
        return self.request_decorator(self._send)  # type: ignore[arg-type]

    def fetch_page(self, window: Window, number: int) -> Page:
        context = {"start_date": window.start.isoformat(), "end_date": window.end.isoformat()}
        request = self.get_http_request(page=PageContext(stream_context=context, next_page_token=number))
        prepared = self.build_prepared_request(
            method=request.method,
            url=request.url,
            params=request.encode_params(),
            headers=request.headers,
        )
        try:
            response, body = self._send_with_retries(prepared, context)
        except (RetriableAPIError, requests.RequestException) as error:
            msg = (
                f"{self.name}: giving up on {window.start}..{window.end} page {number} after "
                f"{self.backoff_max_tries()} tries: {redact(str(error) or type(error).__name__)}"
            )
            raise FatalAPIError(msg) from None
        paginator = OpticoPaginator(number)
        paginator.advance(response)
        total = body.get("total_results")
        return Page(
            window=window,
            number=number,
            results=self._results(body, number),
            total_results=_int_or_none(total),
            next_page=None if paginator.finished else paginator.current_value,
        )

    def plan(self, context: Context | None) -> list[Window]:
        """The windows from the start (setting, or bookmark minus lookback) to end_date."""
        config = self.config
        start = dt.date.fromisoformat(config["start_date"])
        bookmark = self.get_starting_replication_key_value(context)
        if bookmark:
            lookback = dt.timedelta(days=int(config["lookback_days"]))
            start = max(start, dt.date.fromisoformat(str(bookmark)[:10]) - lookback)
        end_date = config.get("end_date")
        end = (
            dt.date.fromisoformat(end_date)
            if end_date
            else dt.datetime.now(ZoneInfo(config["timezone"])).date()
        )
        return plan_windows(start, end, int(config["window_days"]))

    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        normalize = self.normalizer_class(self.name, self.logger, self.config["timezone"])
        pager = WindowPager(
            self.fetch_page,
            page_size=int(self.config["page_size"]),
            max_concurrency=int(self.config["max_concurrency"]),
            max_reads=MAX_WINDOW_READS,
            logger=self.logger,
        )
        windows = self.plan(context)
        if windows:
            self.logger.info(
                "%s: reading %s..%s in %d window(s)",
                self.name,
                windows[0].start,
                windows[-1].end,
                len(windows),
            )
        try:
            yield from self._read_records(pager, windows, normalize, context)
        finally:
            # Records of an interrupted read (an error, an aborted sync) still reach the target.
            if self._writer is not None:
                self._writer.flush()
        normalize.log_summary()

    def _read_records(
        self, pager: WindowPager, windows: list[Window], normalize: Normalizer, context: Context | None
    ) -> Iterator[dict[str, Any]]:
        replication_key = str(self.replication_key)
        identity = operator.itemgetter(*self.identity_fields)
        for item in pager.read(windows):
            if isinstance(item, Window):
                self._advance_bookmark(context, item)
                continue
            window = item.window
            seen = window.seen
            for raw in item.results:
                if not normalize.accepts(raw):
                    self.logger.error("%s: skipped a result that is not a JSON object: %.80r", self.name, raw)
                    continue
                record = normalize(raw)
                key = identity(record)
                if key in seen:
                    continue
                seen.add(key)
                value = record[replication_key]
                if value is not None and (window.bookmark is None or value > window.bookmark):
                    window.bookmark = value
                yield record

    @cached_property
    def _writer(self) -> OpticoWriter | None:
        writer = self._tap.message_writer
        return writer if isinstance(writer, OpticoWriter) else None

    @cached_property
    def _deselects_fields(self) -> bool:
        return not all(self.mask.values())

    def _write_record_message(self, record: dict[str, Any]) -> None:
        """Write a record with the least per-record work (the SDK's path costs more than the API).

        The normaliser has typed every value against the schema, so records are
        not conformed again, and they are walked for deselected fields only when
        the catalog deselects some. Stream maps apply as usual.
        """
        writer = self._writer
        if writer is None:
            super()._write_record_message(record)
            return
        if self._deselects_fields:
            pop_deselected_record_properties(record, self.schema, self.mask)
        for stream_map in self.stream_maps:
            mapped = stream_map.transform(record)
            if mapped is not None:
                writer.write_record(stream_map.stream_alias, mapped, self._stream_version)

    def generate_child_contexts(
        self, record: dict[str, Any], context: Context | None
    ) -> Iterable[Context | None]:
        """No stream of this tap has child streams."""
        return ()

    def _advance_bookmark(self, context: Context | None, window: Window) -> None:
        """After a complete window, move the bookmark to its newest record and emit STATE."""
        state = self.get_context_state(context)
        current = state.get("replication_key_value")
        if window.bookmark is not None and (current is None or window.bookmark > current):
            state["replication_key"] = self.replication_key
            state["replication_key_value"] = window.bookmark
            self.state_manager.is_flushed = False
        self._write_state_message()
        window.seen.clear()

    def _increment_stream_state(
        self, latest_record: dict[str, Any], *, context: Context | None = None
    ) -> None:
        """Bookmarks move per complete window in :meth:`_advance_bookmark`, not per record.

        Records of a window arrive in no particular order (and from concurrent
        pages), so a per-record bookmark could pass calls not yet read.
        """
