"""The web3 adapter: connect, deploy the contracts, grant roles, send transactions.

Everything here is synchronous (web3's HTTP provider); the asyncio services call it through
`asyncio.to_thread`. Transactions are signed locally with the sender's key (no unlocked
node accounts), so the same code runs against anvil and a real node.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError, ContractLogicError, TimeExhausted
from web3.types import FilterParams, LogReceipt, RPCEndpoint, TxReceipt

from settlement.artifacts import Artifacts, load
from settlement.errors import (
    ChainError,
    ChainUnavailableError,
    DeploymentError,
    TransactionRevertedError,
)

T = TypeVar("T")

# anvil's (and hardhat's) dev mnemonic: the default accounts of every local node
DEV_MNEMONIC: Final = "test test test test test test test test test test test junk"
USDC_ASSET: Final = 0
RECEIPT_TIMEOUT_S: Final = 60.0
RECEIPT_POLL_S: Final = 0.05
GAS_HEADROOM_PERCENT: Final = 25
SETTLER_ROLE: Final = keccak(text="SETTLER_ROLE")
MINTER_ROLE: Final = keccak(text="MINTER_ROLE")
# topic 0 of Vault's `Deposited(address indexed, uint256 indexed, uint256, string)`
DEPOSITED_TOPIC: Final = keccak(text="Deposited(address,uint256,uint256,string)")
# Vault.BOND_ESCROW: the one address every issue's bond is held under in the Vault
BOND_ESCROW: Final = to_checksum_address(keccak(text="gpux.vault.bond-escrow")[12:])
ZERO_ADDRESS: Final = "0x" + "00" * 20
CONNECTION_ERRORS: Final = (
    requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError,
)


def dev_account(index: int) -> LocalAccount:
    """Return anvil's default dev account `index` (0..9 hold 10,000 ETH on a fresh node)."""
    Account.enable_unaudited_hdwallet_features()
    account: LocalAccount = Account.from_mnemonic(
        DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}"
    )
    return account


def token_id(symbol: str) -> int:
    """Return the GpuHourToken id of an instrument: uint256(keccak256(bytes(symbol)))."""
    return int.from_bytes(keccak(text=symbol), "big")


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    """Where the contracts live on one chain, and the block the watcher can start from."""

    chain_id: int
    usdc: str
    gpu_hours: str
    vault: str
    block_number: int
    # `artifacts.source_hash` of the build deployed: a Vault from other sources may not speak
    # this build's `settle` ("" for a deployment recorded before the hash was kept)
    source_hash: str = ""
    # "" for a deployment recorded before the IndexOracle (its source hash is another build's)
    index_oracle: str = ""

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(msgspec.json.format(msgspec.json.encode(self)) + b"\n")
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            return msgspec.json.decode(path.read_bytes(), type=cls)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as error:
            raise DeploymentError(f"cannot read the deployment file {path}: {error}") from error


def call_rpc(action: Callable[[], T], what: str) -> T:
    """Run one node request; turn a connection failure into ChainUnavailableError."""
    try:
        return action()
    except CONNECTION_ERRORS as error:
        raise ChainUnavailableError(f"{what}: the chain node does not answer ({error})") from error


class Chain:
    """One node, the compiled contracts, and helpers to deploy and transact."""

    def __init__(self, rpc_url: str, *, request_timeout_s: float = 10.0,
                 artifacts: Artifacts | None = None) -> None:
        if request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0, got {request_timeout_s}")
        self.rpc_url = rpc_url
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": request_timeout_s}))
        self.artifacts = artifacts if artifacts is not None else load()

    # --- reading -----------------------------------------------------------------------

    def chain_id(self) -> int:
        return call_rpc(lambda: int(self.w3.eth.chain_id), "eth_chainId")

    def block_number(self) -> int:
        return call_rpc(lambda: int(self.w3.eth.block_number), "eth_blockNumber")

    def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        """Make a raw JSON-RPC call (anvil_*, evm_*); raise ChainError on an RPC error."""
        response = call_rpc(
            lambda: self.w3.provider.make_request(RPCEndpoint(method), list(params)), method
        )
        if "error" in response:
            raise ChainError(f"{method} failed: {response['error']}")
        return response.get("result")

    def contract(self, name: str, address: str) -> Contract:
        artifact = self.artifacts.contract(name)
        return self.w3.eth.contract(address=to_checksum_address(address), abi=artifact.abi)

    def has_code(self, address: str) -> bool:
        code = call_rpc(lambda: self.w3.eth.get_code(to_checksum_address(address)), "eth_getCode")
        return len(code) > 0

    # --- writing -----------------------------------------------------------------------

    def fee_fields(self, tip_wei: int | None = None) -> dict[str, int]:
        """Return EIP-1559 fee fields: twice the base fee of the latest block plus the tip."""
        block = call_rpc(lambda: self.w3.eth.get_block("latest"), "eth_getBlockByNumber")
        base_fee = int(block.get("baseFeePerGas", 0))
        tip = tip_wei if tip_wei is not None else 1_000_000_000
        return {"maxFeePerGas": 2 * base_fee + tip, "maxPriorityFeePerGas": tip}

    def build(self, call: Any, sender: str, nonce: int | None = None,
              gas: int | None = None) -> dict[str, Any]:
        """Build a transaction of `call` (a function or constructor call) from `sender`,
        estimating gas with some headroom."""
        address = to_checksum_address(sender)
        params: dict[str, Any] = {"from": address, "chainId": self.chain_id(),
                                  **self.fee_fields()}
        if nonce is None:
            nonce = call_rpc(lambda: self.w3.eth.get_transaction_count(address, "pending"),
                             "eth_getTransactionCount")
        params["nonce"] = nonce
        if gas is None:
            estimate = call_rpc(lambda: int(call.estimate_gas({"from": address})), "estimateGas")
            gas = estimate + estimate * GAS_HEADROOM_PERCENT // 100
        params["gas"] = gas
        transaction: dict[str, Any] = call_rpc(lambda: call.build_transaction(params),
                                               "build_transaction")
        return transaction

    def send_signed(self, transaction: dict[str, Any], signer: LocalAccount) -> bytes:
        """Sign and broadcast; return the transaction hash."""
        signed = signer.sign_transaction(transaction)
        call_rpc(lambda: self.w3.eth.send_raw_transaction(signed.raw_transaction),
                 "eth_sendRawTransaction")
        return bytes(signed.hash)

    def wait_receipt(self, tx_hash: bytes, timeout_s: float = RECEIPT_TIMEOUT_S) -> TxReceipt:
        try:
            return call_rpc(
                lambda: self.w3.eth.wait_for_transaction_receipt(
                    HexBytes(tx_hash), timeout=timeout_s, poll_latency=RECEIPT_POLL_S
                ),
                "eth_getTransactionReceipt",
            )
        except TimeExhausted as error:
            raise ChainError(f"no receipt for 0x{tx_hash.hex()} within {timeout_s}s",
                             retriable=True) from error

    def transact(self, call: Any, signer: LocalAccount, gas: int | None = None) -> TxReceipt:
        """Send `call` from `signer`, wait for the receipt, raise if it reverted."""
        name = getattr(call, "fn_name", "constructor")
        try:
            transaction = self.build(call, signer.address, gas=gas)
        except (ContractLogicError, ContractCustomError) as error:
            raise TransactionRevertedError(f"{name} would revert: {error}") from error
        receipt = self.wait_receipt(self.send_signed(transaction, signer))
        if receipt["status"] != 1:
            tx_hash = bytes(receipt["transactionHash"]).hex()
            raise TransactionRevertedError(f"{name} reverted in 0x{tx_hash}")
        return receipt

    def deploy_contract(self, name: str, args: Sequence[Any], signer: LocalAccount) -> str:
        """Deploy contract `name` with constructor `args`; return its checksummed address."""
        artifact = self.artifacts.contract(name)
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        receipt = self.transact(factory.constructor(*args), signer)
        address = receipt["contractAddress"]
        if address is None:
            raise ChainError(f"deploying {name} produced no contract address")
        return to_checksum_address(address)


class Contracts:
    """The deployed contracts, bound to one chain."""

    def __init__(self, chain: Chain, deployment: Deployment) -> None:
        self.chain = chain
        self.deployment = deployment
        self.usdc = chain.contract("MockUSDC", deployment.usdc)
        self.gpu_hours = chain.contract("GpuHourToken", deployment.gpu_hours)
        self.vault = chain.contract("Vault", deployment.vault)
        # A deployment from before the oracle names none: bound to the zero address (no
        # code) so that `check()` can refuse the deployment with what to do.
        self.index_oracle = chain.contract("IndexOracle",
                                           deployment.index_oracle or ZERO_ADDRESS)

    def check(self) -> None:
        """Raise DeploymentError unless the chain is the deployment's, holds its code, and
        that code was built from the contract sources of this build."""
        chain_id = self.chain.chain_id()
        if chain_id != self.deployment.chain_id:
            raise DeploymentError(f"the node is chain {chain_id}, the deployment is for "
                                  f"chain {self.deployment.chain_id}")
        built = self.chain.artifacts.source_hash
        if self.deployment.source_hash != built:
            deployed = self.deployment.source_hash or "not recorded"
            raise DeploymentError(
                f"the deployed contracts were built from other sources (source hash "
                f"{deployed}, this build {built}): deploy this build's contracts")
        for name in ("usdc", "gpu_hours", "vault", "index_oracle"):
            address = getattr(self.deployment, name)
            if not self.chain.has_code(address):
                raise DeploymentError(f"no contract code at the {name} address {address}: "
                                      "was the chain reset since the deployment?")

    def vault_balance(self, account: str, asset: int) -> int:
        address = to_checksum_address(account)
        return call_rpc(lambda: int(self.vault.functions.balanceOf(address, asset).call()),
                        "Vault.balanceOf")

    def batch_root(self, batch_id: int) -> bytes:
        return call_rpc(lambda: bytes(self.vault.functions.batchRoots(batch_id).call()),
                        "Vault.batchRoots")

    def symbol_of(self, asset: int) -> str:
        return call_rpc(lambda: str(self.gpu_hours.functions.symbolOf(asset).call()),
                        "GpuHourToken.symbolOf")

    def deposit_logs(self, start: int, end: int) -> list[LogReceipt]:
        """Return the Vault's `Deposited` logs of blocks `start`..`end`, not decoded.

        Not `vault.events.Deposited().get_logs`: web3 decodes the `account` string strictly,
        and one deposit naming bytes that are not UTF-8 would fail the whole range. The
        deposit watcher decodes each log itself (`settlement.deposits.decode_deposit_log`).
        """
        params: FilterParams = {"address": self.vault.address, "fromBlock": start,
                                "toBlock": end, "topics": [HexBytes(DEPOSITED_TOPIC)]}
        return call_rpc(lambda: list(self.chain.w3.eth.get_logs(params)), "eth_getLogs")


def deploy(chain: Chain, deployer: LocalAccount, *, settler: str, minter: str,
           usdc: str | None = None) -> Deployment:
    """Deploy MockUSDC (unless `usdc` names a token), GpuHourToken, Vault and IndexOracle;
    grant roles: SETTLER of the Vault and of the oracle to `settler`, MINTER to `minter` and
    to the Vault (which mints capacity issued at the venue into its custody)."""
    block_number = chain.block_number()
    usdc_address = usdc or chain.deploy_contract("MockUSDC", [], deployer)
    gpu_hours = chain.deploy_contract("GpuHourToken", [deployer.address, ""], deployer)
    vault = chain.deploy_contract("Vault", [deployer.address, usdc_address, gpu_hours], deployer)
    index_oracle = chain.deploy_contract("IndexOracle", [deployer.address], deployer)
    deployment = Deployment(chain_id=chain.chain_id(), usdc=to_checksum_address(usdc_address),
                            gpu_hours=gpu_hours, vault=vault, block_number=block_number,
                            source_hash=chain.artifacts.source_hash, index_oracle=index_oracle)
    contracts = Contracts(chain, deployment)
    for settled in (contracts.vault, contracts.index_oracle):
        grant_settler = settled.functions.grantRole(SETTLER_ROLE, to_checksum_address(settler))
        chain.transact(grant_settler, deployer)
    for holder in (to_checksum_address(minter), vault):
        chain.transact(contracts.gpu_hours.functions.grantRole(MINTER_ROLE, holder), deployer)
    return deployment


def describe(deployment: Deployment) -> str:
    return json.dumps(msgspec.to_builtins(deployment), indent=2)
