"""Many Optico accounts in one run: settings, records, state per account, failures per account."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tap_optico.errors import SettingsError
from tap_optico.sandbox import SANDBOX_API_KEY, SandboxServer, account_key
from tap_optico.tap import TapOptico
from tests.helpers import SandboxFactory, TapRun, bookmark, run_tap, sandbox_call_ids, tap_config

NAMES = ("lyon", "marseille", "paris")


def accounts(*numbers: int) -> list[dict[str, str]]:
    return [{"name": NAMES[number - 1], "api_key": account_key(number)} for number in numbers]


def accounts_config(server: SandboxServer, *numbers: int, **overrides: Any) -> dict[str, Any]:
    config = {k: v for k, v in tap_config(server, **overrides).items() if k != "api_key"}
    return {"accounts": accounts(*numbers), **config}


def account_ids(server: SandboxServer, number: int) -> set[str]:
    """The call_ids of account ``number``'s calls (sandbox_call_ids reads account 1)."""
    data = server.api.accounts[account_key(number)]
    original, server.api.data = server.api.data, data
    try:
        return sandbox_call_ids(server)
    finally:
        server.api.data = original


def ids_by_account(run: TapRun) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for record in run.records("calls"):
        found.setdefault(record["account"], set()).add(record["call_id"])
    return found


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"api_key": "k", "accounts": accounts(1)}, "Settings 'api_key' and 'accounts' exclude each other"),
        ({"accounts": [*accounts(1, 2), {"name": "lyon", "api_key": "x"}]}, "account 'lyon' is listed twice"),
        ({"accounts": [{"name": " ", "api_key": "x"}]}, "entry 1 needs a name"),
        ({"accounts": [{"name": "lyon ", "api_key": "x"}]}, "account 'lyon ' has spaces around its name"),
        ({"accounts": [{"name": "nice"}]}, "account 'nice': 'api_key' is required"),
        ({"accounts": [{"name": "nice", "api_key": ""}]}, "account 'nice': 'api_key' is required"),
        (
            {"accounts": [{"name": "nice", "api_key": "k", "tracking": "0182880190"}]},
            "account 'nice' has an unknown field 'tracking'",
        ),
        (
            {"accounts": [{"name": "nice", "api_key": "x", "start_date": "hier"}]},
            "account 'nice': 'start_date' must be a date",
        ),
        ({"accounts": []}, "Setting 'accounts' must be a non-empty list"),
        ({"accounts": ["lyon"]}, "entry 1 must be an object"),
        ({"account_name": ""}, "Setting 'account_name' must be"),
    ],
)
def test_each_bad_account_setting_is_one_line(
    make_sandbox: SandboxFactory, change: dict[str, Any], message: str
) -> None:
    server = make_sandbox()
    config = {**tap_config(server), **change}
    if "accounts" in change and "api_key" not in change:
        del config["api_key"]
    with pytest.raises(SettingsError) as raised:
        TapOptico(config=config)
    assert [line for line in raised.value.problems if message in line] == raised.value.problems
    assert server.requests == []


def test_three_accounts_each_with_its_records_keys_and_bookmark(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    server = make_sandbox(accounts=3)
    run = run_tap(accounts_config(server, 1, 2, 3, max_concurrency=3), tmp_path)
    assert run.returncode == 0, run.stderr
    found = ids_by_account(run)
    assert found == {NAMES[n - 1]: account_ids(server, n) for n in (1, 2, 3)}
    assert all(len(ids) == 1000 for ids in found.values())
    assert len(set.union(*found.values())) == 3000  # the accounts' calls differ
    daily = Counter(row["account"] for row in run.records("daily_calls"))
    assert daily == dict.fromkeys(NAMES, 20)
    for name in NAMES:
        assert bookmark(run.final_state, "calls", name).startswith("2026-04-08T")
        assert bookmark(run.final_state, "daily_calls", name) == "2026-04-08"
    output = run.stdout + run.stderr
    for number in (2, 3):
        assert account_key(number) not in output


def test_an_account_added_later_is_read_from_start_date_the_others_from_their_bookmark(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    server = make_sandbox(accounts=3)
    first = run_tap(accounts_config(server, 1, 2), tmp_path)
    assert first.returncode == 0, first.stderr
    server.requests.clear()
    second = run_tap(accounts_config(server, 1, 2, 3), tmp_path, state=first.final_state)
    assert second.returncode == 0, second.stderr
    starts: dict[str, set[str]] = {}
    for request in server.requests:
        starts.setdefault(request.params["api_key"], set()).add(request.params["start_date"])
    assert starts[account_key(1)] == starts[account_key(2)] == {"2026-04-07"}
    asked = [tuple(sorted(request.params.items())) for request in server.requests]
    assert len(asked) == len(set(asked)), "a page was asked twice: an account was read twice"
    assert min(starts[account_key(3)]) == "2026-03-20"
    assert ids_by_account(second)["paris"] == account_ids(server, 3)
    # An account removed from the list keeps its bookmark in the state.
    third = run_tap(accounts_config(server, 1), tmp_path, state=second.final_state)
    assert bookmark(third.final_state, "calls", "marseille") == bookmark(
        second.final_state, "calls", "marseille"
    )


def test_an_account_whose_key_is_refused_fails_alone(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    server = make_sandbox(accounts=3)
    config = accounts_config(server, 1, 2, 3)
    wrong = "0123456789abcdef0123456789abcdef"
    config["accounts"][1]["api_key"] = wrong
    run = run_tap(config, tmp_path)
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if " ERROR " in line]
    assert any(
        "calls: account marseille failed, its bookmark stays: Optico API error: Clef API invalide "
        "(the API refused the key: check the api_key of account 'marseille' in the setting 'accounts')" in e
        for e in errors
    )
    assert any("daily_calls: account marseille is skipped" in e for e in errors)
    assert errors[-1].endswith("1 account(s) failed, the others were read: marseille")
    assert wrong not in run.stdout + run.stderr
    found = ids_by_account(run)
    assert set(found) == {"lyon", "paris"}
    assert found["paris"] == account_ids(server, 3)
    assert bookmark(run.final_state, "calls", "paris").startswith("2026-04-08T")
    assert bookmark(run.final_state, "calls", "marseille") is None


def test_a_state_from_before_accounts_is_honoured_by_a_single_key_config(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    server = make_sandbox()
    old_state = {
        "bookmarks": {
            "calls": {"replication_key": "start_date", "replication_key_value": "2026-04-05T18:00:00+02:00"},
            "daily_calls": {"replication_key": "date", "replication_key_value": "2026-04-05"},
        }
    }
    run = run_tap(tap_config(server), tmp_path, state=old_state)
    assert run.returncode == 0, run.stderr
    assert {request.params["start_date"] for request in server.requests} == {"2026-04-04"}
    assert run.bookmark("calls").startswith("2026-04-08T")
    assert {record["account"] for record in run.records("calls")} == {"default"}


def test_an_account_can_have_its_own_start_date_and_filters(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    server = make_sandbox(accounts=2)
    config = accounts_config(server, 1, 2)
    config["accounts"][1] |= {"start_date": "2026-04-01", "offline_phone_description": "pages jaunes"}
    run = run_tap(config, tmp_path)
    assert run.returncode == 0, run.stderr
    marseille = [r for r in run.records("calls") if r["account"] == "marseille"]
    assert marseille
    assert min(r["start_date_local"] for r in marseille) >= "2026-04-01"
    assert {r["tracking_number"] for r in marseille} == {"0182880190"}
    assert len([r for r in run.records("calls") if r["account"] == "lyon"]) == 1000


def test_the_sandbox_refuses_an_unknown_key(make_sandbox: SandboxFactory) -> None:
    import requests

    server = make_sandbox(accounts=2)
    base = {"type": "calls", "start_date": "2026-03-20", "end_date": "2026-03-20", "limit": "10"}
    refused = requests.get(server.url, params={**base, "api_key": "nope"}, timeout=10).json()
    assert refused["status"] == "ERROR"
    assert refused["errors"] == ["Clef API invalide"]
    first = requests.get(server.url, params={**base, "api_key": SANDBOX_API_KEY}, timeout=10).json()
    second = requests.get(server.url, params={**base, "api_key": account_key(2)}, timeout=10).json()
    assert first["status"] == second["status"] == "OK"
    assert first["results"] != second["results"]


def test_the_sandbox_prints_its_accounts_as_the_setting() -> None:
    import json
    import subprocess

    from tests.helpers import BIN

    printed = subprocess.run(
        [str(BIN / "tap-optico-sandbox"), "--accounts", "3", "--print-accounts"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(printed.stdout) == [
        {"name": f"account-{n}", "api_key": account_key(n)} for n in (1, 2, 3)
    ]
    assert dt.date.today()  # the sandbox needs no date to list keys
