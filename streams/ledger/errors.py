"""The ledger's errors: user errors (one line, exit 2 in the CLI) that the HTTP API maps to a status."""
from __future__ import annotations

from streams.contract.cli import UserError


class LedgerError(UserError):
    status = 400


class NotFound(LedgerError):
    status = 404


class Invalid(LedgerError):
    status = 422


class Conflict(LedgerError):
    status = 409
