"""The IndexOracle on a real anvil: only the settler publishes, a published minute is never
written again, each class's minutes only move forward, `latest` and `valueAt` read what was
published, and each publication is an event; and what one costs in gas."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3.contract.contract import ContractFunction
from web3.logs import DISCARD

from index.value import MINUTE_NS, IndexValue, Source
from settlement.chain import Chain, Contracts, deploy, dev_account
from settlement.index_chain import (
    differences,
    index_key,
    publication,
    read_latest,
    read_value,
)
from settlement.testing import assert_reverts

REGION = "eu-west"
MINUTE = 29_500_000  # 2026-02-02T02:40Z, in minutes since the epoch


@pytest.fixture(scope="module")
def contracts(eth_rpc_url: str) -> Iterator[Contracts]:
    chain = Chain(eth_rpc_url)
    admin = dev_account(0)
    yield Contracts(chain, deploy(chain, admin, settler=dev_account(1).address,
                                  minter=admin.address))


@pytest.fixture(scope="module")
def settler() -> LocalAccount:
    return dev_account(1)


def index_value(gpu: str, minute: int, value_micro: int | None = 2_150_000,
                source: Source = "trades", sufficient: bool = True) -> IndexValue:
    traded = source == "trades"
    return IndexValue(
        gpu=gpu, region=REGION, minute_ns=minute * MINUTE_NS, value_micro=value_micro,
        source=source, trade_count=6 if traded else 0, volume=48 if traded else 0,
        instrument_count=2 if traded else 0, sufficient=sufficient,
        inputs_hash=hashlib.sha256(f"{gpu}/{minute}/{value_micro}".encode()).digest(),
        last_seq=minute,
    )  # fmt: skip


def publish(contracts: Contracts, values: Sequence[IndexValue]) -> ContractFunction:
    return contracts.index_oracle.functions.publish([publication(value) for value in values])


def test_the_key_of_a_class_is_its_names_abi_encoded(contracts: Contracts) -> None:
    oracle = contracts.index_oracle.functions
    assert oracle.keyOf("H100-SXM-80GB", REGION).call() == index_key("H100-SXM-80GB", REGION)
    # names holding a separator cannot share a key, as "A|B" + "C" and "A" + "B|C" would
    assert index_key("A|B", "C") != index_key("A", "B|C")
    assert oracle.keyOf("A|B", "C").call() == index_key("A|B", "C")


def test_only_the_settler_publishes(contracts: Contracts, settler: LocalAccount) -> None:
    values = [index_value("roles", MINUTE)]
    for outsider in (dev_account(0).address, dev_account(5).address):  # the admin too
        assert_reverts(contracts, publish(contracts, values), outsider,
                       "AccessControlUnauthorizedAccount")
    assert read_value(contracts, "roles", REGION, MINUTE * MINUTE_NS) is None
    contracts.chain.transact(publish(contracts, values), settler)
    on_chain = read_value(contracts, "roles", REGION, MINUTE * MINUTE_NS)
    assert on_chain is not None and differences(values[0], on_chain) == []


def test_published_values_read_back_by_minute_and_latest_with_an_event_each(
    contracts: Contracts, settler: LocalAccount,
) -> None:
    gpu = "reads"
    values = [index_value(gpu, MINUTE, 2_000_000),
              index_value(gpu, MINUTE + 1, 2_100_000, source="mid", sufficient=False),
              index_value(gpu, MINUTE + 2, 2_100_000, source="last", sufficient=False)]
    assert read_latest(contracts, gpu, REGION) is None  # never published
    receipt = contracts.chain.transact(publish(contracts, values), settler)
    events = contracts.index_oracle.events.IndexPublished().process_receipt(receipt,
                                                                            errors=DISCARD)
    assert [(event["args"]["key"], event["args"]["minute"], event["args"]["valueMicro"],
             event["args"]["source"], event["args"]["sufficient"],
             event["args"]["inputsHash"]) for event in events] == [
        (index_key(gpu, REGION), MINUTE + index, value.value_micro, source_number,
         value.sufficient, value.inputs_hash)
        for index, (value, source_number) in enumerate(zip(values, (1, 2, 3), strict=True))]
    for value in values:
        on_chain = read_value(contracts, gpu, REGION, value.minute_ns)
        assert on_chain is not None and differences(value, on_chain) == []
        assert on_chain.value_micro == value.value_micro and on_chain.source == value.source
    latest = read_latest(contracts, gpu, REGION)
    assert latest is not None and latest.minute_ns == values[-1].minute_ns
    assert differences(values[-1], latest) == []
    minute, stored = contracts.index_oracle.functions.latest(index_key(gpu, REGION)).call()
    assert (minute, stored[1]) == (MINUTE + 2, 3)
    assert read_value(contracts, gpu, REGION, (MINUTE + 3) * MINUTE_NS) is None
    assert read_value(contracts, gpu, "elsewhere", MINUTE * MINUTE_NS) is None


def test_a_minute_without_value_is_published_as_none_and_reads_as_none(
    contracts: Contracts, settler: LocalAccount,
) -> None:
    empty = index_value("empty", MINUTE, None, source="none", sufficient=False)
    contracts.chain.transact(publish(contracts, [empty]), settler)
    on_chain = read_value(contracts, "empty", REGION, MINUTE * MINUTE_NS)
    assert on_chain is not None and on_chain.source == "none" and on_chain.value_micro is None
    assert contracts.index_oracle.functions.valueAt(
        index_key("empty", REGION), MINUTE).call()[:2] == (0, 4)


def test_a_published_minute_is_never_written_again(
    contracts: Contracts, settler: LocalAccount,
) -> None:
    gpu = "rewrite"
    first = index_value(gpu, MINUTE, 2_000_000)
    contracts.chain.transact(publish(contracts, [first]), settler)
    for again in (first, index_value(gpu, MINUTE, 9_999_999)):  # the same, or another value
        assert_reverts(contracts, publish(contracts, [again]), settler.address,
                       "AlreadyPublished")
    # twice in one list: the second is refused and so is the whole list
    fresh = index_value(gpu, MINUTE + 1)
    assert_reverts(contracts, publish(contracts, [fresh, fresh]), settler.address,
                   "AlreadyPublished")
    on_chain = read_value(contracts, gpu, REGION, first.minute_ns)
    assert on_chain is not None and differences(first, on_chain) == []
    assert read_value(contracts, gpu, REGION, fresh.minute_ns) is None


def test_each_classes_minutes_only_move_forward(
    contracts: Contracts, settler: LocalAccount,
) -> None:
    gpu, other = "forward", "forward-other"
    contracts.chain.transact(publish(contracts, [index_value(gpu, MINUTE + 10)]), settler)
    earlier = index_value(gpu, MINUTE + 5)  # never published, but before the latest
    assert_reverts(contracts, publish(contracts, [earlier]), settler.address, "NotAfterLatest")
    out_of_order = [index_value(gpu, MINUTE + 12), index_value(gpu, MINUTE + 11)]
    assert_reverts(contracts, publish(contracts, out_of_order), settler.address,
                   "NotAfterLatest")
    # another class keeps its own latest: an earlier minute of it is fine
    contracts.chain.transact(publish(contracts, [index_value(other, MINUTE + 1),
                                                 index_value(gpu, MINUTE + 11)]), settler)
    latest = read_latest(contracts, gpu, REGION)
    assert latest is not None and latest.minute_ns == (MINUTE + 11) * MINUTE_NS
    assert read_value(contracts, gpu, REGION, earlier.minute_ns) is None


@pytest.mark.parametrize(("fields", "reason"), [
    ((MINUTE, (0, 1, True, b"\1" * 32)), "InvalidValue"),  # trades, but no value
    ((MINUTE, (5, 4, False, b"\1" * 32)), "InvalidValue"),  # none, with a value
    ((MINUTE, (5, 0, False, b"\1" * 32)), "InvalidValue"),  # published as unpublished
    ((0, (5, 1, True, b"\1" * 32)), "InvalidMinute"),
])  # fmt: skip
def test_a_malformed_publication_is_refused(
    contracts: Contracts, settler: LocalAccount, fields: tuple[int, Any], reason: str,
) -> None:
    minute, value = fields
    call = contracts.index_oracle.functions.publish([(index_key("malformed", REGION), minute,
                                                      value)])
    assert_reverts(contracts, call, settler.address, reason)
    assert_reverts(contracts, contracts.index_oracle.functions.publish([]), settler.address,
                   "NothingToPublish")
    assert contracts.index_oracle.functions.latestMinute(
        index_key("malformed", REGION)).call() == 0


def test_a_value_costs_about_56000_gas_and_74000_for_a_classs_first(
    contracts: Contracts, settler: LocalAccount,
) -> None:
    """The figures of `settlement/README.md`: publications of 1, 20 and 100 classes' first
    minutes, then of their next minutes (the steady state: a value per class a minute)."""
    first: dict[int, int] = {}
    steady: dict[int, int] = {}
    for count in (1, 20, 100):
        for minute, gas in ((MINUTE, first), (MINUTE + 1, steady)):
            values = [index_value(f"gas-{count}-{number}", minute) for number in range(count)]
            gas[count] = contracts.chain.transact(publish(contracts, values), settler)["gasUsed"]
    assert first[1] < 100_000 and steady[1] < 85_000  # with the transaction's 21,000
    for count in (20, 100):
        assert (first[count] - first[1]) / (count - 1) < 75_000  # three new slots a value
        assert (steady[count] - steady[1]) / (count - 1) < 57_000  # two, and the latest
