"""Settlement gas per fill against batch size, beside two baselines measured in the same run.

    python -m benchmarks.settlement_gas [--traders N] [--instruments N] [--seed S] [--out DIR]

Starts its own anvil through `harness` unless $ETH_RPC_URL is set, deploys the contracts,
and funds the traders through real deposits. For each batch size (1, 10, 100, 1,000 fills)
it draws random fills among the traders (seeded), cuts the batch exactly as the submitter
does (`settlement.batching.plan_batch`: netting, packed deltas, Merkle root) and sends one
`Vault.settle`; the figure is the receipt's gasUsed (21,000 base and calldata included)
divided by the fills. Beside it:
- "vault, not netted": the same fills as five deltas each (no netting), by eth_estimateGas;
- "naive transfers": each fill as the three token transfers a venue without a vault would
  make (USDC buyer->seller, USDC fees, ERC-1155 seller->buyer), measured on a sample.

Netting makes the cost depend on how many (trader, asset) pairs a batch touches, not on the
fills, so the trader count is printed with the figures and can be changed. Target: below
5,000 gas per fill at 1,000 fills. Writes DIR/settlement_gas.json, and DIR/settlement_gas.png
when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.exceptions import Web3RPCError

from harness.anvil import AnvilService
from settlement.batching import plan_batch
from settlement.chain import Chain, Contracts, deploy, dev_account, token_id
from settlement.dev import deposit_tokens, deposit_usdc, new_wallet
from settlement.fills import USDC_ASSET, Fill, NetDeltas, pack_delta

BATCH_SIZES = (1, 10, 100, 1000)
TARGET_GAS_PER_FILL = 5_000
NAIVE_SAMPLE_FILLS = 10
USDC_PER_TRADER_MICRO = 10**15
HOURS_PER_TRADER = 10**7
BUYER_FEE_BPS, SELLER_FEE_BPS = 10, 5


@contextmanager
def rpc_url() -> Iterator[str]:
    """Yield $ETH_RPC_URL, or the URL of an anvil started for this run."""
    url = os.environ.get("ETH_RPC_URL", "").strip()
    if url:
        yield url
        return
    run_dir = Path(tempfile.mkdtemp(prefix="gpux-bench-anvil-"))
    anvil = AnvilService(run_dir)
    anvil.start()
    try:
        yield anvil.url
    finally:
        anvil.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def draw_fills(rng: random.Random, count: int, first_seq: int, traders: list[str],
               symbols: list[str]) -> list[Fill]:
    fills = []
    for offset in range(count):
        buyer, seller = rng.sample(traders, 2)
        price = rng.randrange(1_500_000, 3_000_000, 10_000)
        quantity = rng.randint(1, 20)
        notional = price * quantity
        fills.append(Fill(seq=first_seq + offset, trade_id=str(first_seq + offset),
                          instrument=rng.choice(symbols), price_micro=price, quantity=quantity,
                          buyer=buyer, seller=seller,
                          buyer_fee_micro=notional * BUYER_FEE_BPS // 10_000,
                          seller_fee_micro=notional * SELLER_FEE_BPS // 10_000))
    return fills


def unnetted(fills: list[Fill], fee_address: str) -> NetDeltas:
    """Every fill as its own five deltas, in one batch: the vault without netting."""
    assets = sorted({USDC_ASSET} | {token_id(fill.instrument) for fill in fills})
    index = {asset: position for position, asset in enumerate(assets)}
    deltas = []
    for fill in fills:
        asset = index[token_id(fill.instrument)]
        notional = fill.price_micro * fill.quantity
        deltas += [pack_delta(fill.buyer, 0, -notional - fill.buyer_fee_micro),
                   pack_delta(fill.seller, 0, notional - fill.seller_fee_micro),
                   pack_delta(fee_address, 0, fill.buyer_fee_micro + fill.seller_fee_micro),
                   pack_delta(fill.seller, asset, -fill.quantity),
                   pack_delta(fill.buyer, asset, fill.quantity)]
    return NetDeltas(assets=assets, deltas=deltas)


class Bench:
    def __init__(self, url: str, trader_count: int, instrument_count: int, seed: int) -> None:
        self.chain = Chain(url)
        self.admin, self.settler = dev_account(0), dev_account(1)
        deployment = deploy(self.chain, self.admin, settler=self.settler.address,
                            minter=self.admin.address)
        self.contracts = Contracts(self.chain, deployment)
        self.rng = random.Random(seed)
        self.symbols = [f"H100-SXM-80GB.bench.{index:02d}" for index in range(instrument_count)]
        self.wallets: dict[str, LocalAccount] = {}
        for _ in range(trader_count):
            wallet = new_wallet(self.contracts)
            self.fund(wallet)
            self.wallets[wallet.address] = wallet
        self.fees = new_wallet(self.contracts)
        self.next_seq = 1
        self.batch_id = 1

    def fund(self, wallet: LocalAccount) -> None:
        """Deposit USDC and every instrument, and keep some of each in the wallet too."""
        deposit_usdc(self.contracts, wallet, USDC_PER_TRADER_MICRO)
        self.chain.transact(self.contracts.usdc.functions.mint(wallet.address, 10**12), wallet)
        for symbol in self.symbols:
            deposit_tokens(self.contracts, self.admin, wallet, symbol, HOURS_PER_TRADER)
            call = self.contracts.gpu_hours.functions.registerCapacity(wallet.address, symbol,
                                                                       1000)
            self.chain.transact(call, self.admin)

    def measure(self, size: int) -> dict[str, Any]:
        fills = draw_fills(self.rng, size, self.next_seq, list(self.wallets), self.symbols)
        self.next_seq += size
        addresses = {address: address for address in self.wallets} | {"fees": self.fees.address}
        plan = plan_batch(fills, addresses)
        vault = self.contracts.vault
        flat = unnetted(fills, self.fees.address)
        try:
            unnetted_gas: int | None = vault.functions.settle(
                10**9 + self.batch_id, plan.fills_root, flat.assets, flat.deltas, []
            ).estimate_gas({"from": self.settler.address})
        except (Web3RPCError, ValueError):
            unnetted_gas = None  # above the block gas limit
        call = vault.functions.settle(self.batch_id, plan.fills_root, plan.assets, plan.deltas,
                                      plan.supply)
        receipt = self.chain.transact(call, self.settler)
        self.batch_id += 1
        gas = int(receipt["gasUsed"])
        return {"fills": size, "deltas": len(plan.deltas), "gas": gas,
                "gas_per_fill": gas / size,
                "unnetted_gas_per_fill": unnetted_gas / size if unnetted_gas else None,
                "naive_gas_per_fill": self.naive(fills[:NAIVE_SAMPLE_FILLS])}

    def naive(self, fills: list[Fill]) -> float:
        """Mean gas per fill of settling each fill by three direct token transfers."""
        total = 0
        for fill in fills:
            buyer, seller = self.wallets[fill.buyer], self.wallets[fill.seller]
            notional = fill.price_micro * fill.quantity
            usdc, tokens = self.contracts.usdc.functions, self.contracts.gpu_hours.functions
            calls = [
                (usdc.transfer(seller.address, notional - fill.seller_fee_micro), buyer),
                (usdc.transfer(self.fees.address,
                               fill.buyer_fee_micro + fill.seller_fee_micro), buyer),
                (tokens.safeTransferFrom(seller.address, buyer.address,
                                         token_id(fill.instrument), min(fill.quantity, 1000),
                                         b""), seller),
            ]  # fmt: skip
            for call, sender in calls:
                total += int(self.chain.transact(call, sender)["gasUsed"])
        return total / len(fills)


def plot(rows: list[dict[str, Any]], path: Path, traders: int) -> bool:
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return False
    sizes = [row["fills"] for row in rows]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot(sizes, [row["gas_per_fill"] for row in rows], "o-", label="vault, netted batch")
    flat = [(row["fills"], row["unnetted_gas_per_fill"]) for row in rows
            if row["unnetted_gas_per_fill"]]
    axes.plot(*zip(*flat, strict=True), "s--", label="vault, not netted (estimate)")
    axes.plot(sizes, [row["naive_gas_per_fill"] for row in rows], "^:", label="naive transfers")
    axes.axhline(TARGET_GAS_PER_FILL, color="red", linewidth=0.8, label="target 5,000")
    axes.set(xscale="log", yscale="log", xlabel="fills per batch", ylabel="gas per fill",
             title=f"gpux settlement gas per fill ({traders} traders)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traders", type=int, default=50)
    parser.add_argument("--instruments", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("var/benchmarks"))
    arguments = parser.parse_args()
    with rpc_url() as url:
        bench = Bench(url, arguments.traders, arguments.instruments, arguments.seed)
        rows = [bench.measure(size) for size in BATCH_SIZES]
    print(f"{arguments.traders} traders, {arguments.instruments} instruments, seed "
          f"{arguments.seed}")
    print(f"{'fills':>6} {'deltas':>6} {'gas':>10} {'gas/fill':>9} {'not netted':>11} "
          f"{'naive':>8}")
    for row in rows:
        unnetted_text = (f"{row['unnetted_gas_per_fill']:>11,.0f}"
                         if row["unnetted_gas_per_fill"] else f"{'> block':>11}")
        print(f"{row['fills']:>6} {row['deltas']:>6} {row['gas']:>10,} "
              f"{row['gas_per_fill']:>9,.0f} {unnetted_text} {row['naive_gas_per_fill']:>8,.0f}")
    at_target = rows[-1]["gas_per_fill"]
    verdict = "meets" if at_target < TARGET_GAS_PER_FILL else "MISSES"
    print(f"gas per fill at {rows[-1]['fills']} fills: {at_target:,.0f} ({verdict} the target "
          f"< {TARGET_GAS_PER_FILL:,}); naive baseline {rows[-1]['naive_gas_per_fill']:,.0f}")
    arguments.out.mkdir(parents=True, exist_ok=True)
    result = {"traders": arguments.traders, "instruments": arguments.instruments,
              "seed": arguments.seed, "rows": rows}
    (arguments.out / "settlement_gas.json").write_text(json.dumps(result, indent=2) + "\n")
    if plot(rows, arguments.out / "settlement_gas.png", arguments.traders):
        print(f"plot: {arguments.out / 'settlement_gas.png'}")


if __name__ == "__main__":
    main()
