"""Problems the user can fix: said in one line by ``main()``, with no traceback."""

from __future__ import annotations


class OpticoError(Exception):
    """A problem with the run's input (settings, state), said in one line."""


class StateError(OpticoError):
    """A state that cannot be resumed from as it is."""


class SettingsError(OpticoError):
    """Settings that cannot be used: one line per problem, each naming its setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class AccountsFailedError(OpticoError):
    """Accounts whose requests failed for good; the others were read."""

    def __init__(self, failed: dict[str, str]) -> None:
        names = ", ".join(sorted(failed))
        super().__init__(f"{len(failed)} account(s) failed, the others were read: {names}")
