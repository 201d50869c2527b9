"""Problems the user can fix: said in one line by ``main()``, with no traceback."""

from __future__ import annotations


class OpticoError(Exception):
    """A problem with the run's input (settings, state), said in one line."""


class StateError(OpticoError):
    """A state that cannot be resumed from as it is."""


class CatalogError(OpticoError):
    """A catalog file that is not a Singer catalog."""


class SettingsError(OpticoError):
    """Settings that cannot be used: one line per problem, each naming its setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class AccountsFailedError(OpticoError):
    """Accounts whose requests failed for good; the others were read."""

    def __init__(self, failed: dict[str, str], accounts: int) -> None:
        names = ", ".join(sorted(failed))
        if accounts == 1:
            [(name, what)] = failed.items()
            message = f"The run failed: account {name} could not be read: {what}"
        elif len(failed) == accounts:
            message = f"The run failed: all {accounts} accounts failed: {names}"
        else:
            message = f"{len(failed)} account(s) failed, the others were read: {names}"
        super().__init__(message)


class ReconciliationError(OpticoError):
    """Days whose delivered calls do not add up to Optico's daily totals, with ``reconcile: fail``."""
