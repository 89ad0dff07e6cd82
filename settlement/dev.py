"""Dev-chain helpers: fresh funded wallets, USDC from the faucet, GPU-hour capacity, deposits.

Used by tests, the gas benchmark, `gpux settlement dev-deposit` and `gpux dev`; they need a
dev node (anvil) for `anvil_setBalance` and the MockUSDC faucet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from settlement.chain import USDC_ASSET, Chain, Contracts, call_rpc, token_id
from settlement.errors import TransactionRevertedError

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


# -- many transactions at once, for `gpux dev` ---------------------------------------------

DEV_GAS = 300_000  # a fixed limit: estimating hundreds of dev transactions costs a trip each


def send_all(chain: Chain, signer: LocalAccount, calls: Sequence[Any],
             gas: int = DEV_GAS) -> list[TxReceipt]:
    """Send `calls` from `signer` back to back (consecutive nonces, fixed gas, no estimates),
    then wait for every receipt; raise TransactionRevertedError if any reverted.

    Meant for a dev node that mines on arrival (anvil): hundreds of transactions cost one
    round trip each plus one per receipt, where `Chain.transact` costs six.
    """
    if not calls:
        return []
    address = signer.address
    nonce = call_rpc(lambda: int(chain.w3.eth.get_transaction_count(address, "pending")),
                     "eth_getTransactionCount")
    common = {"from": address, "chainId": chain.chain_id(), "gas": gas, **chain.fee_fields()}
    hashes = []
    for offset, call in enumerate(calls):
        # With gas, fees, nonce and chain id given, building needs no request to the node.
        transaction: dict[str, Any] = call.build_transaction({**common, "nonce": nonce + offset})
        hashes.append(chain.send_signed(transaction, signer))
    receipts = [chain.wait_receipt(tx_hash) for tx_hash in hashes]
    for call, receipt in zip(calls, receipts, strict=True):
        if receipt["status"] != 1:
            name = getattr(call, "fn_name", "call")
            raise TransactionRevertedError(
                f"{name} reverted in 0x{bytes(receipt['transactionHash']).hex()}")
    return receipts


def fund_usdc(contracts: Contracts, wallet: LocalAccount, amount_micro: int,
              account: str) -> TxReceipt:
    """Mint MockUSDC to `wallet` and deposit it to the vault for `account`, in one go."""
    usdc, vault = contracts.usdc.functions, contracts.vault.functions
    receipts = send_all(contracts.chain, wallet, [
        usdc.mint(wallet.address, amount_micro),
        usdc.approve(contracts.vault.address, amount_micro),
        vault.deposit(USDC_ASSET, amount_micro, account),
    ])
    return receipts[-1]

