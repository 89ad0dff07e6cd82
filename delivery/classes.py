"""The floors a node of each GPU class must meet: challenge size, answer time, memory.

A challenge (delivery.challenge) is one exact float32 product of two n x n matrices; the
node's answer time, from the prober sending the challenge to receiving the commitment,
includes drawing the matrices on the host (O(n^2)), the product (2 n^3 flop), and hashing
the n result rows (O(n^2)). The throughput recorded per challenge, `2 n^3 / answer_s`, is
therefore a lower bound on the node's flop/s, and a class's floor throughput is
`2 n^3 / (answer_ms_max / 1000)`; quality reports the ratio of the two.

DEFAULT_FLOORS assume real GPUs, with the product in plain FP32 (TF32 off: the result must
be exact) and the host part on a server CPU:

- challenge_n = 16384: 8.8e12 flop. An H100 SXM runs FP32 GEMM at about 50 Tflop/s
  (0.18 s), an A100 SXM at about 19 Tflop/s (0.46 s), an L40S at about 60 Tflop/s
  (0.15 s). The host part is about 1 s on a quiet server core (extrapolated from what
  benchmarks.delivery_challenge measures at n = 4096 here: drawing the 2 x 256 Mi entries
  about 0.4 s, hashing the 1 GiB of result rows about 1 s on one thread, 0.25 s on four;
  plus about 0.1 s of PCIe copies), so an idle H100 or L40S node answers in about 1.2 s
  and an A100 in about 1.5 s. The floors, 4,000 ms for H100 and L40S and 5,000 ms for
  A100, leave about 3x for a node whose GPUs are busy with the holder's own work (the
  challenge runs during the delivery hour, beside it) and for a slower host. The device
  needs about 3.5 GiB free for the challenge (entries, float32 copies, the int32 result).
- What the floors can and cannot tell: a dual-socket CPU server without a GPU (about 3
  Tflop/s FP32) needs about 3 s for the product alone plus the host part, so it fails
  the H100/L40S floors and passes the A100 floor only narrowly; the pong's inventory (GPU
  count, memory per GPU) is checked too. The throughput is a lower bound, so the quality
  record's ratios understate fast GPUs (host time dominates) rather than flatter slow ones.
- gpu_memory_mib_min: the card's memory as NVML reports it, minus a little: an 80 GB card
  reports 81,559-81,920 MiB (floor 80,000), an L40S 46,068 MiB (floor 45,000).

`demo_floors()` is for simulated nodes answering with numpy on two shared CPU cores (`gpux
dev`, tests): n = 256 answers in about 2 ms on 2 shared cores here, and in at most 40 ms
with other tests loading them (delivery.challenge's docstring has the figures), so the
floor of 2,000 ms does not fail a healthy node on a busy machine; memory 0 (no GPU).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Final

import msgspec

from delivery.errors import DeliveryError

__all__ = [
    "DEFAULT_FLOORS",
    "ClassFloor",
    "demo_floors",
    "floor_for",
    "floor_throughput_flops",
    "load_floors",
    "throughput_flops",
]

CHALLENGE_N_MAX: Final = 65536  # above it, 225 * n no longer fits float32's exact integers
FLOORS_FILE_BYTES_MAX: Final = 1 << 20


class ClassFloor(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one GPU class must meet: its challenge size, answer time and memory per GPU."""

    gpu: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    challenge_n: Annotated[int, msgspec.Meta(ge=1, le=CHALLENGE_N_MAX)]
    answer_ms_max: Annotated[int, msgspec.Meta(ge=1, le=3_600_000)]
    gpu_memory_mib_min: Annotated[int, msgspec.Meta(ge=0, le=1 << 30)]


def throughput_flops(n: int, answer_ms: int) -> float:
    """The flop/s a challenge of size `n` answered in `answer_ms` shows (a lower bound).

    An answer under a millisecond counts as one millisecond (the prober's clock resolution).
    """
    return 2.0 * float(n) ** 3 / (max(answer_ms, 1) / 1000.0)


def floor_throughput_flops(floor: ClassFloor) -> float:
    """The flop/s a class's floor demands: its challenge answered in exactly answer_ms_max."""
    return throughput_flops(floor.challenge_n, floor.answer_ms_max)


def floor_for(gpu: str, floors: Mapping[str, ClassFloor]) -> ClassFloor:
    """The floor of GPU class `gpu`; a `DeliveryError` naming the class when there is none."""
    floor = floors.get(gpu)
    if floor is None:
        known = ", ".join(sorted(floors)) or "none"
        raise DeliveryError(f"no delivery floor for GPU class {gpu!r} (known: {known})")
    return floor


DEFAULT_FLOORS: Final[Mapping[str, ClassFloor]] = MappingProxyType(
    {
        "H100-SXM-80GB": ClassFloor(
            gpu="H100-SXM-80GB", challenge_n=16384, answer_ms_max=4000, gpu_memory_mib_min=80000
        ),
        "A100-SXM-80GB": ClassFloor(
            gpu="A100-SXM-80GB", challenge_n=16384, answer_ms_max=5000, gpu_memory_mib_min=80000
        ),
        "L40S-48GB": ClassFloor(
            gpu="L40S-48GB", challenge_n=16384, answer_ms_max=4000, gpu_memory_mib_min=45000
        ),
    }
)

DEMO_CHALLENGE_N: Final = 256
DEMO_ANSWER_MS_MAX: Final = 2000


def demo_floors() -> dict[str, ClassFloor]:
    """Floors for numpy-on-CPU nodes (gpux dev, tests): the default classes, small n."""
    return {
        gpu: ClassFloor(
            gpu=gpu,
            challenge_n=DEMO_CHALLENGE_N,
            answer_ms_max=DEMO_ANSWER_MS_MAX,
            gpu_memory_mib_min=0,
        )
        for gpu in DEFAULT_FLOORS
    }


def load_floors(path: Path) -> dict[str, ClassFloor]:
    """Read floors from a JSON file, over DEFAULT_FLOORS: a class the file names replaces the
    default's, the others stay.

    The file is an object from GPU class to `{"challenge_n", "answer_ms_max",
    "gpu_memory_mib_min"}` (`"gpu"` may be given and must then match its key), or a list of
    such objects each with its `"gpu"`. Raise a `DeliveryError` naming the file and the
    field on anything else.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DeliveryError(f"cannot read delivery floors {path}: {exc}") from exc
    if len(raw) > FLOORS_FILE_BYTES_MAX:
        raise DeliveryError(f"delivery floors {path} exceed {FLOORS_FILE_BYTES_MAX} bytes")
    try:
        document = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise DeliveryError(f"delivery floors {path} are not JSON: {exc}") from exc
    entries: list[object]
    if isinstance(document, dict):
        entries = []
        for gpu, entry in document.items():
            if not isinstance(entry, dict):
                raise DeliveryError(f"delivery floors {path}: class {gpu!r} is not an object")
            if entry.get("gpu", gpu) != gpu:
                raise DeliveryError(
                    f"delivery floors {path}: class {gpu!r} names gpu {entry['gpu']!r}"
                )
            entries.append({**entry, "gpu": gpu})
    elif isinstance(document, list):
        entries = list(document)
    else:
        raise DeliveryError(f"delivery floors {path}: expected an object or a list")
    floors = dict(DEFAULT_FLOORS)
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        try:
            floor = msgspec.convert(entry, ClassFloor)
        except msgspec.ValidationError as exc:
            raise DeliveryError(f"delivery floors {path}, entry {position}: {exc}") from exc
        if floor.gpu in seen:
            raise DeliveryError(f"delivery floors {path}: class {floor.gpu!r} given twice")
        seen.add(floor.gpu)
        floors[floor.gpu] = floor
    return floors
