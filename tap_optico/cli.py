"""The ``tap-optico`` command: the tap, started without what only BATCH messages and targets use."""

from __future__ import annotations

import gc
import importlib
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

#: New container objects between two runs of the cyclic collector (Python's default: 700).
COLLECT_EVERY = 20_000
#: What singer-sdk takes from packages it imports on every start but calls only for BATCH messages
#: (``universal_pathlib``, which brings ``fsspec``) and in targets (``joblib``, which brings numpy
#: and starts its BLAS threads): a third of a tap's start-up CPU. The names are those of its
#: ``from ... import`` lines (``singer_sdk/helpers/_batch.py``, ``singer_sdk/target_base.py``).
DEFERRED: Mapping[str, tuple[str, ...]] = {
    "joblib": ("Parallel", "delayed", "parallel_config"),
    "upath": ("UPath",),
}


def main() -> None:
    """Run the tap (``tap.main``), imported with the cyclic collector paused and with
    stand-ins for the names singer-sdk takes from :data:`DEFERRED`.

    Importing singer-sdk creates many objects and no garbage: collecting during
    it costs about a tenth of the start-up. What start-up built (modules,
    classes, schemas) lives as long as the process, so the collector leaves it
    be (``gc.freeze``); a run's records and pages hold no cycles, so it runs
    less often. Together, about 5% of the CPU of a run.
    """
    gc.disable()
    # Imported here, with the collector paused.
    with deferred(DEFERRED):
        from tap_optico.tap import main as run

    gc.freeze()
    gc.set_threshold(COLLECT_EVERY)
    gc.enable()
    run()


@contextmanager
def deferred(names: Mapping[str, tuple[str, ...]]) -> Iterator[None]:
    """While in it, ``from MODULE import NAME`` (``names``: MODULE -> its NAMEs) gives a function that
    imports MODULE when it is first called, and calls its NAME. Afterwards MODULE imports as usual
    (what imported a stand-in keeps it). A module already imported is itself; any other name of a
    stand-in module is an ImportError, at once: a singer-sdk that takes more fails to start."""
    stand_ins = {
        module: types.ModuleType(module, f"{module}, imported when first called")
        for module in names
        if module not in sys.modules
    }
    for module, stand_in in stand_ins.items():
        for name in names[module]:
            setattr(stand_in, name, _when_called(module, name))
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for module, stand_in in stand_ins.items():
            if sys.modules.get(module) is stand_in:
                del sys.modules[module]


def _when_called(module: str, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = name
    return call
