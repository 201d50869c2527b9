"""`make readme`: rewrite the README's generated parts from their sources.

- the settings table, from `tap-optico --about --format=markdown` (the tap's own list);
- the extractor definition to paste into another Meltano project, from this project's
  meltano.yml (only `pip_url` differs: a project elsewhere cannot install `-e .`);
- the Targets table, from the targets tests/test_targets.py checks (tests/targets.py) and
  their pinned `pip_url`s in meltano.yml.

Each sits between `<!-- BEGIN generated: NAME -->` and `<!-- END generated: NAME -->`.
`--check` changes nothing and fails when the README is stale (the tests run it).
"""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAP = Path(sys.executable).parent / "tap-optico"
# What the README's definition installs from; the other forms are listed next to it.
README_PIP_URL = "git+https://github.com/<owner>/tap-optico.git@v0.1.0"


def settings_table() -> str:
    """The table of the `## Settings` section of the tap's markdown description."""
    about = subprocess.run(
        [str(TAP), "--about", "--format=markdown"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    section = about.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    if not rows:
        raise SystemExit("tap-optico --about --format=markdown has no settings table")
    return "\n".join(rows)


def extractor_definition(meltano_yml: Path) -> str:
    """tap-optico's definition in meltano.yml, as a block to paste under `plugins:`."""
    lines = meltano_yml.read_text(encoding="utf-8").splitlines()
    start = lines.index("    - name: tap-optico")
    end = start + 1
    while end < len(lines) and (lines[end].startswith("      ") or not lines[end].strip()):
        end += 1
    body = [line for line in lines[start:end] if line.strip() and not line.lstrip().startswith("#")]
    pip_urls = [i for i, line in enumerate(body) if line.startswith("      pip_url:")]
    if len(pip_urls) != 1:
        raise SystemExit("meltano.yml: tap-optico needs exactly one pip_url")
    body[pip_urls[0]] = f"      pip_url: {README_PIP_URL}"
    return "\n".join(["```yaml", "plugins:", "  extractors:", *body, "```"])


def targets_table(meltano_yml: Path) -> str:
    """What the end-to-end tests check of each target, as a table."""
    sys.path.insert(0, str(ROOT))
    from tests.targets import table

    return table(meltano_yml)


def generated(name: str) -> re.Pattern[str]:
    quoted = re.escape(name)
    return re.compile(
        rf"(<!-- BEGIN generated: {quoted} [^\n]*-->\n)(.*?)(<!-- END generated: {quoted} -->)", re.DOTALL
    )


def render(readme: str, meltano_yml: Path) -> str:
    parts = {
        "settings": settings_table(),
        "extractor definition": extractor_definition(meltano_yml),
        "targets": targets_table(meltano_yml),
    }
    for name, text in parts.items():
        found = list(generated(name).finditer(readme))
        if len(found) != 1:
            raise SystemExit(f"README: need exactly one 'BEGIN/END generated: {name}' pair")
        readme = f"{readme[: found[0].end(1)]}{text}\n{readme[found[0].start(3) :]}"
    return readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the README is stale; change nothing")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--meltano-yml", type=Path, default=ROOT / "meltano.yml")
    args = parser.parse_args(argv)
    current = args.readme.read_text(encoding="utf-8")
    wanted = render(current, args.meltano_yml)
    if wanted == current:
        print(f"{args.readme.name} is up to date")
        return 0
    if args.check:
        sys.stdout.writelines(
            difflib.unified_diff(
                current.splitlines(keepends=True), wanted.splitlines(keepends=True), "README", "generated"
            )
        )
        print(f"\n{args.readme.name} is stale: run `make readme`", file=sys.stderr)
        return 1
    args.readme.write_text(wanted, encoding="utf-8")
    print(f"{args.readme.name} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
