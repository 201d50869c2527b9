"""The Makefile's promises, read from `make -n` (what it would run): `make demo` installs only what
the demo needs, `make test` runs everything (and .ci/run runs `make test`), `make test-quick` the
in-process files, `make bench` writes RESULTS.md only when asked."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.conftest import QUICK
from tests.helpers import run_command
from tests.helpers_readme import ROOT


def dry_run(*arguments: str) -> list[str]:
    """The commands `make` would run, every target rebuilt (-B), none run (-n)."""
    # Under `make test` the suite runs inside make: its variables would make this one a sub-make,
    # which prints "Entering directory" lines among the commands.
    env = {
        name: value for name, value in os.environ.items() if name not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")
    }
    run = run_command(["make", "-n", "-B", *arguments], cwd=ROOT, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


def test_make_demo_installs_the_tap_meltano_and_the_demos_plugins_only() -> None:
    commands = dry_run("demo")
    installs = [line for line in commands if "pip install" in line and "--upgrade pip" not in line]
    assert installs == ['.venv/bin/pip install --quiet -e ".[meltano]"']
    assert ".venv/bin/meltano install tap-optico target-jsonl" in commands
    assert not [line for line in commands if "--plugin-type" in line or "dbt" in line or "apt-get" in line]
    assert commands[-1] == ".venv/bin/python scripts/demo.py"


def test_make_test_installs_everything_and_runs_every_test() -> None:
    commands = dry_run("test")
    assert '.venv/bin/pip install --quiet -e ".[meltano,dev,bench,orchestrate,cluster]"' in commands
    assert commands[-1] == ".venv/bin/python -m pytest"
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_make_test_quick_runs_the_in_process_files() -> None:
    assert dry_run("test-quick")[-1] == ".venv/bin/python -m pytest -m quick -q"
    assert all((ROOT / "tests" / name).is_file() for name in QUICK)
    listing = run_command(
        [sys.executable, "-m", "pytest", "-m", "quick", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        timeout=300,
    )
    assert listing.returncode == 0, listing.stdout[-3000:] + listing.stderr[-3000:]
    files = {Path(line.split("::")[0]).name for line in listing.stdout.splitlines() if "::" in line}
    assert files == QUICK


def test_make_plugin_ref_installs_nothing() -> None:
    """The new-project block runs it in a copy whose .venv is this one: an install there would
    point this venv's editable tap at the copy."""
    commands = dry_run("plugin-ref")
    assert [line for line in commands if "install" in line] == []
    assert commands[-1] == ".venv/bin/python scripts/readme.py --plugin-ref dist/tap-optico.yml"


def test_make_bench_updates_the_results_only_when_asked() -> None:
    assert "--update-results" not in dry_run("bench")[-1]
    assert dry_run("bench", "UPDATE_RESULTS=1")[-1].endswith("--update-results")
