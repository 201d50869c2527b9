"""Dagster for real: orchestrate/ runs Meltano against the sandbox over HTTP, group by group, day by day.

Each test works in its own copy of the project with a temporary DAGSTER_HOME; a daemon, where
one is needed (the run queue, the pools), is started by the test and stopped by its process id;
the processes of a run are found from the daemon's process id and their sessions, never by name.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import psutil
import pytest
from dagster_k8s import K8sRunLauncher
from ruamel.yaml import YAML

from orchestrate.groups import pool
from tap_optico.sandbox import Faults, SandboxServer, account_key
from tests.helpers import SandboxFactory, run_command
from tests.helpers_readme import (
    ROOT,
    SANDBOX_PORT,
    VENV,
    Block,
    background,
    free_port,
    jsonl_records,
    make_project_copy,
    run_shell,
    shell_blocks,
    user_env,
)
from tests.test_meltano import postgres, psql

pytestmark = pytest.mark.e2e
__all__ = ["postgres"]  # the PostgreSQL server fixture, for the cluster instance

BIN = VENV / "bin"
LOCATION = ["-m", "orchestrate.definitions"]
ENVIRONMENT = "sandbox-accounts"
MARCH_1, MARCH_31 = dt.date(2026, 3, 1), dt.date(2026, 3, 31)
README_BLOCKS = [block for block in shell_blocks() if block.kind == "dagster"]
SERVED = [block for block in README_BLOCKS if block.reason.startswith("server")]
RUN = [block for block in README_BLOCKS if block not in SERVED]
REFUSED_KEY = "0123456789abcdef0123456789abcdef"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def dagster_copy(dest: Path, port: int) -> Path:
    """A copy of the project (tests/helpers_readme.py) with orchestrate/ and what `make` reads."""
    work = make_project_copy(dest, port)
    shutil.copytree(ROOT / "orchestrate", work / "orchestrate", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Makefile", "pyproject.toml"):
        shutil.copyfile(ROOT / name, work / name)
    # `make` must find the venv and the plugins (the checkout's, linked) up to date: older
    # prerequisites than their stamps, so that it never installs anything through the links.
    installed = (VENV / ".installed-stamp").stat().st_mtime
    os.utime(work / "pyproject.toml", (installed - 1, installed - 1))
    (work / ".meltano" / ".installed-stamp").touch()
    return work


def run(work: Path, env: dict[str, str], command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A command of the venv, in the project, to its end."""
    return run_command([str(BIN / command), *args], cwd=work, env=env, timeout=300)


def accounts(*numbers: int) -> list[dict[str, str]]:
    return [{"name": f"account-{n}", "api_key": account_key(n)} for n in numbers]


REFUSED = {"name": "refused-account", "api_key": REFUSED_KEY}


@dataclass
class Deployment:
    """The project, an instance, each group's secret and the environment Dagster runs in."""

    work: Path
    home: Path
    env: dict[str, str]
    instance: dg.DagsterInstance = field(init=False)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "orchestrate" / "dagster.yaml", self.home / "dagster.yaml")
        self.instance = dg.DagsterInstance.from_config(str(self.home))

    def run(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return run(self.work, self.env, command, *args)

    def dagster(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.run("dagster", *args, *LOCATION)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    def launch(self, group: str, first: dt.date, last: dt.date | None = None) -> None:
        """A run of the group's job for a range of days, through the run queue; a single day with
        only the `dagster/partition` tag, as an API client would give it."""
        if last is None:
            tags = {"dagster/partition": first.isoformat()}
        else:
            tags = {
                "dagster/asset_partition_range_start": str(first),
                "dagster/asset_partition_range_end": str(last),
            }
        self.dagster("job", "launch", "-j", f"optico_{group}", "--tags", json.dumps(tags))

    @contextlib.contextmanager
    def daemon(self) -> Iterator[psutil.Process]:
        """`dagster-daemon run` in a session of its own, stopped by its process id."""
        with (self.home / "daemon.log").open("w", encoding="utf-8") as log:
            process = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", *LOCATION],
                cwd=self.work,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                yield psutil.Process(process.pid)
            finally:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()

    def wait_for(self, done: Callable[[list[dg.RunRecord]], bool], timeout: float) -> list[dg.RunRecord]:
        """The instance's runs once `done` holds for them (looked at every half second)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = list(self.instance.get_run_records())
            if done(records):
                return records
            time.sleep(0.5)
        log = (self.home / "daemon.log").read_text(encoding="utf-8")[-4000:]
        runs = [(r.dagster_run.job_name, days(r), r.dagster_run.status.value) for r in records]
        raise AssertionError(f"not done after {timeout} s: {runs}\n{log}")

    def error_lines(self, record: dg.RunRecord) -> list[str]:
        entries = self.instance.all_logs(record.dagster_run.run_id)
        return [entry.user_message for entry in entries if entry.level == logging.ERROR]

    def events(self, record: dg.RunRecord, kind: dg.DagsterEventType) -> dict[str, list[dict[str, Any]]]:
        """Each asset's materialisations or observations in a run: their metadata."""
        found: dict[str, list[dict[str, Any]]] = {}
        for entry in self.instance.all_logs(record.dagster_run.run_id, of_type=kind):
            event = entry.asset_materialization or entry.asset_observation
            assert event is not None
            metadata = {key: value.value for key, value in event.metadata.items()}
            found.setdefault(event.asset_key.to_user_string(), []).append(
                {**metadata, "partition": event.partition}
            )
        return found


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    deployments: list[Deployment] = []

    def make(server: SandboxServer, **groups: list[dict[str, str]]) -> Deployment:
        secrets = tmp_path / "secrets"
        secrets.mkdir(mode=0o700)
        for name, group in groups.items():
            path = secrets / f"{name}.json"
            path.write_text(json.dumps(group), encoding="utf-8")
            path.chmod(0o600)
        env = user_env(
            DAGSTER_HOME=str(tmp_path / "dagster-home"),
            MELTANO_ENVIRONMENT=ENVIRONMENT,
            OPTICO_GROUPS=",".join(groups),
            OPTICO_GROUP_SECRET=f"file:{secrets}/{{group}}.json",
            OPTICO_HISTORY_START="2026-01-01",
        )
        work = dagster_copy(tmp_path / "project", server.port)
        deployment = Deployment(work, tmp_path / "dagster-home", env)
        deployments.append(deployment)
        return deployment

    yield make
    for deployment in deployments:
        deployment.instance.dispose()


def days(record: dg.RunRecord) -> str:
    tags = record.dagster_run.tags
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    return (
        f"{tags.get('dagster/asset_partition_range_start')}..{tags.get('dagster/asset_partition_range_end')}"
    )


def group_of(record: dg.RunRecord) -> str:
    return record.dagster_run.job_name.removeprefix("optico_")


def finished(records: list[dg.RunRecord]) -> bool:
    return all(record.dagster_run.is_finished for record in records)


def overlap(one: dg.RunRecord, other: dg.RunRecord) -> bool:
    starts, ends = (one.start_time or 0, other.start_time or 0), (one.end_time or 0, other.end_time or 0)
    return max(starts) < min(ends)


def calls(folder: Path) -> list[dict[str, Any]]:
    return jsonl_records(sorted(folder.rglob("calls-*.jsonl")))


def test_groups_side_by_side_a_failed_account_fails_its_group_a_second_run_of_a_group_waits(
    make_sandbox: SandboxFactory, deploy: Callable[..., Deployment]
) -> None:
    server = make_sandbox(first_day=MARCH_1, last_day=MARCH_31, calls_per_day=10, accounts=2)
    deployment = deploy(server, one=accounts(1), two=[*accounts(2), REFUSED])
    deployment.launch("one", MARCH_1, MARCH_31)
    deployment.launch("two", MARCH_1, MARCH_31)
    deployment.launch("one", dt.date(2026, 3, 5))  # the tag `dagster/partition` alone
    waiting: list[bool] = []

    def done(records: list[dg.RunRecord]) -> bool:
        ones = [r.dagster_run.status for r in records if group_of(r) == "one"]
        if dg.DagsterRunStatus.QUEUED in ones and dg.DagsterRunStatus.STARTED in ones:
            waiting.append(True)
        return len(records) == 3 and finished(records)

    with deployment.daemon():
        records = deployment.wait_for(done, timeout=300)

    by_group: dict[str, list[dg.RunRecord]] = {}
    for record in sorted(records, key=lambda r: r.start_time or 0):
        by_group.setdefault(group_of(record), []).append(record)
    status = {
        group: [(days(r), r.dagster_run.status.value) for r in runs] for group, runs in by_group.items()
    }
    assert status == {
        "one": [("2026-03-01..2026-03-31", "SUCCESS"), ("2026-03-05", "SUCCESS")],
        "two": [("2026-03-01..2026-03-31", "FAILURE")],
    }
    (month, day), [two] = by_group["one"], by_group["two"]
    # Side by side: two groups' runs overlap; the second run of `one` waited for the first.
    assert overlap(month, two)
    assert waiting, "the second run of `one` was never seen queued while the first ran"
    assert (day.start_time or 0) >= (month.end_time or 0)

    # A month in one run: each table materialised for each of its days, with what was loaded.
    loaded = deployment.events(month, dg.DagsterEventType.ASSET_MATERIALIZATION)
    assert sorted(loaded) == ["optico/one/calls", "optico/one/daily_calls"]
    calls_one = loaded["optico/one/calls"]
    assert [m["partition"] for m in calls_one] == [str(MARCH_1 + dt.timedelta(days=n)) for n in range(31)]
    assert {m["dagster/row_count"] for m in calls_one} == {31 * 10}
    assert {m["dagster/row_count"] for m in loaded["optico/one/daily_calls"]} == {31}
    assert calls_one[0]["days"] == "2026-03-01..2026-03-31"
    assert calls_one[0]["newest"][:10] >= "2026-03-31"
    assert list(calls_one[0]["read up to"]) == ["account-1"]
    materialized = deployment.instance.get_materialized_partitions(dg.AssetKey(["optico", "one", "calls"]))
    assert len(materialized) == 31

    # A day again: that day read, and nothing else.
    windows = {
        (r.params["start_date"], r.params["end_date"])
        for r in server.requests
        if r.params["api_key"] == account_key(1)
    }
    weeks = {
        (str(MARCH_1 + dt.timedelta(days=n)), str(min(MARCH_1 + dt.timedelta(days=n + 6), MARCH_31)))
        for n in range(0, 31, 7)
    }
    assert windows == weeks | {("2026-03-05", "2026-03-05")}  # the month's windows, then that day
    records_of_the_day = calls(deployment.work / "output" / "one" / "2026-03-05..2026-03-05")
    assert len(records_of_the_day) == 10
    assert {r["account"] for r in records_of_the_day} == {"account-1"}
    assert (
        len({r["call_id"] for r in calls(deployment.work / "output" / "one" / "2026-03-01..2026-03-31")})
        == 310
    )

    # The refused key fails its group: the tap's ERROR line in the run's log and its failure;
    # what did load (the other account) and the failed account, on each table's days.
    errors = deployment.error_lines(two)
    tap_errors = [line for line in errors if line.startswith("tap-optico:") and "refused-account" in line]
    assert any("Clef API invalide" in line for line in tap_errors), errors
    assert REFUSED_KEY[:8] not in "\n".join(errors)
    observed = deployment.events(two, dg.DagsterEventType.ASSET_OBSERVATION)
    assert sorted(observed) == ["optico/two/calls", "optico/two/daily_calls"]
    assert {m["failed accounts"] for m in observed["optico/two/calls"]} == {"refused-account"}
    assert {m["dagster/row_count"] for m in observed["optico/two/calls"]} == {31 * 10}
    assert list(observed["optico/two/calls"][0]["read up to"]) == ["account-2"]
    assert not deployment.instance.get_materialized_partitions(dg.AssetKey(["optico", "two", "calls"]))


def pipeline_sessions(daemon: psutil.Process) -> set[int]:
    """The sessions a run started (Meltano starts each pipeline in a session of its own)."""
    sessions = set()
    for child in daemon.children(recursive=True):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            session = os.getsid(child.pid)
            if session != os.getsid(daemon.pid):
                sessions.add(session)
    return sessions


def in_sessions(sessions: set[int]) -> list[str]:
    """The command lines of every process still in those sessions, whoever their parent now is."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getsid(process.pid) in sessions:
                found.append(" ".join(process.info["cmdline"] or []))
    return found


def test_a_cancelled_run_stops_meltano_and_the_tap(
    make_sandbox: SandboxFactory, deploy: Callable[..., Deployment]
) -> None:
    """Cancelled, a run ends its pipeline: the group is free only once nothing loads its days."""
    server = make_sandbox(first_day=MARCH_1, last_day=MARCH_31, calls_per_day=10, faults=Faults(latency=0.3))
    deployment = deploy(server, one=accounts(1))
    deployment.env.update(TAP_OPTICO_MAX_CONCURRENCY="1", TAP_OPTICO_PAGE_SIZE="10")  # a minute of requests
    deployment.launch("one", MARCH_1, MARCH_31)
    with deployment.daemon() as daemon:
        [record] = deployment.wait_for(lambda records: len(records) == 1 and len(server.requests) > 3, 120)
        sessions = pipeline_sessions(daemon)
        assert any("tap-optico --config" in command for command in in_sessions(sessions)), sessions
        assert deployment.instance.run_launcher.terminate(record.dagster_run.run_id)
        deployment.wait_for(finished, timeout=60)
        stopped = len(server.requests)
        time.sleep(3)
        assert len(server.requests) == stopped, "the tap kept reading after its run was cancelled"
        assert in_sessions(sessions) == []
    [record] = deployment.instance.get_run_records()
    assert record.dagster_run.status == dg.DagsterRunStatus.CANCELED


def written_files(folders: list[Path], since: float) -> Iterator[Path]:
    """Regular files under `folders` changed since `since` (links, such as the linked venv, not
    followed; sockets and pipes, which a process may leave in its TMPDIR, hold no file's text)."""
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            dirs[:] = [name for name in dirs if not (Path(root) / name).is_symlink()]
            for name in files:
                path = Path(root) / name
                with contextlib.suppress(OSError):
                    if not path.is_symlink() and path.is_file() and path.stat().st_mtime >= since:
                        yield path


def test_a_run_holds_its_own_groups_keys_only_and_writes_them_for_its_owner_only(
    make_sandbox: SandboxFactory, deploy: Callable[..., Deployment], tmp_path: Path
) -> None:
    server = make_sandbox(
        first_day=MARCH_1, last_day=MARCH_31, calls_per_day=10, accounts=3, faults=Faults(latency=0.1)
    )
    # Keys of accounts 2 and 3: account 1's is the sandbox's documented key, in meltano.yml.
    deployment = deploy(server, one=accounts(2), two=accounts(3))
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    deployment.env.update(TMPDIR=str(temporary), TAP_OPTICO_MAX_CONCURRENCY="1", TAP_OPTICO_PAGE_SIZE="50")
    own, other = account_key(3), account_key(2)
    folders = [deployment.work, deployment.home, temporary]
    since = time.time()
    deployment.launch("two", MARCH_1, MARCH_31)
    holders: set[int] = set()
    files_with_the_key: dict[Path, int] = {}
    with deployment.daemon() as daemon:
        daemon_session, polls = os.getsid(daemon.pid), 0
        while not (records := list(deployment.instance.get_run_records())) or not finished(records):
            polls += 1
            assert polls < 1200, "the run did not end in 2 minutes"
            for process in [daemon, *daemon.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    environ = "\n".join(f"{k}={v}" for k, v in process.environ().items())
                    assert other not in environ.lower(), process.cmdline()
                    if own in environ:
                        holders.add(os.getsid(process.pid))
            for path in written_files(folders, since):
                with contextlib.suppress(OSError):
                    text = path.read_bytes().decode("utf-8", "replace").lower()
                    assert other not in text, path
                    if own in text:
                        files_with_the_key[path] = stat.S_IMODE(path.stat().st_mode)
            time.sleep(0.1)
    [record] = records
    assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS, deployment.error_lines(record)
    # The key reached the pipeline that needs it (Meltano's session), not the daemon, nor
    # Dagster's code server, nor the run's own process (the daemon's session).
    assert holders, "no process of the run was seen holding its group's key"
    assert daemon_session not in holders
    # Meltano's config file for the tap held the key for the run: its owner's only; and no
    # other file the run wrote (output, logs, Dagster's storage) holds either key at the end.
    assert files_with_the_key, "the tap's config file was never seen"
    assert {path: mode for path, mode in files_with_the_key.items() if mode & 0o077} == {}
    for path in written_files(folders, since):
        text = path.read_bytes().decode("utf-8", "replace").lower()
        assert other not in text, path
        assert own not in text or stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def validate(work: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run(work, env, "dagster", "definitions", "validate", *LOCATION)


def test_definitions_load_with_each_executor_and_the_cluster_instance(
    tmp_path: Path, postgres: dict[str, Any]
) -> None:
    work = dagster_copy(tmp_path / "project", free_port())
    env = user_env(
        MELTANO_ENVIRONMENT=ENVIRONMENT,
        OPTICO_GROUPS="agency-group-1",
        OPTICO_GROUP_SECRET="kubernetes:optico-group-{group}",
    )
    local = tmp_path / "local"
    local.mkdir()
    shutil.copyfile(ROOT / "orchestrate" / "dagster.yaml", local / "dagster.yaml")
    for executor in ("in_process", "multiprocess"):
        done = validate(work, {**env, "DAGSTER_HOME": str(local), "OPTICO_EXECUTOR": executor})
        assert done.returncode == 0, done.stderr[-3000:]
        assert "All code locations passed validation" in done.stdout + done.stderr
    wrong = validate(work, {**env, "DAGSTER_HOME": str(local), "OPTICO_EXECUTOR": "threads"})
    assert wrong.returncode == 1
    assert "OPTICO_EXECUTOR must be one of in_process, multiprocess" in wrong.stdout + wrong.stderr
    alone = validate(work, {**user_env(MELTANO_ENVIRONMENT=ENVIRONMENT), "DAGSTER_HOME": str(local)})
    assert alone.returncode == 1
    assert "no account group: set OPTICO_GROUPS" in alone.stdout + alone.stderr
    old = {**env, "DAGSTER_HOME": str(local), "OPTICO_GROUP_AGENCY_GROUP_1": json.dumps(accounts(1))}
    upgraded = validate(work, old)
    assert upgraded.returncode == 1
    assert "OPTICO_GROUP_AGENCY_GROUP_1 holds a group's keys" in upgraded.stdout + upgraded.stderr
    assert account_key(1) not in upgraded.stdout + upgraded.stderr


def dockerfile_copies() -> list[str]:
    """The project's files deploy/Dockerfile copies into the image."""
    sources: list[str] = []
    for line in (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.startswith("COPY "):
            sources += line.split()[1:-1]
    return sources


def test_the_images_install_steps_give_a_working_code_location_in_a_clean_environment(
    make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    """deploy/install.sh, as the Dockerfile runs it, on what the Dockerfile copies, into a new
    venv: the extras hold all a code location needs, and a run works from the installed packages."""
    image = tmp_path / "image"
    for source in dockerfile_copies():
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, image / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (image / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / source, image / source)
    venv, env = tmp_path / "venv", user_env()
    install = [str(image / "deploy" / "install.sh"), str(image), str(venv), "tap-optico", "target-jsonl"]
    done = run_command(install, cwd=tmp_path, env=env, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    modules = "orchestrate, dagster_webserver, dagster_k8s, dagster_postgres, dagster_aws, meltano, boto3"
    probe = run_command(
        [str(venv / "bin" / "python"), "-c", f"import {modules}; print(orchestrate.__file__)"],
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.startswith(str(venv)), probe.stdout  # the wheel's orchestrate/, not a checkout's

    server = make_sandbox(first_day=MARCH_1, last_day=MARCH_31, calls_per_day=10)
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "one.json").write_text(json.dumps(accounts(1)), encoding="utf-8")
    (secrets / "one.json").chmod(0o600)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(ROOT / "orchestrate" / "dagster.yaml", home / "dagster.yaml")
    env.update(
        MELTANO_PROJECT_ROOT=str(image),  # as the Dockerfile sets it
        DAGSTER_HOME=str(home),
        MELTANO_ENVIRONMENT=ENVIRONMENT,
        OPTICO_GROUPS="one",
        OPTICO_GROUP_SECRET=f"file:{secrets}/{{group}}.json",
        OPTICO_HISTORY_START="2026-01-01",
        TAP_OPTICO_API_URL=server.url,
    )
    materialize = [
        "asset",
        "materialize",
        *LOCATION,
        "--select",
        "key:optico/one/*",
        "--partition",
        "2026-03-05",
    ]
    done = run_command([str(venv / "bin" / "dagster"), *materialize], cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(calls(image / "output" / "one" / "2026-03-05..2026-03-05")) == 10


def snake(value: Any) -> Any:
    """Helm's camelCase keys as dagster.yaml's snake_case, as the chart's templates write them."""
    if isinstance(value, dict):
        return {re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower(): snake(item) for key, item in value.items()}
    return [snake(item) for item in value] if isinstance(value, list) else value


def chart_instance(values: dict[str, Any], postgres: dict[str, Any], kubeconfig: Path) -> dict[str, Any]:
    """The dagster.yaml the chart writes from deploy/helm/values.yaml (its parts the values set),
    with a kubeconfig where a pod reads its service account, and a real PostgreSQL server."""
    launcher = snake(values["runLauncher"]["config"]["k8sRunLauncher"])
    launcher.update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    launcher["env_secrets"] = [secret["name"] for secret in launcher.get("env_secrets", [])]
    launcher.update(
        job_namespace="optico",
        service_account_name="dagster",
        instance_config_map="dagster-instance",
        postgres_password_secret="dagster-postgresql-secret",
        dagster_home="/opt/dagster/dagster_home",
    )
    run_k8s = launcher.pop("run_k8s_config")
    launcher["run_k8s_config"] = {
        **run_k8s,
        "pod_spec_config": values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"],
    }
    logs = values["computeLogManager"]
    coordinator = snake(values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"])
    for limit in coordinator["tag_concurrency_limits"]:
        limit["value"] = {"applyLimitPerUniqueValue": limit["value"]["apply_limit_per_unique_value"]}
    return {
        "storage": {
            "postgres": {
                "postgres_db": {
                    "hostname": postgres["host"],
                    "port": postgres["port"],
                    "username": postgres["user"],
                    "password": "unused",
                    "db_name": postgres["database"],
                }
            }
        },
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher},
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": coordinator,
        },
        "compute_logs": {
            "module": "dagster_aws.s3.compute_log_manager",
            "class": logs["type"],
            "config": snake(logs["config"]["s3ComputeLogManager"]),
        },
        "run_monitoring": snake(values["dagsterDaemon"]["runMonitoring"]),
        "run_retries": snake(values["dagsterDaemon"]["runRetries"]),
        "telemetry": values["telemetry"],
    }


def test_the_helm_values_make_an_instance_dagster_accepts(tmp_path: Path, postgres: dict[str, Any]) -> None:
    """What can be checked here of deploy/helm/values.yaml, without the chart or a cluster: its
    instance settings, as the chart passes them on, are accepted by the installed dagster and
    dagster-k8s; the user deployment runs the code location as the image does."""
    values = YAML(typ="safe").load(ROOT / "deploy" / "helm" / "values.yaml")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG, encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    YAML(typ="safe").dump(chart_instance(values, postgres, kubeconfig), home / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        launcher = instance.run_launcher
        assert isinstance(launcher, K8sRunLauncher)
        assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
        assert instance.run_coordinator is not None
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        run = dg.DagsterRun(job_name="optico_agency_1", tags={"optico/group": "agency-1"})
        context = launcher.get_container_context_for_run(run)
        pod = context.run_k8s_config.pod_spec_config
        assert pod.get("serviceAccountName", pod.get("service_account_name")) == "optico-runs"
        assert context.run_k8s_config.container_config["resources"]["limits"]["memory"] == "2Gi"
    finally:
        instance.dispose()

    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == LOCATION
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    env = deployment["env"]
    assert env["OPTICO_GROUP_SECRET"] == "kubernetes:optico-group-{group}"
    groups = env["OPTICO_GROUPS"].split(",")
    rbac = list(YAML(typ="safe").load_all(ROOT / "deploy" / "kubernetes" / "optico-runs.yaml"))
    [role] = [item for item in rbac if item["kind"] == "Role"]
    assert role["rules"][0]["resourceNames"] == [f"optico-group-{group}" for group in groups]
    # The code location loads with the deployment's settings and the chart's instance (its
    # PostgreSQL storage, made here on a real server).
    work = dagster_copy(tmp_path / "project", free_port())
    done = validate(work, user_env(DAGSTER_HOME=str(home), **{k: str(v) for k, v in env.items()}))
    assert done.returncode == 0, done.stderr[-3000:]
    assert psql(postgres, "select count(*) from information_schema.tables where table_name = 'runs'") == "1"


KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: test, user: {token: unused}}]
contexts: [{name: test, context: {cluster: test, user: test}}]
current-context: test
"""


LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def graphql(port: int, query: str) -> dict[str, Any]:
    text = urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/graphql?{text}", timeout=60) as answer:
        data: dict[str, Any] = json.load(answer).get("data") or {}
    return data


def asset_nodes(port: int, timeout: float = 120) -> list[dict[str, Any]]:
    """The assets the UI shows, once it has loaded the code location."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes: list[dict[str, Any]] = (
            graphql(port, "{ assetNodes { assetKey { path } partitionKeys } }").get("assetNodes") or []
        )
        if nodes:
            return nodes
        time.sleep(0.5)
    raise AssertionError(f"the UI shows no asset after {timeout} s: {graphql(port, LOCATIONS)}")


LAUNCH_BACKFILL = """mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
RUNS = """query($id: String!) { runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
  ... on Runs { results { status startTime endTime tags { key value } } } } }"""


def post_graphql(port: int, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - http to 127.0.0.1
        data: dict[str, Any] = json.load(answer)
    assert not data.get("errors"), data
    return dict(data["data"])


def launch_backfill(port: int, group: str, first: dt.date, last: dt.date) -> str:
    """A backfill of both tables of a group, as the UI's Materialize button launches it."""
    days = [str(first + dt.timedelta(days=n)) for n in range((last - first).days + 1)]
    params = {
        "assetSelection": [{"path": ["optico", group, stream]} for stream in ("calls", "daily_calls")],
        "partitionNames": days,
    }
    launched = post_graphql(port, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return str(launched["backfillId"])


def wait_for_runs(port: int, backfill: str, count: int, timeout: float) -> list[dict[str, Any]]:
    """The backfill's runs, oldest first, once `count` of them have ended."""
    deadline = time.monotonic() + timeout
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = post_graphql(port, RUNS, {"id": backfill})["runsOrError"]["results"]
        if len(runs) == count and all(run["status"] in ("SUCCESS", "FAILURE", "CANCELED") for run in runs):
            for run in runs:
                tags = {tag["key"]: tag["value"] for tag in run["tags"]}
                run["days"] = f"{tags.get(RANGE_START)}..{tags.get(RANGE_END)}"
            return sorted(runs, key=lambda run: run["days"])
        time.sleep(1)
    raise AssertionError(f"the backfill's runs after {timeout} s: {runs}")


#: The account groups of `make dagster` (orchestrate/local.py).
GROUPS = ["agency-group-1", "agency-group-2"]


@pytest.mark.parametrize("block", SERVED, ids=lambda block: block.id)
def test_readme_make_dagster_serves_the_ui(block: Block, tmp_path: Path) -> None:
    work = dagster_copy(tmp_path / "project", free_port())
    [command] = [line.split("#")[0].strip() for line in block.text.splitlines() if line.strip()]
    port = free_port()
    with background(command, work, user_env(DAGSTER_PORT=str(port)), port, tmp_path / "make-dagster.log"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=30) as answer:
            assert json.load(answer)["dagster_version"] == dg.__version__
        nodes = asset_nodes(port)
        # Each group's pool has its limit before any run is queued: Dagster would give it the
        # default only as its first runs are queued, and launch those runs together.
        with dg.DagsterInstance.from_config(str(work / ".dagster")) as instance:
            storage = instance.event_log_storage
            limits = {name: storage.get_concurrency_info(pool(name)).slot_count for name in GROUPS}
        assert limits == dict.fromkeys(GROUPS, 1)
        # A backfill from the UI, of January to March of one group: runs of at most 31 days,
        # one at a time (the group's pool), each loading both tables.
        backfill = launch_backfill(port, "agency-group-1", dt.date(2026, 1, 1), dt.date(2026, 3, 31))
        runs = wait_for_runs(port, backfill, 3, timeout=600)
    assert [(run["days"], run["status"]) for run in runs] == [
        ("2026-01-01..2026-01-31", "SUCCESS"),
        ("2026-02-01..2026-03-03", "SUCCESS"),
        ("2026-03-04..2026-03-31", "SUCCESS"),
    ]
    for before, after in itertools.pairwise(runs):
        assert before["endTime"] <= after["startTime"], "two runs of a group at once"
    records = calls(work / "output" / "agency-group-1")
    assert len({(r["account"], r["call_id"]) for r in records}) == 2 * 90 * 50
    partitions = {"/".join(node["assetKey"]["path"]): node["partitionKeys"] for node in nodes}
    assert sorted(partitions) == [
        f"optico/agency-group-{n}/{stream}" for n in (1, 2) for stream in ("calls", "daily_calls")
    ]
    yesterday = dt.datetime.now(ZoneInfo("Europe/Paris")).date() - dt.timedelta(days=1)
    for keys in partitions.values():  # a day each, from the first day of the sandbox to yesterday
        assert (keys[0], keys[-1], len(keys)) == (
            "2026-01-01",
            str(yesterday),
            (yesterday - dt.date(2026, 1, 1)).days + 1,
        )
    secrets = work / ".dagster" / "secrets"
    assert sorted(path.name for path in secrets.iterdir()) == ["agency-group-1.json", "agency-group-2.json"]
    assert {stat.S_IMODE(path.stat().st_mode) for path in secrets.iterdir()} == {0o600}
    assert (work / ".dagster" / "dagster.yaml").exists()


@pytest.mark.parametrize("block", RUN, ids=lambda block: block.id)
def test_readme_dagster_block_runs(block: Block, tmp_path: Path) -> None:
    port = free_port()
    work = dagster_copy(tmp_path / "project", port)
    run = run_shell(block.text.replace(SANDBOX_PORT, str(port)), work, user_env(), timeout=300)
    assert run.returncode == 0, run.output[-5000:]
    march = calls(work / "output" / "agency-group-1" / "2026-03-01..2026-03-31")
    day = calls(work / "output" / "agency-group-2" / "2026-03-31..2026-03-31")
    assert {r["account"] for r in march} == {"account-1", "account-3"}
    assert {r["account"] for r in day} == {"account-2", "account-4"}
    assert len({(r["account"], r["call_id"]) for r in march}) == 2 * 31 * 200
    assert len({(r["account"], r["call_id"]) for r in day}) == 2 * 200
    assert "RUN_SUCCESS" in run.output
