"""The README's definition installs the tap, as a wheel, into a new Meltano project.

The definition is the README's own text (section "Add tap-optico to your Meltano
project"), with only its `pip_url` pointed at a wheel built from this checkout; the
commands are the README's block that follows it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tap_optico.sandbox import SANDBOX_API_KEY
from tests.helpers import SandboxFactory, expected_call_count, run_command
from tests.helpers_readme import ROOT, VENV, jsonl_records, readme_blocks, run_shell, user_env

pytestmark = pytest.mark.e2e
SECTION = "Add tap-optico to your Meltano project"
PIP_URL = re.compile(r"(?m)^      pip_url: .*$")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tap built as a wheel, as a release would ship it (hatchling, no network needed)."""
    out = tmp_path_factory.mktemp("wheel")
    build = run_command(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(ROOT)],
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    [built] = out.glob("tap_optico-*.whl")
    return built


def readme_definition(pip_url: str) -> dict[str, Any]:
    """The README's definition, installing from `pip_url` instead."""
    [block] = [b for b in readme_blocks() if b.section == SECTION and b.lang == "yaml"]
    assert len(PIP_URL.findall(block.text)) == 1
    text = PIP_URL.sub(f"      pip_url: {pip_url}", block.text)
    definition: dict[str, Any] = YAML(typ="safe").load(text)
    return definition


def test_readme_definition_and_commands_in_a_new_project(
    wheel: Path, tmp_path: Path, make_sandbox: SandboxFactory
) -> None:
    [commands] = [b for b in readme_blocks() if b.section == SECTION and b.kind == "new-project"]
    start = dt.date.fromisoformat(re.findall(r"tap-optico start_date (\S+)", commands.text)[0])
    server = make_sandbox(first_day=start, last_day=start + dt.timedelta(days=20), calls_per_day=20)
    env = user_env(
        PATH=f"{VENV / 'bin'}:{user_env()['PATH']}",  # Meltano installed, as a user of the README has it
        OPTICO_API_KEY=SANDBOX_API_KEY,
        TAP_OPTICO_API_URL=server.url,
    )
    init = run_shell("meltano init project --no-usage-stats", tmp_path, env)
    assert init.returncode == 0, init.output[-3000:]
    project = tmp_path / "project"
    yaml = YAML(typ="safe")
    config = yaml.load((project / "meltano.yml").read_text(encoding="utf-8"))
    ours = yaml.load((ROOT / "meltano.yml").read_text(encoding="utf-8"))
    config["plugins"] = {
        "extractors": readme_definition(str(wheel))["plugins"]["extractors"],
        # The project's loader (Meltano Hub is out of reach here, so inline).
        "loaders": [p for p in ours["plugins"]["loaders"] if p["name"] == "target-jsonl"],
    }
    with (project / "meltano.yml").open("w", encoding="utf-8") as out:
        yaml.dump(config, out)
    loader = run_shell("meltano install target-jsonl", project, env)
    assert loader.returncode == 0, loader.output[-3000:]

    run = run_shell(commands.text, project, env, timeout=600)

    assert run.returncode == 0, run.output[-5000:]
    venv = project / ".meltano" / "extractors" / "tap-optico" / "venv"
    installed = list(venv.glob("lib/*/site-packages"))
    assert [p for p in installed if (p / "tap_optico" / "tap.py").is_file()], "not installed from the wheel"
    records = jsonl_records(sorted((project / "output").glob("calls-*.jsonl")))
    assert len({r["call_id"] for r in records}) == len(records) == expected_call_count(server)
    daily = jsonl_records(sorted((project / "output").glob("daily_calls-*.jsonl")))
    assert len({r["date"] for r in daily}) == (server.api.data.last_day - start).days + 1
    # The key is sensitive: `meltano config set` put it in .env, not in meltano.yml.
    assert f"TAP_OPTICO_API_KEY='{SANDBOX_API_KEY}'" in (project / ".env").read_text(encoding="utf-8")
    assert SANDBOX_API_KEY not in (project / "meltano.yml").read_text(encoding="utf-8")
    assert "[error" not in run.output


def test_the_wheel_alone_carries_the_schemas(wheel: Path, tmp_path: Path) -> None:
    """The top-level schemas/ is in the wheel (one copy), and a tap installed from the wheel alone
    discovers both streams with their fields, far from this checkout."""
    schemas = {path.name: path.read_bytes() for path in (ROOT / "schemas").glob("*.json")}
    with zipfile.ZipFile(wheel) as archive:
        carried = {name: archive.read(name) for name in archive.namelist() if name.endswith(".json")}
    assert carried == {f"tap_optico/schemas/{name}": text for name, text in schemas.items()}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The tap's dependencies from the test venv, but not its editable tap_optico (a plain path
    # line: the .pth files of that directory are not read).
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet"]
    subprocess.run([*install, str(wheel)], check=True, timeout=300, capture_output=True)
    config = tmp_path / "empty.json"
    config.write_text("{}", encoding="utf-8")
    env = user_env()
    where = subprocess.run(
        [python, "-c", "import tap_optico.streams as s; print(s.__file__, s.schema_directory())"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert where.returncode == 0, where.stderr
    assert all(part.startswith(site) for part in where.stdout.split()), where.stdout
    discover = subprocess.run(
        [venv / "bin" / "tap-optico", "--config", str(config), "--discover"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert discover.returncode == 0, discover.stderr[-3000:]
    streams = {entry["stream"]: entry["schema"] for entry in json.loads(discover.stdout)["streams"]}
    assert set(streams) == {"calls", "daily_calls", "reconciliation"}
    for name, schema in streams.items():
        declared = json.loads(schemas[f"{name}.json"])["properties"]
        assert set(schema["properties"]) == set(declared), name
