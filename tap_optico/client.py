"""The Optico Data API client: all HTTP (the key in the query string, retries, the pause after a 429)
and every judgement of an answer (retriable, fatal, ``status: "ERROR"``, malformed, a ``next_page``
that goes nowhere)."""

from __future__ import annotations

import codecs
import datetime as dt
import email.utils
import math
import random
import re
import threading
import time
from collections.abc import Callable, Generator, Mapping
from functools import cached_property
from typing import Any, ClassVar
from urllib.parse import urlsplit

import backoff
import msgspec
import requests
from requests.adapters import DEFAULT_POOLSIZE
from singer_sdk import RESTStream
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from typing_extensions import override

from tap_optico.api import DATA_TYPE, LAST_PAGE_MARKERS
from tap_optico.deadline import DeadlineAdapter, bounded
from tap_optico.normalize import Conversion, Normalizer, decode_plain_page
from tap_optico.paging import Page, Window
from tap_optico.secrets import redact, shorten
from tap_optico.settings import Settings

FIRST_RETRY_WAIT_SECONDS = 0.5
#: What singer-sdk's own request decorator retries (tests/test_sdk_contract.py holds them equal).
RETRIABLE_ERRORS = (
    ConnectionResetError,
    RetriableAPIError,
    requests.exceptions.Timeout,
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
#: The longest excerpt of the API's text (an error page, its messages) that a log line quotes.
MAX_REPORTED_BODY_CHARS = 200
#: The characters of the API's text read to quote it: bounded, so that a body or a message of
#: megabytes costs what a short one does; far more than an excerpt, so that collapsing whitespace
#: still leaves one.
QUOTE_READ_CHARS = 4_096
#: An API error that speaks of the key ("Clef API invalide"); HTTP 401 and 403 refuse it too.
KEY_WORDS = re.compile(r"\bcl(?:ef|é|e)\b|\bapi[ _-]?key\b|\bkey\b", re.IGNORECASE)
#: Pieces an answer's body is read in: requests' own are 10 KiB, each through three libraries' layers.
#: Bounded, not the length the server announces: memory grows with the bytes that arrive, and a
#: compressed body is inflated a piece at a time.
BODY_PIECE_BYTES = 1 << 20
#: The most bytes an answer may hold, once inflated. A page of 5,000 calls (the largest the API
#: serves) is about 2.5 MB: this is 25 times that, and stops a body without end, or a gzip bomb,
#: long before it fills the memory of a machine that runs several taps.
MAX_ANSWER_BYTES = 64 << 20


class RefusedKeyError(FatalAPIError):
    """The API refused an account's key."""


def refuse_https_downgrade(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """A ``requests`` response hook: a redirect from https:// to any other scheme is not followed,
    as it would send the key (in the query string) in clear text. Only hosts are named: a URL's
    query holds the key."""
    if not response.is_redirect or urlsplit(response.url).scheme.lower() != "https":
        return
    target = urlsplit(response.headers["Location"].strip())
    if target.scheme.lower() in ("", "https"):  # a relative redirect keeps the scheme
        return
    response.close()
    msg = (
        f"Optico API at {urlsplit(response.url).hostname} redirected to {target.scheme}:// on "
        f"{target.hostname or 'no host'}: not followed, the API key would travel in clear text"
    )
    raise FatalAPIError(shorten(msg, MAX_REPORTED_BODY_CHARS))


def read_next_page(value: Any) -> int | None:
    """The page ``next_page`` names, or None on the last page (absent or in LAST_PAGE_MARKERS); one
    that does not move forward says nothing of a next page, and the other signals decide (paging.py)."""
    if value in LAST_PAGE_MARKERS:
        return None
    page = _count(value)
    if page is None:
        msg = f"Optico API answered next_page={value!r}, which is not a page number"
        raise FatalAPIError(msg)
    return page


def judge_answer(body: dict[str, Any], number: int) -> None:
    """Fails unless ``body`` is a page of results: a ``results`` list, a ``status`` that is OK (in any
    case) or absent, and no message in ``errors``. The reference documents no other shape, so an
    answer that says anything else (``{}``, ``"status": "KO"``, a maintenance message) is not read
    as "no calls": that would move the bookmark past days never read."""
    status = body.get("status")
    word = "OK" if status is None else str(status).strip().upper()
    errors = _messages(body, "errors")
    if word == "ERROR" or errors:
        said = quote(errors)
        raise (RefusedKeyError if KEY_WORDS.search(said) else FatalAPIError)(f"Optico API error: {said}")
    if word != "OK":
        said = quote(_messages(body, "errors", "error", "message"))
        msg = f"Optico API answered status {shorten(str(status), 40)!r} instead of OK: {said}"
        raise (RefusedKeyError if KEY_WORDS.search(said) else FatalAPIError)(msg)
    results = body.get("results")
    if not isinstance(results, list):
        msg = f"Optico API answer for page {number} has no 'results' list (got {type(results).__name__})"
        raise FatalAPIError(msg)


def _messages(body: dict[str, Any], *keys: str) -> list[Any]:
    """The messages under ``keys`` (a list, or one message); an empty one says nothing."""
    said: list[Any] = []
    for key in keys:
        value = body.get(key)
        said += value if isinstance(value, list) else [value]
    return [message for message in said if message and (not isinstance(message, str) or message.strip())]


def quote(messages: list[Any]) -> str:
    """The API's ``messages`` (or "no message") on one line of at most MAX_REPORTED_BODY_CHARS, the key
    masked. Only their start is read: a message of megabytes costs no more than a short one."""
    if not messages:
        return "no message"
    text = "; ".join(str(message)[:QUOTE_READ_CHARS] for message in messages[:QUOTE_READ_CHARS])
    whole = len(text) <= QUOTE_READ_CHARS
    return shorten(" ".join(text[:QUOTE_READ_CHARS].split()), MAX_REPORTED_BODY_CHARS, whole=whole)


def _content_type(response: requests.Response) -> str:
    return shorten(response.headers.get("Content-Type", "no content type"), 100)


def _declared_charset(response: requests.Response) -> str:
    """The charset the answer declares, else UTF-8 (requests would read any text/* as Latin-1), and
    UTF-8 for one Python does not know."""
    charset = "charset" in response.headers.get("Content-Type", "").lower() and response.encoding
    try:
        return codecs.lookup(charset).name if charset else "utf-8"
    except LookupError:
        return "utf-8"


def _json_text(response: requests.Response) -> bytes:
    """The answer's body as UTF-8, which is what JSON is read from: decoded from the charset it
    declares (``iso-8859-1`` and the like), without a byte order mark."""
    content = response.content
    charset = _declared_charset(response)
    if charset not in ("utf-8", "ascii"):
        try:
            return content.decode(charset).encode()
        except UnicodeDecodeError as error:
            msg = (
                f"Optico API answered HTTP {response.status_code} with {_content_type(response)}, but byte "
                f"{error.start} of its {len(content)} is not {charset}"
            )
            raise RetriableAPIError(msg, response) from None
    return content.removeprefix(codecs.BOM_UTF8)


def _what_is_wrong(content: bytes, error: msgspec.DecodeError) -> str:
    """What makes ``content`` not JSON, and where: msgspec says it ("trailing characters (byte
    3332)"), but for a byte that is not UTF-8."""
    try:
        content.decode()
    except UnicodeDecodeError as bad:
        return f"byte {bad.start} is not UTF-8, and the answer declares no other charset"
    return shorten(str(error), MAX_REPORTED_BODY_CHARS)


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """The wait a Retry-After header asks for: seconds, or until an HTTP date (none if it is past);
    None when it is absent or unusable (negative, nan, infinite, neither form): the exponential wait
    then applies, rather than none at all."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, said without certainty
            when = when.replace(tzinfo=dt.timezone.utc)
        seconds = max(0.0, (when - (now or dt.datetime.now(dt.timezone.utc))).total_seconds())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _count(value: Any) -> int | None:
    """A whole number ≥ 0 from a JSON number (``2`` or ``2.0``) or digits; None for anything else."""
    if isinstance(value, str) and value.strip().isdecimal():  # isdigit() takes "²", which int() refuses
        return int(value)
    if type(value) is float and value.is_integer():
        value = int(value)
    return value if type(value) is int and value >= 0 else None  # a bool is not a count


class SharedPause:
    """A rate limit seen by one worker pauses them all."""

    def __init__(self) -> None:
        self._until = 0.0
        self._lock = threading.Lock()

    def extend(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, time.monotonic() + seconds)

    def wait(self) -> None:
        time.sleep(max(0.0, self._until - time.monotonic()))


class OpticoClient(RESTStream[int]):
    """Requests pages of ``type=calls`` answers of the Data API, and judges the answers."""

    path = ""
    #: Query parameters that make this stream (``group_by_day`` for daily totals).
    extra_params: ClassVar[Mapping[str, str]] = {}
    #: The normaliser: fields come from the schema, ``conversions`` where a type's default is not enough.
    normalizer_class: ClassVar[type[Normalizer]] = Normalizer
    conversions: ClassVar[Mapping[str, Conversion]] = {}

    @cached_property
    def settings(self) -> Settings:
        return Settings.from_config(self.config)

    # The request

    @property
    @override
    def url_base(self) -> str:
        return self.settings.api_url

    @property
    @override
    def timeout(self) -> int:
        return self.settings.request_timeout

    @property
    @override
    def requests_session(self) -> requests.Session:
        """The SDK's session, whose connections each try's deadline can cut (deadline.py)."""
        session = super().requests_session
        if not isinstance(session.get_adapter(self.url_base), DeadlineAdapter):
            # A connection kept for each request that may be in flight at once.
            size = max(DEFAULT_POOLSIZE, self.settings.max_concurrency)
            for prefix in ("http://", "https://"):
                session.mount(prefix, DeadlineAdapter(pool_connections=size, pool_maxsize=size))
            session.hooks["response"].append(refuse_https_downgrade)
        return session

    def query(self, window: Window, number: int) -> dict[str, Any]:
        """Page ``number`` of ``window``: its days, and its account's key and filters."""
        return {
            "api_key": window.account.api_key,
            "type": DATA_TYPE,
            "start_date": window.start.isoformat(),
            "end_date": window.end.isoformat(),
            "page": number,
            "limit": self.settings.page_size,
            **window.account.filters,
            **self.extra_params,
        }

    # Answers

    @override
    def response_error_message(self, response: requests.Response) -> str:
        content = response.content
        start = content[: 4 * QUOTE_READ_CHARS]  # UTF-8 takes at most 4 bytes a character
        text = start.decode(_declared_charset(response), errors="replace")
        whole = len(start) == len(content) and len(text) <= QUOTE_READ_CHARS
        excerpt = shorten(" ".join(text[:QUOTE_READ_CHARS].split()), MAX_REPORTED_BODY_CHARS, whole=whole)
        return redact(
            f"Optico API answered HTTP {response.status_code} {shorten(str(response.reason), 100)} "
            f"({_content_type(response)}): {excerpt}"
        )

    @override
    def validate_response(self, response: requests.Response) -> None:
        if response.status_code in (requests.codes.unauthorized, requests.codes.forbidden):
            raise RefusedKeyError(self.response_error_message(response))
        super().validate_response(response)

    #: Held while a body is decoded. Decoding is CPU work under Python's GIL: answers decoded one
    #: at a time take no longer, and hold one page's copies in memory, not one per request.
    _decoding: ClassVar[threading.Lock] = threading.Lock()

    def decode(self, response: requests.Response, number: int) -> dict[str, Any]:
        """The answer's body: one that is not JSON is retried, an ERROR or a malformed one is fatal."""
        content = _json_text(response)
        try:
            with self._decoding:
                fast_type = self.normalizer.fast_type
                body = decode_plain_page(fast_type, content) if fast_type else None
                if body is None:  # not a plain page: any JSON, judged below
                    body = msgspec.json.decode(content)
        except msgspec.DecodeError as error:
            msg = (
                f"Optico API answered HTTP {response.status_code} with {_content_type(response)} that is "
                f"not valid JSON: {_what_is_wrong(content, error)} (in a body of {len(content)} bytes)"
            )
            raise RetriableAPIError(msg, response) from None
        if not isinstance(body, dict):
            msg = f"Optico API answered a JSON {type(body).__name__} instead of an object"
            raise FatalAPIError(msg)
        judge_answer(body, number)
        return body

    # Retries

    @override
    def backoff_max_tries(self) -> int:
        return self.settings.max_tries

    @override
    def backoff_wait_generator(self) -> Generator[float, Any, None]:
        """Exponential waits, or the server's Retry-After, never above max_wait_seconds."""
        longest = float(self.settings.max_wait_seconds)
        wait = FIRST_RETRY_WAIT_SECONDS
        error = yield 0.0
        while True:
            response = getattr(error, "response", None)
            asked = None if response is None else retry_after_seconds(response.headers.get("Retry-After"))
            error = yield min(longest, wait if asked is None else asked)
            wait *= 2

    @override
    def backoff_jitter(self, value: float) -> float:
        return value + random.uniform(0, value / 10)

    @override
    def backoff_handler(self, details: Any) -> None:
        error = details.get("exception")
        wait = float(details.get("wait") or 0)
        response = getattr(error, "response", None)
        _, _, window = details["args"]
        if response is not None and response.status_code == requests.codes.too_many_requests:
            self.rate_limit_pauses[window.account.name].extend(wait)
        self.logger.warning(
            "%s%s: request failed (try %d of %d): %s; retrying in %.1f s",
            self.name,
            self._whose(window),
            details.get("tries", 0),
            self.backoff_max_tries(),
            redact(str(error) or type(error).__name__),
            wait,
        )

    @property
    def rate_limit_pauses(self) -> dict[str, SharedPause]:
        """One pause per account: a 429 is the limit of one key, and slows that key's requests only,
        whichever stream asks (the stream gives the tap's, shared: ``OpticoStream``)."""
        raise NotImplementedError

    def describe(self, window: Window) -> str:
        """How log lines name ``window``: the stream, the account (with several) and the days."""
        return f"{self.name}{self._whose(window)}: window {window.start}..{window.end}"

    def _whose(self, window: Window) -> str:
        return f" (account {window.account.name})" if self.settings.several_accounts else ""

    @override
    def request_decorator(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """The SDK's retries on its retriable errors, each logged once (by :meth:`backoff_handler`)."""
        return backoff.on_exception(
            self.backoff_wait_generator,
            RETRIABLE_ERRORS,
            max_tries=self.backoff_max_tries,
            on_backoff=self.backoff_handler,
            jitter=self.backoff_jitter,
            logger=None,
        )(func)

    def _send(self, prepared: requests.PreparedRequest, number: int, window: Window) -> dict[str, Any]:
        """One try, after any pause another worker's 429 started; the whole answer by the deadline."""
        self.rate_limit_pauses[window.account.name].wait()
        deadline = time.monotonic() + self.timeout
        with bounded(deadline):
            try:
                response = self.requests_session.send(
                    prepared, timeout=self.timeout, allow_redirects=self.allow_redirects, stream=True
                )
                response._content = self._read_body(response, number, deadline)
            except requests.RequestException:
                if time.monotonic() < deadline:  # failed on its own, not cut by the watchdog
                    raise
        if time.monotonic() >= deadline:  # cut: even an answer that looks whole may be short
            msg = f"the answer took more than request_timeout ({self.timeout:g} s) to arrive"
            raise requests.exceptions.ReadTimeout(msg)
        self.validate_response(response)
        return self.decode(response, number)

    @staticmethod
    def _read_body(response: requests.Response, number: int, deadline: float) -> bytes:
        """The body, inflated, in large pieces (on a page of 5,000 calls this halves the CPU that
        receiving it costs), up to the deadline; one larger than MAX_ANSWER_BYTES fails its account.
        Both bound what is kept: a body without end, cut only at the deadline, once left gigabytes
        to join and free, and its try ended seconds after its deadline."""
        pieces, size = [], 0
        for piece in response.iter_content(BODY_PIECE_BYTES):
            if time.monotonic() >= deadline:  # the caller says the try was cut
                response.close()
                break
            size += len(piece)
            if size > MAX_ANSWER_BYTES:
                response.close()
                msg = (
                    f"Optico API answered more than {MAX_ANSWER_BYTES >> 20} MiB for page {number} "
                    "(a page of 5,000 calls is about 2.5 MB): stopped reading it"
                )
                raise FatalAPIError(msg)
            pieces.append(piece)
        return b"".join(pieces)

    @cached_property
    def _send_with_retries(self) -> Callable[[requests.PreparedRequest, int, Window], dict[str, Any]]:
        return self.request_decorator(self._send)

    def fetch_page(self, window: Window, number: int) -> Page:
        """Page ``number`` of ``window``, retried; a lasting failure fails its account (FatalAPIError)."""
        try:
            prepared = self.build_prepared_request("GET", self.url_base, params=self.query(window, number))
            body = self._send_with_retries(prepared, number, window)
        except RefusedKeyError as error:
            setting = (
                f"the api_key of account {window.account.name!r} in the setting 'accounts'"
                if self.settings.several_accounts
                else "the setting 'api_key'"
            )
            raise RefusedKeyError(f"{error} (the API refused the key: check {setting})") from None
        except (RetriableAPIError, requests.RequestException) as error:
            # An error that is not retried (too many redirects, say) ends the first try.
            retried = isinstance(error, RETRIABLE_ERRORS)
            tries = f"{self.backoff_max_tries()} tries" if retried else "its first try"
            msg = (
                f"{self.name}{self._whose(window)}: giving up on {window.start}..{window.end} page {number} "
                f"after {tries}: {redact(str(error) or type(error).__name__)}"
            )
            raise FatalAPIError(msg) from None
        try:
            next_page = read_next_page(body.get("next_page"))
        except FatalAPIError as error:
            raise FatalAPIError(f"{self.describe(window)} cannot be read: {error}") from None
        total = _count(body.get("total_results"))
        return Page(number=number, results=body["results"], total_results=total, next_page=next_page)

    @cached_property
    def normalizer(self) -> Normalizer:
        """Reads the results of this stream's answers (the fast decoder of :meth:`decode` is its)."""
        return self.normalizer_class(
            self.schema,
            self.conversions,
            stream_name=self.name,
            logger=self.logger,
            timezone=self.settings.timezone,
        )
