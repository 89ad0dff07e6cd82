"""Settlement's Prometheus metrics, in a registry of their own (or the caller's).

One `SettlementMetrics` is shared by the submitter and the deposit watcher of a process:
`gpux settlement run` / `deposits` serve its registry on `--metrics-port`; `gpux dev`, which
runs every service in one process, makes one and lists its registry beside the others (the
names differ: `gpux_settlement_*`). The metric objects are made per instance, never at
import, so that two of them can live in one process without duplicate-name errors.

Labels are bounded sets: `kind` is "batch", "payout" or "index" (not `job`, which Prometheus sets on
every scraped series), `reason` one of `TRANSACTION_REASONS` or of
`settlement.accounts.REFUSALS`, `component` "submitter" or "deposits".
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from settlement.accounts import REFUSALS

__all__ = ["SettlementMetrics"]

JOB_KINDS: Final = ("batch", "payout", "index")
TRANSACTION_REASONS: Final = ("first", "bump", "resend")
COMPONENTS: Final = ("submitter", "deposits")
DEPOSIT_CREDITS: Final = ("named", "depositor")
CONFIRMATION_SECONDS_BUCKETS: Final = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
GAS_BUCKETS: Final = (50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000, 5_000_000,
                      10_000_000, 20_000_000)


class SettlementMetrics:
    """The backlog, what was submitted and settled and at what gas, deposits, reconnects."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._backlog()
        self._jobs()
        self._deposits()
        self.reconnects = Counter(
            "gpux_settlement_reconnects", "Database connections replaced after one was lost",
            ["component"], registry=self.registry,
        )
        self.retries = Counter(
            "gpux_settlement_retries",
            "Steps that failed in a way worth retrying (the chain node did not answer, ...)",
            ["component"], registry=self.registry,
        )
        for component in COMPONENTS:
            self.reconnects.labels(component)
            self.retries.labels(component)

    def _backlog(self) -> None:
        registry = self.registry
        self.unsettled_trades = Gauge(
            "gpux_settlement_unsettled_trades",
            "Trades of the ledger after the last settled batch (refreshed every few seconds)",
            registry=registry,
        )
        self.unpaid_withdrawals = Gauge(
            "gpux_settlement_unpaid_withdrawals",
            "Withdrawals of the ledger with no payout stored yet", registry=registry,
        )
        self.open_jobs = Gauge(
            "gpux_settlement_open_jobs",
            "Batches, payouts or index publications stored and not yet settled",
            ["kind"], registry=registry,
        )
        self.settled_seq = Gauge(
            "gpux_settlement_settled_trade_seq", "Seq of the last trade settled on chain",
            registry=registry,
        )
        for kind in JOB_KINDS:
            self.open_jobs.labels(kind)

    def _jobs(self) -> None:
        registry = self.registry
        self.batches_submitted = Counter(
            "gpux_settlement_batches_submitted", "Batches broadcast for the first time",
            registry=registry,
        )
        self.batches_settled = Counter(
            "gpux_settlement_batches_settled", "Batches settled, `confirmations` deep",
            registry=registry,
        )
        self.fills_settled = Counter(
            "gpux_settlement_fills_settled", "Fills in the settled batches", registry=registry,
        )
        self.moves_settled = Counter(
            "gpux_settlement_moves_settled",
            "Delivery postings (bonds, compensation, issued and redeemed tokens) in the settled "
            "batches", registry=registry,
        )
        self.reports_settled = Counter(
            "gpux_settlement_reports_settled",
            "Delivery reports committed as evidence leaves of the settled batches",
            registry=registry,
        )
        self.withdrawals_paid = Counter(
            "gpux_settlement_withdrawals_paid", "Payouts of withdrawals settled on chain",
            registry=registry,
        )
        self.index_values_published = Counter(
            "gpux_settlement_index_values_published",
            "Price index values published on the IndexOracle, `confirmations` deep",
            registry=registry,
        )
        self.transactions_sent = Counter(
            "gpux_settlement_transactions_sent",
            "Signed transactions recorded and broadcast: a job's first, a fee bump, or "
            "a resend after the node lost it", ["kind", "reason"], registry=registry,
        )
        self.gas_used = Counter(
            "gpux_settlement_gas_used", "Gas used by the settled jobs' transactions", ["kind"],
            registry=registry,
        )
        self.job_gas = Histogram(
            "gpux_settlement_job_gas", "Gas used by one settled job", ["kind"],
            buckets=GAS_BUCKETS, registry=registry,
        )
        self.confirmation_seconds = Histogram(
            "gpux_settlement_confirmation_seconds",
            "From a job's storing (just before its first send) to its settling at "
            "`confirmations` deep (database clock)", ["kind"],
            buckets=CONFIRMATION_SECONDS_BUCKETS, registry=registry,
        )
        for kind in JOB_KINDS:
            self.gas_used.labels(kind)
            self.job_gas.labels(kind)
            self.confirmation_seconds.labels(kind)
            for reason in TRANSACTION_REASONS:
                self.transactions_sent.labels(kind, reason)

    def _deposits(self) -> None:
        registry = self.registry
        self.deposits = Counter(
            "gpux_settlement_deposits",
            "Deposit commands sent to the engine, by the account credited: the named one or "
            "the depositor's address (a range read again is sent again, and the engine "
            "refuses the repeats)", ["credited"], registry=registry,
        )
        self.deposit_names_refused = Counter(
            "gpux_settlement_deposit_names_refused",
            "Deposits that named an account they may not credit (the depositor's address was "
            "credited instead)", ["reason"], registry=registry,
        )
        self.deposits_next_block = Gauge(
            "gpux_settlement_deposits_next_block", "The next block the deposit watcher reads",
            registry=registry,
        )
        for credited in DEPOSIT_CREDITS:
            self.deposits.labels(credited)
        for reason in REFUSALS:
            self.deposit_names_refused.labels(reason)
