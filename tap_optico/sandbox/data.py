"""Deterministic synthetic Optico calls.

Every day is generated from ``(seed, day)`` alone, so any slice of any day is
reproducible without storing the data set. The fields that do not identify a
call come from a fixed pool of pre-encoded "profiles"; a call is its start
time, its caller and a profile, which keeps generation cheap enough for the
sandbox never to be the bottleneck of a benchmark.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

RawStyle = Literal["strings", "mixed"]
RAW_STYLES: tuple[RawStyle, ...] = ("strings", "mixed")
Disagreement = Literal["missing-call", "duration", "revenue"]
#: How the daily totals of a chosen day can disagree with its calls (none do unless asked).
DISAGREEMENTS: dict[Disagreement, str] = {
    "missing-call": "the day's totals count one call more than its calls (an unanswered one)",
    "duration": "the day's total duration is one second more than its calls'",
    "revenue": "the day's revenue is one cent more than its calls'",
}

SECONDS_PER_DAY = 86_400
PROFILE_COUNT = 2_048
DAY_CACHE_SIZE = 128
#: With look-alikes, the first call of every such run of calls is followed by its look-alikes.
LOOKALIKE_EVERY = 10

# Tracking numbers: (number, destination, static description or None).
TRACKING_NUMBERS: tuple[tuple[str, str, str | None], ...] = (
    ("0182880101", "0142685300", None),
    ("0182880102", "0142685300", None),
    ("0182880103", "0472101010", None),
    ("0182880104", "0472101010", None),
    ("0182880105", "0491553030", None),
    ("0182880106", "0556444040", None),
    ("0182880190", "0142685300", "Annonce Pages Jaunes"),
    ("0182880191", "0472101010", "Flyer printemps Lyon"),
    ("0182880192", "0491553030", "Affiche métro Marseille"),
)
SOURCES = ("traffic direct", "adwords", "Google", "Yahoo", "Bing", "facebook")
REFERERS = ("www.google.fr", "www.bing.com", "fr.search.yahoo.com", "www.facebook.com", "")
KEYWORDS = ("plombier paris", "serrurier urgence", "dépannage chaudière", "devis électricien", "")
PAGES = ("/", "/services", "/tarifs", "/contact", "/blog/entretien-chaudiere", "/devis", "/a-propos")
STATUSES = ("succès", "succès", "succès", "occupé", "aucune réponse")
CLIENT_DATA = ("agence=Paris", "agence=Lyon", "agence=Marseille", "")


@dataclass(frozen=True)
class Profile:
    """The non-identifying part of a call, pre-encoded once."""

    tracking_number: str
    phone: str
    static_description: str | None
    duration_seconds: int
    revenue_cents: int
    fields: dict[str, Any]
    encoded_tail: bytes = field(repr=False)


@dataclass(frozen=True)
class SandboxCall:
    """One generated call: when, who, and which profile."""

    day: dt.date
    start_date: str
    caller: str
    profile: Profile

    def as_dict(self) -> dict[str, Any]:
        """The call as the API would send it (used by filters and tests)."""
        return {"start_date": self.start_date, "caller": self.caller, **self.profile.fields}

    @functools.cached_property
    def encoded(self) -> bytes:
        """The call as the API sends it, in JSON: encoded once, served as often as asked."""
        head = msgspec.json.encode({"start_date": self.start_date, "caller": self.caller})
        return head[:-1] + b"," + self.profile.encoded_tail


def _format_duration(seconds: int, as_clock: bool) -> str:
    if as_clock:
        return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return str(seconds)


def _format_revenue(cents: int, variant: int) -> str | float:
    if cents == 0:
        return ""
    text = f"{cents // 100}.{cents % 100:02d}"
    if variant == 1:
        return cents / 100
    if variant == 2:
        return text.replace(".", ",")
    return text


def _build_profile(rng: random.Random, index: int, style: RawStyle) -> Profile:
    tracking, phone, description = TRACKING_NUMBERS[rng.randrange(len(TRACKING_NUMBERS))]
    is_static = description is not None
    status = rng.choice(STATUSES)
    answered = status == "succès"
    duration = rng.randrange(15, 900) if answered else 0
    revenue_cents = rng.randrange(500, 20_000) if answered and rng.random() < 0.6 else 0
    is_redirect = not answered and rng.random() < 0.5
    expired = rng.random() < 0.05
    pages = [] if is_static else rng.sample(PAGES, rng.randrange(1, 5))
    # In the mixed style, each profile takes one of the forms the API reference
    # lists, chosen by its index so that every form is present in every day.
    variant = index % 4 if style == "mixed" else 0
    fields: dict[str, Any] = {
        "tracking_number": tracking,
        "phone": phone,
        "trigger_type": str(rng.randrange(1, 5)),
        "source": "" if is_static else rng.choice(SOURCES),
        "url": "" if is_static else f"https://www.plomberie-durand.fr{pages[0]}",
        "referer": "" if is_static else rng.choice(REFERERS),
        "keyword": "" if is_static else rng.choice(KEYWORDS),
        "call_path": "\n".join(pages),
        "status": status,
        "duration": _format_duration(duration, as_clock=variant == 2),
        "revenue": _format_revenue(revenue_cents, variant),
        "keypad": rng.choice(("", "", "1", "2#", "1*3")),
        "is_redirect": "1" if is_redirect else "0",
        "expired_redirect": "1" if expired else "0",
        "client_data": rng.choice(CLIENT_DATA),
        "visit_id": "" if is_static else f"{rng.getrandbits(64):016x}",
    }
    if variant == 1:  # numbers and booleans as JSON numbers and booleans
        fields["trigger_type"] = int(fields["trigger_type"])
        fields["duration"] = duration
        fields["is_redirect"] = is_redirect
        fields["expired_redirect"] = int(expired)
    elif variant == 3:  # the documented spelling, an empty string as null, an unlisted field
        fields["tracking number"] = fields.pop("tracking_number")
        fields["keypad"] = None
        fields["campaign_id"] = f"cmp-{index % 7}"
    encoded = msgspec.json.encode(fields)
    return Profile(
        tracking_number=tracking,
        phone=phone,
        static_description=description,
        duration_seconds=duration,
        revenue_cents=revenue_cents,
        fields=fields,
        encoded_tail=encoded[1:],
    )


@dataclass(frozen=True)
class DailyTotal:
    day: dt.date
    calls: int
    duration_seconds: int
    revenue_cents: int

    def as_dict(self, style: RawStyle) -> dict[str, Any]:
        revenue = f"{self.revenue_cents // 100}.{self.revenue_cents % 100:02d}"
        if style == "mixed" and self.day.toordinal() % 2:
            return {
                "date": self.day.isoformat(),
                "calls": self.calls,
                "duration": _format_duration(self.duration_seconds, as_clock=True),
                "revenue": revenue.replace(".", ","),
            }
        return {
            "date": self.day.isoformat(),
            "calls": str(self.calls),
            "duration": str(self.duration_seconds),
            "revenue": revenue,
        }


class SandboxData:
    """The calls of every day between ``first_day`` and ``last_day``."""

    def __init__(
        self,
        *,
        seed: int = 42,
        calls_per_day: int = 200,
        first_day: dt.date,
        last_day: dt.date,
        style: RawStyle = "strings",
        lookalikes: int = 0,
        disagree: Mapping[dt.date, Disagreement] | None = None,
    ) -> None:
        if calls_per_day < 0 or lookalikes < 0:
            msg = "calls_per_day and lookalikes must be >= 0"
            raise ValueError(msg)
        if last_day < first_day:
            msg = "last_day must not be before first_day"
            raise ValueError(msg)
        self.seed = seed
        self.calls_per_day = calls_per_day
        self.first_day = first_day
        self.last_day = last_day
        self.style = style
        self.lookalikes = lookalikes
        #: Days whose daily totals disagree with their calls, and how.
        self.disagree = dict(disagree or {})
        profile_rng = random.Random(f"{seed}:profiles")
        self.profiles = tuple(_build_profile(profile_rng, index, style) for index in range(PROFILE_COUNT))
        # Profiles of the same tracking and destination numbers, for look-alike calls that differ.
        self._siblings: dict[tuple[str, str], list[Profile]] = {}
        for profile in self.profiles:
            self._siblings.setdefault((profile.tracking_number, profile.phone), []).append(profile)
        self._calls_of_day = functools.lru_cache(maxsize=DAY_CACHE_SIZE)(self._generate_day)

    def days(self, start: dt.date, end: dt.date) -> list[dt.date]:
        """The days of ``[start, end]`` on which the sandbox has data."""
        first, last = max(start, self.first_day), min(end, self.last_day)
        return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]

    def calls_of_day(self, day: dt.date) -> tuple[SandboxCall, ...]:
        """All calls of ``day`` in time order (empty outside the data span)."""
        if not self.first_day <= day <= self.last_day:
            return ()
        return self._calls_of_day(day)

    def _generate_day(self, day: dt.date) -> tuple[SandboxCall, ...]:
        rng = random.Random(f"{self.seed}:{day.isoformat()}")
        count = self.calls_per_day
        midnight = dt.datetime.combine(day, dt.time())
        # Strictly increasing seconds while the day has room for them; each call
        # only depends on the calls before it, so a day's prefix is stable.
        spacing = max(1, SECONDS_PER_DAY // max(count, 1))
        separator = "T" if self.style == "mixed" and day.toordinal() % 2 else " "
        calls: list[SandboxCall] = []
        for index in range(count):
            bits = rng.getrandbits(64)
            group = index % LOOKALIKE_EVERY
            if calls and 0 < group <= self.lookalikes:
                calls.append(self._lookalike(calls[index - group], group))
                continue
            second = min(SECONDS_PER_DAY - 1, index * SECONDS_PER_DAY // count + bits % spacing)
            start = midnight + dt.timedelta(seconds=second)
            calls.append(
                SandboxCall(
                    day=day,
                    start_date=start.isoformat(sep=separator),
                    caller=f"0{6 + (bits >> 20) % 2}{(bits >> 24) % 100_000_000:08d}",
                    profile=self.profiles[(bits >> 52) % PROFILE_COUNT],
                )
            )
        return tuple(calls)

    def _lookalike(self, call: SandboxCall, number: int) -> SandboxCall:
        """A distinct call at the same second, from the same caller, on the same numbers.

        Every other one is identical in every field (an anonymous caller who
        rang twice and got no answer); the others differ in the rest.
        """
        profile = call.profile
        if number % 2 == 0:
            siblings = self._siblings[(profile.tracking_number, profile.phone)]
            profile = siblings[(siblings.index(profile) + number) % len(siblings)]
        return SandboxCall(day=call.day, start_date=call.start_date, caller=call.caller, profile=profile)

    def daily_total(self, calls: tuple[SandboxCall, ...] | list[SandboxCall]) -> DailyTotal:
        day = calls[0].day
        off = self.disagree.get(day)
        return DailyTotal(
            day=day,
            calls=len(calls) + (off == "missing-call"),
            duration_seconds=sum(call.profile.duration_seconds for call in calls) + (off == "duration"),
            revenue_cents=sum(call.profile.revenue_cents for call in calls) + (off == "revenue"),
        )
