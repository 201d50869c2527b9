"""The tap's settings, checked against its ``config_jsonschema`` and what a JSON schema cannot say
(a real time zone, dates in order, an http(s) URL), each problem one line naming the setting."""

from __future__ import annotations

import datetime as dt
import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tap_optico.api import FILTERS
from tap_optico.totals import Mode

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
DATE_FORMS = "a date as YYYY-MM-DD or an ISO 8601 date-time"
DATE_FORMATS = ("date", "date-time")


def read_day(value: Any, zone: dt.tzinfo) -> dt.date:
    """``2026-04-08``, or the day in ``zone`` of a date-time such as ``2026-04-08T22:00:00Z`` (Meltano
    turns relative dates such as ``30 days ago`` into date-times with an offset)."""
    moment = read_instant(value)  # a date reads as its naive midnight
    return moment.astimezone(zone).date() if moment.tzinfo else moment.date()


def read_instant(value: Any) -> dt.datetime:
    """An ISO date-time (``Z`` for UTC allowed); TypeError or ValueError for anything else."""
    if not isinstance(value, str):
        raise TypeError(value)
    text = value.strip()
    return dt.datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)


@dataclass(frozen=True)
class Account:
    """One Optico account: its key, and what of it to read."""

    name: str
    api_key: str = field(repr=False)
    start_date: dt.date
    filters: Mapping[str, str]


@dataclass(frozen=True)
class Settings:
    """The settings a run uses, typed."""

    accounts: tuple[Account, ...]
    several_accounts: bool  # from the setting ``accounts``, not ``api_key``
    api_url: str
    end_date: dt.date | None
    page_size: int
    timezone: ZoneInfo
    window_days: int
    lookback_days: int
    max_concurrency: int
    max_tries: int
    max_wait_seconds: int
    request_timeout: int
    reconcile: Mode

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Settings from a config that :func:`problems` found no fault in."""
        zone = ZoneInfo(config["timezone"])
        end = config.get("end_date")

        def account(entry: Mapping[str, Any]) -> Account:
            """An account from its entry; what it leaves out comes from the settings."""
            return Account(
                name=entry["name"],
                api_key=str(entry["api_key"]),  # a key given as a number is its digits
                start_date=read_day(entry.get("start_date") or config["start_date"], zone),
                filters={name: value for name in FILTERS if (value := entry.get(name, config.get(name)))},
            )

        entries = config.get("accounts")
        if entries is None:  # api_key's account
            entries = [{"name": config["account_name"], "api_key": config["api_key"]}]
        read: dict[str, Any] = {
            "accounts": tuple(map(account, entries)),
            "several_accounts": config.get("accounts") is not None,
            "end_date": None if end is None else read_day(end, zone),
            "timezone": zone,
        }
        # Every other field is the setting of its name, as given.
        return cls(**read, **{item.name: config[item.name] for item in fields(cls) if item.name not in read})

    @property
    def last_day(self) -> dt.date:
        """The last day to read: ``end_date``, or today in ``timezone``, never a day after today: such
        a day has no calls yet, and a bookmark moved over it would skip them once they happen."""
        today = dt.datetime.now(self.timezone).date()
        return today if self.end_date is None else min(self.end_date, today)


def clear_text_host(api_url: object) -> str | None:
    """The remote host the key would reach over plain http://, if any."""
    url = urlsplit(str(api_url))
    return url.hostname if url.scheme == "http" and url.hostname not in LOCAL_HOSTS else None


def problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """One line per setting of ``schema`` that ``config`` gets wrong; secrets are never echoed."""
    properties = schema["properties"]
    # With accounts, api_key is checked as their alternative only.
    own_check = {"accounts"} if config.get("accounts") is None else {"accounts", "api_key"}
    errors = [
        error
        for name, spec in properties.items()
        if name not in own_check
        and (error := _problem(name, config.get(name), spec, name in schema.get("required", ())))
    ]
    errors += _account_problems(config, properties["accounts"]["items"])
    if not errors and (end := config.get("end_date")) is not None:
        zone = ZoneInfo(config["timezone"])
        if read_day(end, zone) < read_day(config["start_date"], zone):
            errors.append("Setting 'end_date' must not be before 'start_date'")
    return errors


def environment_problems(environ: Mapping[str, str], schema: Mapping[str, Any], prefix: str) -> list[str]:
    """One line per setting given as an environment variable (``--config ENV``) that singer-sdk
    could not read into its type: a whole number, or JSON for a list or an object."""
    errors = []
    for name, spec in schema["properties"].items():
        variable = prefix + name.upper().replace("-", "_")
        text = environ.get(variable)
        if text is None:
            continue
        kinds = _kinds(spec)
        if "integer" in kinds:
            try:
                int(text)
            except ValueError:
                errors.append(f"{_integer_problem(name, text, spec)} (from {variable})")
        # Not a list of strings, which singer-sdk also reads as ``a,b,c``.
        elif {"array", "object"} & set(kinds) and "string" not in _kinds(spec.get("items") or {}):
            try:
                json.loads(text)
            except json.JSONDecodeError as error:  # the text may hold keys: never echoed
                kind = "list" if "array" in kinds else "object"
                quotes = " (JSON quotes with \", not ')" if "'" in text else ""
                errors.append(
                    f"Setting '{name}' (from {variable}) must be a JSON {kind}: "
                    f"{error.msg} at character {error.pos + 1}{quotes}"
                )
    return errors


def unknown_settings(config: Mapping[str, Any], known: Iterable[str]) -> list[str]:
    """A problem per setting the tap does not know, naming the closest known one: ``page-size`` and
    ``apikey`` are typed for ``page_size`` and ``api_key`` more often than not."""
    by_form = {name.replace("-", "_").lower(): name for name in known}
    unknown = []
    for name in config:
        if name in by_form.values():
            continue
        close = difflib.get_close_matches(str(name).replace("-", "_").lower(), by_form, n=1)
        hint = f"did you mean '{by_form[close[0]]}'?" if close else "`tap-optico --about` lists the settings"
        unknown.append(f"Setting {name!r} is not a setting of tap-optico: {hint}")
    return unknown


def config_file_problem(path: str) -> str | None:
    """Why a ``--config`` file cannot be read as settings (missing, not JSON, not an object), naming
    the file and, for JSON, the line and column; its text is never echoed (it holds keys)."""
    where = f"Config file {path!r}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"{where} does not exist"
    except (OSError, UnicodeDecodeError) as error:
        return f"{where} cannot be read: {type(error).__name__}: {getattr(error, 'strerror', None) or error}"
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        return f"{where} is not JSON: line {error.lineno}, column {error.colno}: {error.msg}"
    if not isinstance(parsed, dict):
        return f"{where} holds a JSON {type(parsed).__name__}, not an object of settings"
    return None


def _kinds(spec: Mapping[str, Any]) -> list[Any]:
    kinds = spec.get("type")
    return kinds if isinstance(kinds, list) else [kinds]


def _account_problems(config: Mapping[str, Any], item: Mapping[str, Any]) -> list[str]:
    """``api_key`` or ``accounts``, and each account named once, with a key."""
    accounts = config.get("accounts")
    if accounts is None and config.get("api_key") is None:
        return ["Setting 'api_key' is required: set it to your API key (or list your accounts in 'accounts')"]
    if accounts is None:
        return []
    if config.get("api_key"):  # an empty api_key (from an environment variable) is no key
        return [
            "Settings 'api_key' and 'accounts' exclude each other: one key in api_key, or all in accounts"
        ]
    if not isinstance(accounts, list) or not accounts:
        return [
            'Setting \'accounts\' must be a non-empty list of objects such as {"name": ..., "api_key": ...}'
        ]
    errors: list[str] = []
    names: set[str] = set()
    known = item["properties"]
    for number, entry in enumerate(accounts, 1):
        if not isinstance(entry, dict):
            errors.append(f"Setting 'accounts': entry {number} must be an object with a name and an api_key")
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            errors.append(f"Setting 'accounts': entry {number} needs a name (a short label)")
            continue
        where = f"Setting 'accounts': account {name!r}"
        if name != name.strip():  # "a" and "a " would be two accounts that logs cannot tell apart
            errors.append(f"{where} has spaces around its name: remove them")
        if name in names:
            errors.append(f"{where} is listed twice: each name must be unique")
        names.add(name)
        errors += [f"{where} has an unknown field {key!r}" for key in entry if key not in known]
        for key, spec in known.items():
            if key != "name" and (
                problem := _problem(key, entry.get(key), spec, key in item.get("required", ()))
            ):
                errors.append(f"{where}: {problem.removeprefix('Setting ')}")
    return errors


def _problem(name: str, value: Any, spec: Mapping[str, Any], required: bool) -> str | None:
    if value is None and not required:
        return None
    if value is None and not spec.get("secret"):
        what = f": {DATE_FORMS}" if spec.get("format") in DATE_FORMATS else ""
        return f"Setting '{name}' is required{what}"
    if spec.get("secret"):
        # The API reference types the key as an integer: a key given as a JSON number is its digits.
        if (isinstance(value, str) and value.strip()) or (_is_whole(value) and value >= 0):
            return None
        return f"Setting '{name}' is required: set it to your {spec.get('title', name)}"
    kinds = _kinds(spec)
    if "integer" in kinds:
        return _integer_problem(name, value, spec)
    if problem := _format_problem(name, value, spec):
        return problem
    if "enum" in spec and value not in spec["enum"]:
        return f"Setting '{name}' must be one of {', '.join(spec['enum'])}, got {value!r}"
    if "string" in kinds and (not isinstance(value, str) or len(value.strip()) < spec.get("minLength", 0)):
        return f"Setting '{name}' must be non-empty text, got {value!r}"
    return None


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer_problem(name: str, value: Any, spec: Mapping[str, Any]) -> str | None:
    low, high = spec.get("minimum"), spec.get("maximum")
    if _is_whole(value) and (low is None or value >= low) and (high is None or value <= high):
        return None
    bound = "" if low is None else f" at least {low}" if high is None else f" from {low} to {high}"
    return f"Setting '{name}' must be a whole number{bound}, got {value!r}"


def _format_problem(name: str, value: Any, spec: Mapping[str, Any]) -> str | None:
    """What a JSON schema cannot check: a real date, time zone or http(s) URL."""
    if spec.get("format") in DATE_FORMATS:
        try:
            read_day(value, dt.timezone.utc)
        except (TypeError, ValueError):
            return (
                f"Setting '{name}' must be a date as YYYY-MM-DD, got {value!r} (ISO 8601 date-times work too)"
            )
    elif spec.get("format") == "uri":  # else every request fails, as the account's failure
        try:
            url = urlsplit(str(value))
            port = url.port
        except ValueError as error:
            return f"Setting '{name}' must be an http(s) URL: {error}, got {value!r}"
        if url.scheme not in ("http", "https") or not url.hostname or port == 0:
            return f"Setting '{name}' must be an http(s) URL with a host (and a port if any), got {value!r}"
        if any(character.isspace() for character in str(value)):
            return f"Setting '{name}' must be an http(s) URL without spaces (write one as %20), got {value!r}"
    elif name == "timezone":
        try:
            ZoneInfo(str(value))
        except (ZoneInfoNotFoundError, ValueError):
            return f"Setting '{name}' must be an IANA time zone such as Europe/Paris, got {value!r}"
    return None
