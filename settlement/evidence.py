"""Check a delivery report against the chain: is this measurement what a settled batch's root
commits to? (`gpux delivery verify --rpc` asks it.)

`check_on_chain` takes the report as the one checking it believes it to be (the assignment,
the `delivered_ppm` and the evidence root it recomputed from the signed samples), finds the
evidence leaf settlement stored for that assignment, and proves the leaf made of the claimed
values, at the stored seq, against the root the Vault holds for the batch (locally and by the
Vault's `verifyLeaf`). A forged share or root makes another leaf, which no proof of the
batch leads to the root from: the answer names what differs from the stored leaf too.

It reads the database (settlement's tables) and the chain, and writes neither: no migration
is applied, and a database settlement never ran on answers as "in no batch".
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from runtime.postgres import close_quietly, connect
from settlement import store
from settlement.chain import Chain, Contracts, Deployment
from settlement.errors import SettlementError
from settlement.merkle import MerkleTree, verify
from settlement.proofs import on_chain
from settlement.reports import ChainEvidence, chain_evidence

__all__ = ["check_on_chain", "check_with"]

APPLICATION_NAME = "gpux-evidence-check"
# what an unreachable, lost or refusing database raises
_DATABASE_FAILURES = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def check_on_chain(rpc_url: str, deployment_path: Path, database_url: str,
                         issue_id: str, holder: str, delivered_ppm: int,
                         evidence_hex: str | None) -> list[str]:
    """Return the problems with the report (`issue_id`, `holder`, `delivered_ppm`,
    `evidence_hex`, as reported: None when the report carried no evidence) as settled on
    the chain at `rpc_url` with the contracts of `deployment_path`, reading settlement's
    leaves from `database_url`; [] when its evidence leaf is proved in a settled batch.

    Never raises for what it finds: an unreachable node or database, a deployment file that
    cannot be read or does not match the chain, are problems too.
    """
    try:
        contracts = await asyncio.to_thread(_contracts, rpc_url, Path(deployment_path))
    except SettlementError as error:
        return [f"the chain: {error}"]
    try:
        conn = await connect(database_url, application_name=APPLICATION_NAME)
    except _DATABASE_FAILURES as error:
        return [f"the database: cannot connect ({type(error).__name__}: {error})"]
    try:
        return await check_with(conn, contracts, issue_id, holder, delivered_ppm, evidence_hex)
    except _DATABASE_FAILURES as error:
        return [f"the database: {type(error).__name__}: {error}"]
    finally:
        await close_quietly(conn)


async def check_with(conn: asyncpg.Connection, contracts: Contracts, issue_id: str,
                     holder: str, delivered_ppm: int, evidence_hex: str | None) -> list[str]:
    """`check_on_chain` on an open connection and bound contracts."""
    what = f"the delivery report of {issue_id} for {holder}"
    try:
        stored = await store.find_evidence(conn, issue_id, holder)
    except asyncpg.UndefinedTableError:
        stored = None
    if stored is None:
        return [f"{what} is in no settlement batch yet"]
    try:
        claimed = chain_evidence(stored.evidence.seq, issue_id, holder, delivered_ppm,
                                 evidence_hex)
    except ValueError as error:
        return [f"{what}: {error}"]
    problems = _differences(stored.evidence, claimed)
    try:
        batch = await store.get_batch(conn, stored.batch_id)
        if batch is None:
            return [*problems, f"batch {stored.batch_id} of {what} is missing"]
        tree = MerkleTree(await store.batch_leaves(conn, batch.batch_id))
        if tree.root != batch.fills_root:
            problems.append(f"batch {batch.batch_id}'s stored leaves do not match its root")
        proof = tree.proof(stored.leaf_index)
        chain_root, by_vault = await on_chain(contracts, batch.batch_id, proof, claimed.leaf())
    except SettlementError as error:
        return [*problems, f"the chain: {error}"]
    if chain_root == bytes(32):
        problems.append(f"batch {batch.batch_id} of {what} is not on chain yet "
                        f"(status {batch.status})")
        return problems
    if batch.status != "settled":
        problems.append(f"batch {batch.batch_id} of {what} is on chain but not "
                        f"confirmed yet (status {batch.status})")
    if not verify(proof, chain_root, claimed.leaf()):
        problems.append(f"{what} with delivered_ppm {delivered_ppm} and evidence "
                        f"{evidence_hex!r} does not prove against batch {batch.batch_id}'s "
                        f"root on chain 0x{chain_root.hex()}")
    if not by_vault:
        problems.append(f"the Vault's verifyLeaf refuses {what} as claimed in batch "
                        f"{batch.batch_id}")
    return problems


def _contracts(rpc_url: str, deployment_path: Path) -> Contracts:
    """Bind the deployment's contracts on the node and check they are this build's."""
    contracts = Contracts(Chain(rpc_url), Deployment.load(deployment_path))
    contracts.check()
    return contracts


def _differences(stored: ChainEvidence, claimed: ChainEvidence) -> list[str]:
    """Name each field of the claimed leaf that is not the stored one."""
    return [f"{name}: the settled batch holds {getattr(stored, name)!r}, the report says "
            f"{getattr(claimed, name)!r}"
            for name in ("delivered_ppm", "evidence")
            if getattr(stored, name) != getattr(claimed, name)]
