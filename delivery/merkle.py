"""A SHA-256 binary Merkle tree: the challenge's commitment and the evidence root.

The leaves are 32-byte hashes the caller made with a domain tag of its own (`gpux.row`,
`gpux.sample`); an internal node is `sha256(b"gpux.node" + left + right)`, so a leaf can
never pass for a node. A level with an odd count carries its last node up unchanged (no
duplication, so no two leaf lists share a root by padding). A proof lists the sibling
hashes from the leaf up, skipping the levels where the node was carried; the verifier
knows which levels those are from `index` and `count`. The root of no leaves is
`sha256(b"gpux.empty")`, which no proof verifies against.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

__all__ = [
    "EMPTY_ROOT",
    "HASH_BYTES",
    "MerkleTree",
    "merkle_proof",
    "merkle_root",
    "node_hash",
    "verify_proof",
]

HASH_BYTES: Final = 32
NODE_TAG: Final = b"gpux.node"
EMPTY_ROOT: Final = hashlib.sha256(b"gpux.empty").digest()
# A proof never needs more siblings than the depth of a tree of 2**64 leaves.
PROOF_LENGTH_MAX: Final = 64


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash two children into their parent."""
    return hashlib.sha256(NODE_TAG + left + right).digest()


def _check_leaves(leaves: Sequence[bytes]) -> None:
    for position, leaf in enumerate(leaves):
        if len(leaf) != HASH_BYTES:
            raise ValueError(f"leaf {position} has {len(leaf)} bytes, not {HASH_BYTES}")


class MerkleTree:
    """Build every level once, then answer the root and any number of proofs cheaply."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        _check_leaves(leaves)
        self.count = len(leaves)
        levels: list[list[bytes]] = [list(leaves)]
        while len(levels[-1]) > 1:
            below = levels[-1]
            above = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            if len(below) % 2 == 1:
                above.append(below[-1])
            levels.append(above)
        self._levels = levels

    @property
    def root(self) -> bytes:
        """The tree's root (`EMPTY_ROOT` for no leaves)."""
        if self.count == 0:
            return EMPTY_ROOT
        return self._levels[-1][0]

    def proof(self, index: int) -> list[bytes]:
        """The sibling hashes from leaf `index` up to the root."""
        if not 0 <= index < self.count:
            raise IndexError(f"leaf index {index} outside 0..{self.count - 1}")
        siblings: list[bytes] = []
        position = index
        for level in self._levels[:-1]:
            sibling = position ^ 1
            if sibling < len(level):
                siblings.append(level[sibling])
            position //= 2
        return siblings


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The root over `leaves` (32-byte hashes), `EMPTY_ROOT` when there are none."""
    return MerkleTree(leaves).root


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The proof that `leaves[index]` is in the tree over `leaves`."""
    return MerkleTree(leaves).proof(index)


def verify_proof(root: bytes, leaf: bytes, index: int, count: int, proof: Sequence[bytes]) -> bool:
    """Say whether `proof` shows `leaf` at `index` of a tree of `count` leaves with `root`."""
    if not 0 <= index < count or len(proof) > PROOF_LENGTH_MAX:
        return False
    if len(leaf) != HASH_BYTES or len(root) != HASH_BYTES:
        return False
    current = leaf
    position = index
    width = count
    used = 0
    while width > 1:
        sibling = position ^ 1
        if sibling < width:
            if used >= len(proof) or len(proof[used]) != HASH_BYTES:
                return False
            if position % 2 == 0:
                current = node_hash(current, proof[used])
            else:
                current = node_hash(proof[used], current)
            used += 1
        position //= 2
        width = (width + 1) // 2
    return used == len(proof) and current == root
