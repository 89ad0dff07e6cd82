"""The price index on chain (`IndexOracle`): its keys and minutes, the form in which the
submitter publishes `index.value.IndexValue`s, and reads of what the oracle holds.

The submitter publishes the values (`jobs.IndexJob`, one transaction per stored
`store.IndexPublication`); `gpux settlement index-status` and `gpux index verify` read them
back with `read_value` and compare them with values computed off chain with `differences`.

Encoding: a class's key is `keccak256(abi.encode(gpu, region))` (`IndexOracle.keyOf`: no
two pairs of names share a key, whatever characters they hold); a minute on chain is
`minute_ns // 60e9`, whole minutes since the Unix epoch; a value without one (source
"none") is 0 on chain; the source is the oracle's enum, numbered as in `ORACLE_SOURCES`.
A value's `trade_count`, `volume`, `instrument_count` and `last_seq` stay off chain: its
inputs hash commits to the trades they count.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from index.value import MINUTE_NS, IndexValue, Source
from settlement.chain import Contracts, call_rpc

__all__ = [
    "ORACLE_SOURCES",
    "OnChainIndexValue",
    "differences",
    "index_key",
    "oracle_minute",
    "publication",
    "read_latest",
    "read_value",
]

# IndexOracle.Source by number; 0 (`Unpublished`) is a minute nothing was published for
ORACLE_SOURCES: Final[tuple[Source | None, ...]] = (None, "trades", "mid", "last", "none")
COMPARED_FIELDS: Final = ("value_micro", "source", "sufficient", "inputs_hash")

# (key, minute, (valueMicro, source, sufficient, inputsHash)): IndexOracle.Publication
Publication = tuple[bytes, int, tuple[int, int, bool, bytes]]


class OnChainIndexValue(msgspec.Struct, frozen=True, kw_only=True):
    """A value the oracle holds, in the index's own terms (`index.value.IndexValue`)."""

    gpu: str
    region: str
    minute_ns: int
    value_micro: int | None
    source: Source
    sufficient: bool
    inputs_hash: bytes


def index_key(gpu: str, region: str) -> bytes:
    """Return the oracle's key of a GPU class in a region (`IndexOracle.keyOf`)."""
    return keccak(abi_encode(["string", "string"], [gpu, region]))


def oracle_minute(minute_ns: int) -> int:
    """Return the oracle's minute of a minute boundary; ValueError for a time that is not
    one after the epoch."""
    if minute_ns <= 0 or minute_ns % MINUTE_NS:
        raise ValueError(f"minute_ns must be a positive multiple of {MINUTE_NS} (a minute "
                         f"boundary), got {minute_ns}")
    return minute_ns // MINUTE_NS


def publication(value: IndexValue) -> Publication:
    """Return the arguments that publish `value` (one `IndexOracle.Publication`)."""
    if len(value.inputs_hash) != 32:
        raise ValueError(f"inputs_hash of {value.gpu} {value.region} at {value.minute_ns} is "
                         f"{len(value.inputs_hash)} bytes, not 32")
    if (value.value_micro is None) != (value.source == "none"):
        raise ValueError(f"{value.gpu} {value.region} at {value.minute_ns}: a value is None "
                         "exactly when its source is none")
    return (index_key(value.gpu, value.region), oracle_minute(value.minute_ns),
            (value.value_micro or 0, ORACLE_SOURCES.index(value.source), value.sufficient,
             value.inputs_hash))


def _on_chain(gpu: str, region: str, minute: int, stored: Any) -> OnChainIndexValue | None:
    value_micro, source_number, sufficient, inputs_hash = stored
    source = ORACLE_SOURCES[source_number]
    if source is None:
        return None
    return OnChainIndexValue(gpu=gpu, region=region, minute_ns=minute * MINUTE_NS,
                             value_micro=int(value_micro) or None, source=source,
                             sufficient=bool(sufficient), inputs_hash=bytes(inputs_hash))


def read_value(contracts: Contracts, gpu: str, region: str, minute_ns: int
               ) -> OnChainIndexValue | None:
    """Return the value the oracle holds for the class at `minute_ns`, or None when that
    minute is not published (yet: values go on chain with the settlement batches)."""
    minute = oracle_minute(minute_ns)
    call = contracts.index_oracle.functions.valueAt(index_key(gpu, region), minute)
    return _on_chain(gpu, region, minute, call_rpc(call.call, "IndexOracle.valueAt"))


def read_latest(contracts: Contracts, gpu: str, region: str) -> OnChainIndexValue | None:
    """Return the class's last value on chain, or None when none is published."""
    call = contracts.index_oracle.functions.latest(index_key(gpu, region))
    minute, stored = call_rpc(call.call, "IndexOracle.latest")
    return _on_chain(gpu, region, int(minute), stored)


def differences(value: IndexValue, on_chain: OnChainIndexValue) -> list[str]:
    """Name the fields the chain holds otherwise than `value` (the same class and minute):
    of `COMPARED_FIELDS`, in that order; [] when the chain holds `value`."""
    if (on_chain.gpu, on_chain.region, on_chain.minute_ns) != (
            value.gpu, value.region, value.minute_ns):
        raise ValueError(f"comparing {value.gpu} {value.region} at {value.minute_ns} with the "
                         f"chain's {on_chain.gpu} {on_chain.region} at {on_chain.minute_ns}")
    return [name for name in COMPARED_FIELDS
            if getattr(value, name) != getattr(on_chain, name)]
