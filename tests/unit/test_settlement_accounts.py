"""Which account a deposit credits, wallet addresses told from names, reserved accounts."""

from __future__ import annotations

import pytest

from protocol import FEE_ACCOUNT
from settlement import store
from settlement.accounts import (
    DepositTarget,
    deposit_target,
    is_reserved_account,
    is_wallet_address,
)

DEPOSITOR = "0x" + "Ab" * 20


@pytest.mark.parametrize("account", [
    "0x" + "ab" * 20, "0x" + "AB" * 20, "0x" + "0" * 40, DEPOSITOR,
])
def test_0x_and_forty_hex_digits_is_a_wallet_address(account: str) -> None:
    assert is_wallet_address(account)


@pytest.mark.parametrize("account", [
    "alice", "", "0x", "0x" + "a" * 39, "0x" + "a" * 41, "0x" + "g" * 40, "0X" + "a" * 40,
    "0x-" + "a" * 39, "0x+" + "a" * 39, "0x " + "a" * 39, "0x" + "a" * 19 + "_" + "a" * 20,
    "0x" + "a" * 40 + "\n", " 0x" + "a" * 40, "0x" + "٣" * 40,
])
def test_anything_else_is_not(account: str) -> None:
    assert not is_wallet_address(account)


@pytest.mark.parametrize("account", [FEE_ACCOUNT, "gpux.", "gpux.fence", "gpux.fees"])
def test_the_exchanges_own_accounts_are_reserved(account: str) -> None:
    assert is_reserved_account(account)


@pytest.mark.parametrize("account", ["alice", "fees2", "feesx", "gpux", "gpuxfees", "x.gpux."])
def test_other_names_are_not_reserved(account: str) -> None:
    assert not is_reserved_account(account)


@pytest.mark.parametrize(("account", "target"), [
    (b"", DepositTarget(None)),
    (DEPOSITOR.encode(), DepositTarget(None)),
    (DEPOSITOR.lower().encode(), DepositTarget(None)),
    (b"alice", DepositTarget("alice")),
    (b"op-1.eu:x_y", DepositTarget("op-1.eu:x_y")),
    (b"\xff\xfe", DepositTarget(None, "not_utf8")),
    (b"a b", DepositTarget(None, "not_an_identifier")),
    (b"alice\n", DepositTarget(None, "not_an_identifier")),
    (b"x" * 65, DepositTarget(None, "not_an_identifier")),
    (("0x" + "cd" * 20).encode(), DepositTarget(None, "another_wallet")),
    (b"fees", DepositTarget(None, "reserved")),
    (b"gpux.fence", DepositTarget(None, "reserved")),
])
def test_a_deposit_credits_the_name_it_gives_only_when_it_may(account: bytes,
                                                              target: DepositTarget) -> None:
    assert deposit_target(DEPOSITOR, account) == target


class RefusingConn:
    async def fetchrow(self, query: str, *args: object) -> None:
        raise AssertionError("bind_account must refuse before it asks the database")


@pytest.mark.parametrize("account", [FEE_ACCOUNT, "gpux.fence", "0x" + "ab" * 20])
async def test_the_store_never_binds_a_reserved_account_or_a_wallet(account: str) -> None:
    with pytest.raises(ValueError, match="cannot be bound"):
        await store.bind_account(RefusingConn(), account, DEPOSITOR)


class AccountsConn:
    """settlement.accounts rows, for store.addresses' one query."""

    def __init__(self, rows: dict[str, str]) -> None:
        self.rows = rows
        self.asked: list[str] = []

    async def fetch(self, query: str, accounts: list[str]) -> list[dict[str, str]]:
        assert "settlement.accounts" in query
        self.asked += accounts
        return [{"account": a, "address": self.rows[a]} for a in accounts if a in self.rows]


async def test_a_name_that_only_looks_like_an_address_settles_to_its_registered_address() -> None:
    wallet, lookalike = "0x" + "ab" * 20, "0x-" + "f" * 39
    conn = AccountsConn({lookalike: DEPOSITOR})
    found = await store.addresses(conn, [wallet, lookalike, "nobody"])
    assert found == {wallet: wallet, lookalike: DEPOSITOR}
    assert sorted(conn.asked) == sorted([lookalike, "nobody"])
