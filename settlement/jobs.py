"""What the submitter sends: a batch of fills and delivery moves (`Vault.settle`) or a payout
(`Vault.payout`).

A job knows its contract call, how to ask the chain whether it already happened (so nothing
is sent twice), where it landed (its event), and which table records its sends.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from settlement.chain import Contracts, call_rpc
from settlement.errors import RefusedError
from settlement.store import Batch, JobTable, Payout, SendState

ZERO_ROOT = b"\0" * 32


@dataclass(frozen=True)
class Landing:
    """Where a job's transaction is on chain."""

    tx_hash: bytes
    block_number: int
    block_hash: bytes


class Job(abc.ABC):
    kind: str  # "batch" or "payout", as metrics label it
    table: JobTable
    key: int
    state: SendState

    @property
    @abc.abstractmethod
    def label(self) -> str:
        """Name the job in logs and errors."""

    @abc.abstractmethod
    def call(self, contracts: Contracts) -> Any:
        """Return the contract function call that does the job."""

    @abc.abstractmethod
    def done_on_chain(self, contracts: Contracts) -> bool:
        """Tell whether the chain already holds the job's effect; raise RefusedError when
        it holds something else under the job's id."""

    @abc.abstractmethod
    def _landing_event(self, contracts: Contracts) -> Any:
        """Return the event (with its argument filter) the job's transaction emits."""

    def landing(self, contracts: Contracts) -> Landing | None:
        """Return where the job's event is on the chain as the node sees it now."""
        event, filters = self._landing_event(contracts)
        logs = call_rpc(lambda: list(event.get_logs(
            argument_filters=filters, from_block=contracts.deployment.block_number,
            to_block="latest",
        )), "eth_getLogs")  # fmt: skip
        if not logs:
            return None
        entry = logs[-1]
        return Landing(tx_hash=bytes(entry["transactionHash"]),
                       block_number=int(entry["blockNumber"]),
                       block_hash=bytes(entry["blockHash"]))


class BatchJob(Job):
    kind = "batch"
    table: JobTable = "batches"

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.key = batch.batch_id
        self.state = batch

    @property
    def label(self) -> str:
        return f"batch {self.batch.batch_id}"

    def call(self, contracts: Contracts) -> Any:
        batch = self.batch
        return contracts.vault.functions.settle(batch.batch_id, batch.fills_root, batch.assets,
                                                batch.deltas, batch.supply)

    def done_on_chain(self, contracts: Contracts) -> bool:
        root = contracts.batch_root(self.batch.batch_id)
        if root == self.batch.fills_root:
            return True
        if root != ZERO_ROOT:
            raise RefusedError(f"{self.label} holds another root on chain (0x{root.hex()}): "
                               "was the store reset?")
        return False

    def _landing_event(self, contracts: Contracts) -> Any:
        return contracts.vault.events.BatchSettled(), {"batchId": self.batch.batch_id}


class PayoutJob(Job):
    kind = "payout"
    table: JobTable = "payouts"

    def __init__(self, payout: Payout) -> None:
        self.payout = payout
        self.key = payout.withdrawal_seq
        self.state = payout

    @property
    def label(self) -> str:
        return f"payout of withdrawal {self.payout.withdrawal_seq}"

    def call(self, contracts: Contracts) -> Any:
        payout = self.payout
        return contracts.vault.functions.payout(payout.withdrawal_seq, payout.address,
                                                payout.asset, payout.amount)

    def done_on_chain(self, contracts: Contracts) -> bool:
        paid = contracts.vault.functions.withdrawalPaid(self.payout.withdrawal_seq)
        return bool(call_rpc(lambda: paid.call(), "Vault.withdrawalPaid"))

    def _landing_event(self, contracts: Contracts) -> Any:
        return contracts.vault.events.PaidOut(), {"withdrawalId": self.payout.withdrawal_seq}
