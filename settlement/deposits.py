"""The deposit watcher: Vault `Deposited` events, N blocks deep, become `deposit` commands.

Each step reads the Vault's deposit logs from the next unread block up to the newest block
with at least `confirmations` confirmations (head - confirmations + 1), sends one `deposit`
command per log to the commands topic, then stores the next block to read. A block is never
read before it is that deep, so a reorganisation shorter than `confirmations` blocks cannot
make the watcher credit a deposit that the chain later drops.

`deposit_id` is "<tx hash>:<log index>": a watcher that dies after sending and before
storing its progress reads the same logs again, and the engine rejects each repeat as
`duplicate_deposit`, so nothing is credited twice.

The exchange account credited is the event's `account` when it names one the depositor may
credit, else the depositor's own address (checksummed): "" or the depositor's address; a
named account with no address yet is bound to the depositor (its first deposit registers
it); a named account bound to another address, a reserved account (`fees`, "gpux." names:
only the operator registers those), a malformed name and bytes that are not UTF-8 credit the
depositor's address instead (the tokens sit at the depositor's address on chain, and an
exchange balance must be backed by the address its account settles to). The rule itself is
`settlement.accounts.deposit_target`.

Logs are read undecoded and decoded here one by one (`decode_deposit_log`), the account as
raw bytes: `Vault.deposit` takes any string of up to 64 bytes, and a strict UTF-8 decoding
of the whole range (web3's) would fail on every step at the same log and so stop crediting
every deposit after it.

A lost database connection is replaced (`runtime.postgres.reconnect`, bounded backoff) and the
watcher goes on from the next block stored: a range whose progress was lost with the
connection is read and sent again, which the engine rejects as duplicates, as above.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import msgspec
from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes

from eventlog.port import COMMANDS_TOPIC, Producer
from protocol import USDC, Deposit, encode, format_micro
from runtime.config import require_positive
from runtime.postgres import ConnectionOpener
from runtime.retry import RetryPolicy
from settlement import store
from settlement.accounts import REFUSALS, deposit_target
from settlement.chain import DEPOSITED_TOPIC, USDC_ASSET, Contracts
from settlement.errors import SettlementError
from settlement.looping import SteppingService
from settlement.metrics import SettlementMetrics

log = logging.getLogger("gpux.settlement.deposits")


class DepositLog(msgspec.Struct, frozen=True, kw_only=True):
    """One Vault `Deposited` log, decoded; `account` is the bytes the depositor gave."""

    block_number: int
    log_index: int
    transaction_hash: bytes
    depositor: str  # checksummed
    asset: int
    amount: int
    account: bytes

    @property
    def deposit_id(self) -> str:
        return f"0x{self.transaction_hash.hex()}:{self.log_index}"


def decode_deposit_log(entry: Mapping[str, Any]) -> DepositLog:
    """Decode a raw `Deposited` log (as eth_getLogs returns it), the account as raw bytes.

    The ABI encodes a `string` as it does `bytes`, so decoding it as `bytes` never fails on
    its content. A log that is not a well-formed `Deposited` of the Vault's raises a
    non-retriable SettlementError: it means the deployment is not the one we know.
    """
    topics = [bytes(HexBytes(topic)) for topic in entry["topics"]]
    if len(topics) != 3 or topics[0] != DEPOSITED_TOPIC:
        raise SettlementError(f"log {entry.get('logIndex')} of block {entry.get('blockNumber')}"
                              " is not a Vault Deposited log")
    try:
        (depositor,) = abi_decode(["address"], topics[1])
        (asset,) = abi_decode(["uint256"], topics[2])
        amount, account = abi_decode(["uint256", "bytes"], bytes(HexBytes(entry["data"])))
    except DecodingError as error:
        raise SettlementError(f"a Deposited log of block {entry.get('blockNumber')} does not "
                              f"decode: {error}") from error
    return DepositLog(
        block_number=int(entry["blockNumber"]), log_index=int(entry["logIndex"]),
        transaction_hash=bytes(HexBytes(entry["transactionHash"])),
        depositor=to_checksum_address(depositor), asset=int(asset), amount=int(amount),
        account=bytes(account),
    )


@dataclass(frozen=True)
class WatcherConfig:
    """How deep a deposit must be, how often to look, and where the commands go."""

    confirmations: int = 12
    poll_interval_ms: int = 1000
    blocks_per_query_max: int = 2000
    name: str = "deposits"
    # Prefixed to the commands topic, as the engine's EngineConfig.topic_namespace.
    topic_namespace: str = ""

    def __post_init__(self) -> None:
        require_positive(self, "confirmations", "poll_interval_ms", "blocks_per_query_max")

    @property
    def commands_topic(self) -> str:
        return self.topic_namespace + COMMANDS_TOPIC


class DepositWatcher(SteppingService):
    """Turn confirmed Vault deposits into `deposit` commands; `step()` does one round.

    `run()` loops (settlement.looping: retries, reconnects with `reopen`, pauses when idle).
    `metrics` (shared with the submitter of the same process) counts what it sends.
    """

    def __init__(self, contracts: Contracts, conn: asyncpg.Connection, producer: Producer,
                 config: WatcherConfig, clock_ns: Callable[[], int] = time.time_ns, *,
                 reopen: ConnectionOpener | None = None,
                 reconnect_policy: RetryPolicy | None = None,
                 metrics: SettlementMetrics | None = None) -> None:
        super().__init__(conn, name="deposit watcher", label="deposits",
                         poll_interval_ms=config.poll_interval_ms, reopen=reopen,
                         reconnect_policy=reconnect_policy, metrics=metrics)
        self.contracts = contracts
        self.producer = producer
        self.config = config
        self.clock_ns = clock_ns
        self._symbols: dict[int, str] = {}

    async def step(self) -> int:
        """Read one range of confirmed blocks; return how many deposit commands were sent."""
        head = await asyncio.to_thread(self.contracts.chain.block_number)
        confirmed = head - self.config.confirmations + 1
        start = await store.next_block(self.conn, self.config.name)
        if start is None:
            start = self.contracts.deployment.block_number
        if confirmed < start:
            return 0
        end = min(confirmed, start + self.config.blocks_per_query_max - 1)
        logs = await asyncio.to_thread(self._deposit_logs, start, end)
        commands = [await self._command(entry) for entry in logs]
        if commands:
            await self.producer.send_batch(
                self.config.commands_topic, [encode(command) for command in commands]
            )
            log.info("blocks %d..%d: %d deposit(s) sent", start, end, len(commands))
            for command, entry in zip(commands, logs, strict=True):
                credited = "depositor" if command.account == entry.depositor else "named"
                self.metrics.deposits.labels(credited).inc()
        await store.save_next_block(self.conn, self.config.name, end + 1)
        self.metrics.deposits_next_block.set(end + 1)
        return len(commands)

    async def _step(self) -> bool:
        return await self.step() > 0

    def _deposit_logs(self, start: int, end: int) -> list[DepositLog]:
        logs = [decode_deposit_log(entry) for entry in self.contracts.deposit_logs(start, end)]
        return sorted(logs, key=lambda entry: (entry.block_number, entry.log_index))

    async def _command(self, entry: DepositLog) -> Deposit:
        account = await self._account_for(entry.depositor, entry.account)
        if entry.asset == USDC_ASSET:
            return Deposit(ts=self.clock_ns(), account=account, asset=USDC,
                           amount=format_micro(entry.amount), deposit_id=entry.deposit_id)
        symbol = await self._symbol(entry.asset)
        return Deposit(ts=self.clock_ns(), account=account, asset=symbol, amount=entry.amount,
                       deposit_id=entry.deposit_id)

    async def _symbol(self, asset_id: int) -> str:
        symbol = self._symbols.get(asset_id)
        if symbol is None:
            symbol = await asyncio.to_thread(self.contracts.symbol_of, asset_id)
            if not symbol:
                raise SettlementError(f"the vault took a deposit of unknown token id {asset_id}")
            self._symbols[asset_id] = symbol
        return symbol

    async def _account_for(self, depositor: str, account: bytes) -> str:
        """Return the account a deposit credits, binding a named one on its first deposit."""
        target = deposit_target(depositor, account)
        named = target.named
        if named is None:
            if target.refusal:
                self.metrics.deposit_names_refused.labels(target.refusal).inc()
                log.warning("deposit by %s names account %r, which %s; crediting %s",
                            depositor, account, REFUSALS[target.refusal], depositor)
            return depositor
        bound = await store.bind_account(self.conn, named, depositor)
        if bound.lower() != depositor.lower():
            self.metrics.deposit_names_refused.labels("bound_elsewhere").inc()
            log.warning("deposit by %s names account %r, which settles to %s; crediting %s",
                        depositor, named, bound, depositor)
            return depositor
        return named
