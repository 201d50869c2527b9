"""The benchmark itself runs end to end (tiny sizes; its figures are not asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers import run_command

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_writes_results() -> None:
    results = ROOT / "bench" / "out" / "quick"
    for stale in ("RESULTS.md", "results.png"):
        (results / stale).unlink(missing_ok=True)
    run = run_command(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick"],
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    text = (results / "RESULTS.md").read_text(encoding="utf-8")
    for section in ("## Targets", "## CPU", "### Start-up", "## Memory", "## Latency"):
        assert section in text
    assert "same records and final state at 1 and 4 | met" in text
    # The user's comparison, in each format the server writes, and latency at both page sizes.
    for form in ("compact", "spaced", "typed"):
        assert f"the script block-buffered, {form} JSON |" in text
        assert f"| {form} | baseline, block-buffered |" in text
    for size in (1000, 5000):
        assert f"page_size {size}) |" in text
    assert (results / "results.png").stat().st_size > 10_000


def test_only_a_full_run_updates_the_published_results() -> None:
    published = (ROOT / "bench" / "RESULTS.md").read_bytes()
    run = run_command(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--update-results"], timeout=60
    )
    assert run.returncode == 2
    assert "--update-results" in run.stderr
    assert (ROOT / "bench" / "RESULTS.md").read_bytes() == published


def test_the_stages_of_a_run_are_each_timed() -> None:
    """bench/stages.py times each stage's methods: a renamed method, or a stage the tap no longer
    goes through, shows here rather than as a silent zero in its table."""
    run = run_command(
        [sys.executable, str(ROOT / "bench" / "stages.py"), "--quick", "--rounds", "1"], timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    # Rows: stage, thread, µs per record, share of the run.
    cells = [line.rsplit(None, 3) for line in run.stdout.splitlines()[2:]]
    rows = {name: float(value) for name, _, value, share in cells if share.endswith("%")}
    timed = [name for name in rows if name not in ("everything else", "run, after start-up")]
    assert len(timed) == 6, run.stdout
    assert all(rows[name] > 0 for name in timed), run.stdout
    assert rows["run, after start-up"] > sum(rows[name] for name in timed), run.stdout
