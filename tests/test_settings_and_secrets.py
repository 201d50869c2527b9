"""Bad settings fail before any request; the API key is never printed."""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

import pytest

from tap_optico import secrets
from tap_optico.errors import SettingsError
from tap_optico.sandbox import Faults
from tap_optico.tap import TapOptico
from tests.helpers import CannedApi, SandboxFactory, run_tap, tap_config

SECRET = "s3cr3t-K3y-0f-A-Cust0mer"
DEBUG = {"TAP_OPTICO_LOGLEVEL": "DEBUG"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"api_key": None}, "Setting 'api_key' is required"),
        ({"api_key": ""}, "Setting 'api_key' is required"),
        ({"start_date": None}, "Setting 'start_date' is required: a date as YYYY-MM-DD"),
        ({"start_date": "05/05/2026"}, "Setting 'start_date' must be a date as YYYY-MM-DD, got '05/05/2026'"),
        ({"end_date": "2026-13-01"}, "Setting 'end_date' must be a date as YYYY-MM-DD"),
        (
            {"start_date": "2026-04-08", "end_date": "2026-04-01"},
            "Setting 'end_date' must not be before 'start_date'",
        ),
        ({"page_size": 9}, "Setting 'page_size' must be a whole number from 10 to 5000, got 9"),
        ({"page_size": 5001}, "Setting 'page_size' must be a whole number from 10 to 5000, got 5001"),
        ({"page_size": "big"}, "Setting 'page_size' must be a whole number from 10 to 5000, got 'big'"),
        ({"window_days": 0}, "Setting 'window_days' must be a whole number from 1 to 3660, got 0"),
        ({"lookback_days": 10**9}, "Setting 'lookback_days' must be a whole number from 0 to 3660"),
        ({"lookback_days": -1}, "Setting 'lookback_days' must be a whole number from 0 to 3660, got -1"),
        ({"max_concurrency": 0}, "Setting 'max_concurrency' must be a whole number at least 1, got 0"),
        ({"max_tries": 0}, "Setting 'max_tries' must be a whole number from 1 to 100, got 0"),
        ({"max_wait_seconds": 0}, "Setting 'max_wait_seconds' must be a whole number from 1 to 86400"),
        ({"request_timeout": 0}, "Setting 'request_timeout' must be a whole number from 1 to 86400"),
        ({"timezone": "Europe/Lutece"}, "Setting 'timezone' must be an IANA time zone"),
        ({"api_url": "optico.fr/data-api"}, "Setting 'api_url' must be an http(s) URL"),
    ],
)
def test_each_bad_setting_is_one_line_naming_it(
    make_sandbox: SandboxFactory, change: dict[str, Any], message: str
) -> None:
    server = make_sandbox()
    config = {k: v for k, v in {**tap_config(server), **change}.items() if v is not None}
    with pytest.raises(SettingsError) as raised:
        TapOptico(config=config)
    assert [line for line in raised.value.problems if message in line] == raised.value.problems
    assert server.requests == []


def test_a_bad_setting_stops_the_run_before_any_request(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    server = make_sandbox()
    run = run_tap(tap_config(server, page_size=9, timezone="Mars/Olympus"), tmp_path)
    assert run.returncode != 0
    assert "Setting 'page_size' must be a whole number from 10 to 5000, got 9" in run.stderr
    assert "Setting 'timezone' must be an IANA time zone such as Europe/Paris, got 'Mars/" in run.stderr
    assert server.requests == []
    assert run.stdout == ""
    assert "Setting '" in run.stderr.splitlines()[-1]
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("start", "end", "first_day", "last_day"),
    [
        ("2026-03-21", "2026-03-22", "2026-03-21", "2026-03-22"),
        # Meltano's relative dates ("30 days ago") arrive as date-times: their day in `timezone`.
        ("2026-03-20T23:30:00Z", "2026-03-22T10:00:00+00:00", "2026-03-21", "2026-03-22"),
        ("2026-03-21T00:00:00+01:00", "2026-03-22T23:59:59", "2026-03-21", "2026-03-22"),
    ],
)
def test_start_and_end_dates_take_dates_and_date_times(
    make_sandbox: SandboxFactory, tmp_path: Path, start: str, end: str, first_day: str, last_day: str
) -> None:
    server = make_sandbox()
    run = run_tap(tap_config(server, start_date=start, end_date=end), tmp_path)
    assert run.returncode == 0, run.stderr
    assert {request.params["start_date"] for request in server.requests} == {first_day}
    assert {request.params["end_date"] for request in server.requests} == {last_day}


def test_plain_http_to_a_remote_host_is_warned(tmp_path: Path) -> None:
    # An invalid page size stops the run before any request leaves the machine.
    config = {
        "api_key": SECRET,
        "api_url": "http://optico.example/data-api",
        "start_date": "2026-01-01",
        "page_size": 1,
    }
    run = run_tap(config, tmp_path)
    assert "plain http:// to optico.example: the API key would travel in clear text" in run.stderr


def test_localhost_http_is_not_warned(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    run = run_tap(tap_config(make_sandbox(), end_date="2026-03-20"), tmp_path)
    assert run.returncode == 0
    assert "clear text" not in run.stderr


def _assert_no_secret(stdout: str, stderr: str) -> None:
    assert SECRET not in stdout
    assert SECRET not in stderr


@pytest.mark.parametrize(
    "scenario",
    ["transient_faults", "lasting_503", "timeouts", "wrong_key", "unreachable", "bad_setting"],
)
def test_the_key_is_never_printed_even_at_debug_level(
    make_sandbox: SandboxFactory, tmp_path: Path, scenario: str
) -> None:
    sandbox_options: dict[str, Any] = {"api_key": SECRET}
    overrides: dict[str, Any] = {
        "api_key": SECRET,
        "max_tries": 3,
        "max_wait_seconds": 1,
        "request_timeout": 1,
    }
    if scenario == "transient_faults":
        sandbox_options["faults"] = Faults(every=2, stall_seconds=2)
    elif scenario == "lasting_503":
        sandbox_options["faults"] = Faults(every=1, kinds=["503"])
    elif scenario == "timeouts":
        sandbox_options["faults"] = Faults(every=1, kinds=["timeout"], stall_seconds=2)
    elif scenario == "wrong_key":
        sandbox_options["api_key"] = "the-right-key"
    elif scenario == "bad_setting":
        overrides["page_size"] = 3
    server = make_sandbox(**sandbox_options)
    if scenario == "unreachable":
        server.stop()
    run = run_tap(tap_config(server, **overrides, end_date="2026-03-23"), tmp_path, env=DEBUG)
    _assert_no_secret(run.stdout, run.stderr)
    if scenario != "transient_faults":
        assert run.returncode != 0
    if scenario in ("transient_faults", "lasting_503"):
        assert "api_key=***" in run.stderr  # urllib3 logged the URLs at DEBUG, masked


#: 38 characters, with what JSON, URLs and HTML escape: a slash, an accented letter, a space, an ampersand.
ODD_KEY = "Zx9/Kq2éLm4 Np6&Rs8Tv0Wy3Ab5Cd7Ef1Gh2J"


def _encodings(key: str) -> dict[str, str]:
    php = json.dumps(key).replace("/", "\\/")[1:-1]  # PHP's json_encode: \/ and \u00e9
    return {
        "raw": key,
        "json": json.dumps(key, ensure_ascii=False)[1:-1],
        "php json": php,
        "php json, upper hex": php.replace("\\u00e9", "\\u00E9"),
        "every character \\u-escaped": "".join(f"\\u{ord(char):04x}" for char in key),
        "percent": quote(key, safe=""),
        "percent, lower hex": quote(key, safe="").lower(),
        "form (+ for space)": quote_plus(key),
        "html": html.escape(key),
        "html, named é": html.escape(key).replace("é", "&eacute;"),
        "html decimal": "".join(f"&#{ord(char)};" for char in key),
        "html hex": "".join(f"&#X{ord(char):x};" for char in key),
        "upper case": key.upper(),
        "lower case": key.lower(),
    }


@pytest.fixture
def only_odd_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mask ODD_KEY only (not the keys other tests of this process registered)."""
    monkeypatch.setattr(secrets, "_pieces", set())
    monkeypatch.setattr(secrets, "_short", None)
    monkeypatch.setattr(secrets, "_short_keys", set())


@pytest.mark.usefixtures("only_odd_key")
@pytest.mark.parametrize("encoding", sorted(_encodings(ODD_KEY)))
def test_the_key_is_masked_in_every_encoding(encoding: str) -> None:
    secrets.register(ODD_KEY)
    form = _encodings(ODD_KEY)[encoding]
    assert secrets.redact(f'{{"error": "clef {form} invalide"}}') == '{"error": "clef *** invalide"}'
    # A piece of it too, in the same encoding.
    piece = _encodings(ODD_KEY[5:19])[encoding]
    assert secrets.redact(f"clef {piece}…") == "clef ***…"


HEX_KEY = "45ebcbe224c4bbb8d1882654b33b9823"


def _other_forms(key: str) -> dict[str, str]:
    raw = key.encode()
    return {
        "dashes every 4": "-".join(key[i : i + 4] for i in range(0, len(key), 4)),
        "dashes every 7": "-".join(key[i : i + 7] for i in range(0, len(key), 7)),
        "spaces": " ".join(key),
        "colons, upper case": ":".join(key.upper()),
        "reversed": key[::-1],
        "hex": raw.hex(),
        "hex, upper case, spaced": " ".join(f"{byte:02X}" for byte in raw),
        "base64": base64.b64encode(raw).decode(),
        "base64 of a longer text": base64.b64encode(b"ke=" + raw).decode(),
        "url-safe base64 after one byte": base64.urlsafe_b64encode(b"k" + raw).decode(),
        "percent-encoded spaces": quote(" ".join(key)),
    }


@pytest.mark.usefixtures("only_odd_key")
@pytest.mark.parametrize("form", sorted(_other_forms(HEX_KEY)))
def test_the_key_is_masked_with_separators_as_hex_as_base64_and_reversed(form: str) -> None:
    """Each was printed before (only the key's own characters, in a row, were masked)."""
    secrets.register(HEX_KEY)
    echoed = _other_forms(HEX_KEY)[form]
    redacted = secrets.redact(f"quota exceeded for {echoed}.")
    assert redacted.startswith("quota exceeded for ")
    assert redacted.endswith(".")
    # What is left around a mask encodes at most two characters of the key (base64's last ones).
    left = redacted.removeprefix("quota exceeded for ").removesuffix(".").split(secrets.MASK)
    assert max(map(len, left)) <= 4, redacted
    assert secrets.redact("window 2026-03-01..2026-03-03: 1234 calls, 10:00:00, 45ebcbe") == (
        "window 2026-03-01..2026-03-03: 1234 calls, 10:00:00, 45ebcbe"
    )


@pytest.mark.usefixtures("only_odd_key")
def test_a_key_shorter_than_a_piece_is_masked_where_it_stands_alone_and_dates_stay_readable() -> None:
    """A key of 2026 masked every "2026" before: every date of the log."""
    secrets.register(2026)
    text = 'window 2026-03-01..2026-03-03 (01/03/2026), 12026 calls: Clef 2026 invalide ({"api_key": 2026})'
    assert secrets.redact(text) == (
        'window 2026-03-01..2026-03-03 (01/03/2026), 12026 calls: Clef *** invalide ({"api_key": ***})'
    )
    assert secrets.redact("Clef%202026%20invalide") == "Clef%20***%20invalide"


@pytest.mark.usefixtures("only_odd_key")
def test_text_without_a_key_is_left_as_it_is() -> None:
    secrets.register(ODD_KEY)
    text = "%2F &amp; &nosuch; \\/ \\u00e9 + Zx9/Kq2 Rs8Tv0W a 1000-char line" * 3
    assert secrets.redact(text) == text


def _pieces_left(text: str, key: str, size: int = 5) -> list[str]:
    """The runs of ``size`` characters of the key in ``text``, once its escapes are read (by the
    standard library, not by the tap's own decoder) and case is ignored."""
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda match: chr(int(match[1], 16)), text).replace("\\/", "/")
    readable = unquote_plus(html.unescape(text)).lower()
    return [key[i : i + size] for i in range(len(key) - size + 1) if key[i : i + size].lower() in readable]


@pytest.mark.parametrize("status", [401, 403, 500, 200])
def test_an_answer_echoing_the_key_php_style_prints_no_piece_of_it(
    canned: Callable[..., CannedApi], tmp_path: Path, status: int
) -> None:
    # PHP's json_encode writes / as \/ and é as \u00e9, cutting the key in pieces.
    body = json.dumps({"status": "ERROR", "errors": [f"Clef {ODD_KEY} invalide"]}).replace("/", "\\/")
    api = canned([body], status)
    config = {"api_key": ODD_KEY, "api_url": api.url, "start_date": "2026-03-20", "end_date": "2026-03-20"}
    run = run_tap({**config, "max_tries": 2, "max_wait_seconds": 1}, tmp_path, env=DEBUG)
    assert run.returncode == 1
    assert "Clef *** invalide" in run.stderr
    assert _pieces_left(run.stderr + run.stdout, ODD_KEY) == []


def test_a_key_given_as_a_number_is_its_digits(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    server = make_sandbox(api_key="4815162342")
    run = run_tap(tap_config(server, api_key=4815162342, end_date="2026-03-21"), tmp_path, env=DEBUG)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.records("calls")
    assert {request.params["api_key"] for request in server.requests} == {"4815162342"}
    assert "4815162342" not in run.stderr
    assert "api_key=***" in run.stderr
