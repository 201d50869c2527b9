"""Every command of the README and docs/ works as written (tests/helpers_readme.py: the markers).

The runnable shell blocks run with bash, in a person's order (the README, then docs/ in
helpers_readme.PAGES' order), after `make demo`
(its script), all in one copy of the project: as a person meets them, in the same clone. Each
runs in a shell like a user's (no venv on PATH), against the sandbox; a block that runs a
pipeline must write every call the sandbox serves.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import shlex
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tap_optico.sandbox import SANDBOX_API_KEY, build_server
from tests.helpers import expected_call_count, run_command
from tests.helpers_readme import (
    OTHER_PORT,
    PAGES,
    README,
    ROOT,
    SANDBOX_PORT,
    Block,
    background,
    free_port,
    jsonl_records,
    make_project_copy,
    marker_problems,
    readme_blocks,
    run_shell,
    sandbox_commands,
    sandbox_environment,
    sandbox_options,
    served_calls,
    shell_blocks,
    user_env,
    wait_until_free,
)
from tests.test_dbt import duckdb_rows

BLOCKS = shell_blocks()
RUNNABLE = [block for block in BLOCKS if block.kind in ("run", "repeat")]
SERVERS = [block for block in BLOCKS if block.kind == "server"]
# A block that reads the tap into a target must leave records behind.
PIPELINE = re.compile(r"\bmeltano\b[^\n]*\s(run|el)\s|--config\s|scripts/backfill\.py")


def test_every_shell_block_is_run_or_says_why_not() -> None:
    assert marker_problems(BLOCKS) == []
    assert [block.kind for block in BLOCKS].count("new-project") == 1
    assert RUNNABLE
    assert SERVERS
    # A fence without a language would not be recognised as shell.
    assert [block.where for page in PAGES for block in readme_blocks(page) if not block.lang] == []


LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings."""
    found = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return found


def test_every_docs_page_is_linked_from_the_readme_and_runs_in_order() -> None:
    linked = set(LINK.findall(README.read_text(encoding="utf-8")))
    pages = {path.relative_to(ROOT).as_posix() for path in (ROOT / "docs").glob("*.md")}
    assert pages <= linked, "a docs page the README does not link"
    assert pages == {path.relative_to(ROOT).as_posix() for path in PAGES[1:]}


def test_relative_links_reach_a_file_and_heading() -> None:
    broken = []
    for page in [*PAGES, ROOT / "CHANGELOG.md"]:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists() or (anchor and anchor not in anchors(file)):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_markers_are_checked(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "## A\n\n```sh\necho plain\n```\n\n<!-- readme-test: skip -->\n```sh\nexit 1\n```\n\n"
        "<!-- readme-test: later maybe -->\n```bash\nexit 1\n```\n\n```yaml\na: 1\n```\n",
        encoding="utf-8",
    )
    blocks = shell_blocks(readme)
    assert [(b.id, b.kind) for b in blocks] == [("a-1", "run"), ("a-2", "skip"), ("a-3", "later")]
    problems = marker_problems(blocks)
    assert len(problems) == 2
    assert "a-2" in problems[0]
    assert "a-3" in problems[1]


def test_sandbox_commands_serve_what_the_sandbox_environment_reads() -> None:
    config = sandbox_environment()
    commands = sandbox_commands(BLOCKS)
    assert len(commands) >= 2
    for arguments in commands:
        options = sandbox_options(arguments)
        assert options.first_day == dt.date.fromisoformat(config["start_date"]), arguments
        assert options.last_day == dt.date.fromisoformat(config["end_date"]), arguments
        port = arguments[arguments.index("--port") + 1]
        assert port in (SANDBOX_PORT, OTHER_PORT), arguments
        assert port == OTHER_PORT or f"127.0.0.1:{port}/" in config["api_url"]
    # The other port is given to the tap, where the block starts the sandbox on it.
    for block in BLOCKS:
        if f"--port {OTHER_PORT}" in block.text:
            assert f"TAP_OPTICO_API_URL=http://127.0.0.1:{OTHER_PORT}/data-api " in block.text


def test_generated_parts_are_current() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "readme.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-1000:]


def project_files(dest: Path) -> Path:
    """What `make readme` reads and writes, copied to ``dest``."""
    for name in ("README.md", "docs/targets.md", "meltano.yml", "pyproject.toml", "plugin/tap-optico.yml"):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes((ROOT / name).read_bytes())
    return dest


def test_make_readme_rewrites_stale_parts(tmp_path: Path) -> None:
    project = project_files(tmp_path)
    current = README.read_text(encoding="utf-8")
    lines = current.splitlines(keepends=True)
    end_of_table = lines.index("<!-- END generated: settings -->\n")
    stale = "".join(lines[: end_of_table - 1] + lines[end_of_table:])  # the last setting is gone
    (project / "README.md").write_text(stale, encoding="utf-8")
    plugin = (ROOT / "plugin" / "tap-optico.yml").read_text(encoding="utf-8")
    stale_plugin = plugin.replace("tap-optico==", "tap-optico>=")
    (project / "plugin" / "tap-optico.yml").write_text(stale_plugin, encoding="utf-8")
    script = [sys.executable, str(ROOT / "scripts" / "readme.py"), "--root", str(project)]
    check = subprocess.run([*script, "--check"], capture_output=True, text=True, timeout=120, check=False)
    assert check.returncode == 1
    assert lines[end_of_table - 1] in check.stdout
    assert "+pip_url: tap-optico==" in check.stdout
    assert (project / "README.md").read_text(encoding="utf-8") == stale
    rewrite = subprocess.run(script, capture_output=True, text=True, timeout=120, check=False)
    assert rewrite.returncode == 0, rewrite.stderr
    assert (project / "README.md").read_text(encoding="utf-8") == current
    assert (project / "plugin" / "tap-optico.yml").read_text(encoding="utf-8") == plugin


def test_make_readme_reads_meltano_yml_as_yaml_after_a_schedule_is_added(tmp_path: Path) -> None:
    """`meltano schedule add` rewrites meltano.yml (its own indentation, a schedules list): the
    generated parts stay what they were."""
    project = project_files(tmp_path)
    env = user_env(MELTANO_SEND_ANONYMOUS_USAGE_STATS="false")
    meltano = str(Path(sys.executable).parent / "meltano")
    add = [meltano, "schedule", "add", "optico-daily", "--job", "optico-to-jsonl", "--interval", "@daily"]
    scheduled = subprocess.run(
        add, cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert scheduled.returncode == 0, scheduled.stderr[-3000:]
    assert "schedules:" in (project / "meltano.yml").read_text(encoding="utf-8")
    script = [sys.executable, str(ROOT / "scripts" / "readme.py"), "--root", str(project), "--check"]
    check = subprocess.run(script, capture_output=True, text=True, timeout=120, check=False)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]


def written(work: Path, stream: str) -> list[Path]:
    """What target-jsonl wrote: in the copy (Singer pipes) or under output/ (Meltano)."""
    return sorted(work.glob(f"{stream}-*.jsonl")) + sorted((work / "output").rglob(f"{stream}-*.jsonl"))


def check_duckdb(block: Block, work: Path, sandbox: list[str]) -> None:
    """A block that loads into target-duckdb and builds the dbt models: the loaded tables and the
    models hold every call the sandbox serves, once."""
    count, days = served_calls(sandbox)
    path = work / "output" / "warehouse.duckdb"
    [calls] = duckdb_rows(
        path,
        "select count(*) as n, count(distinct (account, call_id)) as ids,"
        " list(distinct left(start_date_local, 10) order by 1) as days from optico.calls",
    )
    assert (calls["n"], calls["ids"], set(calls["days"])) == (count, count, days), block.id
    daily = duckdb_rows(path, "select distinct date from optico.daily_calls")
    assert {row["date"] for row in daily} == days, block.id
    [built] = duckdb_rows(path, "select count(*) as n from analytics.optico_calls")
    assert built["n"] == count, block.id


def check_outputs(block: Block, work: Path, sandbox: list[str], before: set[Path]) -> None:
    """What the block wrote (files that were not in ``before``) is every call the sandbox serves."""
    if "target-duckdb" in block.text:
        check_duckdb(block, work, sandbox)
        return
    calls = sorted(set(written(work, "calls")) - before)
    daily = sorted(set(written(work, "daily_calls")) - before)
    if PIPELINE.search(block.text):
        assert calls, f"{block.id}: the block runs the tap but wrote no calls"
    if not calls:
        return
    count, days = served_calls(sandbox)
    records = jsonl_records(calls)
    assert len({(record["account"], record["call_id"]) for record in records}) == count, block.id
    assert {record["start_date_local"][:10] for record in records} == days, block.id
    assert {record["date"] for record in jsonl_records(daily)} == days, block.id


def run_block(block: Block, work: Path, port: int) -> None:
    """Run a block as a person would, in ``work``, with the sandbox running (its own, or else the
    one the README starts first)."""
    env = user_env()
    script = block.text.replace(SANDBOX_PORT, str(port)).replace(OTHER_PORT, str(free_port()))
    own = sandbox_commands([block])
    sandbox = own[0] if own else sandbox_commands(BLOCKS)[0]
    before = {*written(work, "calls"), *written(work, "daily_calls")}
    with contextlib.ExitStack() as stack:
        if not own:
            command = shlex.join([".venv/bin/tap-optico-sandbox", *sandbox]).replace(SANDBOX_PORT, str(port))
            stack.enter_context(background(command, work, env, port))
        for number in range(3 if block.kind == "repeat" else 1):
            # Counted in lines: a run within the same second as the one before appends to its file.
            earlier = len(jsonl_records(written(work, "calls")))
            run = run_shell(script, work, env)
            assert run.returncode == 0, f"{block.where}:\n{run.output[-5000:]}"
            if own:
                wait_until_free(port)
            if number:  # a later run reads from the state the one before saved: its last days again
                again = len(jsonl_records(written(work, "calls"))) - earlier
                everything = served_calls(sandbox)[0]
                assert again < everything, f"{block.id}: run {number + 1} read everything again"
                assert again, f"{block.id}: run {number + 1} read nothing (past the days served?)"
    check_outputs(block, work, sandbox, before)


def check_server_block(block: Block, work: Path, port: int) -> None:
    """A server block: started, checked to answer, stopped."""
    [command] = [line for line in block.text.splitlines() if line.strip()]
    [arguments] = sandbox_commands([block])
    options = sandbox_options(arguments)
    with background(command.replace(SANDBOX_PORT, str(port)), work, user_env(), port):
        day = options.first_day.isoformat()
        query = f"api_key={SANDBOX_API_KEY}&type=calls&start_date={day}&end_date={day}&limit=10"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data-api?{query}", timeout=30) as answer:
            body = json.load(answer)
    assert body["status"] == "OK", block.id
    assert body["total_results"] == options.calls_per_day, block.id
    wait_until_free(port)


def run_demo(work: Path) -> None:
    """`make demo` is make install plugins, then scripts/demo.py: run the script in the copy."""
    demo = run_command(
        [str(work / ".venv" / "bin" / "python"), "scripts/demo.py"],
        cwd=work,
        env=user_env(),
        timeout=600,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-3000:]
    server = build_server()  # what the demo serves: its defaults
    server.close()
    records = jsonl_records(sorted((work / "output").glob("calls-*.jsonl")))
    assert len({record["call_id"] for record in records}) == expected_call_count(server)
    assert "This run wrote:" in demo.stdout
    days = (server.api.data.last_day - server.api.data.first_day).days + 1
    assert f"Reconciliation: reconciled {days} account-days against Optico's daily totals: {days} match" in (
        demo.stdout
    )


def untracked(work: Path, *, ignored: bool = False) -> set[str]:
    """The files of ``work`` that `git add .` would add (.gitignore applied), or with ``ignored``
    every file git does not track."""
    listing = subprocess.run(
        ["git", "ls-files", "--others", *(() if ignored else ("--exclude-standard",))],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(listing.stdout.splitlines())


def readable_by_others_with_the_key(work: Path, names: set[str]) -> list[str]:
    """Those of the files ``names`` that hold the sandbox's key and that another user can read."""
    key = SANDBOX_API_KEY.encode()
    return sorted(
        f"{name} ({stat.filemode(path.stat().st_mode)})"
        for name in names
        if (path := work / name).is_file()
        and not path.is_symlink()
        and path.stat().st_mode & 0o077
        and key in path.read_bytes()
    )


@pytest.mark.e2e
def test_readme_in_order_after_make_demo(tmp_path: Path) -> None:
    """A person's path through the README: `make demo`, then every block in the README's order, in
    the same clone (one copy of the project, with one system database and one output/); every block
    runs (or says why not), the files they leave are all ignored by git, and none of them that holds
    a key is readable by another user."""
    port = free_port()
    work = make_project_copy(tmp_path / "project", port)
    (work / ".gitignore").write_bytes((ROOT / ".gitignore").read_bytes())
    subprocess.run(["git", "init", "--quiet"], cwd=work, check=True)
    before, before_ignored = untracked(work), untracked(work, ignored=True)
    run_demo(work)
    ran = []
    for block in BLOCKS:
        if block.kind == "server":
            check_server_block(block, work, port)
        elif block.kind in ("run", "repeat"):
            run_block(block, work, port)
        else:  # skip: says why; new-project: tests/test_install.py runs it in a project of its own
            continue
        ran.append(block.id)
    assert set(ran) == {block.id for block in RUNNABLE + SERVERS}
    assert untracked(work) - before == set(), "files the README's commands create that git would add"
    written_files = untracked(work, ignored=True) - before_ignored
    assert readable_by_others_with_the_key(work, written_files) == [], "a key in a file others can read"


@pytest.mark.e2e
def test_the_account_groups_loop_fails_when_any_group_fails(tmp_path: Path) -> None:
    """The README's account-groups loop, with a key the sandbox refuses in the first group only:
    the loop still waits for every group, and fails."""
    [block] = [block for block in RUNNABLE if "for group in" in block.text]
    fetch = re.compile(r"^(?P<indent> *)accounts=\"\$\(.*--print-accounts.*$", re.MULTILINE)
    wrong_key = """sed 's/"api_key": "[^"]*"/"api_key": "0000refused0000"/'"""
    refuse = (
        r"\g<0>"
        + "\n"
        + r"\g<indent>"
        + f"""[ "$group" != 1/2 ] || accounts="$(printf '%s' "$accounts" | {wrong_key})\""""
    )
    changed, count = fetch.subn(refuse, block.text)
    assert count == 1, block.text
    port = free_port()
    work = make_project_copy(tmp_path / "project", port)
    # As typed in a terminal: no `set -e` to stop at the first group that failed.
    run = run_shell(changed.replace(SANDBOX_PORT, str(port)), work, user_env(), strict=False)
    assert run.returncode != 0, run.output[-3000:]
    assert "Clef API invalide" in run.output
    # The other group was read in full, and the failing one read its other account.
    groups = {path.parent.name for path in (work / "output").rglob("calls-*.jsonl")}
    assert groups == {"agency-group-1", "agency-group-2"}
    records = jsonl_records(sorted((work / "output").rglob("calls-*.jsonl")))
    assert {record["account"] for record in records} == {"account-2", "account-3", "account-4"}
