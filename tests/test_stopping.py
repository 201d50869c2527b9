"""Stopping: SIGTERM and SIGINT end the run within seconds, with whole lines and a resumable state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tap_optico.sandbox import Faults
from tests.helpers import TAP, SandboxFactory, TapRun, run_tap, sandbox_call_ids, tap_config

STOP_WITHIN_SECONDS = 5


def start_tap(config: dict[str, Any], tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    config_file = tmp_path / "stop-config.json"
    config_file.write_text(json.dumps(config))
    return subprocess.Popen(
        [TAP, "--config", str(config_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
    )


def whole_lines(output: bytes) -> TapRun:
    """The run's output, every line of it a complete JSON message."""
    assert output.endswith(b"\n") or output == b"", "the output ends in the middle of a line"
    for line in output.splitlines():
        json.loads(line)
    return TapRun(0, output.decode(), "")


def assert_resumable(killed: TapRun, config: dict[str, Any], tmp_path: Path, every_call: set[str]) -> None:
    """Records up to the last STATE, plus a run resumed from it, hold every call, each emitted once."""
    ids = [record["call_id"] for record in killed.records("calls")]
    assert len(ids) == len(set(ids)), "a record was written twice"
    resumed = run_tap(config, tmp_path, state=killed.states[-1] if killed.states else None)
    assert resumed.returncode == 0, resumed.stderr
    assert set(ids) | {r["call_id"] for r in resumed.records("calls")} == every_call


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_while_a_request_hangs_ends_the_run_promptly(
    make_sandbox: SandboxFactory, tmp_path: Path, signum: int
) -> None:
    server = make_sandbox(faults=Faults(every=1, kinds=["timeout"], start_after=4, stall_seconds=60))
    config = tap_config(server, window_days=2, max_concurrency=2, request_timeout=120)
    process = start_tap(config, tmp_path, {})
    output = ThreadPoolExecutor(1).submit(process.communicate, timeout=120)  # a target that keeps up
    deadline = time.monotonic() + 60
    while not any(request.fault for request in server.requests):
        assert time.monotonic() < deadline, "the sandbox never stalled a request"
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signum)
    stopped_at = time.monotonic()
    stdout, stderr = output.result()
    assert time.monotonic() - stopped_at < STOP_WITHIN_SECONDS
    assert process.returncode == 128 + signum, stderr.decode()[-2000:]
    assert f"stopped by {signal.Signals(signum).name}" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    server.faults = Faults()
    assert_resumable(whole_lines(stdout), config, tmp_path, sandbox_call_ids(server))


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "PYTHONUNBUFFERED"])
def test_a_stop_while_the_target_reads_slowly_leaves_whole_lines_written_once(
    make_sandbox: SandboxFactory, tmp_path: Path, unbuffered: bool
) -> None:
    server = make_sandbox(calls_per_day=400)
    config = tap_config(server, window_days=3, page_size=500)
    # An empty PYTHONUNBUFFERED counts as unset.
    output = bytearray()
    signalled_at = None
    with start_tap(config, tmp_path, {"PYTHONUNBUFFERED": "1" if unbuffered else ""}) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        # A target that takes 4 KiB every 50 ms: the tap spends its time blocked on the pipe.
        while chunk := os.read(process.stdout.fileno(), 4096):
            output += chunk
            time.sleep(0.05)
            if signalled_at is None and len(output) > 300_000:
                process.send_signal(signal.SIGTERM)
                signalled_at = time.monotonic()
        process.wait(timeout=60)
        stderr = process.stderr.read().decode()
    assert signalled_at is not None, "the run ended before the stop"
    assert time.monotonic() - signalled_at < STOP_WITHIN_SECONDS
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "Traceback" not in stderr
    assert_resumable(whole_lines(bytes(output)), config, tmp_path, sandbox_call_ids(server))


def test_a_reader_that_goes_away_ends_the_run_quietly(make_sandbox: SandboxFactory, tmp_path: Path) -> None:
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(tap_config(make_sandbox(calls_per_day=200))))
    # `tap-optico --config config.json | head -n 3`
    with subprocess.Popen(
        [TAP, "--config", str(config_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as tap:
        assert tap.stdout is not None
        assert tap.stderr is not None
        head = subprocess.run(
            ["head", "-n", "3"], stdin=tap.stdout, capture_output=True, check=True, timeout=120
        )
        tap.stdout.close()
        stderr = tap.stderr.read().decode()
        tap.wait(timeout=120)
    assert len(head.stdout.splitlines()) == 3
    assert tap.returncode != 0
    for noise in ("BrokenPipe", "Traceback", "Exception ignored"):
        assert noise not in stderr


@pytest.mark.parametrize("after_seconds", [0.05, 0.3])
def test_a_stop_while_the_tap_starts_is_one_line_and_exit_130(
    make_sandbox: SandboxFactory, tmp_path: Path, after_seconds: float
) -> None:
    """Ctrl-C during start-up, before the tap's own handler is in place (its imports take a few
    tenths of a second): no traceback either."""
    tap = start_tap(tap_config(make_sandbox()), tmp_path, {})
    time.sleep(after_seconds)
    tap.send_signal(signal.SIGINT)
    _, stderr = tap.communicate(timeout=60)
    assert tap.returncode == 128 + signal.SIGINT
    assert "Traceback" not in stderr.decode()
    assert "stopped by SIGINT" in stderr.decode()


def test_a_tap_started_with_its_output_closed_says_so_in_one_line(tmp_path: Path) -> None:
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"api_key": "k", "start_date": "2026-03-01"}))
    done = subprocess.run(
        ["sh", "-c", 'exec "$0" --config "$1" >&-', TAP, str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "tap-optico: its standard output is closed: it writes its Singer messages there"
    ]
