"""Dagster for real: orchestrate/ runs Meltano against the sandbox over HTTP, partition by partition.

Each test works in its own copy of the project with a temporary DAGSTER_HOME; a daemon, where
one is needed (backfills, the run queue, the hand-over sensor), is started by the test and
stopped by its process id.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster_k8s import K8sRunLauncher

from orchestrate.meltano import backfill_state_id, state_id
from tap_optico.sandbox import Faults, SandboxServer, account_key
from tests.helpers import SandboxFactory, bookmark, run_command
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
ENVIRONMENT, LOADER = "sandbox-accounts", "target-jsonl"
MARCH_1, MARCH_31 = dt.date(2026, 3, 1), dt.date(2026, 3, 31)  # what sandbox-accounts reads
README_BLOCKS = [block for block in shell_blocks() if block.kind == "dagster"]
SERVED = [block for block in README_BLOCKS if block.reason.startswith("server")]
RUN = [block for block in README_BLOCKS if block not in SERVED]


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
    return run_command(
        [str(BIN / command), *args],
        cwd=work,
        env=env,
        timeout=300,
    )


def accounts(*numbers: int) -> str:
    return json.dumps([{"name": f"account-{n}", "api_key": account_key(n)} for n in numbers])


@dataclass
class Deployment:
    """The project, an instance and the environment Dagster runs in."""

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

    def state(self, state: str) -> dict[str, Any]:
        done = self.run("meltano", "state", "get", state)
        assert done.returncode == 0, done.stderr[-2000:]
        value: dict[str, Any] = json.loads(done.stdout or "{}").get("singer_state", {})
        return value

    @contextlib.contextmanager
    def daemon(self) -> Iterator[None]:
        """`dagster-daemon run`, stopped by its process id (with the code server it started)."""
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
                yield
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
        runs = [(r.dagster_run.job_name, partition(r), r.dagster_run.status.value) for r in records]
        raise AssertionError(f"not done after {timeout} s: {runs}\n{log}")

    def error_lines(self, record: dg.RunRecord) -> list[str]:
        entries = self.instance.all_logs(record.dagster_run.run_id)
        return [entry.user_message for entry in entries if entry.level == logging.ERROR]


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    deployments: list[Deployment] = []

    def make(server: SandboxServer, executor: str, **groups: str) -> Deployment:
        env = user_env(
            DAGSTER_HOME=str(tmp_path / "dagster-home"),
            MELTANO_ENVIRONMENT=ENVIRONMENT,
            OPTICO_EXECUTOR=executor,
            **{f"OPTICO_GROUP_{name.upper()}": value for name, value in groups.items()},
        )
        env.update(OPTICO_BACKFILL_START="2026-01-01", OPTICO_BACKFILL_END="2026-04-01")
        work = dagster_copy(tmp_path / "project", server.port)
        deployment = Deployment(work, tmp_path / "dagster-home", env)
        deployments.append(deployment)
        return deployment

    yield make
    for deployment in deployments:
        deployment.instance.dispose()


def partition(record: dg.RunRecord) -> str:
    return record.dagster_run.tags.get("dagster/partition", "")


def finished(records: list[dg.RunRecord]) -> bool:
    return all(record.dagster_run.is_finished for record in records)


def overlap(one: dg.RunRecord, other: dg.RunRecord) -> bool:
    starts, ends = (one.start_time or 0, other.start_time or 0), (one.end_time or 0, other.end_time or 0)
    return max(starts) < min(ends)


def calls(folder: Path) -> list[dict[str, Any]]:
    return jsonl_records(sorted(folder.rglob("calls-*.jsonl")))


def test_groups_side_by_side_a_refused_key_fails_alone_a_second_run_waits(
    make_sandbox: SandboxFactory, deploy: Callable[..., Deployment]
) -> None:
    server = make_sandbox(first_day=MARCH_1, last_day=MARCH_31, calls_per_day=10, accounts=2)
    refused = json.dumps([{"name": "refused-account", "api_key": "0123456789abcdef0123456789abcdef"}])
    deployment = deploy(server, "multiprocess", one=accounts(1), two=accounts(2), refused=refused)
    # Two backfills of the daily job: the groups, then the group `one` again.
    deployment.dagster("job", "backfill", "-j", "daily", "--partitions", "one,two,refused", "--noprompt")
    deployment.dagster("job", "backfill", "-j", "daily", "--partitions", "one", "--noprompt")
    waiting: list[bool] = []

    def done(records: list[dg.RunRecord]) -> bool:
        ones = [r.dagster_run.status for r in records if partition(r) == "one"]
        if dg.DagsterRunStatus.QUEUED in ones and dg.DagsterRunStatus.STARTED in ones:
            waiting.append(True)
        return len(records) == 4 and finished(records)

    with deployment.daemon():
        records = deployment.wait_for(done, timeout=300)

    by_partition: dict[str, list[dg.RunRecord]] = {}
    for record in sorted(records, key=lambda r: r.start_time or 0):
        by_partition.setdefault(partition(record), []).append(record)
    status = {key: [r.dagster_run.status.value for r in runs] for key, runs in by_partition.items()}
    assert status == {"one": ["SUCCESS", "SUCCESS"], "two": ["SUCCESS"], "refused": ["FAILURE"]}
    first_one, second_one = by_partition["one"]
    [two] = by_partition["two"]
    # Side by side: two groups' runs overlap; the second run of `one` waited for the first.
    assert overlap(first_one, two)
    assert waiting, "the second run of `one` was never seen queued while the first ran"
    assert (second_one.start_time or 0) >= (first_one.end_time or 0)

    # The refused key: the tap's ERROR line in its run's log, and as the failure's message.
    errors = deployment.error_lines(by_partition["refused"][0])
    tap_errors = [line for line in errors if line.startswith("tap-optico:") and "refused-account" in line]
    assert any("Clef API invalide" in line for line in tap_errors), errors
    assert "0123456789abcdef" not in "\n".join(errors)

    # The materialisation says what was loaded, and where the next run starts.
    [materialized] = deployment.instance.all_logs(
        two.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    assert materialized.asset_materialization is not None
    metadata = {key: value.value for key, value in materialized.asset_materialization.metadata.items()}
    state_two = state_id(ENVIRONMENT, LOADER, "two")
    assert metadata == {"state_id": state_two, "calls records": 31 * 10, "daily_calls records": 31}

    # Each group: its own records in its own folder, its own state id.
    for group, account in (("one", "account-1"), ("two", "account-2")):
        records_written = calls(deployment.work / "output" / group)
        assert {r["account"] for r in records_written} == {account}
        assert len({r["call_id"] for r in records_written}) == 31 * 10
        state = deployment.state(state_id(ENVIRONMENT, LOADER, group))
        assert str(bookmark(state, "calls", account))[:10] == MARCH_31.isoformat()
        assert bookmark(state, "calls", "account-1" if account == "account-2" else "account-2") is None
    refused_state = deployment.state(state_id(ENVIRONMENT, LOADER, "refused"))
    assert bookmark(refused_state, "calls", "refused-account") is None


def test_backfill_of_three_months_hands_over_to_the_daily_job(
    make_sandbox: SandboxFactory, deploy: Callable[..., Deployment]
) -> None:
    server = make_sandbox(first_day=dt.date(2026, 1, 1), last_day=MARCH_31, calls_per_day=4)
    deployment = deploy(server, "in_process", history=accounts(1))
    months = ["2026-01-01", "2026-02-01", "2026-03-01"]
    keys = ",".join(f"history|{month}" for month in months)
    deployment.dagster("job", "backfill", "-j", "backfill", "--partitions", keys, "--noprompt")

    def handed_over(records: list[dg.RunRecord]) -> bool:
        jobs = [r.dagster_run.job_name for r in records]
        return "hand_over_job" in jobs and finished(records)

    with deployment.daemon():
        records = deployment.wait_for(handed_over, timeout=300)

    runs = {(r.dagster_run.job_name, partition(r)): r.dagster_run.status.value for r in records}
    assert runs == {
        **{("backfill", f"history|{month}"): "SUCCESS" for month in months},
        ("hand_over_job", "history"): "SUCCESS",
    }
    # Every range's state, each under its own state id, each at its own last day.
    ranges = [(dt.date(2026, 1, 1), dt.date(2026, 1, 31)), (dt.date(2026, 2, 1), dt.date(2026, 2, 28))]
    ranges.append((MARCH_1, MARCH_31))
    for first, last in ranges:
        state = deployment.state(backfill_state_id(ENVIRONMENT, LOADER, first, last, "history"))
        assert str(bookmark(state, "calls", "account-1"))[:10] == last.isoformat()
    march = deployment.state(backfill_state_id(ENVIRONMENT, LOADER, MARCH_1, MARCH_31, "history"))
    assert deployment.state(state_id(ENVIRONMENT, LOADER, "history")) == march
    backfilled = calls(deployment.work / "output" / "history")
    assert len({r["call_id"] for r in backfilled}) == len(backfilled) == 90 * 4

    # The daily job continues from the end of the backfill: the last day minus the lookback.
    server.requests.clear()
    deployment.dagster("asset", "materialize", "--select", "optico_daily", "--partition", "history")
    assert {r.params["start_date"] for r in server.requests} == {"2026-03-30"}
    recent = calls(deployment.work / "output" / "history" / "daily")
    assert {r["start_date"][:10] for r in recent} == {"2026-03-30", "2026-03-31"}


def test_a_cancelled_run_stops_meltano_and_the_tap(
    make_sandbox: SandboxFactory, deploy: Callable[..., Deployment]
) -> None:
    """Cancelled, a run ends its pipeline: the partition is free only once nothing writes its state."""
    server = make_sandbox(first_day=MARCH_1, last_day=MARCH_31, calls_per_day=10, faults=Faults(latency=0.3))
    deployment = deploy(server, "in_process", one=accounts(1))
    deployment.env.update(TAP_OPTICO_MAX_CONCURRENCY="1", TAP_OPTICO_PAGE_SIZE="10")  # a minute of requests
    deployment.dagster("job", "backfill", "-j", "daily", "--partitions", "one", "--noprompt")
    with deployment.daemon():
        [record] = deployment.wait_for(lambda records: len(records) == 1 and len(server.requests) > 3, 120)
        assert any("tap-optico --config" in command for command in pipeline_processes(deployment.work))
        assert deployment.instance.run_launcher.terminate(record.dagster_run.run_id)
        deployment.wait_for(finished, timeout=60)
        stopped = len(server.requests)
        time.sleep(3)
        assert len(server.requests) == stopped, "the tap kept reading after its run was cancelled"
        assert pipeline_processes(deployment.work) == []
    [record] = deployment.instance.get_run_records()
    assert record.dagster_run.status == dg.DagsterRunStatus.CANCELED


def pipeline_processes(work: Path) -> list[str]:
    """The command lines of Meltano and its plugins running in the project at `work`."""
    found = []
    for process in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if process.name.isdigit() and os.readlink(process / "cwd") == str(work):
                command = (process / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if "meltano" in command or "tap-optico" in command:
                    found.append(command)
    return found


def validate(work: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run(work, env, "dagster", "definitions", "validate", *LOCATION)


def test_definitions_load_with_each_executor_and_the_cluster_instance(
    tmp_path: Path, postgres: dict[str, Any]
) -> None:
    work = dagster_copy(tmp_path / "project", free_port())
    env = user_env(MELTANO_ENVIRONMENT=ENVIRONMENT, OPTICO_GROUP_AGENCY_GROUP_1=accounts(1))
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
    assert "no account group: set OPTICO_GROUP_<NAME>" in alone.stdout + alone.stderr

    # The cluster's instance: PostgreSQL storage (a real server) and the K8sRunLauncher.
    cluster = tmp_path / "cluster"
    cluster.mkdir()
    shutil.copyfile(ROOT / "orchestrate" / "cluster" / "dagster.yaml", cluster / "dagster.yaml")
    pg = {
        "DAGSTER_POSTGRES_HOST": postgres["host"],
        "DAGSTER_POSTGRES_PORT": str(postgres["port"]),
        "DAGSTER_POSTGRES_USER": postgres["user"],
        "DAGSTER_POSTGRES_PASSWORD": "unused",
        "DAGSTER_POSTGRES_DB": postgres["database"],
    }
    done = validate(work, {**env, **pg, "DAGSTER_HOME": str(cluster)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert psql(postgres, "select count(*) from information_schema.tables where table_name = 'runs'") == "1"
    # Out of a cluster, the launcher reads a kubeconfig instead of the pod's service account.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG, encoding="utf-8")
    text = (cluster / "dagster.yaml").read_text(encoding="utf-8")
    in_cluster = "load_incluster_config: true\n"
    assert in_cluster in text
    outside = f"load_incluster_config: false\n    kubeconfig_file: {kubeconfig}\n"
    (cluster / "dagster.yaml").write_text(text.replace(in_cluster, outside), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in pg.items():
            patch.setenv(name, value)
        instance = dg.DagsterInstance.from_config(str(cluster))
        try:
            launcher = instance.run_launcher
            assert isinstance(launcher, K8sRunLauncher)
            assert "optico-account-groups" in launcher.env_secrets
        finally:
            instance.dispose()


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


@pytest.mark.parametrize("block", SERVED, ids=lambda block: block.id)
def test_readme_make_dagster_serves_the_ui(block: Block, tmp_path: Path) -> None:
    work = dagster_copy(tmp_path / "project", free_port())
    [command] = [line.split("#")[0].strip() for line in block.text.splitlines() if line.strip()]
    port = free_port()
    with background(command, work, user_env(DAGSTER_PORT=str(port)), port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=30) as answer:
            assert json.load(answer)["dagster_version"] == dg.__version__
        nodes = asset_nodes(port)
    partitions = {node["assetKey"]["path"][-1]: node["partitionKeys"] for node in nodes}
    assert partitions["optico_daily"] == ["agency-group-1", "agency-group-2"]
    assert len(partitions["optico_backfill"]) == 2 * 3  # two groups, January to March
    assert (work / ".dagster" / "dagster.yaml").exists()


@pytest.mark.parametrize("block", RUN, ids=lambda block: block.id)
def test_readme_dagster_block_runs(block: Block, tmp_path: Path) -> None:
    port = free_port()
    work = dagster_copy(tmp_path / "project", port)
    run = run_shell(block.text.replace(SANDBOX_PORT, str(port)), work, user_env(), timeout=300)
    assert run.returncode == 0, run.output[-5000:]
    backfilled = calls(work / "output" / "agency-group-1" / "backfill-2026-03-01")
    daily = calls(work / "output" / "agency-group-2" / "daily")
    assert {r["account"] for r in backfilled} == {"account-1", "account-3"}
    assert {r["account"] for r in daily} == {"account-2", "account-4"}
    for records in (backfilled, daily):
        assert len({(r["account"], r["call_id"]) for r in records}) == 2 * 31 * 200
    for state in (
        backfill_state_id(ENVIRONMENT, LOADER, MARCH_1, MARCH_31, "agency-group-1"),
        state_id(ENVIRONMENT, LOADER, "agency-group-2"),
    ):
        assert state in run.output
