"""Helpers for the README tests: its blocks, a throw-away copy of the project, running shell.

tests/test_readme.py runs the blocks of the README, then of the docs/ pages in PAGES' order (a
person's path: the README, then its "Where next" links), after `make demo`'s script, all in one
copy of the project. A shell block may carry a marker on the line right before its fence,
`<!-- readme-test: KIND text -->`, that says how the tests run it:

- no marker: run once, in its turn, with the sandbox running (its own, or else the README's first);
- `repeat`: the same, three times (a first run, then later ones that start from its state);
- `server`: a command that serves until stopped: started, checked to answer, stopped;
- `new-project`: run by tests/test_install.py, in a new Meltano project;
- `dagster`: run by tests/test_dagster.py, with Dagster (`dagster server`: served until stopped);
- `skip: why`: not run (production credentials, `make test` itself); the reason is required.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent
README = ROOT / "README.md"
#: The pages whose blocks run, in the order a person reads them: the README, then docs/ in the
#: order of the README's "Where next" list.
PAGES = (
    README,
    *(
        ROOT / "docs" / f"{name}.md"
        for name in (
            "sandbox",
            "meltano",
            "accounts",
            "data",
            "targets",
            "transform",
            "backfilling",
            "dagster",
            "dagster-dbt",
            "reliability",
            "reconciliation",
            "performance",
            "development",
        )
    ),
)
#: What dbt writes into transform/ (transform/.gitignore), left out of a copy of the project.
DBT_OUTPUTS = ("target", "logs", "dbt_packages", ".user.yml")
SANDBOX_PORT = "8765"  # the port the README and meltano.yml use; tests replace it with a free one
OTHER_PORT = "8766"  # docs/sandbox.md's other port (with TAP_OPTICO_API_URL); replaced the same way
SHELLS = ("sh", "bash", "shell", "console")
KINDS = ("run", "repeat", "server", "new-project", "dagster", "skip")
MARKER = re.compile(r"^<!-- readme-test: (?P<kind>[a-z-]+)(?P<text>.*?)-->$")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")


@dataclass(frozen=True)
class Block:
    page: str  # the page's path in the repository
    section: str
    number: int  # of the block within its section, from 1
    lang: str
    text: str
    kind: str
    reason: str
    line: int

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")
        page = "" if self.page == "README.md" else f"{self.page}:"
        return f"{page}{slug}-{self.number}"

    @property
    def where(self) -> str:
        return f"{self.id} ({self.page} line {self.line})"


def readme_blocks(path: Path = README) -> list[Block]:
    """Every fenced block of a page, with the section it is in (or the page's title) and its marker."""
    blocks: list[Block] = []
    page = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    lines = path.read_text(encoding="utf-8").splitlines()
    section, count = "", 0
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith(("# ", "## ")):
            section, count = line.split(" ", 1)[1].strip(), 0
        fence = FENCE.match(line)
        if not fence:
            index += 1
            continue
        end = lines.index("```", index + 1)
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marker = MARKER.match(previous.strip())
        kind, reason = ("run", "") if marker is None else (marker["kind"], marker["text"].strip(" :"))
        count += 1
        body = "\n".join(lines[index + 1 : end]) + "\n"
        blocks.append(Block(page, section, count, fence["lang"], body, kind, reason, index + 1))
        index = end + 1
    return blocks


def shell_blocks(*paths: Path) -> list[Block]:
    """The shell blocks of the pages (all of PAGES unless named), in order."""
    return [block for path in paths or PAGES for block in readme_blocks(path) if block.lang in SHELLS]


def marker_problems(blocks: list[Block]) -> list[str]:
    """What is wrong with the blocks' markers: an unknown kind, a skip that gives no reason."""
    problems = []
    for block in blocks:
        where = block.where
        if block.kind not in KINDS:
            problems.append(f"{where}: unknown marker {block.kind!r}; one of {', '.join(KINDS)}")
        elif block.kind == "skip" and not block.reason:
            problems.append(f"{where}: a skipped block must say why")
    return problems


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sandbox_environment(meltano_yml: Path = ROOT / "meltano.yml") -> dict[str, Any]:
    """tap-optico's config in meltano.yml's `sandbox` environment."""
    project = YAML(typ="safe").load(meltano_yml.read_text(encoding="utf-8"))
    [environment] = [e for e in project["environments"] if e["name"] == "sandbox"]
    [extractor] = environment["config"]["plugins"]["extractors"]
    return dict(extractor["config"])


def sandbox_commands(blocks: list[Block]) -> list[list[str]]:
    """The arguments of every `tap-optico-sandbox` command in the blocks."""
    found = []
    for block in blocks:
        for line in block.text.splitlines():
            line = line.rstrip().removesuffix("\\")  # a command continued on the next line
            words = shlex.split(line, comments=True) if "tap-optico-sandbox" in line else []
            if words and words[0].endswith("tap-optico-sandbox"):
                found.append([word for word in words[1:] if word != "&"])
    return found


def sandbox_options(arguments: list[str]) -> argparse.Namespace:
    """The options of a sandbox command that decide which calls it serves."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--first-day", type=dt.date.fromisoformat)
    parser.add_argument("--last-day", type=dt.date.fromisoformat)
    parser.add_argument("--calls-per-day", type=int, default=200)
    parser.add_argument("--accounts", type=int, default=1)
    options, _ = parser.parse_known_args(arguments)
    return options


def served_calls(arguments: list[str]) -> tuple[int, set[str]]:
    """How many calls, on which days, a sandbox started with these arguments serves."""
    from tap_optico.sandbox import build_server
    from tests.helpers import expected_call_count

    options = sandbox_options(arguments)
    server = build_server(
        first_day=options.first_day, last_day=options.last_day, calls_per_day=options.calls_per_day
    )
    server.close()
    data = server.api.data
    # Every account of the sandbox has as many calls, on the same days.
    count = expected_call_count(server) * options.accounts
    return count, {day.isoformat() for day in data.days(data.first_day, data.last_day)}


def make_project_copy(dest: Path, port: int) -> Path:
    """This Meltano project in `dest`: meltano.yml (sandbox port replaced), scripts and transform/.

    `.venv` and the installed plugins are links to this checkout's (no install, and
    `make` is never run there, so nothing is installed through the links); the system
    database, `.meltano/run` and outputs are the copy's own.
    """
    dest.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "meltano.yml").read_text(encoding="utf-8")
    (dest / "meltano.yml").write_text(text.replace(SANDBOX_PORT, str(port)), encoding="utf-8")
    (dest / "scripts").mkdir()
    for script in (ROOT / "scripts").glob("*.py"):
        (dest / "scripts" / script.name).write_bytes(script.read_bytes())
    # The dbt project: copied, since dbt writes its target/ and logs/ into it.
    shutil.copytree(ROOT / "transform", dest / "transform", ignore=shutil.ignore_patterns(*DBT_OUTPUTS))
    (dest / ".venv").symlink_to(VENV, target_is_directory=True)
    (dest / ".meltano").mkdir()
    for plugin_type in ("extractors", "loaders", "utilities"):
        installed = ROOT / ".meltano" / plugin_type
        (dest / ".meltano" / plugin_type).symlink_to(installed, target_is_directory=True)
    return dest


def user_env(**extra: str) -> dict[str, str]:
    """A user's shell: no venv on PATH, none of the tests' Meltano or plugin settings."""
    bin_dir = str(VENV / "bin")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MELTANO_", "TAP_OPTICO_", "TARGET_", "VIRTUAL_ENV", "PYTEST_"))
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != bin_dir)
    env.update(extra)
    return env


@dataclass
class ShellRun:
    returncode: int
    output: str


def run_shell(
    script: str, cwd: Path, env: dict[str, str], timeout: float = 180, *, strict: bool = True
) -> ShellRun:
    """Run a block with bash (``strict``: stop at the first failure; else as typed in a terminal,
    where the status is the last command's); what it left running is stopped.

    The output goes to a file: a server the block left in the background would keep a
    pipe open, and reading it to the end would wait for that server.
    """
    with tempfile.TemporaryFile("w+", encoding="utf-8") as log:
        process = subprocess.Popen(
            ["bash", *(("-e", "-o", "pipefail") if strict else ()), "-c", script],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = -1
        stop_group(process)
        process.wait()
        log.seek(0)
        output = log.read()
    if returncode == -1:
        output += f"\n[timed out after {timeout} s]"
    return ShellRun(returncode, output)


def stop_group(process: subprocess.Popen[Any]) -> None:
    """Stop the process group of a process this module started (background jobs included)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)


@contextlib.contextmanager
def background(
    command: str, cwd: Path, env: dict[str, str], port: int, log: Path | None = None
) -> Iterator[None]:
    """Run a server command until the block is done; fail if it does not listen on `port`. A server
    that writes much (`make dagster`'s runs) writes to `log`: a pipe nobody reads would stall it."""
    with contextlib.ExitStack() as stack:
        output = stack.enter_context(log.open("w", encoding="utf-8")) if log else subprocess.PIPE
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            wait_for_port(port, process)
            yield
        finally:
            stop_group(process)
            process.communicate(timeout=60)


def wait_for_port(port: int, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server stopped (exit {process.returncode}): {process.stdout}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def wait_until_free(port: int, timeout: float = 30) -> None:
    """Wait until a server stopped by a block has released its port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"port {port} still in use after {timeout} s")


def jsonl_records(files: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(line) for path in files for line in path.read_text(encoding="utf-8").splitlines()]
