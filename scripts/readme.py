"""`make readme`: rewrite the generated parts of the README, docs/ and the plugin definition.

- README.md: the settings table, from `tap-optico --about --format=markdown` (the tap's own list);
- docs/targets.md: the Targets table, from the targets tests/test_targets.py checks
  (tests/targets.py) and their pinned `pip_url`s in meltano.yml;
- plugin/tap-optico.yml: the extractor definition for `meltano add --from-ref`, from this
  project's meltano.yml (read as YAML), installing the version of pyproject.toml.

A page's part sits between `<!-- BEGIN generated: NAME -->` and `<!-- END generated: NAME -->`.
`--check` changes nothing and fails when a part is stale (the tests run it).
`--plugin-ref FILE --pip-url URL` writes the definition installing from URL instead (`make
plugin-ref`: from this clone's folder).
"""

from __future__ import annotations

import argparse
import difflib
import io
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomllib
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
TAP = Path(sys.executable).parent / "tap-optico"
PLUGIN_FILE = Path("plugin") / "tap-optico.yml"
PLUGIN_HEADER = """\
# tap-optico's Meltano plugin definition; add it to a project with
#   meltano add --plugin-type extractor tap-optico --from-ref <this file>
# Written by `make readme` from meltano.yml and pyproject.toml's version: edit those, not this.
# pip_url installs a release published on PyPI; `make plugin-ref` writes dist/tap-optico.yml,
# the same definition installing from a clone (docs/meltano.md).
"""


def version(root: Path = ROOT) -> str:
    """The tap's version: pyproject.toml's, the one place it is written."""
    with (root / "pyproject.toml").open("rb") as file:
        return str(tomllib.load(file)["project"]["version"])


def settings_table(_meltano_yml: Path) -> str:
    """The table of the `## Settings` section of the tap's markdown description."""
    about = subprocess.run(
        [str(TAP), "--about", "--format=markdown"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    section = about.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    if not rows:
        raise SystemExit("tap-optico --about --format=markdown has no settings table")
    return "\n".join(rows)


def extractor(meltano_yml: Path) -> dict[str, Any]:
    """tap-optico's definition in meltano.yml."""
    project = YAML(typ="safe").load(meltano_yml.read_text(encoding="utf-8"))
    found = [p for p in project["plugins"]["extractors"] if p["name"] == "tap-optico"]
    if len(found) != 1:
        raise SystemExit(f"{meltano_yml}: need exactly one tap-optico extractor")
    return dict(found[0])


#: The order of the definition's keys, and of a setting's: Meltano rewrites meltano.yml in an
#: order of its own (`meltano schedule add`, `meltano config set`), which must not change the file.
KEYS = ("name", "namespace", "pip_url", "executable", "capabilities", "settings_group_validation")
SETTING_KEYS = ("name", "label", "kind", "sensitive", "description")


def ordered(mapping: dict[str, Any], first: tuple[str, ...]) -> dict[str, Any]:
    return {
        key: mapping[key]
        for key in sorted(mapping, key=lambda k: (k not in first, first.index(k) if k in first else 0, k))
    }


def plugin_definition(meltano_yml: Path, pip_url: str) -> str:
    """The extractor's definition as a file for `meltano add --from-ref`, installing from pip_url."""
    definition = ordered({**extractor(meltano_yml), "pip_url": pip_url}, KEYS)
    definition["settings"] = [ordered(setting, SETTING_KEYS) for setting in definition["settings"]]
    out = io.StringIO()
    yaml = YAML()
    yaml.width = 4096  # one line per description
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.dump(definition, out)
    return PLUGIN_HEADER + out.getvalue()


def targets_table(meltano_yml: Path) -> str:
    """What the end-to-end tests check of each target, as a table."""
    sys.path.insert(0, str(ROOT))
    from tests.targets import table

    return table(meltano_yml)


#: Each page's generated parts, by name.
PARTS: dict[str, dict[str, Callable[[Path], str]]] = {
    "README.md": {"settings": settings_table},
    "docs/targets.md": {"targets": targets_table},
}


def generated(name: str) -> re.Pattern[str]:
    quoted = re.escape(name)
    return re.compile(
        rf"(<!-- BEGIN generated: {quoted} [^\n]*-->\n)(.*?)(<!-- END generated: {quoted} -->)", re.DOTALL
    )


def render(page: str, text: str, meltano_yml: Path) -> str:
    for name, make in PARTS[page].items():
        found = list(generated(name).finditer(text))
        if len(found) != 1:
            raise SystemExit(f"{page}: need exactly one 'BEGIN/END generated: {name}' pair")
        text = f"{text[: found[0].end(1)]}{make(meltano_yml)}\n{text[found[0].start(3) :]}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if a part is stale; change nothing")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project whose files are written")
    parser.add_argument("--meltano-yml", type=Path, help="default: ROOT/meltano.yml")
    parser.add_argument("--plugin-ref", type=Path, help="only write the plugin definition to this file")
    parser.add_argument("--pip-url", help="with --plugin-ref: what the definition installs")
    args = parser.parse_args(argv)
    meltano_yml = args.meltano_yml or args.root / "meltano.yml"
    if args.plugin_ref:
        args.plugin_ref.parent.mkdir(parents=True, exist_ok=True)
        pip_url = args.pip_url or str(args.root.resolve())
        args.plugin_ref.write_text(plugin_definition(meltano_yml, pip_url), encoding="utf-8")
        add = f"meltano add --plugin-type extractor tap-optico --from-ref {args.plugin_ref}"
        print(f"{args.plugin_ref} written: {add}")
        return 0
    files: dict[Path, tuple[str, str]] = {}
    for page in PARTS:
        path = args.root / page
        current = path.read_text(encoding="utf-8")
        files[path] = (current, render(page, current, meltano_yml))
    plugin = args.root / PLUGIN_FILE
    current = plugin.read_text(encoding="utf-8") if plugin.exists() else ""
    files[plugin] = (current, plugin_definition(meltano_yml, f"tap-optico=={version(args.root)}"))
    stale = [path for path, (current, wanted) in files.items() if current != wanted]
    for path in stale:
        name = path.relative_to(args.root).as_posix()
        current, wanted = files[path]
        if args.check:
            lines = difflib.unified_diff(
                current.splitlines(keepends=True), wanted.splitlines(keepends=True), name, "generated"
            )
            sys.stdout.writelines(lines)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(wanted, encoding="utf-8")
            print(f"{name} rewritten")
    if stale and args.check:
        print("\nstale: run `make readme`", file=sys.stderr)
        return 1
    if not stale:
        print("the generated parts are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
