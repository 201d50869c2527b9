"""The decisions of orchestrate/, in-process: groups and their secrets, what a run receives, its days."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import importlib
import json
import re
import threading
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import dagster as dg
import pytest
from typing_extensions import override

from orchestrate import groups, meltano
from orchestrate.meltano import LogLine, backfill_state_id, state_id
from tests.helpers import send_answer

SECRET_SOURCE = "file:/nowhere/{group}.json"


@pytest.fixture(scope="module")
def definitions() -> ModuleType:
    """orchestrate.definitions, loaded as Dagster loads it: with group names, no key."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPTICO_GROUPS", "loaded,other")
        patch.setenv("OPTICO_GROUP_SECRET", SECRET_SOURCE)
        patch.setenv("MELTANO_ENVIRONMENT", "sandbox-accounts")
        patch.setenv("OPTICO_HISTORY_START", "2025-01-01")
        return importlib.import_module("orchestrate.definitions")


def test_state_ids() -> None:
    # Without a group: the state id of `meltano run tap-optico <loader>` in that environment.
    assert state_id("prod", "target-postgres") == "prod:tap-optico-to-target-postgres"
    assert state_id("prod", "target-postgres", "agency-1") == "prod:tap-optico-to-target-postgres:agency-1"
    first, last = dt.date(2025, 1, 1), dt.date(2025, 1, 31)
    assert backfill_state_id("prod", "target-jsonl", first, last) == (
        "prod:tap-optico-to-target-jsonl:backfill-2025-01-01-2025-01-31"
    )


def test_group_names_come_without_keys() -> None:
    source = {"OPTICO_GROUP_SECRET": SECRET_SOURCE}
    assert groups.group_names({"OPTICO_GROUPS": "agency-1, b,c2", **source}) == ["agency-1", "b", "c2"]
    problems = {
        "": "no account group: set OPTICO_GROUPS",
        "Agency": "account group 'Agency' in OPTICO_GROUPS: use lowercase letters",
        "a/../b": "account group 'a/../b'",
        "-a": "account group '-a'",
        "a,a": "names a group twice",
    }
    for names, message in problems.items():
        with pytest.raises(groups.GroupError, match=re.escape(message)):
            groups.group_names({"OPTICO_GROUPS": names, **source})
    # The variables of the earlier release held keys in every process: refused, with what to do.
    old = {"OPTICO_GROUPS": "a", **source, "OPTICO_GROUP_A": '[{"name": "x", "api_key": "k"}]'}
    with pytest.raises(
        groups.GroupError, match=r"OPTICO_GROUP_A holds a group's keys .* from before account groups"
    ):
        groups.group_names(old)
    for wrong in ("", "file:/etc/optico.json", "vault:{group}"):
        with pytest.raises(groups.GroupError, match=r"OPTICO_GROUP_SECRET=.*expected kubernetes:"):
            groups.group_names({"OPTICO_GROUPS": "a", "OPTICO_GROUP_SECRET": wrong})


ACCOUNTS = '[{"name": "a", "api_key": "key-one"}]'


def test_a_group_reads_its_own_file_readable_by_its_owner_only(tmp_path: Path) -> None:
    environ = {"OPTICO_GROUP_SECRET": f"file:{tmp_path}/{{group}}.json"}
    path = tmp_path / "one.json"
    path.write_text(ACCOUNTS, encoding="utf-8")
    path.chmod(0o600)
    assert groups.read_accounts("one", environ) == ACCOUNTS
    path.chmod(0o644)
    with pytest.raises(
        groups.GroupError, match=re.escape(f"{path} can be read by other users: chmod 600 it")
    ):
        groups.read_accounts("one", environ)
    with pytest.raises(groups.GroupError, match=r"cannot read .*two\.json: No such file"):
        groups.read_accounts("two", environ)
    path.write_text('{"name": "a"}', encoding="utf-8")
    path.chmod(0o600)
    with pytest.raises(groups.GroupError, match="are not a list of accounts"):
        groups.read_accounts("one", environ)


class FakeKubernetes(http.server.BaseHTTPRequestHandler):
    """The Kubernetes API's secret reads: `optico-group-one` holds accounts, nothing else exists."""

    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:  # the kubernetes client's read_namespaced_secret
        self.paths.append(self.path)
        if self.path != "/api/v1/namespaces/optico/secrets/optico-group-one":
            self.send_response(404)
            self.end_headers()
            return
        body = {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "optico-group-one"}}
        body["data"] = {"accounts": base64.b64encode(ACCOUNTS.encode()).decode()}
        send_answer(self, json.dumps(body).encode())

    @override
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_group_reads_its_own_kubernetes_secret(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeKubernetes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG.format(port=server.server_address[1]), encoding="utf-8")
        environ = {
            "OPTICO_GROUP_SECRET": "kubernetes:optico-group-{group}",
            "OPTICO_GROUP_SECRET_NAMESPACE": "optico",
            "KUBECONFIG": str(kubeconfig),
        }
        assert groups.read_accounts("one", environ) == ACCOUNTS
        with pytest.raises(groups.GroupError, match="cannot read the secret optico/optico-group-two: 404"):
            groups.read_accounts("two", environ)
        assert FakeKubernetes.paths == [
            "/api/v1/namespaces/optico/secrets/optico-group-one",
            "/api/v1/namespaces/optico/secrets/optico-group-two",
        ]
    finally:
        server.shutdown()
        server.server_close()


KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{{name: test, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: test, user: {{token: unused}}}}]
contexts: [{{name: test, context: {{cluster: test, user: test}}}}]
current-context: test
"""


def test_a_run_receives_its_own_group_and_its_days(
    definitions: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(meltano, "PROJECT", tmp_path)
    monkeypatch.setenv("TAP_OPTICO_API_KEY", "key-of-the-environment")
    monkeypatch.setenv("TAP_OPTICO_ACCOUNTS", "[accounts of the environment]")
    monkeypatch.setenv("TAP_OPTICO_PAGE_SIZE", "100")
    monkeypatch.delenv("TARGET_JSONL_DESTINATION_PATH", raising=False)
    env = definitions.run_environment("one", ACCOUNTS, dt.date(2026, 3, 1), dt.date(2026, 3, 7))
    assert "TAP_OPTICO_API_KEY" not in env
    assert env["TAP_OPTICO_ACCOUNTS"] == ACCOUNTS
    assert (env["TAP_OPTICO_START_DATE"], env["TAP_OPTICO_END_DATE"]) == ("2026-03-01", "2026-03-07")
    assert env["TAP_OPTICO_TIMEZONE"] == "Europe/Paris"  # the partitions' days are the tap's
    assert env["TAP_OPTICO_PAGE_SIZE"] == "100"
    folder = tmp_path / "output" / "one" / "2026-03-01..2026-03-07"
    assert env["TARGET_JSONL_DESTINATION_PATH"] == str(folder)
    assert folder.is_dir()


def test_days_are_the_taps_and_a_run_covers_its_partitions(definitions: ModuleType) -> None:
    assert definitions.days.timezone == "Europe/Paris"
    window = definitions.days.time_window_for_partition_key("2026-03-29")  # 23 hours in Paris
    assert definitions.days_of(window) == (dt.date(2026, 3, 29), dt.date(2026, 3, 29))
    keys = definitions.days.get_partition_keys_in_range(dg.PartitionKeyRange("2026-02-27", "2026-03-02"))
    assert keys == ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"]
    repository = definitions.defs.get_repository_def()
    assert {job.name for job in repository.get_all_jobs()} >= {"daily", "optico_loaded", "optico_other"}
    assets = definitions.ASSETS["loaded"]
    assert set(assets.keys) == {dg.AssetKey(["optico", "loaded", s]) for s in ("calls", "daily_calls")}
    assert assets.backfill_policy == dg.BackfillPolicy.multi_run(31)
    assert assets.op.pool == "optico-loaded"


def test_the_daily_schedule_reloads_the_lookback_days_of_every_group(definitions: ModuleType) -> None:
    morning = dt.datetime(2026, 4, 2, 4, tzinfo=dt.timezone.utc)  # 06:00 in Paris
    with dg.build_schedule_context(scheduled_execution_time=morning) as context:
        requests = list(definitions.every_group_daily(context))
    assert [r.run_key for r in requests] == ["2026-04-01:loaded", "2026-04-01:other"]
    loaded = requests[0]
    assert loaded.asset_selection == [dg.AssetKey(["optico", "loaded", s]) for s in ("calls", "daily_calls")]
    # Yesterday and the tap's lookback_days (1) before it: late changes are loaded again.
    assert loaded.partition_key_range == dg.PartitionKeyRange("2026-03-31", "2026-04-01")
    assert loaded.tags["optico/group"] == "loaded"


def test_what_a_run_loaded(definitions: ModuleType) -> None:
    marks = {"calls": {"a": "2026-03-07T22:58:00+00:00", "b": "2026-03-06T10:00:00+00:00"}}
    metadata = definitions.what_loaded(marks, Counter(calls=120), dt.date(2026, 3, 1), dt.date(2026, 3, 7))
    assert metadata["calls"]["dagster/row_count"] == 120
    assert metadata["calls"]["newest"] == "2026-03-07T22:58:00+00:00"
    assert metadata["calls"]["read up to"].value == {"a": marks["calls"]["a"], "b": marks["calls"]["b"]}
    assert metadata["daily_calls"]["dagster/row_count"] == 0
    assert "newest" not in metadata["daily_calls"]
    line = "tap-optico: calls: account agency x failed, its bookmark stays: Clef API invalide"
    match = definitions.FAILED_ACCOUNT.match(line)
    assert match is not None
    assert match["account"] == "agency x"
    skipped = "tap-optico: daily_calls: account agency x is skipped: it failed earlier in this run"
    assert definitions.FAILED_ACCOUNT.match(skipped) is None


def test_meltano_log_lines() -> None:
    line = json.dumps({"name": "tap-optico", "level": "error", "event": "calls: account x failed"})
    assert LogLine.parse(line) == LogLine("error", "tap-optico: calls: account x failed")
    assert LogLine.parse(json.dumps({"level": "info", "event": "Running extract & load..."})) == LogLine(
        "info", "meltano: Running extract & load..."
    )
    assert LogLine.parse("not JSON\n") == LogLine("info", "not JSON")
    assert LogLine.parse("[1, 2]") == LogLine("info", "[1, 2]")


def test_record_counts_from_the_taps_metrics() -> None:
    counter = {"type": "counter", "metric": "record_count", "value": 62, "tags": {"stream": "daily_calls"}}
    metric = LogLine("info", f"tap-optico: METRIC: {json.dumps(counter)}")
    assert metric.records() == ("daily_calls", 62)
    timer = {**counter, "type": "timer", "metric": "sync_duration", "value": 0.1}
    assert LogLine("info", f"tap-optico: METRIC: {json.dumps(timer)}").records() is None
    assert LogLine("info", "tap-optico: METRIC: {not json").records() is None
    assert LogLine("info", f"meltano: METRIC: {json.dumps(counter)}").records() is None
