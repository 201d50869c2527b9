"""Where the tap's CPU goes: each stage of a record's way, in µs of CPU per record.

``make bench`` gives the tap's CPU as a whole against the script's; this says what that CPU is
spent on. It serves the CPU comparison's calls from ``bench/api_server.py`` (in a process of its
own, not counted) and runs the tap's command in a child process that times, with each thread's
own CPU clock, the methods that do each stage (:data:`STAGES`). What no stage holds (settings
and catalog, singer-sdk's loop, the pager, STATE, the watchdog) is "everything else". The timers
add a little to the run: compare stages with each other, not with ``make bench``'s figures.

Usage: bench/stages.py [--format compact|spaced|typed] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_server import FORMATS
from run import (
    BENCH,
    FIRST_DAY,
    Scenario,
    Setup,
    api_server,
    contender_env,
    is_compared_record,
    output_lines,
    tap_argv,
)


class Stage(NamedTuple):
    name: str
    #: The threads it runs in: the request threads or the main thread.
    thread: str
    #: The methods (``module:Class.method``) whose CPU it is.
    methods: tuple[str, ...]
    #: The stages those methods call: their CPU is taken out of this one's.
    inner: tuple[str, ...] = ()


STAGES = (
    Stage(
        "receive (HTTP, the body)",
        "request",
        ("tap_optico.client:OpticoClient._send",),
        ("decode (msgspec)",),
    ),
    Stage("decode (msgspec)", "request", ("tap_optico.client:OpticoClient.decode",)),
    Stage("type and key (normalize)", "main", ("tap_optico.normalize:Normalizer.records",)),
    Stage(
        "window: dedupe, bookmark values",
        "main",
        ("tap_optico.reading:WindowReader._records",),
        ("type and key (normalize)",),
    ),
    Stage(
        "tally (reconcile)", "main", ("tap_optico.totals:CallTally.add", "tap_optico.totals:TotalsTally.add")
    ),
    Stage("write (encode, stdout)", "main", ("tap_optico.sdk_seam:WindowedStream.write_records",)),
)
START_UP = "start-up (imports)"
RUN = "run, after start-up"


def timed_child(config: str, timings: str) -> None:
    """The tap's command (``tap_optico.cli.main``) on ``config``, its stages timed: the CPU
    seconds of each, of the imports and of the whole run go to ``timings`` as the tap exits."""
    started = time.process_time()
    from tap_optico import cli

    gc.disable()  # as the command imports the tap
    with cli.deferred(cli.DEFERRED):
        import tap_optico.tap as tap
    imported = time.process_time()
    spent: dict[str, float] = {}
    lock = threading.Lock()

    def timed(stage: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            before = time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                with lock:
                    spent[stage] = spent.get(stage, 0.0) + time.thread_time() - before

        return call

    for stage in STAGES:
        for where in stage.methods:
            module, _, qualified = where.partition(":")
            owner, _, method = qualified.partition(".")
            cls = getattr(importlib.import_module(module), owner)
            if method not in vars(cls):
                raise SystemExit(f"bench/stages.py: {where} is gone: update STAGES")
            setattr(cls, method, timed(stage.name, vars(cls)[method]))
    exit_now = tap._exit

    def exit_with_timings(code: int, *, flush_stdout: bool = True) -> Any:
        figures = {START_UP: imported - started, RUN: time.process_time() - imported, **spent}
        Path(timings).write_text(json.dumps(figures), encoding="utf-8")
        return exit_now(code, flush_stdout=flush_stdout)

    tap._exit = exit_with_timings
    sys.argv = ["tap-optico", "--config", config]
    cli.main()


def timed_run(url: str, scenario: Scenario, setup: Setup) -> tuple[int, dict[str, float]]:
    """The records the timed tap emitted (read through a pipe, as a target reads) and its timers."""
    argv = tap_argv(url, scenario.days_range, setup, max_concurrency=4)
    config = argv[argv.index("--config") + 1]
    log = setup.out / "stages.log"
    with tempfile.TemporaryDirectory() as work, log.open("wb") as errors:
        timings = Path(work) / "timings.json"
        command = [str(setup.bin / "python"), __file__, "--child", config, str(timings)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, env=contender_env())
        assert process.stdout is not None
        records = sum(map(is_compared_record, output_lines(process.stdout)))
        if process.wait():
            raise SystemExit(f"the tap exited with {process.returncode}; see {log}")
        return records, json.loads(timings.read_text(encoding="utf-8"))


def table(records: int, runs: list[dict[str, float]]) -> list[str]:
    """Each stage's CPU per record (the median over ``runs``), its inner stages' taken out."""

    def median(name: str) -> float:
        return statistics.median(run.get(name, 0.0) for run in runs)

    own = {stage.name: median(stage.name) - sum(map(median, stage.inner)) for stage in STAGES}
    run = median(RUN)
    rows = [(stage.name, stage.thread, own[stage.name]) for stage in STAGES]
    rows.append(("everything else", "all", run - sum(own.values())))
    lines = [f"{'stage':<34} {'thread':<8} {'µs/record':>9} {'share':>6}"]
    lines += [
        f"{name:<34} {thread:<8} {seconds / records * 1e6:>9.2f} {seconds / run:>6.0%}"
        for name, thread, seconds in rows
    ]
    lines.append(f"{RUN:<34} {'all':<8} {run / records * 1e6:>9.2f} {1:>6.0%}")
    lines.append(f"{START_UP:<34} {'main':<8} {median(START_UP):>8.2f}s")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--format", choices=FORMATS, default="compact", help="how the server writes JSON")
    parser.add_argument("--rounds", type=int, default=3, help="runs of the tap (the median is shown)")
    parser.add_argument("--quick", action="store_true", help="two days: to check that this works")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "TIMINGS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        timed_child(*args.child)
        return
    setup = Setup(bin=Path(sys.prefix) / "bin", out=BENCH / "out" / ("quick" if args.quick else "full"))
    setup.out.mkdir(parents=True, exist_ok=True)
    scenario = Scenario(days=2 if args.quick else 100)
    runs: list[dict[str, float]] = []
    with api_server(scenario, setup, args.format) as url:
        for _ in range(args.rounds):
            records, timings = timed_run(url, scenario, setup)
            if records != scenario.records:
                raise SystemExit(f"the tap emitted {records} records, expected {scenario.records}")
            runs.append(timings)
    print(
        f"Where the tap's CPU goes: {scenario.calls:,} calls from {FIRST_DAY} over {scenario.days} days "
        f"and their daily rows, {args.format} JSON, max_concurrency 4; median of {args.rounds} run(s)"
    )
    print("\n".join(table(scenario.records, runs)))


if __name__ == "__main__":
    main()
