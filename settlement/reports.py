"""Delivery reports as settlement sees them: each one's evidence leaf in its batch's tree.

Pure: no I/O. A `Report` is a row of `ledger.delivery_reports` (`ledger.reads.DeliveryReport`:
a `delivery_settled`'s issue, holder, measured `delivered_ppm` and evidence, the root of the
delivery service's signed samples). The batch that settles the report's seq adds its
`ChainEvidence` leaf beside the fills' and moves' leaves, so the root `Vault.settle` records
commits to what was measured, whether or not the report moved any money (a report of full
delivery owes no compensation and has no journal entry, but it has a leaf). Nothing about
the report is settled on chain: the leaf costs the Vault nothing (settlement/README.md).

The leaf is the ABI encoding of `(bytes32 EVIDENCE_LEAF_TAG, uint256 seq, string issue_id,
string holder, uint256 delivered_ppm, string evidence)`, evidence "" when the report gave
none. Its first word is its own tag: a fill leaf starts with a seq (below 2**63) and a move
leaf with `moves.MOVE_LEAF_TAG`, so no fill or move can pass for a report, nor a report for
either.
"""

from __future__ import annotations

from typing import Final

import msgspec
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from ledger.reads import DeliveryReport
from protocol.commands import PPM
from settlement.merkle import leaf_hash

EVIDENCE_LEAF_TAG: Final = keccak(text="gpux.settlement.delivery-evidence")
EVIDENCE_LEAF_TYPES: Final = ["bytes32", "uint256", "string", "string", "uint256", "string"]

Report = DeliveryReport  # a report as settlement sees it is the ledger's row


class ChainEvidence(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery report as its evidence leaf encodes it."""

    seq: int
    issue_id: str
    holder: str
    delivered_ppm: int
    evidence: str

    def encode(self) -> bytes:
        """ABI-encode the fields in Solidity's `abi.encode` order of EVIDENCE_LEAF_TYPES."""
        return abi_encode(EVIDENCE_LEAF_TYPES, [
            EVIDENCE_LEAF_TAG, self.seq, self.issue_id, self.holder, self.delivered_ppm,
            self.evidence,
        ])  # fmt: skip

    def leaf(self) -> bytes:
        return leaf_hash(self.encode())


def chain_evidence(seq: int, issue_id: str, holder: str, delivered_ppm: int,
                   evidence: str | None) -> ChainEvidence:
    """Return the evidence leaf's fields of a report; raise ValueError for a share outside
    0..1,000,000 ppm."""
    if not 0 <= delivered_ppm <= PPM:
        raise ValueError(f"seq {seq}: delivered_ppm {delivered_ppm} is outside 0..{PPM}")
    return ChainEvidence(seq=seq, issue_id=issue_id, holder=holder,
                         delivered_ppm=delivered_ppm, evidence=evidence or "")


def to_chain_evidence(report: Report) -> ChainEvidence:
    """Return the evidence leaf's fields of the ledger's report row."""
    return chain_evidence(report.seq, report.issue_id, report.holder, report.delivered_ppm,
                          report.evidence)
