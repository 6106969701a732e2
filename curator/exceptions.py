"""The one exception tree of curator.

Callers catch by family; the CLI maps each family to an exit code and prints
the message as one line, so every message names the thing and the fix.

    CuratorError
    ├── ValidationError (ValueError)      bad argument, array, file or config
    │   ├── EmptyPoolError                nothing to select from
    │   └── BudgetError                   budget out of range for the pool
    ├── MissingExtraError (ImportError)   an optional extra is not installed
    ├── NotFoundError (LookupError)       unknown dataset, round, version, policy ...
    ├── StoreError                        the database refused or cannot be reached
    │   └── StaleSelectionError           another process won a race
    └── IntegrationError                  an external tool failed
        ├── LabelStudioError
        └── FiftyOneError
"""

from __future__ import annotations


class CuratorError(Exception):
    """Base of every error curator raises on purpose."""

    exit_code = 1


class ValidationError(CuratorError, ValueError):
    exit_code = 2


class EmptyPoolError(ValidationError):
    pass


class BudgetError(ValidationError):
    pass


class MissingExtraError(CuratorError, ImportError):
    exit_code = 3

    def __init__(self, package: str, extra: str):
        super().__init__(
            f"{package} is not installed; install it with: pip install 'curator-loop[{extra}]'"
        )


class NotFoundError(CuratorError, LookupError):
    exit_code = 4


class StoreError(CuratorError):
    exit_code = 5


class StaleSelectionError(StoreError):
    pass


class IntegrationError(CuratorError):
    exit_code = 6


class LabelStudioError(IntegrationError):
    pass


class FiftyOneError(IntegrationError):
    pass


__all__ = [
    "CuratorError",
    "ValidationError",
    "EmptyPoolError",
    "BudgetError",
    "MissingExtraError",
    "NotFoundError",
    "StoreError",
    "StaleSelectionError",
    "IntegrationError",
    "LabelStudioError",
    "FiftyOneError",
]
