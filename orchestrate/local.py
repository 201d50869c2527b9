"""`make dagster`: the Dagster UI on this project, local SQLite storage, against the sandbox.

Starts the sandbox (4 accounts, January to March 2026) on a free port, then Dagster's
daemon (the run queue, backfills, the schedule) and its web server, with the instance in
DAGSTER_HOME (default `.dagster/`, configured by orchestrate/dagster.yaml). Two account
groups of two accounts each, `agency-group-1` and `agency-group-2`, their accounts in
`<DAGSTER_HOME>/secrets/<group>.json` (readable by their owner only), read by each run for
its own group; days from January 1st 2026. Stops everything on Ctrl-C or SIGTERM.
"""

import argparse
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import dagster as dg

from orchestrate import groups
from orchestrate.meltano import PROJECT
from tap_optico.sandbox import build_server

BIN = Path(sys.executable).parent
FIRST_DAY, LAST_DAY = dt.date(2026, 1, 1), dt.date(2026, 3, 31)
ACCOUNTS, GROUPS = 4, 2


def sandbox_group(number: int) -> str:
    """The accounts of group `number`, as the sandbox's CLI prints them."""
    command = [str(BIN / "tap-optico-sandbox"), "--accounts", str(ACCOUNTS), "--print-accounts"]
    return subprocess.run(
        [*command, "--group", f"{number}/{GROUPS}"], capture_output=True, text=True, check=True
    ).stdout.strip()


def write_secrets(folder: Path) -> dict[str, str]:
    """Each group's accounts in a file of its own, readable by its owner only; where runs find them."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    names = []
    for number in range(1, GROUPS + 1):
        name = f"agency-group-{number}"
        path = folder / f"{name}.json"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(sandbox_group(number))
        os.chmod(path, 0o600)  # also when the file was there before
        names.append(name)
    return {"OPTICO_GROUPS": ",".join(names), "OPTICO_GROUP_SECRET": f"file:{folder}/{{group}}.json"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=3000, help="the web server's port (default 3000)")
    args = parser.parse_args(argv)
    home = Path(os.environ.get("DAGSTER_HOME") or PROJECT / ".dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("dagster.yaml"), home / "dagster.yaml")
    server = build_server(first_day=FIRST_DAY, last_day=LAST_DAY, accounts=ACCOUNTS, calls_per_day=50).start()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MELTANO_ENVIRONMENT": "sandbox-accounts",
        "TAP_OPTICO_API_URL": server.url,
        "OPTICO_HISTORY_START": FIRST_DAY.isoformat(),
        **write_secrets(home / "secrets"),
    }
    # The instance's storage made once, before two processes would both create it (SQLite then
    # may end with two schema versions, and neither process can use it).
    subprocess.run([str(BIN / "dagster"), "instance", "migrate"], cwd=PROJECT, env=env, check=True)
    # Each group's pool limit set before any run is queued: Dagster gives a pool the instance's
    # default limit only as it queues the pool's first runs, and launches the runs queued with them
    # all at once (a first backfill of a group then ran its ranges side by side).
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for group in env[groups.NAMES].split(","):
            instance.event_log_storage.set_concurrency_slots(groups.pool(group), 1)
    location = ["-m", "orchestrate.definitions"]
    commands = [
        [str(BIN / "dagster-daemon"), "run", *location],
        [str(BIN / "dagster-webserver"), *location, "--host", "127.0.0.1", "--port", str(args.port)],
    ]
    processes = [
        subprocess.Popen(command, cwd=PROJECT, env=env, stdin=subprocess.DEVNULL) for command in commands
    ]
    print(f"Dagster: http://127.0.0.1:{args.port} (instance in {home}); sandbox: {server.url}", flush=True)

    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping and all(process.poll() is None for process in processes):
        time.sleep(0.5)
    for command, process in zip(commands, processes, strict=True):
        if process.poll() is None:
            process.terminate()
        elif not stopping:
            print(f"{Path(command[0]).name} stopped (exit {process.returncode}): stopping", file=sys.stderr)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    server.stop()
    return 0 if stopping else 1


if __name__ == "__main__":
    sys.exit(main())
