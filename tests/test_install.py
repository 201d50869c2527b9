"""The tap installs into a new Meltano project from its plugin definition, and from a wheel.

docs/meltano.md's "new project" block runs as written, in a copy of this clone, against the
sandbox, with Meltano Hub out of reach: `make plugin-ref`, `meltano init`, `meltano add
--from-ref` for the tap (plugin/tap-optico.yml, installing from the clone) and the loader.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import tomllib
from ruamel.yaml import YAML

from tap_optico.sandbox import SANDBOX_API_KEY
from tests.helpers import run_command
from tests.helpers_readme import (
    ROOT,
    SANDBOX_PORT,
    VENV,
    free_port,
    jsonl_records,
    run_shell,
    sandbox_commands,
    served_calls,
    shell_blocks,
    user_env,
)

pytestmark = pytest.mark.e2e
#: What a clone holds that the copy leaves out: what it builds, installs and writes.
NOT_CLONED = (".git", ".venv", ".meltano", ".dagster", "output", "dist", "build", "bench", "*.egg-info")


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


def test_the_new_project_block_runs_as_written_without_meltano_hub(tmp_path: Path) -> None:
    [block] = [block for block in shell_blocks() if block.kind == "new-project"]
    clone = tmp_path / "tap-optico"
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(*NOT_CLONED, "__pycache__"))
    (clone / ".venv").symlink_to(VENV, target_is_directory=True)
    port = free_port()
    # Meltano Hub out of reach: a plugin that needed it would fail to be added.
    env = user_env(MELTANO_HUB_URL="http://127.0.0.1:9/hub", MELTANO_SEND_ANONYMOUS_USAGE_STATS="false")

    run = run_shell(block.text.replace(SANDBOX_PORT, str(port)), clone, env, timeout=900)

    assert run.returncode == 0, run.output[-5000:]
    where = run_command(
        [VENV / "bin" / "python", "-c", "import tap_optico; print(tap_optico.__file__)"], timeout=60
    )
    assert where.stdout.startswith(str(ROOT)), "the block reinstalled the shared venv from the copy"
    project = tmp_path / "optico-elt"
    definition = YAML(typ="safe").load((clone / "dist" / "tap-optico.yml").read_text(encoding="utf-8"))
    assert definition["pip_url"] == str(clone)
    venv = project / ".meltano" / "extractors" / "tap-optico" / "venv"
    assert [p for p in venv.glob("lib/*/site-packages") if (p / "tap_optico" / "tap.py").is_file()]
    [sandbox] = sandbox_commands([block])
    count, days = served_calls(sandbox)
    records = jsonl_records(sorted(project.glob("calls-*.jsonl")))
    assert len({r["call_id"] for r in records}) == len(records) == count
    assert {r["start_date_local"][:10] for r in records} == days
    # The key is sensitive: `meltano config set` put it in .env, not in meltano.yml.
    assert SANDBOX_API_KEY in (project / ".env").read_text(encoding="utf-8")
    assert SANDBOX_API_KEY not in (project / "meltano.yml").read_text(encoding="utf-8")
    assert "[error" not in run.output
    # The tap is added as an extractor only (`meltano add extractor tap-optico` adds a utility of
    # that name too), in a project made outside the clone (else Meltano warns it found one).
    assert set(YAML(typ="safe").load((project / "meltano.yml").read_text(encoding="utf-8"))["plugins"]) == {
        "extractors",
        "loaders",
    }
    assert "Found meltano project" not in run.output


def test_the_plugin_file_is_the_projects_definition_with_the_version_of_pyproject() -> None:
    """plugin/tap-optico.yml: meltano.yml's definition (tests/test_meltano_definition.py holds that
    to `tap-optico --about`), installing the version pyproject.toml gives."""
    yaml = YAML(typ="safe")
    plugin = yaml.load((ROOT / "plugin" / "tap-optico.yml").read_text(encoding="utf-8"))
    project = yaml.load((ROOT / "meltano.yml").read_text(encoding="utf-8"))
    [ours] = [p for p in project["plugins"]["extractors"] if p["name"] == "tap-optico"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert plugin == {**ours, "pip_url": f"tap-optico=={version}"}


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
