"""The sandbox behaves as the documented Data API, over real HTTP."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from typing import Any

import pytest
import requests

from tap_optico.sandbox import SANDBOX_API_KEY, Faults, Misbehaviour, SandboxServer, account_key
from tap_optico.sandbox.api import MisbehaviourKind
from tap_optico.sandbox.server import FaultKind
from tests.helpers import BIN, SandboxFactory

BASE = {"api_key": SANDBOX_API_KEY, "type": "calls", "start_date": "2026-03-20", "end_date": "2026-03-21"}


def get(server: SandboxServer, **params: Any) -> dict[str, Any]:
    response = requests.get(server.url, params={**BASE, **params}, timeout=10)
    assert response.status_code == 200
    return dict(response.json())


def test_dates_are_inclusive_and_paging_ends_without_next_page(sandbox: SandboxServer) -> None:
    first = get(sandbox, limit=60, page=1)
    assert (first["status"], first["total_results"], first["next_page"], len(first["results"])) == (
        "OK",
        100,
        2,
        60,
    )
    last = get(sandbox, limit=60, page=2)
    assert "next_page" not in last
    assert len(last["results"]) == 40
    days = {r["start_date"][:10] for r in first["results"] + last["results"]}
    assert days == {"2026-03-20", "2026-03-21"}
    assert get(sandbox, limit=60, page=3)["results"] == []


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"api_key": "nope"}, "Clef API invalide"),
        ({"type": "visits"}, "Type de données inconnu"),
        ({"start_date": "20/03/2026"}, "start_date doit être une date"),
        ({"end_date": ""}, "end_date est obligatoire"),
        ({"start_date": "2026-03-22"}, "end_date doit être postérieure"),
        ({"limit": 9}, "limit doit être compris entre 10 et 5000"),
        ({"limit": 5001}, "limit doit être compris entre 10 et 5000"),
        ({"page": 0}, "page doit être supérieure"),
    ],
)
def test_errors(sandbox: SandboxServer, params: dict[str, Any], error: str) -> None:
    body = get(sandbox, **params)
    assert body["status"] == "ERROR"
    assert error in body["errors"][0]
    assert body["results"] == []


def test_filters(sandbox: SandboxServer) -> None:
    everything = get(sandbox, limit=5000)["results"]
    for param, field in (
        ("phone", "phone"),
        ("tracking_phone", "tracking_number"),
        ("caller_phone", "caller"),
    ):
        value = everything[3][field]
        filtered = get(sandbox, limit=5000, **{param: value})["results"]
        assert filtered
        assert all(r[field] == value for r in filtered)
    static = get(sandbox, limit=5000, offline_phone_description="flyer")["results"]
    assert static
    assert {r["tracking_number"] for r in static} == {"0182880191"}
    assert all(r["url"] == "" for r in static)


def test_group_by_day(sandbox: SandboxServer) -> None:
    rows = get(sandbox, group_by_day=1, limit=10)["results"]
    calls = get(sandbox, limit=5000)["results"]
    assert [r["date"] for r in rows] == ["2026-03-20", "2026-03-21"]
    assert sum(int(r["calls"]) for r in rows) == len(calls)
    assert sum(int(r["duration"]) for r in rows) == sum(int(c["duration"]) for c in calls)


def test_same_seed_same_data_and_styles(make_sandbox: SandboxFactory) -> None:
    one, two, other = make_sandbox(), make_sandbox(), make_sandbox(seed=7)
    assert get(one, limit=100) == get(two, limit=100)
    assert get(one, limit=100) != get(other, limit=100)
    strings = get(one, limit=100)["results"]
    assert all(isinstance(r["duration"], str) and r["is_redirect"] in ("0", "1") for r in strings)
    mixed = get(make_sandbox(style="mixed"), limit=100)["results"]
    assert any(isinstance(r["duration"], int) for r in mixed)
    assert any(":" in str(r["duration"]) for r in mixed)
    assert any("," in str(r.get("revenue")) for r in mixed)
    assert any("tracking number" in r for r in mixed)


def test_live_mode_grows_the_last_day(make_sandbox: SandboxFactory) -> None:
    today = dt.date(2026, 3, 21)
    server = make_sandbox(last_day=today, live_step=3)
    totals = [get(server, start_date="2026-03-21", limit=10)["total_results"] for _ in range(3)]
    assert totals == [25 + 3, 25 + 6, 25 + 9]
    desc = make_sandbox(last_day=today, order="desc")
    newest = get(desc, start_date="2026-03-21", limit=10)["results"]
    assert newest[0]["start_date"] > newest[-1]["start_date"]


@pytest.mark.parametrize("kind", ["429", "500", "503", "html", "truncated"])
def test_fault_kinds(make_sandbox: SandboxFactory, kind: FaultKind) -> None:
    server = make_sandbox(faults=Faults(every=2, kinds=[kind], retry_after=7))
    assert requests.get(server.url, params=BASE, timeout=10).status_code == 200
    response = requests.get(server.url, params=BASE, timeout=10)
    assert [r.fault for r in server.requests] == [None, kind]
    if kind == "429":
        assert (response.status_code, response.headers["Retry-After"]) == (429, "7")
    elif kind in ("500", "503"):
        assert response.status_code == int(kind)
    elif kind == "html":
        assert response.headers["Content-Type"].startswith("text/html")
    else:
        with pytest.raises(requests.JSONDecodeError):
            response.json()


def test_timeout_and_latency(make_sandbox: SandboxFactory) -> None:
    server = make_sandbox(faults=Faults(every=1, kinds=["timeout"], stall_seconds=2))
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(server.url, params=BASE, timeout=0.5)
    slow = make_sandbox(faults=Faults(latency=0.3))
    started = time.monotonic()
    get(slow)
    assert time.monotonic() - started >= 0.3
    assert slow.requests[0].params["start_date"] == "2026-03-20"


def test_each_misbehaviour_as_the_api_answers_it(make_sandbox: SandboxFactory) -> None:
    def answers(kind: MisbehaviourKind | None) -> tuple[dict[str, Any], ...]:
        server = make_sandbox(misbehaviour=Misbehaviour(frozenset({kind} if kind else ())))
        return tuple(get(server, limit=40, page=page) for page in (1, 2, 3, 4))

    clean = answers(None)
    assert [len(a["results"]) for a in clean] == [40, 40, 20, 0]
    endless = answers("endless-pages")
    assert [a["next_page"] for a in endless] == [2, 3, 4, 5]
    assert endless[3]["results"] == endless[2]["results"] == clean[2]["results"]
    ignored = answers("ignore-page")
    assert ignored[1]["results"] == ignored[0]["results"] == clean[0]["results"]
    assert ignored[1]["next_page"] == 3
    repeated = answers("repeat-last-row")
    assert repeated[1]["results"][0] == repeated[0]["results"][-1]
    assert (
        repeated[0]["results"] + repeated[1]["results"][1:] == clean[0]["results"] + clean[1]["results"][:39]
    )
    assert answers("phantom-call")[0]["total_results"] == 101
    nulls = answers("null-row")
    assert nulls[0]["results"][0] is None
    assert nulls[0]["results"][1:] == clean[0]["results"][1:]


def test_a_misbehaviour_can_be_limited_to_some_accounts(make_sandbox: SandboxFactory) -> None:
    server = make_sandbox(accounts=2, misbehaviour=Misbehaviour(frozenset({"phantom-call"}), frozenset({2})))
    assert get(server, limit=40)["total_results"] == 100
    assert get(server, limit=40, api_key=account_key(2))["total_results"] == 101


def test_an_answer_that_trickles_arrives_by_small_pieces(make_sandbox: SandboxFactory) -> None:
    server = make_sandbox(misbehaviour=Misbehaviour(frozenset({"trickle"}), trickle_bytes_per_second=400))
    with requests.get(server.url, params={**BASE, "limit": "10"}, timeout=10, stream=True) as response:
        started = time.monotonic()
        first = response.raw.read1(1 << 16)
        assert 0 < len(first) <= 100
        response.raw.read1(1 << 16)
        assert time.monotonic() - started >= 0.2


def test_an_answer_can_come_gzipped_and_chunked_as_web_servers_send_it(make_sandbox: SandboxFactory) -> None:
    plain = get(make_sandbox(), limit=40)
    server = make_sandbox(misbehaviour=Misbehaviour(frozenset({"gzip", "chunked"})))
    with requests.get(server.url, params={**BASE, "limit": "40"}, timeout=10, stream=True) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in response.headers
        raw = response.raw.read(decode_content=False)
    assert 0 < len(raw) < len(json.dumps(plain)) / 2  # compressed
    assert get(server, limit=40) == plain
    # Only when the request accepts it, as HTTP says.
    identity = requests.get(
        server.url, params={**BASE, "limit": "40"}, headers={"Accept-Encoding": "identity"}, timeout=10
    )
    assert "Content-Encoding" not in identity.headers
    assert identity.json() == plain


def test_the_command_line_refuses_an_unknown_misbehaviour() -> None:
    done = subprocess.run(
        [str(BIN / "tap-optico-sandbox"), "--misbehave", "endless-pages,teapot"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown misbehaviours: teapot" in done.stderr


def test_the_command_line_says_in_one_line_that_its_port_is_taken(sandbox: SandboxServer) -> None:
    """A second sandbox on a port in use: one line saying what to do, exit 1, no traceback."""
    done = subprocess.run(
        [str(BIN / "tap-optico-sandbox"), "--port", str(sandbox.port)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"tap-optico-sandbox: port {sandbox.port} is in use: pick another with --port,"
        " or stop the sandbox already running"
    ]
