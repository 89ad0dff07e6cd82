"""The end-to-end benchmark's ratios (issue 15's stable JSON keys) and the bound on its
saturation ratios were the gateway as cheap as the echo server."""

from __future__ import annotations

import os
from typing import Any

import pytest

from benchmarks.e2e import gateway_as_echo_bound, ratios


def figures() -> dict[str, Any]:
    return {
        "levels": [{"fraction": 0.10, "latency": {"p50": 1.0, "p99": 2.0}},
                   {"fraction": 0.20, "latency": {"p50": 6.0, "p99": 20.0}}],
        "baseline_kafka": {"plain": {"p50": 2.0, "p99": 4.0}},
        "baseline_echo": {"saturation_per_s": 50_000.0, "cpu": {"echo": 0.5, "clients": 0.6}},
        "saturation": [
            {"batch_size": 1, "orders_per_s": 10_000.0,
             "cpu": {"gateway": 0.9, "clients": 0.3, "kafka": 0.05, "engine": 0.05}},
            {"batch_size": 20, "orders_per_s": 20_000.0,
             "cpu": {"gateway": 0.9, "clients": 0.1, "kafka": 0.05, "engine": 0.05}},
        ],
    }


def test_ratios_hold_the_20_percent_level_against_the_baselines() -> None:
    assert ratios(figures()) == {"p50_vs_plain_hop": 3.0, "p99_vs_plain_hop": 5.0,
                                 "single_vs_echo": 0.2, "batch_vs_echo": 0.4}


def test_the_bound_puts_the_echo_servers_cost_per_frame_in_the_gateways_place() -> None:
    cores = os.cpu_count() or 1
    bound = gateway_as_echo_bound(figures())
    # the echo server: 10 µs a frame. Singles: 40 µs of the others + 10 = 50 µs an order,
    # 20,000 orders/s a core. Batches: 10 µs of the others + 10 / 20 = 10.5 µs an order.
    assert bound["single_vs_echo"] == pytest.approx(cores * 20_000 / 50_000)
    assert bound["batch_vs_echo"] == pytest.approx(cores * 1e6 / 10.5 / 50_000)
