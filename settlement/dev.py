"""Dev-chain helpers: fresh funded wallets, USDC from the faucet, GPU-hour capacity, deposits.

Used by tests, the gas benchmark and `gpux settlement dev-deposit`; they need a dev node
(anvil) for `anvil_setBalance` and the MockUSDC faucet.
"""

from __future__ import annotations

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from settlement.chain import USDC_ASSET, Contracts, token_id

WALLET_ETH_WEI = 100 * 10**18


def new_wallet(contracts: Contracts) -> LocalAccount:
    """Return a new random wallet holding 100 ETH on the dev chain."""
    wallet: LocalAccount = Account.create()
    contracts.chain.rpc("anvil_setBalance", [wallet.address, hex(WALLET_ETH_WEI)])
    return wallet


def deposit_usdc(contracts: Contracts, wallet: LocalAccount, amount_micro: int,
                 account: str = "") -> TxReceipt:
    """Mint MockUSDC to `wallet`, approve the vault and deposit; return the deposit receipt."""
    chain, vault = contracts.chain, contracts.vault
    chain.transact(contracts.usdc.functions.mint(wallet.address, amount_micro), wallet)
    chain.transact(contracts.usdc.functions.approve(vault.address, amount_micro), wallet)
    return chain.transact(vault.functions.deposit(USDC_ASSET, amount_micro, account), wallet)


def register_capacity(contracts: Contracts, minter: LocalAccount, operator: str, symbol: str,
                      quantity: int) -> int:
    """Mint `quantity` GPU-hours of `symbol` to `operator`; return the token id."""
    call = contracts.gpu_hours.functions.registerCapacity(operator, symbol, quantity)
    contracts.chain.transact(call, minter)
    return token_id(symbol)


def deposit_tokens(contracts: Contracts, minter: LocalAccount, wallet: LocalAccount,
                   symbol: str, quantity: int, account: str = "") -> TxReceipt:
    """Register `quantity` of capacity to `wallet` and deposit it; return the deposit receipt."""
    chain, vault = contracts.chain, contracts.vault
    asset = register_capacity(contracts, minter, wallet.address, symbol, quantity)
    chain.transact(contracts.gpu_hours.functions.setApprovalForAll(vault.address, True), wallet)
    return chain.transact(vault.functions.deposit(asset, quantity, account), wallet)
