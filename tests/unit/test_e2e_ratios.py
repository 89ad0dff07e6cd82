"""The end-to-end benchmark's ratios (issue 15's stable JSON keys) and the clients' CPU bound."""

from __future__ import annotations

import os
from typing import Any

import pytest

from benchmarks.e2e import clients_bound, ratios


def figures() -> dict[str, Any]:
    return {
        "levels": [{"fraction": 0.10, "latency": {"p50": 1.0, "p99": 2.0}},
                   {"fraction": 0.20, "latency": {"p50": 6.0, "p99": 20.0}}],
        "baseline_kafka": {"plain": {"p50": 2.0, "p99": 4.0}},
        "baseline_echo": {"saturation_per_s": 50_000.0},
        "saturation": [{"orders_per_s": 10_000.0, "cpu": {"clients": 0.4}},
                       {"orders_per_s": 20_000.0, "cpu": {"clients": 0.2}}],
    }


def test_ratios_hold_the_20_percent_level_against_the_baselines() -> None:
    assert ratios(figures()) == {"p50_vs_plain_hop": 3.0, "p99_vs_plain_hop": 5.0,
                                 "single_vs_echo": 0.2, "batch_vs_echo": 0.4}


def test_the_clients_bound_is_all_cores_at_their_cpu_per_order() -> None:
    cores = os.cpu_count() or 1
    bound = clients_bound(figures())
    # 40 µs a single order -> 25,000 orders/s a core; 10 µs in batches -> 100,000
    assert bound["single_vs_echo"] == pytest.approx(cores * 25_000 / 50_000)
    assert bound["batch_vs_echo"] == pytest.approx(cores * 100_000 / 50_000)
