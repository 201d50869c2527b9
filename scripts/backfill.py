"""Backfill date ranges side by side with Meltano, then hand over to the daily job.

For a machine with Meltano and no orchestrator, where the daily job is
`meltano run tap-optico <loader>` and its state. With Dagster, each day of each account group
is a partition of the tables' assets instead, loaded without state (orchestrate/, the README's
"Orchestrating with Dagster"); the state ids are built in one place (orchestrate/meltano.py).

    .venv/bin/python scripts/backfill.py --loader target-postgres \\
        2024-01-01..2024-12-31 2025-01-01..2025-11-25

Run from the Meltano project. Why not a loop of `meltano run ... &`: every `meltano run`
of tap-optico writes its config, catalog and state files to the same
`.meltano/run/tap-optico/`, so parallel runs read each other's files or delete them.
`meltano el --state-id ID` gives each run its own directory
(`.meltano/run/elt/<ID>/<run id>/`) and its own state. Each range runs as one such
`meltano el`, with `TAP_OPTICO_START_DATE`/`TAP_OPTICO_END_DATE` set, under the state
id `<environment>:tap-optico-to-<loader>:backfill-<first>-<last>`; running the same
command again after a failure continues every range from its own state.

When every range has finished, the state of the range that ends last is copied to
the daily job's state id (`<environment>:tap-optico-to-<loader>`, what
`meltano run tap-optico <loader>` uses), so the daily job continues from there. A
daily job that already has state keeps it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# The project root is importable through the editable install (`make install`).
from orchestrate.meltano import backfill_state_id, default_environment, state_id

MELTANO = str(Path(sys.executable).parent / "meltano")
EXTRACTOR = "tap-optico"


@dataclass
class Range:
    first: dt.date
    last: dt.date

    @property
    def name(self) -> str:
        return f"{self.first}..{self.last}"

    def state_id(self, environment: str, loader: str) -> str:
        return backfill_state_id(environment, loader, self.first, self.last)


def parse_range(text: str) -> Range:
    try:
        first, last = (dt.date.fromisoformat(part) for part in text.split(".."))
    except ValueError:
        expected = "expected FIRST..LAST as YYYY-MM-DD..YYYY-MM-DD"
        raise argparse.ArgumentTypeError(f"{text!r}: {expected}") from None
    if last < first:
        raise argparse.ArgumentTypeError(f"{text!r}: the last day is before the first")
    return Range(first, last)


def meltano(*args: str) -> str:
    run = subprocess.run(
        [MELTANO, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    if run.returncode:
        sys.stderr.write(run.stderr)
        raise SystemExit(f"meltano {' '.join(args)} failed")
    return run.stdout


def start(backfill: Range, environment: str, loader: str, log: IO[str]) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TAP_OPTICO_START_DATE": backfill.first.isoformat(),
        "TAP_OPTICO_END_DATE": backfill.last.isoformat(),
    }
    command = [MELTANO, "--environment", environment, "el", EXTRACTOR, loader]
    command += ["--state-id", backfill.state_id(environment, loader)]
    return subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
    )


def run_all(ranges: list[Range], environment: str, loader: str, parallel: int, logs: Path) -> list[Range]:
    """Run up to `parallel` ranges at a time; the ranges that failed."""
    logs.mkdir(parents=True, exist_ok=True)
    waiting = list(ranges)
    running: dict[subprocess.Popen[str], tuple[Range, IO[str], float]] = {}
    failed: list[Range] = []
    while waiting or running:
        while waiting and len(running) < parallel:
            backfill = waiting.pop(0)
            log = (logs / f"{backfill.name}.log").open("w", encoding="utf-8")
            running[start(backfill, environment, loader, log)] = (backfill, log, time.monotonic())
            print(f"started  {backfill.name}  (log: {log.name})", flush=True)
        for process in [p for p in running if p.poll() is not None]:
            backfill, done_log, began = running.pop(process)
            done_log.close()
            outcome = "done" if process.returncode == 0 else f"FAILED (exit {process.returncode})"
            print(f"{outcome:<8} {backfill.name}  in {time.monotonic() - began:.0f} s", flush=True)
            if process.returncode:
                failed.append(backfill)
        time.sleep(0.2)
    return failed


def hand_over(ranges: list[Range], environment: str, loader: str) -> None:
    daily = state_id(environment, loader)
    if json.loads(meltano("state", "get", daily) or "{}"):
        print(f"{daily} already has state: the daily job keeps it")
        return
    last = max(ranges, key=lambda r: r.last)
    meltano("state", "copy", "--force", last.state_id(environment, loader), daily)
    print(f"state of {last.name} copied to {daily}: `meltano run {EXTRACTOR} {loader}` continues from it")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("ranges", nargs="+", type=parse_range, metavar="FIRST..LAST")
    parser.add_argument("--loader", default="target-postgres")
    parser.add_argument("--environment", help="default: MELTANO_ENVIRONMENT, else meltano.yml's default")
    parser.add_argument("--parallel", type=int, default=4, help="ranges run at once (default 4)")
    parser.add_argument("--logs", type=Path, default=Path(".meltano/logs/backfill"))
    parser.add_argument("--no-hand-over", action="store_true", help="leave the daily job's state alone")
    args = parser.parse_args(argv)
    ranges: list[Range] = sorted(args.ranges, key=lambda r: r.first)
    for before, after in itertools.pairwise(ranges):
        if after.first <= before.last:
            parser.error(f"ranges {before.name} and {after.name} overlap")
    environment = args.environment or default_environment(Path.cwd())
    # The first command on a new system database creates its tables; parallel runs
    # would all try at once and fail, so one command runs first.
    meltano("state", "list")
    failed = run_all(ranges, environment, args.loader, max(1, args.parallel), args.logs)
    if failed:
        names = " ".join(r.name for r in failed)
        print(f"failed: {names}. Run the same command again: every range continues from its state.")
        return 1
    if not args.no_hand_over:
        hand_over(ranges, environment, args.loader)
    return 0


if __name__ == "__main__":
    sys.exit(main())
