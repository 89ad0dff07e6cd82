"""What the submitter sends: a batch of fills and delivery moves (`Vault.settle`), a payout
(`Vault.payout`) or a publication of index values (`IndexOracle.publish`).

A job knows its contract call, how to ask the chain whether it already happened (so nothing
is sent twice), where it landed (its event), and which table records its sends.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from settlement.chain import Contracts, call_rpc
from settlement.errors import RefusedError
from settlement.index_chain import differences, index_key, oracle_minute, publication, read_value
from settlement.store import Batch, IndexPublication, JobTable, Payout, SendState

ZERO_ROOT = b"\0" * 32


@dataclass(frozen=True)
class Landing:
    """Where a job's transaction is on chain."""

    tx_hash: bytes
    block_number: int
    block_hash: bytes


class Job(abc.ABC):
    kind: str  # "batch", "payout" or "index", as metrics label it
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


class IndexJob(Job):
    """A publication of index values: one transaction, so the chain holds all of its values
    or none, and its first value tells which."""

    kind = "index"
    table: JobTable = "index_publications"

    def __init__(self, stored: IndexPublication) -> None:
        self.publication = stored
        self.key = stored.publication_id
        self.state = stored

    @property
    def label(self) -> str:
        return f"index publication {self.publication.publication_id}"

    def call(self, contracts: Contracts) -> Any:
        values = self.publication.index_values
        return contracts.index_oracle.functions.publish([publication(value) for value in values])

    def done_on_chain(self, contracts: Contracts) -> bool:
        first = self.publication.index_values[0]
        on_chain = read_value(contracts, first.gpu, first.region, first.minute_ns)
        if on_chain is None:
            return False
        differing = differences(first, on_chain)
        if differing:
            raise RefusedError(f"{self.label}: the oracle holds another value of {first.gpu} "
                               f"{first.region} at {first.minute_ns} ({', '.join(differing)} "
                               "differ): was the store reset?")
        return True

    def _landing_event(self, contracts: Contracts) -> Any:
        first = self.publication.index_values[0]
        return contracts.index_oracle.events.IndexPublished(), {
            "key": index_key(first.gpu, first.region), "minute": oracle_minute(first.minute_ns)}
