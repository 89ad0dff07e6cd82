"""What one delivery challenge costs on this machine: the node's answer and the prober's check.

    python -m benchmarks.delivery_challenge [--sizes 256 512 1024] [--runs 5] [--backend numpy]

For each n, the best of `--runs` wall-clock times (and the worst answer) of: the answer
(the Responder's `challenge` step: draw A and B from the seed, C = A @ B, hash the n
rows, build the Merkle tree; what the prober times from challenge to commitment), the
opening (the `open` step: 4 rows with proofs), and the check (the Checker's verdict on
those 4 rows: draw A and B, recompute each row as A[i] @ B, verify the proofs).
The baseline of the same run is the bare product `A @ B` with numpy. The demo floors
(delivery.classes.demo_floors) rest on these figures: n = 256 with 2,000 ms to answer.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable

from delivery.challenge import (
    Checker,
    CommitmentMessage,
    Inventory,
    Responder,
    matrices,
    select_backend,
)
from delivery.classes import ClassFloor


def best_ms(runs: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return min(times)


def measure(n: int, runs: int, backend_name: str | None) -> dict[str, float]:
    responder = Responder(select_backend(backend_name), Inventory(
        gpu_count=0, gpu_memory_mib=0, device="benchmark"))
    floor = ClassFloor(gpu="bench", challenge_n=n, answer_ms_max=3_600_000, gpu_memory_mib_min=0)
    seed = random.Random(n).randbytes(32)
    figures = {"answer": [], "open": [], "check": []}  # type: dict[str, list[float]]
    for _ in range(runs):
        checker = Checker(seed, n, rows_checked=4, pick=random.Random(1).randrange)
        started = time.perf_counter()
        commitment = responder.handle(checker.challenge_message())
        figures["answer"].append((time.perf_counter() - started) * 1000)
        assert isinstance(commitment, CommitmentMessage)
        opening = checker.open_message(commitment)
        started = time.perf_counter()
        rows = responder.handle(opening)
        figures["open"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        result = checker.verdict(rows, 1, floor)
        figures["check"].append((time.perf_counter() - started) * 1000)
        assert result.passed, result
    a, b = matrices(seed, n)
    best = {name: min(values) for name, values in figures.items()}
    best["answer max"] = max(figures["answer"])
    best["product only"] = best_ms(runs, lambda: a @ b)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backend", default=None, help="numpy, torch or cupy (default: best)")
    arguments = parser.parse_args()
    print(f"CPUs available: {len(os.sched_getaffinity(0))}; best of {arguments.runs} runs, ms")
    print(f"{'n':>6} {'answer':>9} {'(worst)':>9} {'open':>7} {'check':>7} "
          f"{'baseline: A @ B':>16}")
    for n in arguments.sizes:
        best = measure(n, arguments.runs, arguments.backend)
        print(f"{n:>6} {best['answer']:>9.1f} {best['answer max']:>9.1f} {best['open']:>7.1f} "
              f"{best['check']:>7.1f} "
              f"{best['product only']:>16.1f}")


if __name__ == "__main__":
    main()
