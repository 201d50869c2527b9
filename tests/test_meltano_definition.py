"""meltano.yml describes tap-optico as the tap describes itself (`tap-optico --about`).

Meltano only passes the settings and acts on the capabilities its definition lists,
so a setting added to the tap but not to meltano.yml cannot be set from Meltano.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.helpers import run_command

ROOT = Path(__file__).resolve().parent.parent
TAP = str(Path(sys.executable).parent / "tap-optico")
MELTANO = str(Path(sys.executable).parent / "meltano")

#: The settings of which a run needs exactly one: one key, or a list of accounts.
KEYS = ("api_key", "accounts")

# Meltano setting kinds for the JSON Schema types the SDK uses.
KIND_FOR_TYPE = {
    "integer": "integer",
    "number": "decimal",
    "boolean": "boolean",
    "object": "object",
    "array": "array",
}


def about() -> dict[str, Any]:
    run = subprocess.run(
        [TAP, "--about", "--format=json"], capture_output=True, text=True, check=True, timeout=60
    )
    result: dict[str, Any] = json.loads(run.stdout)
    return result


def meltano_extractor(name: str = "tap-optico") -> dict[str, Any]:
    project = YAML(typ="safe").load((ROOT / "meltano.yml").read_text(encoding="utf-8"))
    [plugin] = [p for p in project["plugins"]["extractors"] if p["name"] == name]
    return dict(plugin)


def meltano_kind(schema: dict[str, Any]) -> str:
    """The Meltano `kind` for a setting's JSON Schema."""
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    [kind] = [t for t in types if t != "null"]
    if kind == "string":
        # Not `date_iso8601` for a date: Meltano would read any text as a date before the tap sees
        # it (05/03/2026 as 3 May); as text, the tap refuses what is not YYYY-MM-DD.
        return "string"
    return KIND_FOR_TYPE[kind]


def test_capabilities_match_about() -> None:
    advertised = set(about()["capabilities"])
    declared = meltano_extractor()["capabilities"]
    assert len(declared) == len(set(declared)), "a capability is listed twice"
    assert set(declared) == advertised
    assert "structured-logging" in declared


def test_settings_match_about() -> None:
    schema = about()["settings"]
    properties = schema["properties"]
    settings = meltano_extractor()["settings"]
    by_name = {s["name"]: s for s in settings}
    assert len(by_name) == len(settings), "a setting is listed twice"
    assert list(by_name) == list(properties), "meltano.yml lists other settings, or another order"
    for name, setting in by_name.items():
        expected = properties[name]
        assert setting.get("kind") == meltano_kind(expected), name
        assert bool(setting.get("sensitive")) == bool(expected.get("secret")), name
        assert (setting.get("description") or "").strip(), f"{name} has no description"
        # What `meltano config list` and the plugin file say is what `tap-optico --about` says.
        assert setting["description"] == expected.get("description"), name
    assert meltano_extractor()["settings_group_validation"] == [[key, *schema["required"]] for key in KEYS]


@pytest.mark.parametrize("plugin_type", ["extractors", "loaders"])
def test_no_deprecated_password_kind(plugin_type: str) -> None:
    project = YAML(typ="safe").load((ROOT / "meltano.yml").read_text(encoding="utf-8"))
    for plugin in project["plugins"][plugin_type]:
        for setting in plugin.get("settings", []):
            assert setting.get("kind") != "password", f"{plugin['name']}.{setting['name']}"
            if setting["name"] in ("password", "api_key"):
                assert setting.get("sensitive") is True, f"{plugin['name']}.{setting['name']}"


@pytest.mark.e2e
def test_tap_errors_are_errors_in_meltano_log(tmp_path: Path) -> None:
    """With `structured-logging`, Meltano reads the tap's log level instead of logging `[info]`."""
    env = {
        **os.environ,
        "MELTANO_ENVIRONMENT": "sandbox",
        "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'meltano.db'}",
        "TAP_OPTICO_PAGE_SIZE": "3",  # invalid: the tap stops before any request
    }
    run = run_command(
        [MELTANO, "invoke", "tap-optico"],
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert run.returncode != 0
    lines = [line for line in (run.stdout + run.stderr).splitlines() if "'page_size'" in line]
    assert lines, run.stderr[-3000:]
    assert all("[error" in line for line in lines), lines
