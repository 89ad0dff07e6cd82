"""Exchange accounts as settlement sees them: wallet addresses, reserved names, and the
account a deposit may credit. Pure: no I/O.

An account that is a wallet address (`0x` and exactly 40 hex digits, nothing else) settles
to itself; any other account settles to the address `settlement.accounts` holds for it.

Reserved accounts are the exchange's own: the fee account (`protocol.FEE_ACCOUNT`, "fees")
and every name starting with "gpux." (the prefix the gateway keeps for itself). Only the
operator binds them to an address (`gpux settlement register-account`); a deposit never
does, and never credits them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from protocol import FEE_ACCOUNT
from protocol.commands import IDENTIFIER_PATTERN

# `\Z`, not `$`: in Python `$` also matches before a trailing newline.
WALLET_ADDRESS_PATTERN: Final = r"^0x[0-9a-fA-F]{40}\Z"
RESERVED_ACCOUNT_PREFIX: Final = "gpux."
RESERVED_ACCOUNTS: Final = frozenset({FEE_ACCOUNT})

# Why a deposit's named account was not credited (the depositor's address was): a code, as
# metrics label it, and the words logs use.
REFUSALS: Final = {
    "not_utf8": "is not UTF-8",
    "not_an_identifier": "is not an account name",
    "another_wallet": "is another wallet address",
    "reserved": "is reserved for the exchange",
    "bound_elsewhere": "settles to another address",
}

_WALLET_ADDRESS: Final = re.compile(WALLET_ADDRESS_PATTERN)
_IDENTIFIER: Final = re.compile(IDENTIFIER_PATTERN)


def is_wallet_address(account: str) -> bool:
    """Tell whether an exchange account is a wallet address (0x and 40 hex digits)."""
    return _WALLET_ADDRESS.fullmatch(account) is not None


def is_reserved_account(account: str) -> bool:
    """Tell whether an account is the exchange's own (the fee account, "gpux." names)."""
    return account in RESERVED_ACCOUNTS or account.startswith(RESERVED_ACCOUNT_PREFIX)


@dataclass(frozen=True)
class DepositTarget:
    """The account a deposit credits, before any look-up of who the account belongs to.

    `named` is the account the deposit names when it may credit it: bound to the depositor
    already, or bound to it by this deposit, which the caller checks in the store. None
    means the depositor's own address; `refusal` then says why the name it gave was not
    taken (a key of REFUSALS; "" when it named no account or its own address).
    """

    named: str | None
    refusal: str = ""


def deposit_target(depositor: str, account: bytes) -> DepositTarget:
    """Decide which account a deposit by `depositor` naming `account` (raw bytes) credits.

    The rule, in order: no name or the depositor's own address credits the depositor; so do
    bytes that are not UTF-8, a name that is not an identifier, another wallet address, and
    a reserved account. Any other name is a candidate the store may bind to the depositor.
    """
    try:
        named = account.decode("utf-8")
    except UnicodeDecodeError:
        return DepositTarget(None, "not_utf8")
    if named == "" or named.lower() == depositor.lower():
        return DepositTarget(None)
    if not _IDENTIFIER.fullmatch(named):
        return DepositTarget(None, "not_an_identifier")
    if is_wallet_address(named):
        return DepositTarget(None, "another_wallet")
    if is_reserved_account(named):
        return DepositTarget(None, "reserved")
    return DepositTarget(named)
