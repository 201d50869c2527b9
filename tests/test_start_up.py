"""The tap's start-up: what singer-sdk imports for BATCH messages and targets only waits until called,
and then works as it would have."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tap_optico.cli import deferred

#: Starts the tap as its command does, then takes singer-sdk's BATCH path (universal_pathlib and
#: fsspec write a batch file) and a target's parallel drain (joblib), as singer-sdk calls them.
STARTED = r"""
import json, sys
from tap_optico.cli import DEFERRED, deferred
with deferred(DEFERRED):
    import tap_optico.tap
late = sorted(name for name in ("joblib", "numpy", "upath", "fsspec") if name in sys.modules)
from singer_sdk import target_base
from singer_sdk.batch import Batcher
from singer_sdk.helpers._batch import BatchConfig
storage = {"root": sys.argv[1], "prefix": "calls-"}
config = BatchConfig.from_dict({"encoding": {"format": "jsonl", "compression": "gzip"}, "storage": storage})
[[url]] = Batcher("tap-optico", "calls", config).get_batches(iter([{"call_id": "a"}, {"call_id": "b"}]))
with target_base.parallel_config(backend="threading", n_jobs=2):
    drained = target_base.Parallel()(target_base.delayed(abs)(number) for number in (-1, -2, -3))
import upath
real = isinstance(upath.UPath(sys.argv[1]), upath.UPath)
print(json.dumps({"late": late, "url": url, "drained": drained, "real": real}))
"""


def test_the_tap_starts_without_batch_and_target_packages_which_still_work(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", STARTED, tmp_path.as_uri()], capture_output=True, text=True, check=True
    ).stdout
    run = json.loads(out)
    assert run["late"] == []  # neither imported at start (nor numpy and fsspec, which they bring)
    [batch] = tmp_path.glob("calls-*.json.gz")
    assert run["url"].endswith(batch.name)
    assert gzip.decompress(batch.read_bytes()).splitlines() == [b'{"call_id":"a"}', b'{"call_id":"b"}']
    assert run["drained"] == [1, 2, 3]
    assert run["real"]  # imported later, a module is itself, not a stand-in


def test_a_deferred_module_is_imported_when_a_name_is_called() -> None:
    with deferred({"tap_optico_absent": ("convert",)}):
        from tap_optico_absent import convert  # type: ignore[import-not-found]

        with pytest.raises(ImportError):  # a name that was not declared fails at once
            from tap_optico_absent import other  # noqa: F401
    assert "tap_optico_absent" not in sys.modules
    with pytest.raises(ModuleNotFoundError, match="tap_optico_absent"):
        convert(1)


def test_a_module_already_imported_is_not_replaced() -> None:
    import json as before

    with deferred({"json": ("dumps",)}):
        from json import dumps
    assert dumps is before.dumps
    assert sys.modules["json"] is before
