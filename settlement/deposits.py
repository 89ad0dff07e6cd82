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
it); a named account bound to another address, or a malformed name, credits the depositor's
address instead (the tokens sit at the depositor's address on chain, and an exchange balance
must be backed by the address its account settles to).

A lost database connection is replaced (`ledger.db.reconnect`, bounded backoff) and the
watcher goes on from the next block stored: a range whose progress was lost with the
connection is read and sent again, which the engine rejects as duplicates, as above.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from eth_utils.address import to_checksum_address

from eventlog.port import COMMANDS_TOPIC, Producer
from ledger.db import ConnectionOpener, RetryPolicy, is_connection_failure, reconnect
from protocol import USDC, Deposit, encode, format_micro
from protocol.commands import IDENTIFIER_PATTERN
from settlement import store
from settlement.chain import USDC_ASSET, Contracts, call_rpc, is_wallet_address
from settlement.errors import SettlementError

log = logging.getLogger("gpux.settlement.deposits")
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)


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
        for name in ("confirmations", "poll_interval_ms", "blocks_per_query_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def commands_topic(self) -> str:
        return self.topic_namespace + COMMANDS_TOPIC


class DepositWatcher:
    """Turn confirmed Vault deposits into `deposit` commands; `step()` does one round.

    With `reopen` (how to open a connection like `conn`), `run()` replaces a connection the
    database dropped, retrying per `reconnect_policy`; without it the failure is raised.
    """

    def __init__(self, contracts: Contracts, conn: asyncpg.Connection, producer: Producer,
                 config: WatcherConfig, clock_ns: Callable[[], int] = time.time_ns, *,
                 reopen: ConnectionOpener | None = None,
                 reconnect_policy: RetryPolicy | None = None) -> None:
        self.contracts = contracts
        self.conn = conn
        self.producer = producer
        self.config = config
        self.clock_ns = clock_ns
        self.reopen = reopen
        self.reconnect_policy = reconnect_policy
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
        await store.save_next_block(self.conn, self.config.name, end + 1)
        return len(commands)

    async def run(self, stop: asyncio.Event) -> None:
        """Step until `stop`; a node that does not answer is retried every poll interval."""
        while not stop.is_set():
            sent = 0
            try:
                sent = await self.step()
            except SettlementError as error:
                if not error.retriable:
                    raise
                log.warning("deposit watcher: %s; retrying", error)
            except Exception as error:
                if self.reopen is None or not is_connection_failure(error):
                    raise
                conn = await reconnect(self.conn, error, self.reopen, stop, what="deposit watcher",
                                       policy=self.reconnect_policy, logger=log)
                if conn is None:
                    return
                self.conn = conn
                continue  # the next step reads the stored next block, as after a restart
            if sent == 0:
                try:
                    await asyncio.wait_for(stop.wait(), self.config.poll_interval_ms / 1000)
                except TimeoutError:
                    pass

    def _deposit_logs(self, start: int, end: int) -> list[Any]:
        event = self.contracts.vault.events.Deposited()
        logs = call_rpc(lambda: list(event.get_logs(from_block=start, to_block=end)),
                        "eth_getLogs")
        return sorted(logs, key=lambda entry: (entry["blockNumber"], entry["logIndex"]))

    async def _command(self, entry: Any) -> Deposit:
        args = entry["args"]
        asset_id = int(args["asset"])
        amount = int(args["amount"])
        account = await self._account_for(str(args["depositor"]), str(args["account"]))
        deposit_id = f"0x{bytes(entry['transactionHash']).hex()}:{entry['logIndex']}"
        if asset_id == USDC_ASSET:
            return Deposit(ts=self.clock_ns(), account=account, asset=USDC,
                           amount=format_micro(amount), deposit_id=deposit_id)
        symbol = await self._symbol(asset_id)
        return Deposit(ts=self.clock_ns(), account=account, asset=symbol, amount=amount,
                       deposit_id=deposit_id)

    async def _symbol(self, asset_id: int) -> str:
        symbol = self._symbols.get(asset_id)
        if symbol is None:
            symbol = await asyncio.to_thread(self.contracts.symbol_of, asset_id)
            if not symbol:
                raise SettlementError(f"the vault took a deposit of unknown token id {asset_id}")
            self._symbols[asset_id] = symbol
        return symbol

    async def _account_for(self, depositor: str, named: str) -> str:
        depositor = to_checksum_address(depositor)
        if named == "" or named.lower() == depositor.lower():
            return depositor
        if is_wallet_address(named) or not _IDENTIFIER.fullmatch(named):
            log.warning("deposit by %s names account %r, which it cannot credit; "
                        "crediting %s", depositor, named, depositor)
            return depositor
        bound = await store.bind_account(self.conn, named, depositor)
        if bound.lower() != depositor.lower():
            log.warning("deposit by %s names account %r, which settles to %s; crediting %s",
                        depositor, named, bound, depositor)
            return depositor
        return named
