"""`make demo`: the tap through Meltano into target-jsonl, against a local sandbox.

Starts the sandbox on a free port, runs `meltano run tap-optico target-jsonl`,
stops the sandbox and summarises what the run wrote. Run it again: Meltano
keeps the state, so the second run only reads the last days.

The demo reads other days than the `sandbox` environment (the last 90 days, not
March 2026), so it keeps its state under a state id of its own
(`sandbox:tap-optico-to-target-jsonl:demo`): the README's commands that run after
it, with the environment's own state id, start from no state.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tap_optico.sandbox import build_server

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "output"
MELTANO = Path(sys.executable).parent / "meltano"
#: The demo's state id is the environment's, with this suffix.
STATE_ID_SUFFIX = "demo"
#: The tap's reconciliation line (tap_optico/totals.py), in Meltano's log of the run.
RECONCILED = re.compile(r"reconciled [\d,]+ account-days .*?\(read completely by one stream only\)")


def newest_file(stream: str, before: set[Path]) -> Path | None:
    files = sorted(set(OUTPUT.glob(f"{stream}-*.jsonl")) - before, key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None


def summarise(stream: str, path: Path | None, day_field: str) -> str:
    if path is None:
        return f"  {stream:<14} no new file"
    days = []
    count = 0
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            count += 1
            days.append(str(json.loads(line)[day_field])[:10])
    span = f"{min(days)} .. {max(days)}" if days else "no records"
    return f"  {stream:<14} {count:>7} records  {span}  {path.relative_to(ROOT)}"


def main() -> int:
    OUTPUT.mkdir(exist_ok=True)
    before = set(OUTPUT.glob("*.jsonl"))
    with build_server() as server:
        data = server.api.data
        print(f"Sandbox: {data.calls_per_day} calls/day, {data.first_day}..{data.last_day}, {server.url}")
        env = {
            **os.environ,
            "TAP_OPTICO_API_URL": server.url,
            "TAP_OPTICO_START_DATE": data.first_day.isoformat(),
            "TAP_OPTICO_END_DATE": data.last_day.isoformat(),
            "MELTANO_ENVIRONMENT": "sandbox",
        }
        command = [str(MELTANO), "run", "--state-id-suffix", STATE_ID_SUFFIX, "tap-optico", "target-jsonl"]
        # Meltano's log goes on to the terminal as it comes; the reconciliation line is kept.
        with subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) as run:
            assert run.stderr is not None
            reconciled = None
            for line in run.stderr:
                sys.stderr.write(line)
                if found := RECONCILED.search(line):
                    reconciled = found[0]
    if run.returncode:
        print("meltano run failed; see the log above", file=sys.stderr)
        return run.returncode
    print("\nThis run wrote:")
    print(summarise("calls", newest_file("calls", before), "start_date_local"))
    print(summarise("daily_calls", newest_file("daily_calls", before), "date"))
    print(summarise("reconciliation", newest_file("reconciliation", before), "date"))
    print(f"\nReconciliation: {reconciled or 'no line in the log (is the extractor tap-optico?)'}")
    print(
        "\nRun `make demo` again: Meltano passes the saved state, so the next run reads only\n"
        "from the last bookmark minus `lookback_days` (1 day by default)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
