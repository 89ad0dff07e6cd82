"""`gpux settlement` end to end as an operator runs it: deploy, register, run, prove.

`run --kafka` settles the ledger's trades, pays withdrawals out and turns Vault deposits
into `deposit` commands on the commands topic, in one process that stops cleanly on SIGTERM
and counts what it did on /metrics. A deposit naming the fee account credits the depositor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
from eth_utils.address import to_checksum_address

from eventlog.kafka import KafkaConfig, KafkaLog
from eventlog.port import COMMANDS_TOPIC, TopicSpec
from harness.ports import free_port
from protocol import Deposit, decode_command
from settlement import store
from settlement.chain import Chain, Contracts, Deployment, dev_account
from settlement.dev import deposit_tokens, deposit_usdc, new_wallet
from settlement.fills import Fill
from settlement.testing import (
    create_ledger_tables,
    fresh_database,
    insert_trades,
    insert_withdrawal,
)
from tests.helpers import eventually, kill_if_running, read_topic, stop_cleanly
from tests.integration.metrics_probe import health, scrape

ROOT = Path(__file__).resolve().parents[2]
SYMBOL = "B200.ap-south.2026-04-01T00"


def gpux_settlement(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpux", "settlement", *arguments], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


async def test_deploy_register_run_and_prove_from_the_command_line(
    eth_rpc_url: str, database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    url = await fresh_database(database_url)
    deployment_path = tmp_path / "deployment.json"
    namespace = f"c{uuid.uuid4().hex[:8]}."
    env = {**os.environ, "ETH_RPC_URL": eth_rpc_url, "DATABASE_URL": url,
           "GPUX_DEPLOYMENT": str(deployment_path), "PYTHONPATH": str(ROOT)}
    deployed = gpux_settlement("deploy", env=env)
    assert deployed.returncode == 0, deployed.stderr
    assert json.loads(deployed.stdout)["vault"] == Deployment.load(deployment_path).vault
    contracts = Contracts(Chain(eth_rpc_url), Deployment.load(deployment_path))
    buyer, seller, fees, squatter = (new_wallet(contracts) for _ in range(4))
    deposit_usdc(contracts, buyer, 50_000_000)
    deposit_tokens(contracts, dev_account(0), seller, SYMBOL, 9, account="op-9")
    deposit_usdc(contracts, squatter, 2_000_000, account="fees")  # before `fees` is registered
    for account, wallet in (("op-9", seller), ("fees", fees)):
        registered = gpux_settlement("register-account", account, wallet.address, env=env)
        assert registered.returncode == 0, registered.stderr
    conn = await asyncpg.connect(url)
    event_log = KafkaLog(KafkaConfig(bootstrap_servers=kafka_bootstrap))
    commands_topic = namespace + COMMANDS_TOPIC
    await event_log.create_topics([TopicSpec(name=commands_topic)])
    await create_ledger_tables(conn)
    port = free_port()
    runner = subprocess.Popen(
        [sys.executable, "-m", "gpux", "settlement", "run", "--confirmations", "1",
         "--batch-interval-ms", "0", "--poll-interval-ms", "50", "--kafka", kafka_bootstrap,
         "--topic-namespace", namespace, "--metrics-port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "run.log").open("w"),
    )
    try:
        await insert_trades(conn, [Fill(seq=1, trade_id="1", instrument=SYMBOL,
                                        price_micro=2_500_000, quantity=4, buyer=buyer.address,
                                        seller="op-9", buyer_fee_micro=1_000,
                                        seller_fee_micro=500)])
        await insert_withdrawal(conn, 2, "op-9", "USDC", 1_000_000)

        async def settled() -> bool:
            batch = await store.get_batch(conn, 1)
            return batch is not None and batch.status == "settled"

        await eventually(settled, timeout_s=60, message="batch 1 settled by `run`")

        async def paid() -> bool:
            payout = await store.get_payout(conn, 2)
            return payout is not None and payout.status == "settled"

        await eventually(paid, timeout_s=60, message="withdrawal 2 paid out by `run`")

        async def deposits_sent() -> list[Deposit]:
            values = await read_topic(event_log, commands_topic)
            commands = [decode_command(value) for value in values]
            return [command for command in commands if isinstance(command, Deposit)]

        async def all_deposits_sent() -> bool:
            return len(await deposits_sent()) == 3

        await eventually(all_deposits_sent, timeout_s=60, message="three deposit commands")
        deposits = await deposits_sent()
        assert {(d.account, d.asset, d.amount) for d in deposits} == {
            (to_checksum_address(buyer.address), "USDC", "50"), ("op-9", SYMBOL, 9),
            (to_checksum_address(squatter.address), "USDC", "2")}
        assert await store.addresses(conn, ["fees"]) == {"fees": fees.address}
        await check_metrics(port)
        stop_cleanly(runner, tmp_path / "run.log")
        proved = gpux_settlement("prove", "1", env=env)
        assert proved.returncode == 0, proved.stderr
        assert json.loads(proved.stdout)["verified_by_vault"] is True
        assert contracts.vault_balance(fees.address, 0) == 1_500
    finally:
        kill_if_running(runner)
        await event_log.close()
        await conn.close()


async def check_metrics(port: int) -> None:
    """/metrics of the `run` above: one batch of one fill and one payout settled, three
    deposits sent (one to a named account, one naming the reserved fee account)."""

    async def counted() -> bool:
        metrics = await scrape(port)
        return (metrics.get("gpux_settlement_withdrawals_paid_total") == 1
                and metrics.get("gpux_settlement_batches_settled_total") == 1
                and sum(metrics.get(f'gpux_settlement_deposits_total{{credited="{credited}"}}', 0)
                        for credited in ("named", "depositor")) == 3)

    await eventually(counted, timeout_s=30, message="/metrics counts the settlement's work")
    metrics = await scrape(port)
    assert metrics["gpux_settlement_batches_submitted_total"] == 1
    assert metrics["gpux_settlement_fills_settled_total"] == 1
    assert metrics['gpux_settlement_transactions_sent_total{kind="batch",reason="first"}'] == 1
    assert metrics['gpux_settlement_transactions_sent_total{kind="payout",reason="first"}'] == 1
    for kind in ("batch", "payout"):
        assert metrics[f'gpux_settlement_gas_used_total{{kind="{kind}"}}'] > 21_000
        assert metrics[f'gpux_settlement_job_gas_count{{kind="{kind}"}}'] == 1
        assert metrics[f'gpux_settlement_confirmation_seconds_count{{kind="{kind}"}}'] == 1
    assert metrics['gpux_settlement_deposits_total{credited="named"}'] == 1
    assert metrics['gpux_settlement_deposits_total{credited="depositor"}'] == 2
    assert metrics['gpux_settlement_deposit_names_refused_total{reason="reserved"}'] == 1
    assert metrics["gpux_settlement_deposits_next_block"] > 0

    async def backlog_read() -> bool:  # the gauges are read from the store every few seconds
        metrics = await scrape(port)
        return (metrics.get("gpux_settlement_settled_trade_seq") == 1
                and metrics.get("gpux_settlement_unsettled_trades") == 0
                and metrics.get("gpux_settlement_unpaid_withdrawals") == 0
                and metrics.get('gpux_settlement_open_jobs{kind="payout"}') == 0)

    await eventually(backlog_read, timeout_s=30, message="/metrics shows no backlog")
    assert metrics['gpux_settlement_reconnects_total{component="submitter"}'] == 0
    assert await health(port) == 200
