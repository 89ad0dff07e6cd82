"""Merkle trees of fills, compatible with OpenZeppelin's MerkleProof (sorted-pair keccak).

A leaf is `keccak256(keccak256(abi.encode(fields)))` (OpenZeppelin's double-hashed standard
leaf, so no leaf can pass for an inner node). Inner nodes hash the two children in sorted
order; a node without a sibling moves up unchanged, so its proof is one step shorter. Pure:
no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_utils.crypto import keccak

HASH_BYTES = 32


def leaf_hash(encoded_fields: bytes) -> bytes:
    """Return the standard double-keccak leaf of ABI-encoded fields."""
    return keccak(keccak(encoded_fields))


def hash_pair(left: bytes, right: bytes) -> bytes:
    """Hash two nodes in sorted order, as OpenZeppelin's `Hashes.commutativeKeccak256`."""
    return keccak(left + right) if left < right else keccak(right + left)


class MerkleTree:
    """A tree over leaves in the given order; `proof(i)` proves leaf i against `root`."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        if not leaves:
            raise ValueError("a Merkle tree needs at least one leaf")
        if any(len(leaf) != HASH_BYTES for leaf in leaves):
            raise ValueError("every leaf must be a 32-byte hash")
        levels = [list(leaves)]
        while len(levels[-1]) > 1:
            below = levels[-1]
            above = [hash_pair(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            if len(below) % 2:
                above.append(below[-1])
            levels.append(above)
        self.levels = levels

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def proof(self, index: int) -> list[bytes]:
        """Return the sibling hashes from leaf `index` up to the root."""
        if not 0 <= index < len(self.levels[0]):
            raise IndexError(f"leaf {index} of {len(self.levels[0])}")
        proof = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                proof.append(level[sibling])
            index //= 2
        return proof


def process_proof(proof: Sequence[bytes], leaf: bytes) -> bytes:
    node = leaf
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node


def verify(proof: Sequence[bytes], root: bytes, leaf: bytes) -> bool:
    """Tell whether `proof` leads from `leaf` to `root` (OpenZeppelin's MerkleProof.verify)."""
    return process_proof(proof, leaf) == root
