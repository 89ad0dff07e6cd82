"""Fuzz the deposit watcher's decoding of Vault `Deposited` logs into `deposit` commands.

Anyone can call `Vault.deposit` with any account string of up to 64 bytes, so every log the
Vault can emit must become a deposit command that the engine decodes as a deposit, crediting
the named account or else the depositor's address. The logs are ABI-encoded here and read
through the same web3 decoding that `ContractEvent.get_logs` applies; the chain, the
database and the token contract are hand-written stubs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from hypothesis import given
from hypothesis import strategies as st
from web3 import Web3
from web3._utils.events import get_event_data

from protocol import Deposit, decode_command, encode, format_micro
from protocol.commands import IDENTIFIER_PATTERN
from settlement.chain import USDC_ASSET, is_wallet_address
from settlement.deposits import DepositWatcher, WatcherConfig
from tests.fuzz.support import fuzz

VAULT_SOURCE = Path(__file__).parents[2] / "settlement" / "contracts" / "Vault.sol"
EVENT_ABI: dict[str, Any] = {"type": "event", "name": "Deposited", "anonymous": False, "inputs": [
    {"name": "depositor", "type": "address", "indexed": True},
    {"name": "asset", "type": "uint256", "indexed": True},
    {"name": "amount", "type": "uint256", "indexed": False},
    {"name": "account", "type": "string", "indexed": False},
]}
TOPIC = keccak(text="Deposited(address,uint256,uint256,string)")
ACCOUNT_BYTES_MAX = 64  # Vault.ACCOUNT_LENGTH_MAX
AMOUNT_MAX = 10**18  # what the engine takes (protocol.money.MICRO_MAX)
SYMBOL = "H100.fz"
TS = 1_700_000_000_000_000_000
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_codec = Web3().codec


class StubConn:
    """settlement.store.bind_account's one query: bind an account to its first address."""

    def __init__(self) -> None:
        self.bound: dict[str, str] = {}

    async def fetchrow(self, query: str, account: str, address: str) -> dict[str, str]:
        assert "settlement.accounts" in query
        return {"address": self.bound.setdefault(account, address)}


class StubEvent:
    def __init__(self, logs: list[dict[str, Any]]) -> None:
        self.logs = logs

    def get_logs(self, *, from_block: int, to_block: int) -> list[Any]:
        return [get_event_data(_codec, EVENT_ABI, entry) for entry in self.logs
                if from_block <= entry["blockNumber"] <= to_block]


class StubContracts:
    def __init__(self, logs: list[dict[str, Any]]) -> None:
        events = type("Events", (), {"Deposited": lambda _self: StubEvent(logs)})()
        self.vault = type("Vault", (), {"events": events})()

    def symbol_of(self, asset: int) -> str:
        return SYMBOL if asset != USDC_ASSET else ""


def raw_log(depositor: bytes, asset: int, amount: int, account: bytes, index: int) -> Any:
    return {
        "address": "0x" + "11" * 20, "blockNumber": 1, "logIndex": index,
        "transactionIndex": 0, "transactionHash": HexBytes(bytes([index]) * 32),
        "blockHash": HexBytes(b"\x44" * 32), "removed": False,
        "topics": [HexBytes(TOPIC), HexBytes(depositor.rjust(32, b"\0")),
                   HexBytes(asset.to_bytes(32, "big"))],
        "data": HexBytes(abi_encode(["uint256", "bytes"], [amount, account])),
    }


def watcher_over(logs: list[dict[str, Any]]) -> DepositWatcher:
    return DepositWatcher(StubContracts(logs), StubConn(), producer=None,  # type: ignore[arg-type]
                          config=WatcherConfig(), clock_ns=lambda: TS)


async def commands_of(logs: list[dict[str, Any]]) -> list[Deposit]:
    watcher = watcher_over(logs)
    return [await watcher._command(entry) for entry in watcher._deposit_logs(1, 1)]


def test_the_event_abi_here_is_the_vaults() -> None:
    assert ("event Deposited(address indexed depositor, uint256 indexed asset, "
            "uint256 amount, string account);") in VAULT_SOURCE.read_text()


utf8_accounts = st.one_of(
    st.text(max_size=ACCOUNT_BYTES_MAX), st.from_regex(IDENTIFIER_PATTERN, fullmatch=True),
    st.sampled_from(["", "fees", "alice", "0x" + "ab" * 20, "é" * 32, "a" * 64, "a\n"]),
).map(lambda text: text.encode()).filter(lambda data: len(data) <= ACCOUNT_BYTES_MAX)
deposits = st.tuples(st.binary(min_size=20, max_size=20), st.sampled_from([USDC_ASSET, 7]),
                     st.integers(min_value=1, max_value=AMOUNT_MAX), utf8_accounts)


@fuzz(150)
@given(drawn=st.lists(deposits, min_size=1, max_size=4))
async def test_every_deposit_log_becomes_a_deposit_the_engine_decodes(
    drawn: list[tuple[bytes, int, int, bytes]]
) -> None:
    logs = [raw_log(*deposit, index=index) for index, deposit in enumerate(drawn)]
    commands = await commands_of(logs)
    assert len(commands) == len(drawn)
    credited: dict[str, str] = {}
    for command, (depositor, asset, amount, account) in zip(commands, drawn, strict=True):
        assert decode_command(encode(command)) == command
        address = to_checksum_address(depositor)
        named = account.decode()
        assert command.account in (address, named)
        if command.account == named and named != address:
            assert _IDENTIFIER.match(named) and not is_wallet_address(named)
            assert credited.setdefault(named, address) == address, "one account, one address"
        assert command.amount == (format_micro(amount) if asset == USDC_ASSET else amount)
        assert command.asset == ("USDC" if asset == USDC_ASSET else SYMBOL)


@pytest.mark.xfail(strict=True, reason=(
    "settlement.chain.is_wallet_address parses with int(_, 16), which takes a sign, "
    "underscores and spaces: a named account such as '0x-' + 39 hex digits (a valid "
    "identifier) is taken for a wallet address, as in settlement.store.addresses"))
@pytest.mark.parametrize("account", ["0x-" + "f" * 39, "0x" + "f" * 19 + "_" + "f" * 20])
def test_an_account_with_a_sign_or_underscore_is_not_a_wallet_address(account: str) -> None:
    assert not is_wallet_address(account)



NOT_UTF8 = pytest.mark.xfail(strict=True, raises=UnicodeDecodeError, reason=(
    "settlement: web3 decodes the account string strictly; a log whose account is not UTF-8 "
    "raises UnicodeDecodeError out of every DepositWatcher.step, so the watcher never gets "
    "past that block and no later deposit is credited"))
FEE_ACCOUNT = pytest.mark.xfail(strict=True, reason=(
    "settlement: the first deposit naming an account binds it to the depositor, and the "
    "exchange's own fee account is no exception: whoever deposits naming 'fees' before the "
    "operator registers it gets every fee settled to their address"))


@pytest.mark.parametrize("account", [
    pytest.param(b"a b", id="not_an_identifier"), pytest.param(b"x" * 65, id="65_bytes"),
    pytest.param(b"0x" + b"ab" * 20, id="another_wallet"),
    pytest.param(b"\xff\xfe", marks=NOT_UTF8, id="not_utf8"),
    pytest.param(b"fees", marks=FEE_ACCOUNT, id="fee_account"),
])
async def test_a_deposit_naming_an_account_it_may_not_credit_credits_the_depositor(
    account: bytes
) -> None:
    depositor = b"\x22" * 20
    commands = await commands_of([raw_log(depositor, USDC_ASSET, 5, account, index=0)])
    assert [command.account for command in commands] == [to_checksum_address(depositor)]
