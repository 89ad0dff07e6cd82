"""The end-to-end benchmark's report: the table it prints, its plots, the machine it ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from benchmarks.support import LatencyHistogram

TARGET_ORDERS_PER_S = 100_000
TARGET_P50_MS = 2.0
TARGET_P99_MS = 10.0


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    met = value >= target if higher_is_better else value < target
    return "met" if met else "NOT met"


def print_report(figures: dict[str, Any]) -> None:
    print("\n=== end to end: SDK clients -> gateway -> Kafka -> engine -> Kafka -> gateway ===")
    print(f"{figures['machine']}; engine core: {figures['core']}; "
          f"{figures.get('gateways', 1)} gateway process(es); "
          f"{figures['connections']} connections in {figures['processes']} client processes")
    echo = figures["baseline_echo"]
    kafka = figures["baseline_kafka"]
    warmup = figures.get("broker_warmup")
    if warmup is not None:
        print(f"broker warm-up: {warmup['transactions']:,} transactions in "
              f"{warmup['seconds']:.0f} s; mean transaction {warmup['first_ms']:.1f} ms in the "
              f"first 100, {warmup['last_ms']:.1f} ms in the last 100")
    print("\nsaturation (closed loop, orders answered per second after warm-up)")
    for run in figures["saturation"]:
        label = "single new_order" if run["batch_size"] == 1 else f"batch of {run['batch_size']}"
        print(f"  {label:<18} {run['orders_per_s']:>10,.0f} orders/s   target >= "
              f"{TARGET_ORDERS_PER_S:,}  {verdict(run['orders_per_s'], TARGET_ORDERS_PER_S, True)}"
              f"   statuses {run['statuses']}")
        print(f"  {'':<18} cpu (cores): {run['cpu']}; CPU per order (us): "
              f"{cpu_us_per(run['cpu'], run['orders_per_s'])}")
        print(f"  {'':<18} engine: {run['engine']['commands_per_batch']:.0f} commands/batch, "
              f"{run['engine']['batch_ms_mean']:.2f} ms/batch")
    print(f"  baseline: websocket echo, same library, same clients: "
          f"{echo['saturation_per_s']:,.0f} round trips/s  (e2e single / echo = "
          f"{figures['saturation'][0]['orders_per_s'] / echo['saturation_per_s']:.2f})")
    if "cpu" in echo:
        print(f"  {'':<18} cpu (cores): {echo['cpu']}; CPU per round trip (us): "
              f"{cpu_us_per(echo['cpu'], echo['saturation_per_s'])}")
    for name, top in figures.get("profiles", {}).items():
        print(f"  profile of the {name} at saturation (py-spy, inclusive share of samples):")
        for frame, share in top[:25]:
            print(f"    {share:6.1%}  {frame[:110]}")
    print("\norder-to-acknowledgement latency (open loop, from scheduled send; ms)")
    print(f"  {'level':<6} {'offered/s':>10} {'answered/s':>10} {'p50':>7} {'p99':>7} "
          f"{'p99.9':>7} {'max':>7}  targets at 20%: p50 < {TARGET_P50_MS}, p99 < {TARGET_P99_MS}")
    for level in figures["levels"]:
        latency = level["latency"]
        note = ""
        if level["fraction"] == 0.20:
            note = (f"  p50 {verdict(latency['p50'], TARGET_P50_MS, False)}, "
                    f"p99 {verdict(latency['p99'], TARGET_P99_MS, False)}")
        print(f"  {level['fraction']:<6.0%} {level['offered_per_s']:>10,.0f} "
              f"{level['answered_per_s']:>10,.0f} {latency['p50']:>7.2f} {latency['p99']:>7.2f} "
              f"{latency['p99.9']:>7.2f} {latency['max']:>7.2f}{note}")
    print(f"  baseline: websocket echo at {echo['rate_per_s']:,.0f}/s: p50 "
          f"{echo['latency']['p50']:.2f}, p99 {echo['latency']['p99']:.2f}, p99.9 "
          f"{echo['latency']['p99.9']:.2f}")
    for mode, summary in kafka.items():
        print(f"  baseline: Kafka {mode} produce -> consume (one hop): p50 {summary['p50']:.2f}, "
              f"p99 {summary['p99']:.2f}, p99.9 {summary['p99.9']:.2f}")
    print("\nratios against baselines of this run (json: ratios.*; targets of issue 15)")
    for name, (value, target, higher) in ratio_targets(figures["ratios"]).items():
        print(f"  {name:<18} {value:>6.2f}   target {'>=' if higher else '<='} {target:.1f}  "
              f"{verdict(value, target, higher)}")
    bound = figures.get("gateway_as_echo_bound")
    if bound is not None:
        print("  at most, were the gateway as cheap as the echo server per frame (the clients, "
              "broker and engine as measured): "
              + ", ".join(f"{name} {value:.2f}" for name, value in bound.items()))
    print("\nstages (ms: p50 / p99 / mean; percentiles of stages do not add up)")
    for level in figures["levels"]:
        print(f"  at {level['fraction']:.0%}:")
        for name, summary in level["stages"].items():
            print(f"    {name:<22} {summary['p50']:>7.3f} / {summary['p99']:>7.3f} / "
                  f"{summary['mean']:>7.3f}")
        engine = level["engine"]
        print(f"    {'stamp -> engine batch':<22} p50 <= {engine['wait_ms_p50_le']:.1f}, p99 <= "
              f"{engine['wait_ms_p99_le']:.1f}, mean {engine['wait_ms_mean']:.3f} (each "
              f"batch's first command: Kafka in and the wait for the batch before)")
        print(f"    {'engine (per batch)':<22} p50 <= {engine['batch_ms_p50_le']:.1f}, p99 <= "
              f"{engine['batch_ms_p99_le']:.1f}, mean {engine['batch_ms_mean']:.3f} (apply and "
              f"sending its events); {engine['commands_per_batch']:.1f} commands/batch")
        print(f"    cpu (cores): {level['cpu']}")


RATIO_TARGETS: dict[str, tuple[float, bool]] = {  # name -> (target, higher is better)
    "p50_vs_plain_hop": (3.0, False),
    "p99_vs_plain_hop": (4.0, False),
    "single_vs_echo": (0.6, True),
    "batch_vs_echo": (1.0, True),
}


def ratio_targets(ratios: dict[str, float]) -> dict[str, tuple[float, float, bool]]:
    """Each ratio with its target and whether higher is better."""
    return {name: (ratios[name], *RATIO_TARGETS[name]) for name in RATIO_TARGETS}


def plot(figures: dict[str, Any], directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    figure, axis = plt.subplots(figsize=(8, 5))
    for level in figures["levels"]:
        histogram: LatencyHistogram = level["_histogram"]
        points, values = histogram.spectrum()
        axis.plot([1 / (1 - p / 100) for p in points], values, marker="o",
                  label=f"{level['fraction']:.0%} ({level['offered_per_s']:,.0f} orders/s)")
    baselines = [(f"baseline: websocket echo at {figures['baseline_echo']['rate_per_s']:,.0f}/s",
                  figures["baseline_echo"]["_histogram"])]
    baselines += [(f"baseline: Kafka {mode} produce -> consume, one hop", summary["_histogram"])
                  for mode, summary in figures["baseline_kafka"].items()]
    for label, baseline in baselines:
        points, values = baseline.spectrum()
        axis.plot([1 / (1 - p / 100) for p in points], values, linestyle="--", marker=".",
                  label=label)
    axis.set_xscale("log")
    axis.set_yscale("log")
    ticks = [50.0, 90.0, 99.0, 99.9, 99.99]
    axis.set_xticks([1 / (1 - p / 100) for p in ticks], [f"p{p:g}" for p in ticks])
    axis.axhline(TARGET_P50_MS, color="grey", linestyle=":", label="p50 target (at 20%)")
    axis.axhline(TARGET_P99_MS, color="grey", linestyle="--", label="p99 target (at 20%)")
    axis.set_xlabel("percentile")
    axis.set_ylabel("order to acknowledgement (ms)")
    axis.set_title(f"gpux end to end through Kafka, {figures['date']} ({figures['core']} core)")
    axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axis.grid(True, which="both", alpha=0.3)
    path = directory / "e2e_latency.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    paths.append(path)

    figure, axis = plt.subplots(figsize=(8, 4))
    levels = figures["levels"]
    bottoms = [0.0] * len(levels)
    labels = [f"{level['fraction']:.0%}" for level in levels]
    for name, means in stage_means(levels).items():
        axis.bar(labels, means, bottom=bottoms, label=name)
        bottoms = [b + m for b, m in zip(bottoms, means, strict=True)]
    axis.set_xlabel("load (fraction of single-request saturation)")
    axis.set_ylabel("mean ms")
    axis.set_title("where an order's time goes (means per stage)")
    axis.legend()
    path = directory / "e2e_stages.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    paths.append(path)
    return paths


def stage_means(levels: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Return the mean ms per stage per level, the engine's batch time split out of the
    Kafka-engine-Kafka stage (a split of means: per order the two are not measured apart)."""
    means: dict[str, list[float]] = {}
    for level in levels:
        stages = level["stages"]
        through = stages["Kafka+engine+Kafka"]["mean"]
        engine_ms = min(level["engine"]["batch_ms_mean"], through)
        wait_ms = min(level["engine"]["wait_ms_mean"], through - engine_ms)
        split = {
            "client schedule lag": stages["client schedule lag"]["mean"],
            "gateway in": stages["gateway in"]["mean"],
            "Kafka in + wait for the batch before (first command)": wait_ms,
            "engine batch (apply + transaction)": engine_ms,
            "Kafka out to the gateway (rest)": through - engine_ms - wait_ms,
            "gateway out": stages["gateway out"]["mean"],
        }
        for name, value in split.items():
            means.setdefault(name, []).append(value)
    return means


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB, Python "
            f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start")


def cpu_us_per(cpu: dict[str, float], per_s: float) -> dict[str, int]:
    """Each process's CPU (cores used) as microseconds per unit of work at `per_s` units/s."""
    return {name: round(cores / per_s * 1e6) for name, cores in cpu.items()}


def without_histograms(value: Any) -> Any:
    """Return `value` without the `_histogram` entries (for JSON)."""
    if isinstance(value, dict):
        return {k: without_histograms(v) for k, v in value.items() if k != "_histogram"}
    if isinstance(value, list):
        return [without_histograms(item) for item in value]
    return value


# -- main ---------------------------------------------------------------------------------
