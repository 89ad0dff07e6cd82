"""The settlement package's errors: one small tree, with a flag callers branch on.

Business refusals seen on chain (a reverted settle, an account with no address) are
reported as values or logged decisions where the caller can go on; these exceptions are for
infrastructure failures (`retriable=True`: try again later) and for states that need a
person (`retriable=False`: stop and say why).
"""

from __future__ import annotations

from runtime.errors import RetriableError


class SettlementError(RetriableError):
    """Base of every settlement failure."""


class BuildError(SettlementError):
    """The contracts could not be compiled (node, npm or solc failed)."""


class ChainError(SettlementError):
    """The chain node failed or refused; retriable when it is a connection problem."""


class ChainUnavailableError(ChainError):
    """The chain node does not answer (down, restarting, timing out)."""

    retriable = True


class TransactionRevertedError(ChainError):
    """A transaction was mined and reverted: the chain refused it."""


class DeploymentError(SettlementError):
    """The deployment file is missing, malformed, or names contracts the chain lacks."""


class RefusedError(SettlementError):
    """The chain refused a stored batch or payout (a revert, a clash of ids), or it could not
    be placed in `sends_max` sends: it needs a person, not a retry."""
