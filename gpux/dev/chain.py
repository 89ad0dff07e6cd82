"""The chain side of `gpux dev`: the contracts, and the demo accounts' USDC through the Vault.

The deployment is kept in the data directory; a later start checks that the chain still
holds it (an anvil whose state file was lost would not) rather than deploying a second
market beside the first. Funding goes the way a real depositor's does: USDC from the
MockUSDC faucet is deposited into the Vault naming the exchange account, and the deposit
watcher turns the deposits into `deposit` commands. GPU-hours are not deposited: they are
issued at the venue, and settlement mints them into the Vault's custody. Everything here is
synchronous web3; callers run it in a thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

from eth_account.signers.local import LocalAccount

from gpux.dev.market import (
    DEMO_ACCOUNTS,
    DEPLOYER_WALLET,
    MINTER_WALLET,
    SETTLER_WALLET,
)
from protocol import MICRO_PER_USDC, USDC
from settlement.chain import Chain, Contracts, Deployment, deploy, dev_account
from settlement.dev import fund_usdc
from settlement.errors import DeploymentError

log = logging.getLogger("gpux.dev")
DEV_CHAIN_ID = 31337


def open_contracts(rpc_url: str, deployment_path: Path) -> tuple[Contracts, bool]:
    """Return the contracts and whether they were deployed now (no deployment file yet).

    Compiles the contracts first when their build is missing or stale (solc-js, once).
    """
    chain = Chain(rpc_url)
    if chain.chain_id() != DEV_CHAIN_ID:
        raise DeploymentError(f"gpux dev funds anvil's dev wallets: {rpc_url} is chain "
                              f"{chain.chain_id()}, not the dev chain {DEV_CHAIN_ID}")
    if deployment_path.is_file():
        contracts = Contracts(chain, Deployment.load(deployment_path))
        try:
            contracts.check()
        except DeploymentError as error:
            raise DeploymentError(
                f"{error}. This market cannot go on with them: remove "
                f"{deployment_path.parent} to start afresh"
            ) from error
        return contracts, False
    deployment = deploy(chain, dev_account(DEPLOYER_WALLET),
                        settler=dev_account(SETTLER_WALLET).address,
                        minter=dev_account(MINTER_WALLET).address)
    deployment.save(deployment_path)
    log.info("deployed the contracts: vault %s", deployment.vault)
    return Contracts(chain, deployment), True


def settler() -> LocalAccount:
    return dev_account(SETTLER_WALLET)


def fund_usdc_accounts(contracts: Contracts) -> tuple[str, str] | None:
    """Deposit each demo account's USDC; return the last (account, asset) funded."""
    last = None
    for account in DEMO_ACCOUNTS:
        if account.usdc > 0:
            fund_usdc(contracts, dev_account(account.wallet), account.usdc * MICRO_PER_USDC,
                      account.name)
            last = (account.name, USDC)
    return last
