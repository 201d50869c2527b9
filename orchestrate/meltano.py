"""The Meltano side of a pipeline run: state ids, `meltano el`, `meltano state get`.

Shared by the Dagster definitions and `scripts/backfill.py`: a state id is built here only.
Every Meltano command runs with the umask 077: the tap's config file that Meltano writes for
a run holds its keys, and no other user may read it (nor the run's output).
"""

import contextlib
import datetime as dt
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

from tap_optico.state_ids import meltano_state_id

EXTRACTOR = "tap-optico"
MELTANO = str(Path(sys.executable).parent / "meltano")
#: The Meltano project: MELTANO_PROJECT_ROOT (as Meltano reads it), else this repository.
PROJECT = Path(os.environ.get("MELTANO_PROJECT_ROOT") or Path(__file__).resolve().parent.parent)
#: Files Meltano and its plugins create: their owner's only.
UMASK = 0o077


def state_id(environment: str, loader: str, group: str | None = None) -> str:
    """The daily job's state id: `meltano run tap-optico <loader>`'s own, or one group's."""
    return meltano_state_id(environment, EXTRACTOR, loader, *([] if group is None else [group]))


def backfill_state_id(
    environment: str, loader: str, first: dt.date, last: dt.date, group: str | None = None
) -> str:
    """A backfill range's state id: the daily job's, with the range after it."""
    return f"{state_id(environment, loader, group)}:backfill-{first}-{last}"


def default_environment(project: Path = PROJECT) -> str:
    """The environment `meltano` itself would use: MELTANO_ENVIRONMENT, else the project's default."""
    if os.environ.get("MELTANO_ENVIRONMENT"):
        return os.environ["MELTANO_ENVIRONMENT"]
    config = YAML(typ="safe").load((project / "meltano.yml").read_text(encoding="utf-8"))
    environment = config.get("default_environment")
    if not environment:
        raise SystemExit("no environment: set MELTANO_ENVIRONMENT or default_environment in meltano.yml")
    return str(environment)


class MeltanoError(Exception):
    """A Meltano command failed; the message is its last error line."""


def meltano(*args: str, env: Mapping[str, str] | None = None) -> str:
    """Run a short Meltano command in the project; its output, or MeltanoError."""
    run = subprocess.run(
        [MELTANO, *args],
        cwd=PROJECT,
        env=dict(env or os.environ),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        umask=UMASK,
    )
    if run.returncode:
        last = run.stderr.strip().splitlines()[-1:] or [f"exit {run.returncode}"]
        raise MeltanoError(f"meltano {' '.join(args)} failed: {last[0]}")
    return run.stdout


def prepare(env: Mapping[str, str]) -> None:
    """Create Meltano's SQLite system database once, before runs fan out.

    Meltano commands that find no system database create it, and several at once race
    ("table job already exists"): the first run creates it, under a lock, and the others wait.
    """
    if env.get("MELTANO_DATABASE_URI"):
        return
    system = PROJECT / ".meltano"
    system.mkdir(exist_ok=True)
    with (system / "dagster.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (system / "meltano.db").exists():
            meltano("state", "list", env=env)


def bookmarks(state: str, env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Each stream's bookmark per account in a state id: where the target confirmed the read got."""
    singer = json.loads(meltano("state", "get", state, env=env) or "{}").get("singer_state") or {}
    found: dict[str, dict[str, str]] = {}
    for stream, bookmark in (singer.get("bookmarks") or {}).items():
        for partition in bookmark.get("partitions") or []:
            account, value = (
                (partition.get("context") or {}).get("account"),
                partition.get("replication_key_value"),
            )
            if account is not None and value is not None:
                found.setdefault(stream, {})[str(account)] = str(value)
    return found


@dataclass
class LogLine:
    """One line of Meltano's JSON log: its level, who wrote it and what it says."""

    level: str
    text: str

    @classmethod
    def parse(cls, line: str) -> "LogLine":
        try:
            entry = json.loads(line)
        except ValueError:
            return cls("info", line.rstrip())
        if not isinstance(entry, dict):
            return cls("info", line.rstrip())
        source = entry.get("name") or "meltano"
        return cls(str(entry.get("level", "info")), f"{source}: {entry.get('event', '')}".rstrip())

    def records(self) -> tuple[str, int] | None:
        """A stream and a number of its records, when the line is the tap's `record_count` metric."""
        metric = self.text.removeprefix(f"{EXTRACTOR}: METRIC: ")
        if metric == self.text:
            return None
        try:
            counter = json.loads(metric)
            if counter["metric"] == "record_count":
                return str(counter["tags"]["stream"]), int(counter["value"])
        except (ValueError, TypeError, KeyError):
            pass
        return None


def run_el(
    environment: str, loader: str, state: str, env: Mapping[str, str], log: Callable[[LogLine], None]
) -> None:
    """`meltano el tap-optico <loader> --state-id <state> --full-refresh`, each log line handed to
    `log` as it comes.

    `meltano el --state-id` gives the run a directory of its own, so that runs of one
    extractor can go side by side (`meltano run` shares `.meltano/run/tap-optico/`).
    `--full-refresh`: the run reads the dates it is given whatever the state holds, and leaves
    its own state (where the read got) under that id.
    Raises MeltanoError with the tap's last error line when the run fails. Stopped
    (the orchestrator cancels the run), it stops Meltano and its plugins, and returns
    once none of them runs: nothing writes the state id after its run has ended.
    """
    command = [MELTANO, "--log-format=json", "--environment", environment, "el", EXTRACTOR, loader]
    process = subprocess.Popen(
        [*command, "--state-id", state, "--full-refresh"],
        cwd=PROJECT,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        umask=UMASK,
        start_new_session=True,  # Meltano, the tap and the target: one group, stopped as one
    )
    last_error, read_to_the_end = "", False
    try:
        assert process.stdout is not None
        for line in process.stdout:
            entry = LogLine.parse(line)
            if entry.level in ("error", "critical") and entry.text.startswith(EXTRACTOR):
                last_error = entry.text
            log(entry)
        read_to_the_end = True
    finally:
        if not read_to_the_end:
            _stop_group(process)
        process.wait()
    if process.returncode:
        raise MeltanoError(last_error or f"meltano el exited with {process.returncode}")


def _stop_group(process: subprocess.Popen[str], timeout: float = 30) -> None:
    """SIGTERM to the process's group, then wait until the group is gone (SIGKILL after `timeout`)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()  # Meltano reaped, else it would stay in the group
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
