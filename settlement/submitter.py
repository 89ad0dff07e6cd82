"""The batcher and submitter (`gpux settlement run`): one transaction job at a time.

Jobs are batches of fills, delivery moves and delivery reports' evidence (`Vault.settle`),
payouts of withdrawals (`Vault.payout`) and publications of the price index
(`IndexOracle.publish`); the settler key has at most one in flight, which keeps its nonces
simple. Each `step()` does one thing and
says what (an `Outcome`):
- no open job: cut a batch from the unsettled trades and delivery entries (`batching`), or
  else a payout of the next withdrawal once everything before it has settled, or else a
  publication of index values, and store it `pending` (a publication goes first once after
  each settled batch: see below);
- an open job the chain already holds: follow its transaction to `confirmations` blocks
  (re-checking the block is still canonical), then mark it `settled`;
- an open job not on chain: sign the call, record the transaction (nonce, hash, fees) in
  PostgreSQL, then broadcast it. A recorded transaction still in the mempool after
  `stuck_after_ms` is replaced with fees raised by `fee_bump_percent` (same nonce); one the
  node no longer knows (dropped, or the node restarted) is sent again, with the same nonce
  unless that nonce has been used since.

Because the chain is asked first, a restart never sends a job that already happened, and
because the hash is recorded before the broadcast, no transaction is ever out there that
the store does not know. A transaction mined and then dropped by a reorganisation makes the
job undone again, and it is sent again. A job the chain refuses (a revert) stops the
submitter with RefusedError: it needs a person.

Payouts wait for what comes before them: a withdrawal at seq W is paid only when every trade
and delivery entry with a seq below W has settled, so the address's balance on chain covers
it. A redemption waits for the payouts before it in turn (`batching`): the Vault pays out
no redeemed token.

The index goes on chain with the settlement batches: once a batch through seq S has settled,
the values of `index.values` with a last_seq of at most S not yet published go out, at most
`index_values_max` per transaction, in the order `index.store.values_after` gives them (so
each class's minutes move forward, as the oracle requires). One publication goes before the
next batch is cut, so every settled batch is followed by its values even under a steady
stream of batches; the rest of a backlog (an index service catching up) goes whenever there
is no batch or payout to store. Values never get ahead of the trades they come from.

Its metrics (`settlement.metrics`): what it sends and settles, gas, the time from storing a
job to its settling, and the backlog, read from the store every `backlog_interval_ms`.

The submitter keeps nothing between steps that the store does not hold, so a lost database
connection (PostgreSQL restarted or failed over) is handled as a restart is: `run()` opens
a new connection (`runtime.postgres.reconnect`, bounded backoff) and the next step reads the open
job again and asks the chain first. A write whose commit was lost with the connection is
either in the store or not; both cases are ones a restart already meets.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from eth_account.datastructures import SignedTransaction
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    TransactionNotFound,
    Web3RPCError,
)

from protocol import USDC
from runtime.config import require_positive
from runtime.postgres import ConnectionOpener
from runtime.retry import RetryPolicy
from settlement import store
from settlement.batching import (
    Blocked,
    Item,
    accounts_to_resolve,
    entries,
    in_seq_order,
    plan_batch,
    redeemed_assets,
    settleable_prefix,
    split,
)
from settlement.chain import USDC_ASSET, Contracts, call_rpc, token_id
from settlement.errors import RefusedError
from settlement.jobs import BatchJob, IndexJob, Job, PayoutJob
from settlement.looping import SteppingService
from settlement.metrics import SettlementMetrics
from settlement.store import Batch, IndexProgress, IndexPublication, Payout

log = logging.getLogger("gpux.settlement.submitter")
BACKLOG_COUNT_MAX = 1_000_000  # rows the backlog gauges count at most (a bounded query)


class Outcome(enum.StrEnum):
    IDLE = "idle"                              # nothing to settle or pay
    WAITING_FOR_TRADES = "waiting_for_trades"  # a partial batch waits for its interval
    WAITING_FOR_ACCOUNTS = "waiting_for_accounts"
    WAITING_FOR_SETTLEMENT = "waiting_for_settlement"  # a payout waits for what is before it
    WAITING_FOR_PAYOUTS = "waiting_for_payouts"  # a redemption waits for earlier payouts
    STORED = "stored"                          # a new job is stored, not yet sent
    SENT = "sent"
    WAITING = "waiting"                        # our transaction is in the mempool
    BUMPED = "bumped"                          # replaced with higher fees
    RESENT = "resent"                          # sent again after the node lost it
    CONFIRMING = "confirming"                  # on chain, not yet N blocks deep
    SETTLED = "settled"


@dataclass(frozen=True)
class SubmitterConfig:
    """Batch size and timing, confirmations, and the fee policy of the settler."""

    confirmations: int = 12
    batch_size_max: int = 1000
    batch_interval_ms: int = 5000
    poll_interval_ms: int = 500
    stuck_after_ms: int = 60_000
    fee_bump_percent: int = 25
    sends_max: int = 20
    priority_fee_wei: int = 1_000_000_000
    max_fee_per_gas_cap_wei: int = 1_000_000_000_000
    pay_withdrawals: bool = True
    # how often the backlog gauges are read from the store (a few counts)
    backlog_interval_ms: int = 5000
    # index values per IndexOracle.publish transaction (~56,000 gas each: settlement/README.md)
    index_values_max: int = 100

    def __post_init__(self) -> None:
        require_positive(
            self, "confirmations", "batch_size_max", "poll_interval_ms", "sends_max",
            "priority_fee_wei", "max_fee_per_gas_cap_wei", "backlog_interval_ms",
            "index_values_max",
        )
        if self.batch_interval_ms < 0 or self.stuck_after_ms < 0:
            raise ValueError("batch_interval_ms and stuck_after_ms must be >= 0")
        if self.fee_bump_percent < 10:
            raise ValueError("a replacement needs fees at least 10% higher: fee_bump_percent")


@dataclass
class MempoolView:
    """What the node knows of a job's recorded transactions."""

    mined: bool = False
    reverted: bytes | None = None
    in_mempool: bool = False
    next_nonce: int = 0


class Submitter(SteppingService):
    """Cut, send and confirm jobs; `step()` does one thing, `run()` loops.

    `run()` loops (settlement.looping: retries, reconnects with `reopen`, pauses when idle).
    `metrics` may be shared with the deposit watcher of the same process.
    """

    def __init__(self, contracts: Contracts, conn: asyncpg.Connection, signer: LocalAccount,
                 config: SubmitterConfig, *, reopen: ConnectionOpener | None = None,
                 reconnect_policy: RetryPolicy | None = None,
                 metrics: SettlementMetrics | None = None) -> None:
        super().__init__(conn, name="submitter", label="submitter",
                         poll_interval_ms=config.poll_interval_ms, reopen=reopen,
                         reconnect_policy=reconnect_policy, metrics=metrics)
        self.contracts = contracts
        self.chain = contracts.chain
        self.signer = signer
        self.config = config
        self._last_cut_s = time.monotonic()
        self._last_blocked: Blocked | None = None
        self._last_waiting_payout: tuple[int, str] | None = None
        self._backlog_read_s: float | None = None

    async def _step(self) -> bool:
        outcome = await self.step()
        await self._read_backlog()
        return outcome in (Outcome.STORED, Outcome.SETTLED)

    async def step(self) -> Outcome:
        job = await self._open_job()
        if job is not None:
            return await self._advance(job)
        progress = await store.index_progress(self.conn)
        owed = progress.settled_batch_id > progress.published_batch_id
        if owed and await self._cut_index(progress) == Outcome.STORED:
            return Outcome.STORED  # the values that came with the last settled batch
        outcome = await self._cut_batch()
        if outcome == Outcome.STORED:
            return outcome
        if self.config.pay_withdrawals:
            payout_outcome = await self._cut_payout()
            if payout_outcome != Outcome.IDLE:
                outcome = payout_outcome
            if outcome == Outcome.STORED:
                return outcome
        if not owed and await self._cut_index(progress) == Outcome.STORED:
            return Outcome.STORED  # a backlog of values, while nothing else is to be sent
        return outcome

    async def _read_backlog(self) -> None:
        """Refresh the backlog gauges, at most once per `backlog_interval_ms`."""
        now_s = time.monotonic()
        if (self._backlog_read_s is not None
                and (now_s - self._backlog_read_s) * 1000 < self.config.backlog_interval_ms):
            return
        self._backlog_read_s = now_s
        backlog = await store.backlog(self.conn, BACKLOG_COUNT_MAX)
        metrics = self.metrics
        metrics.settled_seq.set(backlog.settled_seq)
        metrics.unsettled_trades.set(backlog.unsettled_trades)
        metrics.unpaid_withdrawals.set(backlog.unpaid_withdrawals)
        metrics.open_jobs.labels("batch").set(backlog.open_batches)
        metrics.open_jobs.labels("payout").set(backlog.open_payouts)
        metrics.open_jobs.labels("index").set(backlog.open_index_publications)

    async def _open_job(self) -> Job | None:
        batch = await store.open_batch(self.conn)
        if batch is not None:
            return BatchJob(batch)
        payout = await store.open_payout(self.conn)
        if payout is not None:
            return PayoutJob(payout)
        stored = await store.open_index_publication(self.conn)
        return IndexJob(stored) if stored is not None else None

    # --- cutting ---------------------------------------------------------------------------

    async def _cut_batch(self) -> Outcome:
        after_seq, last_batch_id = await store.batched_through(self.conn)
        entries_max = self.config.batch_size_max
        trades, postings, reported = await store.read_unsettled(self.conn, after_seq,
                                                                entries_max)
        items = in_seq_order(trades, postings, entries_max, reported)
        if not items:
            return Outcome.IDLE
        waited_ms = (time.monotonic() - self._last_cut_s) * 1000
        if len(entries(items)) < entries_max and waited_ms < self.config.batch_interval_ms:
            return Outcome.WAITING_FOR_TRADES
        addresses = await store.addresses(self.conn, accounts_to_resolve(items))
        prefix, blocked = settleable_prefix(
            items, addresses, unpaid_withdrawals=await self._unpaid_withdrawals(items))
        self._log_blocked(blocked)
        if not prefix:
            if blocked is not None and blocked.withdrawal_seq is not None:
                return Outcome.WAITING_FOR_PAYOUTS
            return Outcome.WAITING_FOR_ACCOUNTS
        fills, moves, reports = split(prefix)
        plan = plan_batch(fills, addresses, moves, reports)
        batch = Batch(batch_id=last_batch_id + 1, first_seq=plan.first_seq,
                      last_seq=plan.last_seq, fill_count=len(plan.fills),
                      move_count=len(plan.moves), evidence_count=len(plan.evidence),
                      fills_root=plan.fills_root,
                      assets=plan.assets, deltas=plan.deltas, supply=plan.supply,
                      status="pending")
        await store.insert_batch(self.conn, batch, plan.fills, plan.trade_ids, plan.moves,
                                 plan.evidence)
        self._last_cut_s = time.monotonic()
        log.info("batch %d: %d fills, %d delivery moves and %d delivery reports (seq %d..%d), "
                 "%d deltas, %d supply changes", batch.batch_id, batch.fill_count,
                 batch.move_count, batch.evidence_count, batch.first_seq, batch.last_seq,
                 len(batch.deltas), len(batch.supply))
        return Outcome.STORED

    async def _unpaid_withdrawals(self, items: Sequence[Item]) -> dict[str, int]:
        """Return, per token `items` redeem, its first withdrawal not paid out, when this
        submitter pays."""
        if not self.config.pay_withdrawals:
            return {}
        after_seq = await store.paid_through(self.conn)
        return await store.first_unpaid_withdrawals(self.conn, after_seq,
                                                    sorted(redeemed_assets(items)))

    def _log_blocked(self, blocked: Blocked | None) -> None:
        """Say once why the batch stops where it does."""
        if blocked is not None and blocked != self._last_blocked:
            if blocked.withdrawal_seq is not None:
                log.info("the redemption at seq %d waits for the payout of withdrawal seq %d",
                         blocked.seq, blocked.withdrawal_seq)
            else:
                log.warning("seq %d waits: no wallet address for account(s) %s; register "
                            "with `gpux settlement register-account`", blocked.seq,
                            ", ".join(blocked.accounts))
        self._last_blocked = blocked

    async def _cut_payout(self) -> Outcome:
        after_seq = await store.paid_through(self.conn)
        withdrawals = await store.read_withdrawals(self.conn, after_seq, 1)
        if not withdrawals:
            return Outcome.IDLE
        (withdrawal,) = withdrawals
        unsettled = await store.first_unsettled_after(self.conn,
                                                      await store.settled_through(self.conn))
        if unsettled is not None and unsettled < withdrawal.seq:
            return Outcome.WAITING_FOR_SETTLEMENT
        address = (await store.addresses(self.conn, [withdrawal.account])).get(withdrawal.account)
        if address is None:
            waiting = (withdrawal.seq, withdrawal.account)
            if waiting != self._last_waiting_payout:
                log.warning("withdrawal seq %d waits: no wallet address for account %s",
                            withdrawal.seq, withdrawal.account)
            self._last_waiting_payout = waiting
            return Outcome.WAITING_FOR_ACCOUNTS
        asset = USDC_ASSET if withdrawal.asset == USDC else token_id(withdrawal.asset)
        await store.insert_payout(self.conn, Payout(
            withdrawal_seq=withdrawal.seq, account=withdrawal.account, address=address,
            asset=asset, amount=withdrawal.amount, status="pending",
        ))  # fmt: skip
        log.info("payout of withdrawal %d: %d %s to %s", withdrawal.seq, withdrawal.amount,
                 withdrawal.asset, address)
        return Outcome.STORED

    async def _cut_index(self, progress: IndexProgress) -> Outcome:
        """Store a publication of the next index values up to the settled seq, if any."""
        values = await store.read_index_values(self.conn, progress.position,
                                               progress.settled_seq,
                                               self.config.index_values_max)
        if not values:
            return Outcome.IDLE
        stored = IndexPublication(publication_id=progress.publication_id + 1,
                                  batch_id=progress.settled_batch_id, index_values=values,
                                  status="pending")
        await store.insert_index_publication(self.conn, stored)
        first, last = values[0], values[-1]
        log.info("index publication %d: %d values (last_seq %d..%d, after batch %d)",
                 stored.publication_id, len(values), first.last_seq, last.last_seq,
                 stored.batch_id)
        return Outcome.STORED

    # --- advancing an open job -----------------------------------------------------------------

    async def _advance(self, job: Job) -> Outcome:
        if await asyncio.to_thread(job.done_on_chain, self.contracts):
            return await self._confirm(job)
        if job.state.status == "pending":
            await self._send(job, nonce=None, reason="first")
            if isinstance(job, BatchJob):
                self.metrics.batches_submitted.inc()
            return Outcome.SENT
        return await self._chase(job)

    async def _confirm(self, job: Job) -> Outcome:
        landing = await asyncio.to_thread(job.landing, self.contracts)
        if landing is None:
            return Outcome.CONFIRMING  # the node answers the state before its logs
        head = await asyncio.to_thread(self.chain.block_number)
        if head - landing.block_number + 1 < self.config.confirmations:
            return Outcome.CONFIRMING
        canonical = await asyncio.to_thread(self._block_hash, landing.block_number)
        if canonical != landing.block_hash:
            return Outcome.CONFIRMING  # reorganised under us: look again next step
        gas_used = await asyncio.to_thread(self._gas_used, landing.tx_hash)
        seconds = await store.mark_settled(self.conn, job.table, job.key, landing.tx_hash,
                                           landing.block_number, gas_used)
        log.info("%s settled in 0x%s (block %d, %d gas)", job.label, landing.tx_hash.hex(),
                 landing.block_number, gas_used)
        self._count_settled(job, gas_used, seconds)
        return Outcome.SETTLED

    def _count_settled(self, job: Job, gas_used: int, seconds: float | None) -> None:
        metrics = self.metrics
        metrics.gas_used.labels(job.kind).inc(gas_used)
        metrics.job_gas.labels(job.kind).observe(gas_used)
        if seconds is not None:
            metrics.confirmation_seconds.labels(job.kind).observe(max(seconds, 0.0))
        if isinstance(job, BatchJob):
            metrics.batches_settled.inc()
            metrics.fills_settled.inc(job.batch.fill_count)
            metrics.moves_settled.inc(job.batch.move_count)
            metrics.reports_settled.inc(job.batch.evidence_count)
            metrics.settled_seq.set(job.batch.last_seq)
        elif isinstance(job, IndexJob):
            metrics.index_values_published.inc(len(job.publication.index_values))
        else:
            metrics.withdrawals_paid.inc()

    async def _chase(self, job: Job) -> Outcome:
        """The job's transaction is not (or no longer) on chain: wait, bump or resend."""
        state = job.state
        if state.send_count >= self.config.sends_max:
            raise RefusedError(f"{job.label} is not on chain after {state.send_count} sends")
        view = await asyncio.to_thread(self._look_up, state.tx_hashes)
        if view.reverted is not None:
            raise RefusedError(f"{job.label}: the chain refused it in "
                               f"0x{view.reverted.hex()} (reverted)")
        if view.mined:
            return Outcome.CONFIRMING
        if view.in_mempool:
            assert state.sent_at is not None
            age = datetime.now(UTC) - state.sent_at
            if age < timedelta(milliseconds=self.config.stuck_after_ms):
                return Outcome.WAITING
            await self._send(job, nonce=state.nonce, reason="bump")
            return Outcome.BUMPED
        nonce = state.nonce if state.nonce is not None and view.next_nonce <= state.nonce else None
        log.warning("%s: the node does not know its transaction; sending again%s", job.label,
                    f" with nonce {nonce}" if nonce is not None else " with a new nonce")
        await self._send(job, nonce=nonce, reason="resend")
        return Outcome.RESENT

    # --- sending -----------------------------------------------------------------------------

    async def _send(self, job: Job, *, nonce: int | None, reason: str) -> None:
        """Sign, record and broadcast the job's transaction; `reason` is "first" (its first
        send), "bump" (a replacement with higher fees) or "resend" (the node lost it)."""
        bump = reason == "bump"
        signed, used_nonce, fees = await asyncio.to_thread(self._sign, job, nonce, bump)
        await store.record_send(self.conn, job.table, job.key, used_nonce, bytes(signed.hash),
                                *fees)
        await self._broadcast(signed)
        self.metrics.transactions_sent.labels(job.kind, reason).inc()
        log.info("%s: sent 0x%s (nonce %d, max fee %d wei)", job.label,
                 bytes(signed.hash).hex(), used_nonce, fees[0])

    async def _broadcast(self, signed: SignedTransaction) -> None:
        try:
            await asyncio.to_thread(
                call_rpc, lambda: self.chain.w3.eth.send_raw_transaction(signed.raw_transaction),
                "eth_sendRawTransaction",
            )
        except Web3RPCError as error:
            # "already known", "nonce too low", "underpriced": the next step looks again
            log.warning("broadcast of 0x%s refused: %s", bytes(signed.hash).hex(), error)

    def _fees(self, job: Job, bump: bool) -> tuple[int, int]:
        """Return (max fee, tip): the market's, and for a replacement at least the bump."""
        fields = self.chain.fee_fields(self.config.priority_fee_wei)
        max_fee, tip = fields["maxFeePerGas"], fields["maxPriorityFeePerGas"]
        state = job.state
        if bump and state.max_fee_per_gas is not None and state.priority_fee_per_gas is not None:
            factor = 100 + self.config.fee_bump_percent
            max_fee = max(max_fee, state.max_fee_per_gas * factor // 100 + 1)
            tip = max(tip, state.priority_fee_per_gas * factor // 100 + 1)
        max_fee = min(max_fee, self.config.max_fee_per_gas_cap_wei)
        return max_fee, min(tip, max_fee)

    def _sign(self, job: Job, nonce: int | None, bump: bool
              ) -> tuple[SignedTransaction, int, tuple[int, int]]:
        w3 = self.chain.w3
        address = self.signer.address
        call = job.call(self.contracts)
        if nonce is None:
            nonce = call_rpc(lambda: w3.eth.get_transaction_count(address, "pending"),
                             "eth_getTransactionCount")
        max_fee, tip = self._fees(job, bump)
        try:
            estimate = call_rpc(lambda: call.estimate_gas({"from": address}), "eth_estimateGas")
        except (ContractCustomError, ContractLogicError) as error:
            raise RefusedError(f"{job.label} would revert: {error}") from error
        params: Any = {
            "from": address, "nonce": nonce, "gas": estimate + estimate // 4,
            "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip,
            "chainId": self.contracts.deployment.chain_id,
        }  # fmt: skip
        transaction: Any = call_rpc(lambda: call.build_transaction(params), "build_transaction")
        return self.signer.sign_transaction(transaction), nonce, (max_fee, tip)

    # --- looking at the chain (sync, run in a thread) ------------------------------------------

    def _block_hash(self, block_number: int) -> bytes:
        block = call_rpc(lambda: self.chain.w3.eth.get_block(block_number), "eth_getBlock")
        return bytes(block["hash"])

    def _gas_used(self, tx_hash: bytes) -> int:
        receipt = call_rpc(lambda: self.chain.w3.eth.get_transaction_receipt(HexBytes(tx_hash)),
                           "eth_getTransactionReceipt")
        return int(receipt["gasUsed"])

    def _look_up(self, tx_hashes: list[bytes]) -> MempoolView:
        w3 = self.chain.w3
        view = MempoolView()
        for tx_hash in tx_hashes:
            receipt = _optional(lambda h=tx_hash: w3.eth.get_transaction_receipt(HexBytes(h)))
            if receipt is not None:
                if receipt["status"] == 1:
                    view.mined = True
                else:
                    view.reverted = tx_hash
                continue
            if _optional(lambda h=tx_hash: w3.eth.get_transaction(HexBytes(h))) is not None:
                view.in_mempool = True
        view.next_nonce = call_rpc(
            lambda: w3.eth.get_transaction_count(self.signer.address, "latest"),
            "eth_getTransactionCount",
        )
        return view


def _optional(action: Any) -> Any:
    """Return the node's answer, or None when it knows no such transaction."""
    try:
        return call_rpc(action, "transaction look-up")
    except TransactionNotFound:
        return None
