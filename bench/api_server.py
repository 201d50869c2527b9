"""An API server for the benchmark that is not the sandbox: the same calls in the formats real servers write.

It answers the Data API's one GET (``type=calls``, paged, ``group_by_day``) from
calls generated per day (a database's rows, made at start), and encodes every
answer when it is asked, with Python's ``json`` as many servers do: its CPU per
answer is real work, never a cached body, in a process per connection (a server
with many cores). ``--format`` picks how the same calls are written
(:data:`FORMATS`), ``--latency`` a wait before each answer.

Usage: api_server.py [--port 0] [--calls-per-day N] [--format compact] [--latency 0.2]
It prints ``bench API at URL`` on its first line of output, then serves until it is stopped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ForkingMixIn
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from typing_extensions import override

FIRST_HOUR = 7
OPEN_SECONDS = 12 * 3600
SOURCES = ("traffic direct", "adwords", "Google", "Yahoo", "Bing")
PAGES = ("/", "/services", "/tarifs", "/contact", "/dépannage-chaudière", "/devis")
KEYWORDS = ("plombier paris", "dépannage chaudière", "serrurier urgence", "")
STATUSES = ("succès", "succès", "succès", "occupé", "aucune réponse")
TRACKING = (("0182880101", "0142685300"), ("0182880102", "0472101010"), ("0182880103", "0491553030"))


@dataclass(frozen=True)
class Format:
    """How an answer is written: the same calls, each way a JSON writer may write them."""

    #: ``json.dumps`` separators: compact (``","``, ``":"``) or Python's default (``", "``, ``": "``).
    separators: tuple[str, str]
    #: Non-ASCII text as ``\\uXXXX`` escapes (True) or raw UTF-8.
    ascii: bool
    #: Keys in the documented order, or reversed.
    reversed_keys: bool
    #: Numbers and flags as JSON numbers and booleans, missing values as null; else all as text
    #: (``"134"``, ``"12.50"``, ``"0"``) with empty strings for missing values.
    typed: bool


FORMATS = {
    "compact": Format((",", ":"), ascii=False, reversed_keys=False, typed=False),
    "spaced": Format((", ", ": "), ascii=True, reversed_keys=True, typed=False),
    "typed": Format((", ", ": "), ascii=False, reversed_keys=True, typed=True),
}


def day_calls(day: dt.date, per_day: int) -> tuple[tuple[Any, ...], ...]:
    """A day's calls as typed values, in time order: generated from the day alone."""
    rng = random.Random(day.toordinal())
    calls = []
    for number in range(per_day):
        moment = dt.datetime.combine(day, dt.time(FIRST_HOUR)) + dt.timedelta(
            seconds=number * OPEN_SECONDS // per_day
        )
        tracking, phone = rng.choice(TRACKING)
        status = rng.choice(STATUSES)
        answered = status == "succès"
        pages = rng.sample(PAGES, rng.randrange(1, 4))
        calls.append(
            (
                moment.isoformat(sep=" "),
                f"06{rng.randrange(10**8):08d}",
                tracking,
                phone,
                rng.randrange(1, 5),
                rng.choice(SOURCES),
                f"https://www.plomberie-durand.fr{pages[0]}",
                "www.google.fr",
                rng.choice(KEYWORDS),
                "\n".join(pages),
                status,
                rng.randrange(15, 900) if answered else 0,
                rng.randrange(500, 20_000) if answered and rng.random() < 0.6 else 0,
                rng.choice(("", "1", "2#")),
                not answered and rng.random() < 0.5,
                rng.random() < 0.05,
                rng.choice(("agence=Paris", "agence=Lyon", "")),
                f"{rng.getrandbits(64):016x}",
            )
        )
    return tuple(calls)


class ForkingHTTPServer(ForkingMixIn, HTTPServer):
    """A process per connection, as a server with many cores: answers are not serialised by one GIL."""


CALL_KEYS = (
    "start_date",
    "caller",
    "tracking_number",
    "phone",
    "trigger_type",
    "source",
    "url",
    "referer",
    "keyword",
    "call_path",
    "status",
    "duration",
    "revenue",
    "keypad",
    "is_redirect",
    "expired_redirect",
    "client_data",
    "visit_id",
)
TOTALS = (CALL_KEYS.index("duration"), CALL_KEYS.index("revenue"))


@dataclass(frozen=True)
class Data:
    """The server's days: each one's calls as values and as ``form`` writes them (a database's rows:
    an answer is encoded when asked). Other days have no calls."""

    form: Format
    calls: dict[dt.date, tuple[tuple[Any, ...], ...]]
    results: dict[dt.date, list[dict[str, Any]]]

    @classmethod
    def make(cls, first: dt.date, days: int, per_day: int, form: Format) -> Data:
        calls = {
            first + dt.timedelta(days=n): day_calls(first + dt.timedelta(days=n), per_day)
            for n in range(days)
        }
        return cls(
            form,
            calls,
            {day: [render(CALL_KEYS, call, form) for call in of_day] for day, of_day in calls.items()},
        )


def render(keys: Sequence[str], values: Sequence[Any], form: Format) -> dict[str, Any]:
    """One result as the format writes it (revenue in cents)."""
    row = {}
    for key, value in zip(keys, values, strict=True):
        if key == "revenue":
            value = (value / 100 if form.typed else f"{value // 100}.{value % 100:02d}") if value else None
        if form.typed:
            row[key] = None if value == "" else value
        elif value is None:
            row[key] = ""
        elif isinstance(value, bool):
            row[key] = "1" if value else "0"
        else:
            row[key] = value if isinstance(value, str) else str(value)
    return dict(reversed(row.items())) if form.reversed_keys else row


def answer(params: dict[str, str], data: Data) -> tuple[int, bytes]:
    """The HTTP status and body of one request."""
    try:
        start, end = (dt.date.fromisoformat(params[name]) for name in ("start_date", "end_date"))
        page, limit = int(params.get("page", "1")), int(params.get("limit", "100"))
    except (KeyError, ValueError):
        limit = 0
    if not params.get("api_key") or params.get("type") != "calls" or not 10 <= limit <= 5000:
        return 400, json.dumps({"status": "ERROR", "errors": ["bad request"]}).encode()
    days = [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]
    if params.get("group_by_day") in ("1", "true"):
        keys: tuple[str, ...] = ("date", "calls", "duration", "revenue")
        rows = [
            render(
                keys, (day.isoformat(), len(calls), *(sum(c[i] for c in calls) for i in TOTALS)), data.form
            )
            for day in days
            if (calls := data.calls.get(day))
        ]
    else:
        rows = [call for day in days for call in data.results.get(day, ())]
    first = (page - 1) * limit
    body = {"status": "OK", "total_results": len(rows), "results": rows[first : first + limit]}
    if first + limit < len(rows):
        body["next_page"] = page + 1
    return 200, json.dumps(body, separators=data.form.separators, ensure_ascii=data.form.ascii).encode()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--calls-per-day", type=int, default=1000)
    parser.add_argument("--format", choices=sorted(FORMATS), default="compact")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--first-day", type=dt.date.fromisoformat, default=dt.date(2025, 1, 1))
    parser.add_argument("--days", type=int, default=100, help="days whose calls are made at start")
    args = parser.parse_args(argv)
    data = Data.make(args.first_day, args.days, args.calls_per_day, FORMATS[args.format])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            time.sleep(args.latency)
            status, body = answer(dict(parse_qsl(urlsplit(self.path).query)), data)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        @override
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: a line per request would cost the benchmark CPU."""

    server = ForkingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"bench API at http://127.0.0.1:{server.server_address[1]}/data-api", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
