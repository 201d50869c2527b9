"""`make bench`: tap-optico against the script it replaces, memory at scale, concurrency under latency.

Starts the API as its own process (its CPU is not counted): ``bench/api_server.py``, a server
that is not the sandbox, for the CPU and latency figures, the sandbox for the others. Then, in
one run, it measures each contender as a child process (CPU from ``wait4``'s rusage, peak RSS
from ``ru_maxrss``, wall from the clock), alternating them round by round so that a noisy
machine hits all alike, and gives each ratio with its spread over the rounds (min, median, max):

1. CPU and wall time, tap (both streams) vs ``bench/baseline.py`` block-buffered (as a user runs
   it into a pipe) and unbuffered, ~100,000 calls, page_size 5000, the same calls in each of the
   server's formats (compact; spaced, ASCII escapes, keys reversed; typed numbers and nulls);
2. the tap's peak memory at ~100,000 and ~1,000,000 calls, and at ~100,000 in windows of 50,000;
3. the tap's wall time with 200 ms of latency per request, max_concurrency 1 vs 4, at page_size
   1000 and 5000;
4. a daily run of many accounts (two days each, both streams, 200 ms latency): the tap's wall
   time at max_concurrency 1 and at its default, and its memory at a tenth of the accounts;
5. a daily run of 2,000 accounts (two days each, both streams, 100 calls a day, no latency): wall
   and CPU time, the bytes of its STATE messages against those of its records, peak memory, and
   the cost of redacting a log line with 1 key and with 2,000.

Writes ``RESULTS.md`` and ``results.png`` into ``bench/out/full/`` (into ``bench/`` with
``--update-results``); logs and raw figures go to ``bench/out/``. ``--quick`` runs tiny sizes
into ``bench/out/quick/``, to check that the benchmark works, not to quote. ``--only SCENARIO``
runs one scenario and prints its figures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from typing_extensions import override

from tap_optico.sandbox import SANDBOX_API_KEY, account_key

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_server import FORMATS  # the server's own list, next to this file

BENCH = Path(__file__).resolve().parent
FIRST_DAY = dt.date(2025, 1, 1)
CALLS_PER_DAY = 1000
PAGE_SIZE = 5000
LATENCY_SECONDS = 0.2
MAX_PEAK_MB = 150
MAX_GROWTH = 1.10
#: The tap's CPU against the script's: the whole process, and per record net of start-up.
MAX_CPU_RATIO = 0.8
MAX_NET_CPU_RATIO = 0.65
#: Packages singer-sdk imports on every start but uses only for BATCH messages (fsspec, through upath)
#: and in targets (joblib, which brings numpy when installed): the tap's command defers them.
LAZY_UPSTREAM = frozenset({"fsspec", "upath", "pathlib_abc", "joblib", "numpy"})
#: How the tap's command (``tap_optico/cli.py``) imports the tap.
IMPORT_AS_STARTED = "from tap_optico import cli\nwith cli.deferred(cli.DEFERRED):\n    import tap_optico.tap"
IMPORT_ROUNDS = 5
MAX_WALL_RATIO = 0.3
LATENCY_PAGE_SIZES = (1000, 5000)
#: The same calls in any format cost the tap within this of each other (slowest / fastest).
MAX_FORMAT_SPREAD = 1.10
ACCOUNTS = 200
ACCOUNT_CALLS_PER_DAY = 100
MAX_ACCOUNTS_WALL_SECONDS = 30.0
#: Days of a window in the memory run with wide windows (at CALLS_PER_DAY: 50,000 calls a window).
WIDE_WINDOW_DAYS = 50
MANY_ACCOUNTS = 2000
MAX_MANY_ACCOUNTS_CPU_SECONDS = 30.0
DEFAULT_CONCURRENCY = 4
RECORD_PREFIX = b'{"type":"RECORD","stream":"'
#: The tap's own evidence (one record per account-day, computed from what it read): not data the
#: script writes, so not counted in the records compared.
RECONCILIATION_PREFIX = RECORD_PREFIX + b'reconciliation"'
STATE_PREFIX = b'{"type":"STATE"'
UNSET_FOR_CONTENDERS = frozenset({"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"})
#: The script with block-buffered output (no PYTHONUNBUFFERED): a second baseline, for the record.
BUFFERED = "baseline, block-buffered"


@dataclass(frozen=True)
class Scenario:
    days: int
    latency: float = 0.0
    accounts: int = 1
    calls_per_day: int = CALLS_PER_DAY

    @property
    def last_day(self) -> dt.date:
        return FIRST_DAY + dt.timedelta(days=self.days - 1)

    @property
    def calls(self) -> int:
        return self.days * self.calls_per_day * self.accounts

    @property
    def records(self) -> int:
        """Calls and daily rows."""
        return self.calls + self.days * self.accounts

    @property
    def days_range(self) -> tuple[dt.date, dt.date]:
        return FIRST_DAY, self.last_day


@dataclass(frozen=True)
class Run:
    contender: str
    records: int
    cpu_seconds: float
    wall_seconds: float
    peak_rss_mb: float
    final_state: str | None
    state_bytes: int = 0
    record_bytes: int = 0

    @property
    def cpu_us_per_record(self) -> float:
        return self.cpu_seconds / self.records * 1e6

    @property
    def records_per_second(self) -> float:
        return self.records / self.wall_seconds


@dataclass(frozen=True)
class Setup:
    """Where the contenders run from and where their logs go."""

    bin: Path
    out: Path


@contextmanager
def serving(argv: Sequence[str], log: Path) -> Iterator[str]:
    """A server in a process of its own, which prints its URL first; yields the URL."""
    with log.open("wb") as errors:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors)
        try:
            assert process.stdout is not None
            match = re.search(r" at (http\S+)", process.stdout.readline().decode())
            if not match:
                msg = f"the server did not start (see {log})"
                raise RuntimeError(msg)
            yield match.group(1)
        finally:
            process.terminate()
            process.wait(timeout=30)


def sandbox(scenario: Scenario, setup: Setup, name: str) -> contextlib.AbstractContextManager[str]:
    """The sandbox in a process of its own; yields its URL."""
    argv = [
        str(setup.bin / "tap-optico-sandbox"),
        "--port=0",
        f"--calls-per-day={scenario.calls_per_day}",
        f"--first-day={FIRST_DAY}",
        f"--last-day={scenario.last_day}",
        f"--latency={scenario.latency}",
        f"--accounts={scenario.accounts}",
    ]
    return serving(argv, setup.out / f"sandbox-{name}.log")


def api_server(scenario: Scenario, setup: Setup, form: str) -> contextlib.AbstractContextManager[str]:
    """``bench/api_server.py`` serving the scenario's calls in ``form``; yields its URL."""
    argv = [
        str(setup.bin / "python"),
        str(BENCH / "api_server.py"),
        "--port=0",
        f"--calls-per-day={scenario.calls_per_day}",
        f"--first-day={FIRST_DAY}",
        f"--days={scenario.days}",
        f"--format={form}",
        f"--latency={scenario.latency}",
    ]
    return serving(argv, setup.out / f"api-{form}-{scenario.latency}.log")


def contender_env(*, unbuffered: bool = True) -> dict[str, str]:
    """The environment every contender runs in, whatever the machine's: Python writes bytecode
    (each run then finds its modules compiled, as an installed package's are), and output is
    unbuffered (PYTHONUNBUFFERED=1, as on this project's machines and in most Python container
    images) unless ``unbuffered`` is False. The tap writes 1 MiB blocks either way; the script's
    print() writes a line at a time when unbuffered."""
    env = {name: value for name, value in os.environ.items() if name not in UNSET_FOR_CONTENDERS}
    return env | {"PYTHONUNBUFFERED": "1"} if unbuffered else env


def output_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The lines a contender writes, read from its pipe a MiB at a time, as a target reads them."""
    tail = b""
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        yield from lines


def is_compared_record(line: bytes) -> bool:
    """A RECORD of the data the script writes too (not the tap's reconciliation)."""
    return line.startswith(RECORD_PREFIX) and not line.startswith(RECONCILIATION_PREFIX)


def measure(contender: str, argv: Sequence[str], log: Path, *, unbuffered: bool = True) -> Run:
    """Run one contender, reading its output as a target would, and take its rusage."""
    started = time.perf_counter()
    records = state_bytes = record_bytes = 0
    final_state = None
    with log.open("wb") as errors:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=errors, env=contender_env(unbuffered=unbuffered)
        )
        assert process.stdout is not None
        for line in output_lines(process.stdout):
            if line.startswith(STATE_PREFIX):
                final_state = line.decode()
                state_bytes += len(line) + 1
            elif contender.startswith("baseline") or is_compared_record(line):
                records += 1
                record_bytes += len(line) + 1
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode:
        msg = f"{contender} exited with {process.returncode}; see {log}"
        raise RuntimeError(msg)
    return Run(
        contender=contender,
        records=records,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        wall_seconds=wall,
        peak_rss_mb=usage.ru_maxrss / 1024,
        final_state=final_state,
        state_bytes=state_bytes,
        record_bytes=record_bytes,
    )


def tap_argv(
    url: str,
    days: tuple[dt.date, dt.date],
    setup: Setup,
    max_concurrency: int,
    accounts: int = 1,
    window_days: int | None = None,
    page_size: int = PAGE_SIZE,
) -> list[str]:
    start, end = days
    config = (
        setup.out / f"config-{start}-{end}-c{max_concurrency}-a{accounts}-w{window_days}-p{page_size}.json"
    )
    window = {} if window_days is None else {"window_days": window_days}
    keys = (
        {"accounts": [{"name": f"client-{n}", "api_key": account_key(n)} for n in range(1, accounts + 1)]}
        if accounts > 1
        else {"api_key": SANDBOX_API_KEY}
    )
    config.write_text(
        json.dumps(
            {
                **keys,
                "api_url": url,
                "start_date": start.isoformat(),
                "end_date": end.isoformat(),
                "page_size": page_size,
                "max_concurrency": max_concurrency,
                **window,
            }
        )
    )
    return [str(setup.bin / "tap-optico"), "--config", str(config)]


def baseline_argv(url: str, days: tuple[dt.date, dt.date], setup: Setup) -> list[str]:
    start, end = days
    baseline = str(BENCH / "baseline.py")
    return [str(setup.bin / "python"), baseline, url, SANDBOX_API_KEY, start.isoformat(), end.isoformat()]


def check(run: Run, expected: int) -> Run:
    """A figure only counts if the run emitted every call and every day."""
    if run.records != expected:
        msg = f"{run.contender} emitted {run.records} records, expected {expected}"
        raise RuntimeError(msg)
    print(
        f"  {run.contender:<36} {run.records:>9} records  cpu {run.cpu_seconds:7.2f} s  "
        f"wall {run.wall_seconds:7.2f} s  peak {run.peak_rss_mb:6.1f} MB",
        flush=True,
    )
    return run


def cpu_rounds(scenario: Scenario, rounds: int, setup: Setup) -> list[Run]:
    """Each round: in each format, the script unbuffered and block-buffered and the tap, over the
    same calls; then both over a day without data (their start-up). Contenders are named
    ``NAME, FORMAT``."""
    print(
        f"CPU: baseline vs tap, {scenario.calls:,} calls, {len(FORMATS)} formats, {rounds} rounds", flush=True
    )
    expected = scenario.records
    no_data = (FIRST_DAY - dt.timedelta(days=1),) * 2
    runs = []
    with contextlib.ExitStack() as servers:
        urls = {form: servers.enter_context(api_server(scenario, setup, form)) for form in FORMATS}
        for number in range(rounds):
            for form, url in urls.items():
                baseline = baseline_argv(url, scenario.days_range, setup)
                log = setup.out / "baseline.log"
                runs.append(check(measure(f"baseline, {form}", baseline, log), expected))
                runs.append(check(measure(f"{BUFFERED}, {form}", baseline, log, unbuffered=False), expected))
                tap = tap_argv(url, scenario.days_range, setup, max_concurrency=4)
                runs.append(
                    check(measure(f"tap, {form}", tap, setup.out / f"tap-cpu-{form}-{number}.log"), expected)
                )
            url = urls["compact"]
            baseline = baseline_argv(url, no_data, setup)
            runs.append(check(measure("baseline start-up", baseline, setup.out / "baseline.log"), 0))
            tap = tap_argv(url, no_data, setup, max_concurrency=4)
            runs.append(check(measure("tap start-up", tap, setup.out / "tap-start-up.log"), 0))
    return runs


def memory_run(scenario: Scenario, setup: Setup, window_days: int | None = None) -> Run:
    wide = "" if window_days is None else f", windows of {window_days * scenario.calls_per_day:,} calls"
    print(f"Memory: tap, {scenario.calls:,} calls{wide}", flush=True)
    with sandbox(scenario, setup, f"{scenario.days}d") as url:
        tap = tap_argv(url, scenario.days_range, setup, max_concurrency=4, window_days=window_days)
        log = setup.out / f"tap-{scenario.days}d-w{window_days}.log"
        return check(measure("tap", tap, log), scenario.records)


def latency_rounds(scenario: Scenario, rounds: int, setup: Setup) -> list[Run]:
    """Each round, at each page size: max_concurrency 1 then 4. Contenders are named
    ``page_size N, concurrency C``."""
    sizes = " and ".join(map(str, LATENCY_PAGE_SIZES))
    print(
        f"Latency {scenario.latency * 1000:.0f} ms: max_concurrency 1 vs 4, page_size {sizes}, "
        f"{rounds} rounds",
        flush=True,
    )
    runs = []
    with api_server(scenario, setup, "compact") as url:
        for number in range(rounds):
            for size in LATENCY_PAGE_SIZES:
                for concurrency in (1, 4):
                    tap = tap_argv(
                        url, scenario.days_range, setup, max_concurrency=concurrency, page_size=size
                    )
                    log = setup.out / f"tap-latency-p{size}-c{concurrency}-{number}.log"
                    run = measure(f"page_size {size}, concurrency {concurrency}", tap, log)
                    runs.append(check(run, scenario.records))
    return runs


def accounts_runs(scenario: Scenario, few: Scenario, setup: Setup) -> list[Run]:
    """A daily run of every account at max_concurrency 1 and at the default; memory at fewer accounts."""
    print(f"Accounts: {scenario.accounts} accounts, {scenario.days} days each, both streams", flush=True)
    runs = []
    for current in (scenario, few):
        with sandbox(current, setup, f"accounts-{current.accounts}") as url:
            for concurrency in (1, DEFAULT_CONCURRENCY) if current is scenario else (DEFAULT_CONCURRENCY,):
                tap = tap_argv(url, current.days_range, setup, concurrency, current.accounts)
                log = setup.out / f"tap-accounts-{current.accounts}-c{concurrency}.log"
                run = measure(f"{current.accounts} accounts, concurrency {concurrency}", tap, log)
                runs.append(check(run, current.records))
    return runs


def many_accounts_run(scenario: Scenario, setup: Setup) -> Run:
    """A daily run of every account, both streams, at the default max_concurrency."""
    print(
        f"Many accounts: {scenario.accounts:,} accounts, {scenario.days} days each, both streams", flush=True
    )
    with sandbox(scenario, setup, f"accounts-{scenario.accounts}") as url:
        tap = tap_argv(url, scenario.days_range, setup, DEFAULT_CONCURRENCY, scenario.accounts)
        log = setup.out / f"tap-accounts-{scenario.accounts}.log"
        run = check(measure(f"{scenario.accounts} accounts", tap, log), scenario.records)
    print(
        f"  STATE {run.state_bytes / 1e6:.2f} MB for {run.record_bytes / 1e6:.1f} MB of records "
        f"({run.state_bytes / run.record_bytes:.1%})",
        flush=True,
    )
    return run


def redaction_microseconds(keys: int) -> float:
    """CPU per log line for redaction with ``keys`` API keys registered (in a child process)."""
    code = (
        "import time;from tap_optico import secrets;from tap_optico.sandbox import account_key\n"
        f"for n in range(1, {keys} + 1): secrets.register(account_key(n))\n"
        "line = 'calls (account client-7): request failed (try 1 of 6): HTTP 503 for ' + 'x' * 120\n"
        "t = time.process_time()\nfor _ in range(20000): secrets.redact(line)\n"
        "print((time.process_time() - t) / 20000 * 1e6)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout)


def import_milliseconds(setup: Setup) -> tuple[float, float]:
    """Milliseconds to import the tap as its command does, and those of that spent on
    :data:`LAZY_UPSTREAM` (``python -X importtime``, the median of a few runs)."""
    totals, lazy = [], []
    for _ in range(IMPORT_ROUNDS):
        done = subprocess.run(
            [str(setup.bin / "python"), "-X", "importtime", "-c", IMPORT_AS_STARTED],
            env=contender_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        # Lines come children first: read backwards, a module's parents come before it.
        entries = re.findall(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", done.stderr)
        parents: list[tuple[int, bool]] = []  # (indent, within a lazy package)
        spent = 0
        for cumulative, indent, name in reversed(entries):
            while parents and parents[-1][0] >= len(indent):
                parents.pop()
            within = bool(parents) and parents[-1][1]
            is_lazy = name.split(".")[0] in LAZY_UPSTREAM
            if is_lazy and not within:
                spent += int(cumulative)
            parents.append((len(indent), within or is_lazy))
        totals.append(int(entries[-1][0]) / 1000)
        lazy.append(spent / 1000)
    return statistics.median(totals), statistics.median(lazy)


def median(runs: list[Run], contender: str, figure: str) -> float:
    return statistics.median(float(getattr(run, figure)) for run in runs if run.contender == contender)


@dataclass(frozen=True)
class Spread:
    """A ratio over the rounds: each round's ``a / b``, the runs of one round paired."""

    low: float
    middle: float
    high: float

    @classmethod
    def of(cls, runs: list[Run], a: str, b: str, figure: str = "cpu_seconds") -> Spread:
        pairs = zip(
            (getattr(run, figure) for run in runs if run.contender == a),
            (getattr(run, figure) for run in runs if run.contender == b),
            strict=True,
        )
        ratios = sorted(x / y for x, y in pairs)
        return cls(ratios[0], statistics.median(ratios), ratios[-1])

    @override
    def __str__(self) -> str:
        return f"{self.middle:.2f}× ({self.low:.2f}–{self.high:.2f})"

    def verdict(self, limit: float) -> str:
        """Met or missed on the median; "only just" when a round fell on the other side."""
        met = verdict(self.middle, limit, "×").split(" (")[0]
        close = " only just: some rounds missed" if met == "met" and self.high > limit else ""
        close = " (some rounds met)" if met != "met" and self.low <= limit else close
        return f"{met}{close}: {self}"


def verdict(value: float, limit: float, unit: str = "") -> str:
    if value <= limit:
        return f"met ({value:.2f}{unit} ≤ {limit:g}{unit})"
    return f"**missed** by {value / limit - 1:.0%} ({value:.2f}{unit} > {limit:g}{unit})"


def format_spreads(cpu: list[Run]) -> tuple[dict[str, Spread], dict[str, Spread], tuple[str, Spread]]:
    """Per format, the tap's CPU against the script block-buffered and unbuffered; and the tap's CPU
    in its slowest format against its fastest: of every two formats, the ratio of their paired runs
    with the highest median. (The highest of three runs over the lowest, round by round, would
    measure the machine's noise as much as the formats: it is above 1 for three runs of one format.)"""
    buffered = {form: Spread.of(cpu, f"tap, {form}", f"{BUFFERED}, {form}") for form in FORMATS}
    unbuffered = {form: Spread.of(cpu, f"tap, {form}", f"baseline, {form}") for form in FORMATS}
    pairs = (
        (f"{a} / {b}", Spread.of(cpu, f"tap, {a}", f"tap, {b}")) for a in FORMATS for b in FORMATS if a != b
    )
    return buffered, unbuffered, max(pairs, key=lambda pair: pair[1].middle)


def latency_spreads(latency: list[Run]) -> dict[int, Spread]:
    """Per page size, the wall time at max_concurrency 4 against 1, round by round."""
    return {
        size: Spread.of(
            latency, f"page_size {size}, concurrency 4", f"page_size {size}, concurrency 1", "wall_seconds"
        )
        for size in LATENCY_PAGE_SIZES
    }


def report(
    cpu: list[Run],
    small: Run,
    large: Run,
    wide: Run,
    latency: list[Run],
    accounts: list[Run],
    many_run: Run,
    redaction: tuple[float, float],
    imports: tuple[float, float],
    scenarios: dict[str, Scenario],
    results: Path,
) -> str:
    buffered, unbuffered, (slowest, formats) = format_spreads(cpu)
    walls = latency_spreads(latency)
    startup = {name: median(cpu, f"{name} start-up", "cpu_seconds") for name in ("baseline", "tap")}
    records = scenarios["cpu"].records

    def net(contender: str, form: str) -> float:
        """µs of CPU per record, net of start-up."""
        name = "tap" if contender == "tap" else "baseline"
        return (median(cpu, f"{contender}, {form}", "cpu_seconds") - startup[name]) / records * 1e6

    net_ratio = net("tap", "compact") / net(BUFFERED, "compact")
    growth = large.peak_rss_mb / small.peak_rss_mb
    peak = max(small.peak_rss_mb, large.peak_rss_mb, wide.peak_rss_mb)
    cpu_calls, cpu_days = scenarios["cpu"].calls, scenarios["cpu"].days
    same_output = {(run.records, run.final_state) for run in latency}
    many, few = scenarios["accounts"], scenarios["few accounts"]
    many_one, many_default, few_default = accounts
    most = scenarios["many accounts"].accounts
    account_growth = many_default.peak_rss_mb / few_default.peak_rss_mb
    rounds = len([run for run in cpu if run.contender == "tap start-up"])
    latency_rounds = len(latency) // (2 * len(LATENCY_PAGE_SIZES))
    lines = [
        "# tap-optico benchmark",
        "",
        f"Measured {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}. "
        "Reproduce with `make bench` (about ten minutes). Each contender runs as a child process "
        "against an API in a process of its own (not counted), its output read through a pipe "
        "as a target would; CPU is user + system time, memory the peak resident set. The CPU and "
        "latency figures are taken against `bench/api_server.py`, a server that is not the sandbox: "
        "it encodes every answer when asked, with Python's `json`, in a process per connection; "
        "the others against the sandbox. Rounds alternate the contenders; a ratio is the median of "
        "the rounds' ratios, with the lowest and highest in brackets.",
        "",
        "![benchmark](results.png)",
        "",
        "## Targets",
        "",
        "| target | result |",
        "|---|---|",
    ]
    lines += [
        f"| tap CPU, whole process, ≤ {MAX_CPU_RATIO:g}× the script block-buffered, {form} JSON "
        f"| {buffered[form].verdict(MAX_CPU_RATIO)} |"
        for form in FORMATS
    ]
    lines += [
        f"| tap CPU, slowest format ≤ {MAX_FORMAT_SPREAD:g}× fastest ({slowest}) "
        f"| {formats.verdict(MAX_FORMAT_SPREAD)} |",
        f"| tap CPU per record, net of start-up, ≤ {MAX_NET_CPU_RATIO:g}× the script block-buffered "
        f"(compact) | {verdict(net_ratio, MAX_NET_CPU_RATIO, '×')} |",
        f"| peak memory < {MAX_PEAK_MB} MB | {verdict(peak, MAX_PEAK_MB, ' MB')} |",
        f"| memory at {large.records - scenarios['large'].days:,} calls ≤ {MAX_GROWTH:g}× at "
        f"{small.records - scenarios['small'].days:,} | {verdict(growth, MAX_GROWTH, '×')} |",
    ]
    lines += [
        f"| wall at max_concurrency 4 ≤ {MAX_WALL_RATIO:g}× max_concurrency 1 ({LATENCY_SECONDS * 1000:.0f} "
        f"ms latency, page_size {size}) | {walls[size].verdict(MAX_WALL_RATIO)} |"
        for size in LATENCY_PAGE_SIZES
    ]
    lines += [
        f"| same records and final state at 1 and 4 | {'met' if len(same_output) == 1 else '**missed**'} |",
        f"| {many.accounts} accounts' daily run at max_concurrency {DEFAULT_CONCURRENCY} < "
        f"{MAX_ACCOUNTS_WALL_SECONDS:g} s ({many.latency * 1000:.0f} ms latency) "
        f"| {verdict(many_default.wall_seconds, MAX_ACCOUNTS_WALL_SECONDS, ' s')} |",
        f"| memory at {many.accounts} accounts ≤ {MAX_GROWTH:g}× at {few.accounts} "
        f"| {verdict(account_growth, MAX_GROWTH, '×')} |",
        f"| {most:,} accounts' daily run < {MAX_MANY_ACCOUNTS_CPU_SECONDS:g} s of CPU "
        f"| {verdict(many_run.cpu_seconds, MAX_MANY_ACCOUNTS_CPU_SECONDS, ' s')} |",
        f"| STATE smaller than the records at {most:,} accounts "
        f"| {verdict(many_run.state_bytes / many_run.record_bytes, 1.0, '×')} |",
        "",
        f"## CPU: {cpu_calls:,} calls + {cpu_days} daily rows, page_size {PAGE_SIZE}, {rounds} rounds",
        "",
        'The same calls, written by the server in three formats: **compact** (`{"a":"b"}`, raw UTF-8, '
        "numbers and flags as text, empty strings), **spaced** (Python's `json.dumps` defaults: a space "
        "after `:` and `,`, `\\uXXXX` escapes; keys in reverse order; as text, empty strings), **typed** "
        "(spaced, raw UTF-8, keys reversed, JSON numbers and booleans, nulls).",
        "",
        "| format | contender | CPU s | µs CPU / record, net of start-up | wall s | peak MB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for form in FORMATS:
        for contender in (BUFFERED, "baseline", "tap"):
            name = f"{contender}, {form}"
            lines.append(
                f"| {form} | {contender} | {median(cpu, name, 'cpu_seconds'):.2f} "
                f"| {net(contender, form):.1f} "
                f"| {median(cpu, name, 'wall_seconds'):.2f} | {median(cpu, name, 'peak_rss_mb'):.0f} |"
            )
    lines += [
        f"| | baseline, a day without data (start-up) | {startup['baseline']:.2f} | | | |",
        f"| | tap, a day without data (start-up) | {startup['tap']:.2f} | | | |",
        "",
        "| format | tap / script block-buffered | tap / script unbuffered |",
        "|---|---:|---:|",
        *(f"| {form} | {buffered[form]} | {unbuffered[form]} |" for form in FORMATS),
        "",
        f"The tap's CPU in its slowest format against its fastest ({slowest}, paired round by round): "
        f"{formats}. A script's `print` into "
        "a pipe is block-buffered unless PYTHONUNBUFFERED is set (as on this project's machines and in "
        "many Python container images): unbuffered, it writes each line with a system call of its own, "
        "while the tap writes 1 MiB blocks either way.",
        "",
        "Per record the tap does what the script does not: it types every field, hashes the "
        "call_id, writes the time in UTC and as local wall time, drops duplicates, tracks the "
        "bookmark. It does it on a fast path (docs, Performance): msgspec types each plain result "
        "in C, whatever the JSON's spacing, key order or escapes, numbers as numbers or as text, "
        "straight into a record (a struct, no dict in between); only a result with a value in "
        "another form (a decimal comma, a `HH:MM:SS` duration, an unlisted field) goes through the "
        "converters. A window's records skip singer-sdk's per-record loop and are encoded a thousand "
        "at a time, and an answer's body is read in 1 MiB pieces.",
        "",
        "### Start-up",
        "",
        f"Importing the tap as its command does takes {imports[0]:.0f} ms, {imports[1]:.0f} ms of it "
        "in packages singer-sdk imports on every start but uses only for BATCH messages (fsspec, "
        "through universal_pathlib) and in targets (joblib, and numpy when it is installed): the "
        "names it takes from them are stand-ins that import them when first called "
        "(`tap_optico/cli.py`), so a run does not import them. The tap's start-up CPU is "
        f"{startup['tap']:.2f} s, against the script's {startup['baseline']:.2f} s.",
        "",
        "## Memory (tap, max_concurrency 4, the sandbox; at 100,000 calls the highest peak of its runs)",
        "",
        "| calls | peak MB | CPU s | wall s |",
        "|---:|---:|---:|---:|",
    ]
    for run, key in ((small, "small"), (large, "large")):
        calls = scenarios[key].calls
        lines.append(
            f"| {calls:,} | {run.peak_rss_mb:.0f} | {run.cpu_seconds:.1f} | {run.wall_seconds:.1f} |"
        )
    lines.append(
        f"| {scenarios['small'].calls:,}, windows of {WIDE_WINDOW_DAYS * CALLS_PER_DAY:,} calls "
        f"| {wide.peak_rss_mb:.0f} | {wide.cpu_seconds:.1f} | {wide.wall_seconds:.1f} |"
    )
    lines += [
        "",
        f"{large.peak_rss_mb / small.peak_rss_mb:.2f}× the memory for "
        f"{scenarios['large'].calls / scenarios['small'].calls:.0f}× the calls.",
        "",
        f"## Latency: {LATENCY_SECONDS * 1000:.0f} ms per request, {scenarios['latency'].calls:,} calls, "
        f"{latency_rounds} rounds",
        "",
        "| page_size | max_concurrency | wall s | CPU s | records | final state |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for size in LATENCY_PAGE_SIZES:
        for concurrency in (1, 4):
            contender = f"page_size {size}, concurrency {concurrency}"
            last = [run for run in latency if run.contender == contender][-1]
            state = "same" if len(same_output) == 1 else (last.final_state or "none")[:60]
            lines.append(
                f"| {size} | {concurrency} | {median(latency, contender, 'wall_seconds'):.2f} "
                f"| {median(latency, contender, 'cpu_seconds'):.2f} | {last.records:,} | {state} |"
            )
    lines += [
        "",
        "max_concurrency 4 / 1, wall time: "
        + ", ".join(f"{walls[size]} at page_size {size}" for size in LATENCY_PAGE_SIZES)
        + ". Both include the start-up (about half a second of each run). Requests go on while "
        "the consumer takes the rows; singer-sdk reads the streams one after the other, and the "
        "slots the calls leave idle at their end ask for the daily totals' first pages.",
        "",
        f"## Many accounts: a daily run of {many.accounts} accounts, "
        f"{many.latency * 1000:.0f} ms per request",
        "",
        f"Each account has {many.calls_per_day} calls a day; the run reads {many.days} days of each, "
        "both streams (one request per account and stream).",
        "",
        "| accounts | max_concurrency | wall s | CPU s | records | peak MB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for run, scenario, concurrency in (
        (many_one, many, 1),
        (many_default, many, DEFAULT_CONCURRENCY),
        (few_default, few, DEFAULT_CONCURRENCY),
    ):
        lines.append(
            f"| {scenario.accounts} | {concurrency} | {run.wall_seconds:.1f} | {run.cpu_seconds:.1f} "
            f"| {run.records:,} | {run.peak_rss_mb:.0f} |"
        )
    lines += [
        "",
        f"max_concurrency {DEFAULT_CONCURRENCY} / 1: "
        f"{many_default.wall_seconds / many_one.wall_seconds:.2f}× the wall time; "
        f"{account_growth:.2f}× the memory for {many.accounts / few.accounts:.0f}× the accounts.",
        "",
    ]
    lines += many_accounts_lines(many_run, scenarios["many accounts"], redaction)
    plot(cpu, small, large, latency, results / "results.png")
    text = "\n".join(lines)
    (results / "RESULTS.md").write_text(text, encoding="utf-8")
    return text


def many_accounts_lines(run: Run, scenario: Scenario, redaction: tuple[float, float]) -> list[str]:
    one, many = redaction
    return [
        f"## {scenario.accounts:,} accounts: a daily run, no latency",
        "",
        f"Each account has {scenario.calls_per_day} calls a day; the run reads {scenario.days} days of "
        f"each, both streams, at max_concurrency {DEFAULT_CONCURRENCY}.",
        "",
        "| wall s | CPU s | records | record MB | STATE MB | STATE / records | peak MB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {run.wall_seconds:.1f} | {run.cpu_seconds:.1f} | {run.records:,} | {run.record_bytes / 1e6:.1f} "
        f"| {run.state_bytes / 1e6:.2f} | {run.state_bytes / run.record_bytes:.1%} | {run.peak_rss_mb:.0f} |",
        "",
        f"Redacting a log line: {one:.1f} µs with 1 key registered, {many:.1f} µs with "
        f"{scenario.accounts:,} ({many / one:.2f}×).",
        "",
    ]


def plot(cpu: list[Run], small: Run, large: Run, latency: list[Run], path: Path) -> None:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(13, 3.8))
    for offset, (contender, color) in enumerate(((BUFFERED, "#999999"), ("tap", "#1f77b4"))):
        bars = [median(cpu, f"{contender}, {form}", "cpu_us_per_record") for form in FORMATS]
        label = "script, block-buffered" if contender == BUFFERED else "tap-optico"
        left.bar([n + offset * 0.4 for n in range(len(FORMATS))], bars, 0.4, color=color, label=label)
    left.set_xticks([n + 0.2 for n in range(len(FORMATS))], list(FORMATS))
    left.set_title("CPU per record (µs), by JSON format")
    left.legend(loc="lower right")
    middle.bar(
        [f"{small.records // 1000:,}k", f"{large.records // 1000:,}k"],
        [small.peak_rss_mb, large.peak_rss_mb],
        color="#1f77b4",
    )
    middle.axhline(MAX_PEAK_MB, color="#d62728", linestyle="--", label=f"{MAX_PEAK_MB} MB target")
    middle.set_title("tap peak memory (MB) by records")
    middle.legend(loc="lower right")
    for offset, (concurrency, color) in enumerate(((1, "#999999"), (4, "#1f77b4"))):
        walls = [
            median(latency, f"page_size {size}, concurrency {concurrency}", "wall_seconds")
            for size in LATENCY_PAGE_SIZES
        ]
        where = [n + offset * 0.4 for n in range(len(LATENCY_PAGE_SIZES))]
        right.bar(where, walls, 0.4, color=color, label=f"max_concurrency {concurrency}")
    right.set_xticks(
        [n + 0.2 for n in range(len(LATENCY_PAGE_SIZES))], [f"page_size {n}" for n in LATENCY_PAGE_SIZES]
    )
    right.set_title(f"wall time (s), {LATENCY_SECONDS * 1000:.0f} ms latency")
    right.legend(loc="upper right")
    for axes in (left, middle, right):
        for container in axes.containers:
            axes.bar_label(container, fmt="%.1f")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, results in bench/out/quick")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the CPU comparison")
    parser.add_argument(
        "--venv",
        type=Path,
        default=Path(sys.prefix),
        help="environment the tap and the baseline run from (make bench: one without the dev tools)",
    )
    parser.add_argument("--latency-rounds", type=int, default=3, help="rounds of the latency comparison")
    parser.add_argument(
        "--only",
        choices=("cpu", "latency", "many-accounts"),
        help="run one scenario and print its figures (no RESULTS.md)",
    )
    parser.add_argument(
        "--update-results",
        action="store_true",
        help="write RESULTS.md and results.png into bench/ (without it: into bench/out/full/)",
    )
    args = parser.parse_args(argv)
    if args.update_results and (args.quick or args.only):
        parser.error("--update-results takes a full run: not with --quick or --only")
    scale = 0.02 if args.quick else 1.0
    setup = Setup(bin=args.venv.resolve() / "bin", out=BENCH / "out" / ("quick" if args.quick else "full"))
    results = BENCH if args.update_results else setup.out
    setup.out.mkdir(parents=True, exist_ok=True)
    hundred_days = Scenario(days=max(2, round(100 * scale)))
    scenarios = {
        "cpu": hundred_days,
        "small": hundred_days,
        "large": Scenario(days=max(20, round(1000 * scale))),
        "latency": Scenario(days=max(2, round(100 * scale)), latency=LATENCY_SECONDS),
        "accounts": Scenario(
            days=2,
            latency=LATENCY_SECONDS * scale,
            accounts=max(5, round(ACCOUNTS * scale)),
            calls_per_day=ACCOUNT_CALLS_PER_DAY,
        ),
        "many accounts": Scenario(
            days=2, accounts=max(10, round(MANY_ACCOUNTS * scale)), calls_per_day=ACCOUNT_CALLS_PER_DAY
        ),
        "few accounts": Scenario(
            days=2,
            latency=LATENCY_SECONDS * scale,
            accounts=max(2, round(ACCOUNTS * scale / 10)),
            calls_per_day=ACCOUNT_CALLS_PER_DAY,
        ),
    }
    latency_rounds_count = 1 if args.quick else args.latency_rounds
    if args.only == "cpu":
        runs = cpu_rounds(scenarios["cpu"], 1 if args.quick else args.rounds, setup)
        buffered, unbuffered, (slowest, formats) = format_spreads(runs)
        for form in FORMATS:
            print(f"tap / script, {form}: {buffered[form]} block-buffered, {unbuffered[form]} unbuffered")
        print(f"tap, slowest format / fastest ({slowest}): {formats}")
        total, lazy = import_milliseconds(setup)
        print(
            f"Importing the tap: {total:.0f} ms, {lazy:.0f} ms of it for {', '.join(sorted(LAZY_UPSTREAM))}"
        )
        return
    if args.only == "latency":
        runs = latency_rounds(scenarios["latency"], latency_rounds_count, setup)
        for size, spread in latency_spreads(runs).items():
            print(f"max_concurrency 4 / 1, page_size {size}: {spread} the wall time")
        return
    if args.only == "many-accounts":
        many_accounts_run(scenarios["many accounts"], setup)
        print(
            f"Redacting a log line: {redaction_microseconds(1):.1f} µs with 1 key, "
            f"{redaction_microseconds(scenarios['many accounts'].accounts):.1f} µs with "
            f"{scenarios['many accounts'].accounts:,}"
        )
        return
    cpu = cpu_rounds(scenarios["cpu"], 1 if args.quick else args.rounds, setup)
    # Peak RSS moves by several MB with the timing of the workers: the 100,000-call figure is the
    # highest of all the tap's runs at that size (each CPU round and one more), not a lucky low.
    same_size = [run for run in cpu if run.contender.startswith("tap, ")]
    small = max([memory_run(scenarios["small"], setup), *same_size], key=lambda run: run.peak_rss_mb)
    large = memory_run(scenarios["large"], setup)
    wide = memory_run(scenarios["small"], setup, window_days=WIDE_WINDOW_DAYS)
    latency = latency_rounds(scenarios["latency"], latency_rounds_count, setup)
    accounts = accounts_runs(scenarios["accounts"], scenarios["few accounts"], setup)
    many = many_accounts_run(scenarios["many accounts"], setup)
    redaction = (redaction_microseconds(1), redaction_microseconds(scenarios["many accounts"].accounts))
    raw = [asdict(run) for run in (*cpu, small, large, wide, *latency, *accounts, many)]
    (setup.out / "runs.json").write_text(json.dumps(raw, indent=1), encoding="utf-8")
    print()
    imports = import_milliseconds(setup)
    print(report(cpu, small, large, wide, latency, accounts, many, redaction, imports, scenarios, results))


if __name__ == "__main__":
    main()
