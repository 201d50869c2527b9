"""The ``tap-optico`` command: the tap, started without what only BATCH messages and targets use."""

from __future__ import annotations

import gc
import importlib
import signal
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

#: New container objects between two runs of the cyclic collector (Python's default: 700).
COLLECT_EVERY = 20_000
#: The names of singer-sdk's ``from ... import`` lines (``helpers/_batch.py``, ``target_base.py``) of
#: packages it imports on every start but calls only for BATCH messages (``universal_pathlib``, with
#: fsspec) and in targets (``joblib``, with numpy and its BLAS threads): a third of start-up's CPU.
DEFERRED: Mapping[str, tuple[str, ...]] = {
    "joblib": ("Parallel", "delayed", "parallel_config"),
    "upath": ("UPath",),
}


def main() -> None:
    """Run the tap (``tap.main``), imported with stand-ins for :data:`DEFERRED` and the cyclic collector
    paused: singer-sdk's import makes many objects and no garbage (collecting costs a tenth of start-up).
    Start-up's objects live as long as the process (``gc.freeze``), and a run's records and pages hold
    no cycles, so the collector runs less often. Together, about 5% of the CPU of a run."""
    if sys.stdout is None:  # started with its output closed (`tap-optico ... >&-`)
        _say("tap-optico: its standard output is closed: it writes its Singer messages there")
        raise SystemExit(1)
    try:
        gc.disable()
        with deferred(DEFERRED):
            from tap_optico.tap import main as run

        gc.freeze()
        gc.set_threshold(COLLECT_EVERY)
        gc.enable()
        run()
    except KeyboardInterrupt:  # Ctrl-C before the tap's own handler is in place: nothing read yet
        _say("tap-optico: stopped by SIGINT while starting, before reading anything")
        raise SystemExit(128 + signal.SIGINT) from None


def _say(line: str) -> None:
    if sys.stderr is not None:
        print(line, file=sys.stderr, flush=True)


@contextmanager
def deferred(names: Mapping[str, tuple[str, ...]]) -> Iterator[None]:
    """While in it, ``from MODULE import NAME`` (``names``: MODULE -> its NAMEs) gives a function that
    imports MODULE when it is first called, and calls its NAME. Afterwards MODULE imports as usual
    (what imported a stand-in keeps it). A module already imported is itself; any other name of a
    stand-in module is an ImportError, at once: a singer-sdk that takes more fails to start."""
    stand_ins = {module: types.ModuleType(module) for module in names if module not in sys.modules}
    for module, stand_in in stand_ins.items():
        vars(stand_in).update({name: _when_called(module, name) for name in names[module]})
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
