"""What an operator meets: odd settings and states end on one line, never a traceback; the log
says what the run really did."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tap_optico.sandbox import SANDBOX_API_KEY, Misbehaviour, account_key
from tap_optico.tap import state_hint
from tests.helpers import TAP, SandboxFactory, TapRun, run_command, run_tap, tap_config
from tests.test_reliability import canned_config

DEBUG = {"TAP_OPTICO_LOGLEVEL": "DEBUG"}


def run_with_env(env: dict[str, str], *args: str) -> TapRun:
    """The tap with its settings in environment variables (`--config ENV`), as orchestrators run it."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("TAP_OPTICO_")}
    run = run_command(
        [TAP, "--config", "ENV", *args],
        env={**clean, **env},
        timeout=120,
    )
    return TapRun(run.returncode, run.stdout, run.stderr)


def metrics(run: TapRun, name: str) -> list[dict[str, Any]]:
    return [
        json.loads(line.split("METRIC: ", 1)[1])
        for line in run.stderr.splitlines()
        if "METRIC: " in line and f'"metric":"{name}"' in line
    ]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "TAP_OPTICO_PAGE_SIZE",
            "abc",
            "Setting 'page_size' must be a whole number from 10 to 5000, got 'abc'",
        ),
        (
            "TAP_OPTICO_MAX_TRIES",
            "6.5",
            "Setting 'max_tries' must be a whole number from 1 to 100, got '6.5'",
        ),
        ("TAP_OPTICO_ACCOUNTS", '[{"name": "lyon", "api_key": "s3cr3t-k3y-0f-lyon"', "must be a JSON list"),
        (
            "TAP_OPTICO_ACCOUNTS",
            "[{'name': 'lyon', 'api_key': 's3cr3t-k3y-0f-lyon'}]",
            "must be a JSON list: Expecting property name enclosed in double quotes at character 3 "
            "(JSON quotes with \", not ')",
        ),
    ],
)
def test_a_setting_from_the_environment_of_the_wrong_type_is_one_line(
    make_sandbox: SandboxFactory, variable: str, value: str, message: str
) -> None:
    server = make_sandbox()
    env = {f"TAP_OPTICO_{name.upper()}": str(v) for name, v in tap_config(server).items()}
    if variable == "TAP_OPTICO_ACCOUNTS":
        del env["TAP_OPTICO_API_KEY"]
    run = run_with_env({**env, variable: value})
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    last = run.stderr.splitlines()[-1]
    assert message in last
    assert f"(from {variable})" in last
    assert "s3cr3t" not in run.stderr
    assert server.requests == []
    # --discover reads the environment too.
    assert "Traceback" not in run_with_env({**env, variable: value}, "--discover").stderr


def test_a_state_listing_a_partition_twice_stops_before_any_request(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    server = make_sandbox()
    partition = {"context": {"account": "default"}, "replication_key": "date"}
    state = {
        "bookmarks": {
            "daily_calls": {
                "partitions": [
                    {**partition, "replication_key_value": "2026-03-25"},
                    {**partition, "replication_key_value": "2026-03-28"},
                ]
            }
        }
    }
    run = run_tap(tap_config(server), tmp_path, state=state)
    assert run.returncode == 1
    assert run.stdout == ""
    assert server.requests == []
    assert "Traceback" not in run.stderr
    last = run.stderr.splitlines()[-1]
    assert """State: stream 'daily_calls' lists the partition {"account": "default"} twice""" in last
    assert "(in the state file given with --state)" in last


def test_any_other_failure_is_one_line_with_its_traceback_at_debug_only(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.json"  # its metadata not a list: singer-sdk fails on it
    catalog.write_text(
        '{"streams": [{"tap_stream_id": "calls", "schema": {}, "metadata": "x"}]}', encoding="utf-8"
    )
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tap_config(make_sandbox())), encoding="utf-8")
    for env in ({}, DEBUG):
        run = subprocess.run(
            [TAP, "--config", str(config), "--catalog", str(catalog)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 1
        assert "tap-optico failed: TypeError: string indices must be integers" in run.stderr.splitlines()[-1]
        assert ("Traceback" in run.stderr) == (env == DEBUG)


def test_an_incremental_run_says_where_it_really_starts(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    server = make_sandbox()
    first = run_tap(tap_config(server), tmp_path)
    assert first.returncode == 0, first.stderr
    again = run_tap(tap_config(server), tmp_path, state=first.final_state)
    assert again.returncode == 0, again.stderr
    assert "Starting incremental sync" not in again.stderr
    assert "starting_replication_value" not in again.stdout
    # The bookmark is 2026-04-08, minus lookback_days: the run reads two days, and says so.
    assert "calls: reading 2026-04-07..2026-04-08 in 1 window(s)" in again.stderr
    assert "Skipping parse of env var settings" not in again.stderr


def test_a_refused_key_of_the_only_account_is_said_plainly(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    server = make_sandbox(api_key="the-right-key")
    run = run_tap(tap_config(server), tmp_path)
    assert run.returncode == 1
    assert run.stderr.splitlines()[-1].endswith(
        "The run failed: account default could not be read: Optico API error: Clef API invalide "
        "(the API refused the key: check the setting 'api_key')"
    )
    assert "the others were read" not in run.stderr
    timers = {timer["tags"]["stream"]: timer["tags"]["status"] for timer in metrics(run, "sync_duration")}
    # The reconciliation stream did its work: it found no day read by both to check.
    assert timers == {"calls": "failed", "daily_calls": "failed", "reconciliation": "succeeded"}


def test_a_clean_run_s_streams_succeed(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    run = run_tap(tap_config(make_sandbox(), end_date="2026-03-21"), tmp_path)
    assert run.returncode == 0, run.stderr
    assert [timer["tags"]["status"] for timer in metrics(run, "sync_duration")] == ["succeeded"] * 3


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            {"start_date": "2099-01-01", "end_date": None},
            "Setting 'start_date' (2099-01-01) is after today (",
        ),
        (
            {"start_date": "2099-01-01", "end_date": "2099-12-31"},
            "Setting 'start_date' (2099-01-01) is after today (",
        ),
        (
            {
                "api_key": None,
                "accounts": [{"name": "lyon", "api_key": "k", "start_date": "2026-05-01"}],
            },
            "Setting 'accounts': the start_date of account 'lyon' (2026-05-01) is after 'end_date'",
        ),
    ],
)
def test_a_start_date_after_the_last_day_stops_a_run_that_would_read_nothing(
    make_sandbox: SandboxFactory, tmp_path: Path, change: dict[str, Any], problem: str
) -> None:
    """A start_date typed a few years ahead would read nothing on every run, and exit 0."""
    server = make_sandbox()
    config = {k: v for k, v in {**tap_config(server), **change}.items() if v is not None}
    run = run_tap(config, tmp_path)
    assert run.returncode == 1
    [line] = [line for line in run.stderr.splitlines() if " WARNING " in line or " ERROR " in line]
    assert " ERROR " in line
    assert problem in line
    assert ": nothing is read: set a start date up to " in line
    assert server.requests == []


def test_an_account_added_ahead_of_its_first_day_is_named_and_the_others_are_read(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    server = make_sandbox(accounts=2)
    config = {
        **{k: v for k, v in tap_config(server).items() if k != "api_key"},
        "accounts": [
            {"name": "lyon", "api_key": account_key(1)},
            {"name": "nice", "api_key": account_key(2), "start_date": "2099-01-01"},
        ],
    }
    run = run_tap(config, tmp_path)
    assert run.returncode == 0, run.stderr
    [line, *_] = [line for line in run.stderr.splitlines() if " WARNING " in line and "2099-01-01" in line]
    assert "Setting 'accounts': the start_date of account 'nice' (2099-01-01) is after" in line
    assert {record["account"] for record in run.records("calls")} == {"lyon"}


@pytest.mark.parametrize(
    ("env", "hint"),
    [
        ({}, "(in the state file given with --state)"),
        (
            {"MELTANO_ENVIRONMENT": "sandbox", "MELTANO_EXTRACTOR_NAME": "tap-optico"},
            "`meltano state clear --force sandbox:tap-optico-to-<loader>`",
        ),
        (
            {"MELTANO_EXTRACTOR_NAME": "tap-optico", "MELTANO_STATE_ID": "agency-group-1"},
            "`meltano state clear --force agency-group-1`",
        ),
    ],
)
def test_a_refused_state_names_where_to_fix_it(
    make_sandbox: SandboxFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    hint: str,
) -> None:
    for name in ("MELTANO_ENVIRONMENT", "MELTANO_EXTRACTOR_NAME", "MELTANO_STATE_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert hint in state_hint()
    server = make_sandbox()
    state = {
        "bookmarks": {
            "calls": {
                "partitions": [{"context": {"account": "default"}, "replication_key_value": "2026-11-30"}]
            }
        }
    }
    run = run_tap(tap_config(server), tmp_path, state=state, env=env)
    assert run.returncode == 1
    last = run.stderr.splitlines()[-1]
    assert "after the last day to read (2026-04-08)" in last
    assert hint in last
    assert server.requests == []


#: Characters no log line may hold raw: C0 but tab (newline and carriage return included), DEL, C1,
#: and those that reorder or hide text (bidi controls, zero-width marks, line separators, the BOM).
RAW_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")


def raw_controls(stderr: str) -> list[str]:
    """The log lines (split on newlines only) that hold a raw control character."""
    return [line for line in stderr.split("\n") if RAW_CONTROL.search(line)]


def test_control_characters_from_the_api_reach_no_log_line_raw(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    """Field names of calls, and an HTTP 500's reason phrase, Content-Type and body for daily totals,
    full of terminal escape sequences: every log line shows them escaped, and stays one line."""
    server = make_sandbox(misbehaviour=Misbehaviour(frozenset({"control-chars"})))
    run = run_tap(tap_config(server, max_tries=2, max_wait_seconds=1), tmp_path)
    assert run.returncode == 1  # daily_calls failed
    assert raw_controls(run.stderr) == []
    escaped = r"\x1b[2K\x1b[1A\x1b[32mINFO ok\x1b[0m\x1b]0;TITLE\x07\x9b\x00\x08\x7f"
    name = ("note" + escaped).lower().replace(" ", "_")  # as the tap names fields
    assert f"the API sent the field '{name}'" in run.stderr
    [failed] = [line for line in run.stderr.splitlines() if "account" in line and " ERROR " in line][:1]
    assert f"HTTP 500 Erreur{escaped} (text/html{escaped})" in failed
    assert SANDBOX_API_KEY not in run.stderr
    assert json.loads(run.stdout.splitlines()[-1])["type"] == "STATE"  # stdout stays Singer


def test_an_error_message_of_the_api_is_logged_escaped_with_the_key_masked(
    canned: Any, tmp_path: Path
) -> None:
    message = f"Clef API {SANDBOX_API_KEY} invalide\x1b]52;c;ZWNobyBvd25lZA==\x07\x1b[2K\rINFO ok"
    api = canned([{"status": "ERROR", "errors": [message, "\x9b31mrouge"]}])
    run = run_tap(canned_config(api.url), tmp_path)
    assert run.returncode != 0
    assert raw_controls(run.stderr) == []
    assert r"Clef API *** invalide\x1b]52;c;ZWNobyBvd25lZA==\x07\x1b[2K INFO ok; \x9b31mrouge" in run.stderr
    assert SANDBOX_API_KEY not in run.stderr


def test_characters_that_reorder_or_hide_text_are_logged_escaped(canned: Any, tmp_path: Path) -> None:
    """A right-to-left override makes a line read backwards on a terminal, a zero-width space hides."""
    message = "Date invalide \u202e)ko\u202c\u200b\u2066x\u2069\ufeff\u2028fin"
    api = canned([{"status": "ERROR", "errors": [message]}])
    run = run_tap(canned_config(api.url), tmp_path)
    assert run.returncode != 0
    assert raw_controls(run.stderr) == []
    assert r"Date invalide \u202e)ko\u202c\u200b\u2066x\u2069\ufeff fin" in run.stderr  # U+2028 a line break


@pytest.mark.parametrize(
    ("content_type", "body", "quoted"),
    [
        (
            "text/html",
            "<h1>Service momentanément indisponible</h1>".encode(),
            "<h1>Service momentanément indisponible</h1>",
        ),
        ("text/plain; charset=ISO-8859-1", "Réessayez".encode("latin-1"), "Réessayez"),
        ("text/plain; charset=no-such-charset", "Réessayez".encode(), "Réessayez"),
    ],
)
def test_an_error_page_is_quoted_in_its_declared_charset_else_utf8(
    canned: Any, tmp_path: Path, content_type: str, body: bytes, quoted: str
) -> None:
    api = canned([body], status=503, content_type=content_type)
    run = run_tap(canned_config(api.url), tmp_path)
    assert run.returncode != 0
    assert f"HTTP 503 Service Unavailable ({content_type}): {quoted}" in run.stderr
