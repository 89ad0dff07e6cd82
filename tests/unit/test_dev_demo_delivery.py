"""`gpux dev`'s delivery demo, its pure parts: the demo hours' schedule and listings (their
own region, a minute in the symbol, never two of one start), the outage of the market
maker's node at exactly minutes 30-44 of each measured hour, the simulated nodes, the page
account's key, and the hourly bots never trading a demo hour."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.embedded import host_key_line_of
from delivery.ca import parse_public_key
from gpux.dev.bots import MAKER_GPU_HOURS, OPERATOR_GPUS, nearest_hours, node_name
from gpux.dev.lister import DemoSchedule
from gpux.dev.market import (
    DEMO_GPU,
    DEMO_LIST_LEAD_NS,
    DEMO_REGION,
    GPU_CLASSES,
    MINUTE_NS,
    REGION,
    bond_per_gpu_hour_micro,
    demo_anchor_ns,
    demo_listing_commands,
    demo_starts,
    demo_symbol_for,
    is_demo,
    listing_commands,
)
from gpux.dev.nodes import (
    OUTAGE_NODE,
    SimulatedNodes,
    Window,
    demo_nodes,
    next_change_ns,
    outage_intervals,
    page_identity,
    paused_at,
)
from protocol import format_micro
from protocol.commands import IDENTIFIER_PATTERN
from wsapi.messages import Instrument

HOUR_NS = 3600 * 10**9
START_NS = 1_796_461_000 * 10**9 + 123_456_789  # not on a whole second
SECOND_NS = 10**9


def test_the_first_demo_hour_starts_the_lead_after_the_start_on_a_whole_minute() -> None:
    anchor = demo_anchor_ns(START_NS, 180 * SECOND_NS)
    assert anchor % MINUTE_NS == 0
    assert START_NS + 180 * SECOND_NS <= anchor < START_NS + 180 * SECOND_NS + MINUTE_NS
    assert demo_anchor_ns(10 * MINUTE_NS, 0) == 10 * MINUTE_NS, "a whole minute stays"


def test_demo_starts_follow_the_anchor_every_interval_past_the_listing_lead() -> None:
    interval = 10 * MINUTE_NS
    anchor = 1000 * MINUTE_NS
    assert demo_starts(anchor, interval, anchor - 5 * MINUTE_NS) == [anchor, anchor + interval]
    # Too close to the anchor to be bought: the next one and the one after.
    assert demo_starts(anchor, interval, anchor - DEMO_LIST_LEAD_NS + 1) == [
        anchor + interval, anchor + 2 * interval]
    assert demo_starts(anchor, interval, anchor + 25 * MINUTE_NS, count=1) == [
        anchor + 3 * interval]
    with pytest.raises(ValueError):
        demo_starts(anchor, 0, anchor)


def test_demo_schedule_names_the_next_start_still_ahead() -> None:
    schedule = DemoSchedule.from_start(START_NS, 40, 600)
    assert schedule.next_start_ns(START_NS) == schedule.anchor_ns
    assert schedule.next_start_ns(schedule.anchor_ns) == schedule.anchor_ns + 600 * SECOND_NS
    with pytest.raises(ValueError):
        DemoSchedule.from_start(START_NS, 40, 30)


def test_demo_hours_are_listed_in_their_own_region_once_each_deliverable() -> None:
    starts = [100 * HOUR_NS + 21 * MINUTE_NS, 100 * HOUR_NS + 31 * MINUTE_NS]
    commands = demo_listing_commands([], START_NS, starts)
    assert [c.symbol for c in commands] == [demo_symbol_for(DEMO_GPU, s) for s in starts]
    assert commands[0].symbol == "H100-SXM-80GB.eu-west-demo.19700105T0421"
    for command in commands:
        assert (command.gpu, command.region, command.delivery_hours) == (DEMO_GPU, DEMO_REGION, 1)
        assert command.bond_per_gpu_hour == format_micro(bond_per_gpu_hour_micro(DEMO_GPU))
        assert is_demo(command.region) and not is_demo(REGION)
        assert re.match(IDENTIFIER_PATTERN, command.symbol)
    listed = {commands[0].symbol}
    assert [c.symbol for c in demo_listing_commands(listed, START_NS, starts)] == [
        commands[1].symbol]
    hourly = {c.symbol for c in listing_commands([], START_NS)}
    assert not hourly & {c.symbol for c in commands}, "no clash with the hourly symbols"


def instrument(symbol: str, gpu: str, region: str, start_ns: int) -> Instrument:
    return Instrument(symbol=symbol, gpu=gpu, region=region, delivery_start=start_ns,
                      delivery_hours=1, tick_size="0.01", max_order_quantity=10_000,
                      maker_fee_bps=2, taker_fee_bps=5, status="open",
                      bond_per_gpu_hour="3.23")


def test_the_hourly_bots_never_pick_a_demo_hour() -> None:
    now = 100 * HOUR_NS
    demo = instrument("demo", DEMO_GPU, DEMO_REGION, now + 5 * MINUTE_NS)
    hourly = instrument("hourly", DEMO_GPU, REGION, now + HOUR_NS)
    assert set(nearest_hours([demo, hourly], 1, now)) == {"hourly"}


def test_the_outage_is_minutes_30_to_44_of_each_measured_hour() -> None:
    minute = 1_000_000_000  # minute_ms 1000
    start = 100 * HOUR_NS
    intervals = outage_intervals([Window(start_ns=start, minutes=60)], minute)
    assert intervals == [(start + 30 * minute, start + 45 * minute)]
    paused = [m for m in range(60) for t in (start + m * minute, start + m * minute + 999_999_999)
              if paused_at(t, intervals)]
    assert sorted(set(paused)) == list(range(30, 45))
    assert len(paused) == 2 * 15, "the whole of each outage minute, none of the others"
    two_hours = outage_intervals([Window(start_ns=start, minutes=120)], minute)
    assert two_hours[1] == (start + 90 * minute, start + 105 * minute)
    # The same window twice (an hourly and a demo hour of one start) is one outage.
    assert outage_intervals([Window(start, 60), Window(start, 60)], minute) == intervals


def test_the_next_change_is_the_nearest_edge_ahead() -> None:
    intervals = [(100, 200), (500, 600)]
    assert next_change_ns(0, intervals) == 100
    assert next_change_ns(100, intervals) == 200
    assert next_change_ns(250, intervals) == 500
    assert next_change_ns(600, intervals) is None


def test_the_simulated_nodes_are_the_bots_nodes_with_enough_gpus() -> None:
    nodes = {spec.node_id: spec for spec in demo_nodes()}
    assert set(nodes) == {node_name(owner, gpu) for owner in ("op1", "mm1") for gpu in GPU_CLASSES}
    assert OUTAGE_NODE == node_name("mm1", DEMO_GPU) and nodes[OUTAGE_NODE].account == "mm-1"
    assert {spec.gpu_count for spec in nodes.values() if spec.account == "operator-1"} == {
        OPERATOR_GPUS}
    assert {spec.gpu_count for spec in nodes.values() if spec.account == "mm-1"} == {
        MAKER_GPU_HOURS}


def test_the_page_account_key_is_made_once_private(tmp_path: Path) -> None:
    identity = page_identity(tmp_path, "alice")
    public = identity.with_name(identity.name + ".pub").read_text()
    assert identity.stat().st_mode & 0o777 == 0o600
    canonical, fingerprint = parse_public_key(public)
    assert canonical.startswith("ssh-ed25519 ") and fingerprint.startswith("SHA256:")
    assert host_key_line_of(identity) == canonical, "an OpenSSH private key of that public key"
    assert page_identity(tmp_path, "alice") == identity
    assert identity.with_name(identity.name + ".pub").read_text() == public, "kept, not remade"


def test_a_page_key_whose_public_half_a_kill_left_unwritten_gets_it_again(
        tmp_path: Path) -> None:
    identity = page_identity(tmp_path, "alice")
    public_path = identity.with_name(identity.name + ".pub")
    public = public_path.read_text()
    public_path.unlink()
    assert page_identity(tmp_path, "alice") == identity
    assert public_path.read_text() == public
    assert sorted(path.name for path in identity.parent.iterdir()) == sorted(
        [identity.name, public_path.name]), "no temporary file left"


async def test_the_nodes_serve_again_on_their_ports_trusting_the_venue_ca(tmp_path: Path) -> None:
    ca_path = tmp_path / "keys" / "ssh_ca"
    first = SimulatedNodes(tmp_path, ca_path, minute_ms=1000, windows=lambda gpu: [])
    await first.listen()
    try:
        ports = {node_id: node.port for node_id, node in first.nodes.items()}
        host_keys = {node_id: node.host_key_line for node_id, node in first.nodes.items()}
        assert set(ports) == {spec.node_id for spec in demo_nodes()}
        assert len(set(ports.values())) == len(ports)
        assert ca_path.is_file(), "the CA the delivery service then loads"
    finally:
        await first.stop()
    again = SimulatedNodes(tmp_path, ca_path, minute_ms=1000, windows=lambda gpu: [])
    await again.listen()
    try:
        assert {node_id: node.port for node_id, node in again.nodes.items()} == ports
        assert {node_id: n.host_key_line for node_id, n in again.nodes.items()} == host_keys
    finally:
        await again.stop()
