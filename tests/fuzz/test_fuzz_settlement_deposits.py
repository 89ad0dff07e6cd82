"""Fuzz the deposit watcher's decoding of Vault `Deposited` logs into `deposit` commands.

Anyone can call `Vault.deposit` with any account string of up to 64 bytes (UTF-8 or not: the
contract checks only the length), so every log the Vault can emit must become a deposit
command that the engine decodes as a deposit, crediting the named account or else the
depositor's address. The logs are ABI-encoded here, as raw logs of eth_getLogs, and decoded
by the watcher; where web3 can decode them too (UTF-8 accounts), both decodings must agree.
The chain, the database, the producer and the token contract are hand-written stubs.
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
from settlement.accounts import is_reserved_account, is_wallet_address
from settlement.chain import DEPOSITED_TOPIC, USDC_ASSET
from settlement.deposits import DepositWatcher, WatcherConfig, decode_deposit_log
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
    """The store's queries the watcher makes: bind an account to its first address (as
    settlement.store.bind_account), and read and save the next block to read."""

    def __init__(self) -> None:
        self.bound: dict[str, str] = {}
        self.next_block: int | None = None

    async def fetchrow(self, query: str, account: str, address: str) -> dict[str, str]:
        assert "settlement.accounts" in query
        return {"address": self.bound.setdefault(account, address)}

    async def fetchval(self, query: str, name: str) -> int | None:
        assert "settlement.watchers" in query
        return self.next_block

    async def execute(self, query: str, name: str, block: int) -> None:
        assert "settlement.watchers" in query
        self.next_block = block


class StubChain:
    def __init__(self, head: int) -> None:
        self.head = head

    def block_number(self) -> int:
        return self.head


class StubContracts:
    """The Vault's raw `Deposited` logs as eth_getLogs returns them, and the token's symbols."""

    def __init__(self, logs: list[dict[str, Any]]) -> None:
        self.logs = logs
        self.chain = StubChain(max((entry["blockNumber"] for entry in logs), default=1))
        self.deployment = type("Deployment", (), {"block_number": 1})()

    def deposit_logs(self, start: int, end: int) -> list[dict[str, Any]]:
        return [entry for entry in self.logs if start <= entry["blockNumber"] <= end]

    def symbol_of(self, asset: int) -> str:
        return SYMBOL if asset != USDC_ASSET else ""


class StubProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[bytes]]] = []

    async def send_batch(self, topic: str, values: list[bytes]) -> None:
        self.sent.append((topic, values))


def raw_log(depositor: bytes, asset: int, amount: int, account: bytes, index: int,
            block: int = 1) -> Any:
    return {
        "address": "0x" + "11" * 20, "blockNumber": block, "logIndex": index,
        "transactionIndex": 0, "transactionHash": HexBytes(bytes([index]) * 32),
        "blockHash": HexBytes(b"\x44" * 32), "removed": False,
        "topics": [HexBytes(TOPIC), HexBytes(depositor.rjust(32, b"\0")),
                   HexBytes(asset.to_bytes(32, "big"))],
        "data": HexBytes(abi_encode(["uint256", "bytes"], [amount, account])),
    }


def watcher_over(logs: list[dict[str, Any]], producer: StubProducer | None = None
                 ) -> DepositWatcher:
    return DepositWatcher(StubContracts(logs), StubConn(),  # type: ignore[arg-type]
                          producer=producer or StubProducer(),  # type: ignore[arg-type]
                          config=WatcherConfig(confirmations=1), clock_ns=lambda: TS)


async def commands_of(logs: list[dict[str, Any]]) -> list[Deposit]:
    watcher = watcher_over(logs)
    return [await watcher._command(entry) for entry in watcher._deposit_logs(1, 1)]


def test_the_event_abi_here_is_the_vaults() -> None:
    assert ("event Deposited(address indexed depositor, uint256 indexed asset, "
            "uint256 amount, string account);") in VAULT_SOURCE.read_text()
    assert DEPOSITED_TOPIC == TOPIC


utf8_accounts = st.one_of(
    st.text(max_size=ACCOUNT_BYTES_MAX), st.from_regex(IDENTIFIER_PATTERN, fullmatch=True),
    st.sampled_from(["", "fees", "alice", "gpux.fees", "0x" + "ab" * 20, "0x-" + "f" * 39,
                     "é" * 32, "a" * 64, "a\n"]),
).map(lambda text: text.encode()).filter(lambda data: len(data) <= ACCOUNT_BYTES_MAX)
any_accounts = st.one_of(utf8_accounts, st.binary(max_size=ACCOUNT_BYTES_MAX))
depositors = st.binary(min_size=20, max_size=20)
assets = st.sampled_from([USDC_ASSET, 7])
amounts = st.integers(min_value=1, max_value=AMOUNT_MAX)
deposits = st.tuples(depositors, assets, amounts, any_accounts)


def utf8_or_none(data: bytes) -> str | None:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


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
        named = utf8_or_none(account)
        assert command.account in (address, named)
        if command.account == named and named != address:
            assert _IDENTIFIER.match(named) and not is_wallet_address(named)
            assert not is_reserved_account(named), "only the operator binds the exchange's own"
            assert credited.setdefault(named, address) == address, "one account, one address"
        assert command.amount == (format_micro(amount) if asset == USDC_ASSET else amount)
        assert command.asset == ("USDC" if asset == USDC_ASSET else SYMBOL)


@fuzz(150)
@given(depositor=depositors, asset=assets, amount=amounts, account=utf8_accounts)
def test_the_watcher_decodes_a_log_as_web3_does(depositor: bytes, asset: int, amount: int,
                                                account: bytes) -> None:
    entry = raw_log(depositor, asset, amount, account, index=3)
    by_web3 = get_event_data(_codec, EVENT_ABI, entry)
    decoded = decode_deposit_log(entry)
    assert (decoded.depositor, decoded.asset, decoded.amount, decoded.account.decode()) == (
        by_web3["args"]["depositor"], by_web3["args"]["asset"], by_web3["args"]["amount"],
        by_web3["args"]["account"])
    assert (decoded.block_number, decoded.log_index) == (1, 3)
    assert decoded.deposit_id == f"0x{bytes(by_web3['transactionHash']).hex()}:3"


@pytest.mark.parametrize("account", [
    "0x-" + "f" * 39, "0x" + "f" * 19 + "_" + "f" * 20, "0x " + "f" * 39, "0x+" + "f" * 39,
    "0X" + "f" * 40, "0x" + "f" * 40 + "\n", "0x" + "f" * 39, "0x" + "f" * 41,
])
def test_an_account_with_a_sign_or_underscore_is_not_a_wallet_address(account: str) -> None:
    assert not is_wallet_address(account)


@pytest.mark.parametrize("account", [
    pytest.param(b"a b", id="not_an_identifier"), pytest.param(b"x" * 65, id="65_bytes"),
    pytest.param(b"0x" + b"ab" * 20, id="another_wallet"),
    pytest.param(b"\xff\xfe", id="not_utf8"),
    pytest.param(b"alice\xc3", id="truncated_utf8"),
    pytest.param(b"fees", id="fee_account"),
    pytest.param(b"gpux.fence", id="reserved_prefix"),
    pytest.param(b"@bond:i-1", id="bond_account"),  # a bond is funded only by its issue
    pytest.param(b"@chain", id="chain_account"),
])
async def test_a_deposit_naming_an_account_it_may_not_credit_credits_the_depositor(
    account: bytes
) -> None:
    depositor = b"\x22" * 20
    commands = await commands_of([raw_log(depositor, USDC_ASSET, 5, account, index=0)])
    assert [command.account for command in commands] == [to_checksum_address(depositor)]


async def test_a_deposit_naming_the_fee_account_binds_nothing() -> None:
    watcher = watcher_over([raw_log(b"\x22" * 20, USDC_ASSET, 5, b"fees", index=0),
                            raw_log(b"\x33" * 20, USDC_ASSET, 5, b"gpux.x", index=1)])
    await watcher.step()
    assert watcher.conn.bound == {}


async def test_a_log_whose_account_is_not_utf8_does_not_stop_the_deposits_after_it() -> None:
    depositor = b"\x22" * 20
    logs = [raw_log(depositor, USDC_ASSET, 5, b"\xff\xfe", index=0, block=2),
            raw_log(depositor, 7, 3, b"alice", index=1, block=2),
            raw_log(depositor, USDC_ASSET, 9, b"", index=0, block=3)]
    producer = StubProducer()
    watcher = watcher_over(logs, producer)
    assert await watcher.step() == 3
    assert await watcher.step() == 0
    sent = [decode_command(value) for _, values in producer.sent for value in values]
    address = to_checksum_address(depositor)
    assert [(c.account, c.asset, c.amount) for c in sent if isinstance(c, Deposit)] == [
        (address, "USDC", "0.000005"), ("alice", SYMBOL, 3), (address, "USDC", "0.000009")]
