"""Messages a user acts on: a mistyped setting, a config file that cannot be read, a missing
required setting, discovery without settings. Each says what to fix, in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tap_optico.errors import SettingsError
from tap_optico.settings import config_file_problem, unknown_settings
from tap_optico.tap import TapOptico, config_files
from tests.helpers import TAP, SandboxFactory, run_command, run_tap, tap_config

KNOWN = list(TapOptico.every_setting()["properties"])


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("page-size", "page_size"), ("apikey", "api_key"), ("API_KEY", "api_key"), ("startdate", "start_date")],
)
def test_an_unknown_setting_names_the_closest_known_one(typed: str, meant: str) -> None:
    [warning] = unknown_settings({typed: 1, "start_date": "2026-03-01"}, KNOWN)
    assert warning == (f"Setting {typed!r} is not a setting of tap-optico: did you mean '{meant}'?")


def test_an_unknown_setting_like_none_points_at_the_list() -> None:
    [warning] = unknown_settings({"zzzz": 1}, KNOWN)
    assert warning.endswith("`tap-optico --about` lists the settings")
    assert unknown_settings({name: None for name in KNOWN}, KNOWN) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"api_url": "http://127.0.0.1:99999/data-api"}, "must be an http(s) URL: Port out of range"),
        (
            {"api_url": "http://127.0.0.1:0/data-api"},
            "must be an http(s) URL with a host (and a port if any)",
        ),
        ({"api_url": "https://www.optico.fr/data api"}, "must be an http(s) URL without spaces"),
        ({"request_timeout": 10**11}, "Setting 'request_timeout' must be a whole number from 1 to 86400"),
        ({"max_wait_seconds": 10**11}, "Setting 'max_wait_seconds' must be a whole number from 1 to 86400"),
        ({"max_tries": 10**6}, "Setting 'max_tries' must be a whole number from 1 to 100"),
    ],
)
def test_a_setting_no_request_could_use_is_one_line_before_any_request(
    change: dict[str, Any], message: str
) -> None:
    """Each would fail every request later, as the account's failure, or overflow a clock."""
    config = {"api_key": "k3y-never-shown", "start_date": "2026-03-01", **change}
    with pytest.raises(SettingsError) as raised:
        TapOptico(config=config)
    [problem] = raised.value.problems
    assert message in problem


def test_a_config_file_that_cannot_be_read_names_the_file_and_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "config.json"
    broken.write_text('{"api_key": "k3y-never-shown",\n  start_date: "2026-03-01"}', encoding="utf-8")
    problem = config_file_problem(str(broken))
    assert problem == (
        f"Config file {str(broken)!r} is not JSON: line 2, column 3: "
        "Expecting property name enclosed in double quotes"
    )
    listed = tmp_path / "list.json"
    listed.write_text("[]", encoding="utf-8")
    assert (
        config_file_problem(str(listed))
        == f"Config file {str(listed)!r} holds a JSON list, not an object of settings"
    )
    assert (
        config_file_problem(str(tmp_path / "nope.json"))
        == f"Config file {str(tmp_path / 'nope.json')!r} does not exist"
    )
    good = tmp_path / "good.json"
    good.write_text("{}", encoding="utf-8")
    assert config_file_problem(str(good)) is None


def test_config_files_are_the_arguments_of_config() -> None:
    arguments = ["--config", "a.json", "--config=b.json", "--config", "ENV", "--state", "s.json"]
    assert config_files(arguments) == ["a.json", "b.json"]


def test_the_tap_says_which_config_file_and_line_and_never_its_text(tmp_path: Path) -> None:
    broken = tmp_path / "config.json"
    broken.write_text('{"api_key": "k3y-never-shown",\n  start_date: "2026-03-01"}', encoding="utf-8")
    run = run_command([TAP, "--config", str(broken)], timeout=120)
    assert run.returncode == 1
    [line] = run.stderr.splitlines()
    expected = f"| ERROR | tap-optico | Config file {str(broken)!r} is not JSON: line 2, column 3: "
    assert expected in " ".join(line.split())
    assert "k3y-never-shown" not in run.stderr
    assert "JSONDecodeError" not in run.stderr


def test_a_mistyped_setting_stops_the_run_before_any_request(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    """Ignored, it would be ignored on every run (a page size, a lookback, an end date never used)."""
    server = make_sandbox()
    config = tap_config(server, end_date=server.api.data.first_day.isoformat())
    config["page-size"] = config.pop("page_size")
    run = run_tap(config, tmp_path)
    assert run.returncode == 1
    [line] = [line for line in run.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert "ERROR" in line
    assert line.endswith("Setting 'page-size' is not a setting of tap-optico: did you mean 'page_size'?")
    assert "Traceback" not in run.stderr
    assert not run.stdout
    assert server.requests == []


def test_a_missing_start_date_says_required_and_nothing_else(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    server = make_sandbox()
    config = tap_config(server)
    del config["start_date"]
    run = run_tap(config, tmp_path)
    assert run.returncode == 1
    problems = [line for line in run.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert len(problems) == 1, run.stderr
    assert problems[0].endswith(
        "Setting 'start_date' is required: a date as YYYY-MM-DD or an ISO 8601 date-time"
    )
    assert server.requests == []


def test_discovery_without_settings_warns_nothing(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TAP_OPTICO_")}
    run = run_command([TAP, "--discover"], timeout=120, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert {entry["stream"] for entry in json.loads(run.stdout)["streams"]} == {
        "calls",
        "daily_calls",
        "reconciliation",
    }
    assert [line for line in run.stderr.splitlines() if "WARNING" in line or "ERROR" in line] == []
