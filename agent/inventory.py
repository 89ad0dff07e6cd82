"""Read what GPUs a node has: from NVML when it can be read, else from a declared profile.

The venue registers a node with its GPU class, count and memory per GPU, and the prober's
`ping` is answered with the same figures; the class floor (`delivery.classes`) is checked
against them. Where the node has NVIDIA GPUs and the `nvidia-ml-py` package (module
`pynvml`) is installed and NVML initialises, the figures are measured (`source="nvml"`);
otherwise the operator declares them in a profile (`source="profile"`), a JSON file

    {"gpu": "H100-SXM-80GB", "gpu_count": 8, "gpu_memory_mib": 81559, "device": "..."}

or the flags `--gpu --gpu-count --gpu-memory-mib` (a flag overrides the file's field). A
declared profile is a claim the challenges then test; a measured one is what the driver
reports. With NVML the GPU class is the declared one when given (it must then agree with
the class NVML's device name maps to, where it maps to one), else the mapped one.

`nvidia-ml-py` is not a dependency of the venue: an operator installs it on a GPU node
(`pip install nvidia-ml-py`). The NVML path is tested with a stub of the pynvml functions
this module calls (tests/unit/test_agent_inventory.py).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec

from agent.errors import InventoryError

__all__ = [
    "DEVICES_MAX",
    "PROFILE_BYTES_MAX",
    "Declared",
    "Device",
    "Inventory",
    "NvmlReading",
    "PynvmlModule",
    "class_from_device_name",
    "inventory_document",
    "load_pynvml",
    "read_declared",
    "read_inventory",
    "read_nvml",
    "write_profile",
]

DEVICES_MAX = 64  # GPUs one node may report; more is a misreading, not a node
PROFILE_BYTES_MAX = 64 * 1024
GPU_COUNT_MAX = DEVICES_MAX
GPU_MEMORY_MIB_MAX = 16 * 1024 * 1024  # 16 TiB per GPU: far beyond any GPU, below int32
GPU_CLASS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
DEVICE_NAME_CHARS_MAX = 96
MIB = 1024 * 1024
INVENTORY_DOCUMENT_BYTES_MAX = 8_192  # what `register_node` takes (wsapi.requests)


class Device(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One GPU as NVML reports it (or as a profile declares it)."""

    index: int
    name: str
    memory_mib: int
    uuid: str | None = None


class Inventory(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the node has: its GPU class, how many GPUs, memory per GPU (the smallest)."""

    source: Literal["nvml", "profile"]
    gpu: str
    gpu_count: int
    gpu_memory_mib: int
    device: str  # the devices' name, as the prober's `pong` carries it
    devices: list[Device] = []
    driver: str | None = None


class Declared(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
               omit_defaults=True):
    """A profile as the operator declares it: a JSON file, flags, or both (flags win)."""

    gpu: str | None = None
    gpu_count: int | None = None
    gpu_memory_mib: int | None = None
    device: str | None = None

    def overridden_by(self, other: Declared) -> Declared:
        """Return this profile with every field `other` sets taken from `other`."""
        return Declared(
            gpu=other.gpu if other.gpu is not None else self.gpu,
            gpu_count=other.gpu_count if other.gpu_count is not None else self.gpu_count,
            gpu_memory_mib=(other.gpu_memory_mib if other.gpu_memory_mib is not None
                            else self.gpu_memory_mib),
            device=other.device if other.device is not None else self.device,
        )


class PynvmlModule(Protocol):
    """The part of the `pynvml` module (package `nvidia-ml-py`) the agent calls."""

    NVMLError: type[Exception]

    def nvmlInit(self) -> None: ...  # noqa: N802 -- pynvml's names
    def nvmlShutdown(self) -> None: ...  # noqa: N802
    def nvmlSystemGetDriverVersion(self) -> str | bytes: ...  # noqa: N802
    def nvmlDeviceGetCount(self) -> int: ...  # noqa: N802
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...  # noqa: N802
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...  # noqa: N802
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...  # noqa: N802
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...  # noqa: N802


def load_pynvml() -> tuple[PynvmlModule | None, str]:
    """Return the `pynvml` module when importable, else None and why not."""
    try:
        module: PynvmlModule = importlib.import_module("pynvml")
    except ImportError:
        return None, "the nvidia-ml-py package (module pynvml) is not installed"
    return module, "pynvml imported"


def read_inventory(
    profile: Path | None = None,
    *,
    declared: Declared | None = None,
    nvml: PynvmlModule | None = None,
    use_nvml: bool = True,
) -> Inventory:
    """Read the node's inventory: NVML when it initialises, else the declared profile.

    `profile` is a JSON profile file and `declared` the flags (they override the file's
    fields). `nvml` is the pynvml module to use (None: import it); `use_nvml=False` never
    reads NVML. Raise InventoryError naming what is missing or wrong.
    """
    stated = read_declared(profile) if profile is not None else Declared()
    if declared is not None:
        stated = stated.overridden_by(declared)
    why_not = "NVML is not read (--no-nvml)"
    if use_nvml:
        module, why_not = (nvml, "stub") if nvml is not None else load_pynvml()
        if module is not None:
            measured, why_not = read_nvml(module)
            if measured is not None:
                return _with_class(measured, stated)
    return _from_declared(stated, why_not)


class NvmlReading(msgspec.Struct, frozen=True, kw_only=True):
    """What NVML reported: the devices and the driver's version."""

    devices: list[Device]
    driver: str


def read_nvml(module: PynvmlModule) -> tuple[NvmlReading | None, str]:
    """Return what NVML reports, or None and why NVML could not be read.

    NVML not initialising (no driver, no GPU) is not an error: the node then declares a
    profile. A device NVML lists but cannot describe is an error: the node is broken.
    """
    try:
        module.nvmlInit()
    except module.NVMLError as error:
        return None, f"NVML did not initialise ({type(error).__name__})"
    try:
        driver = _text(module.nvmlSystemGetDriverVersion())
        count = module.nvmlDeviceGetCount()
        if not 0 <= count <= DEVICES_MAX:
            raise InventoryError(f"NVML reports {count} GPUs; a node has 1 to {DEVICES_MAX}")
        devices = [_nvml_device(module, index) for index in range(count)]
    except module.NVMLError as error:
        raise InventoryError(f"NVML failed while listing the GPUs: {error!r}") from error
    finally:
        try:
            module.nvmlShutdown()
        except module.NVMLError:
            pass  # nothing more to read; a failed shutdown changes no figure
    if not devices:
        return None, "NVML initialised but reports no GPU"
    return NvmlReading(devices=devices, driver=driver), "NVML read"


def _nvml_device(module: PynvmlModule, index: int) -> Device:
    handle = module.nvmlDeviceGetHandleByIndex(index)
    name = _text(module.nvmlDeviceGetName(handle))[:DEVICE_NAME_CHARS_MAX]
    total_bytes = int(module.nvmlDeviceGetMemoryInfo(handle).total)
    if total_bytes <= 0:
        raise InventoryError(f"NVML reports GPU {index} ({name}) with no memory")
    return Device(index=index, name=name, memory_mib=total_bytes // MIB,
                  uuid=_text(module.nvmlDeviceGetUUID(handle)))


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _with_class(reading: NvmlReading, stated: Declared) -> Inventory:
    devices = reading.devices
    names = sorted({device.name for device in devices})
    if len(names) != 1:
        raise InventoryError(f"NVML reports GPUs of {len(names)} kinds ({', '.join(names)}); "
                             "a node is registered with one GPU class")
    name = names[0]
    memory_mib = min(device.memory_mib for device in devices)
    mapped = class_from_device_name(name, memory_mib)
    if stated.gpu is not None:
        _check_class(stated.gpu, "--gpu / the profile's gpu")
        if mapped is not None and mapped != stated.gpu:
            raise InventoryError(f"the declared GPU class {stated.gpu} is not what NVML sees: "
                                 f"{len(devices)} x {name}, which is class {mapped}")
    gpu = stated.gpu if stated.gpu is not None else mapped
    if gpu is None:
        raise InventoryError(f"NVML sees {len(devices)} x {name}, which is no GPU class the "
                             "agent knows: declare it with --gpu-class (or the profile's gpu)")
    if stated.gpu_count is not None and stated.gpu_count > len(devices):
        raise InventoryError(f"the profile declares {stated.gpu_count} GPUs but NVML sees "
                             f"{len(devices)}")
    return Inventory(source="nvml", gpu=gpu, gpu_count=len(devices), gpu_memory_mib=memory_mib,
                     device=name, devices=devices, driver=reading.driver)


# NVML device names of the classes the venue lists, mapped to the instrument's gpu class.
# (A name that matches none is declared with --gpu-class.)
_CLASS_PATTERNS: tuple[tuple[re.Pattern[str], int, str], ...] = (
    (re.compile(r"H100.*(SXM|HBM3)", re.IGNORECASE), 76_000, "H100-SXM-80GB"),
    (re.compile(r"A100.*SXM", re.IGNORECASE), 76_000, "A100-SXM-80GB"),
    (re.compile(r"L40S", re.IGNORECASE), 44_000, "L40S-48GB"),
)


def class_from_device_name(name: str, memory_mib: int) -> str | None:
    """Return the venue's GPU class of an NVML device name and memory, None if unknown."""
    for pattern, memory_mib_min, gpu in _CLASS_PATTERNS:
        if pattern.search(name) and memory_mib >= memory_mib_min:
            return gpu
    return None


def _check_class(gpu: str, where: str) -> None:
    if not GPU_CLASS.fullmatch(gpu):
        raise InventoryError(f"{where}: {gpu!r} is not a GPU class (1-64 characters "
                             "[A-Za-z0-9_.:-], e.g. H100-SXM-80GB)")


def _from_declared(stated: Declared, why_not_nvml: str) -> Inventory:
    missing = [flag for flag, value in (("--gpu-class", stated.gpu),
                                        ("--gpu-count", stated.gpu_count),
                                        ("--gpu-memory-mib", stated.gpu_memory_mib))
               if value is None]
    if missing:
        raise InventoryError(f"no GPU inventory: {why_not_nvml}, and the declared profile "
                             f"lacks {', '.join(missing)} (give --profile FILE or the flags)")
    assert stated.gpu is not None and stated.gpu_count is not None  # noqa: S101 -- for mypy
    assert stated.gpu_memory_mib is not None  # noqa: S101 -- checked just above
    _check_class(stated.gpu, "--gpu-class / the profile's gpu")
    if not 1 <= stated.gpu_count <= GPU_COUNT_MAX:
        raise InventoryError(f"gpu_count {stated.gpu_count} is outside 1..{GPU_COUNT_MAX}")
    if not 1 <= stated.gpu_memory_mib <= GPU_MEMORY_MIB_MAX:
        raise InventoryError(f"gpu_memory_mib {stated.gpu_memory_mib} is outside "
                             f"1..{GPU_MEMORY_MIB_MAX} (MiB per GPU)")
    device = stated.device if stated.device is not None else f"declared {stated.gpu}"
    if not 1 <= len(device) <= DEVICE_NAME_CHARS_MAX:
        raise InventoryError(f"device name has {len(device)} characters; 1 to "
                             f"{DEVICE_NAME_CHARS_MAX} allowed")
    return Inventory(source="profile", gpu=stated.gpu, gpu_count=stated.gpu_count,
                     gpu_memory_mib=stated.gpu_memory_mib, device=device)


def read_declared(path: Path) -> Declared:
    """Read a JSON profile file; raise InventoryError naming the file and what is wrong."""
    try:
        with path.open("rb") as file:
            data = file.read(PROFILE_BYTES_MAX + 1)
    except OSError as error:
        raise InventoryError(f"profile {path}: cannot read it ({error.strerror})") from error
    if len(data) > PROFILE_BYTES_MAX:
        raise InventoryError(f"profile {path}: larger than {PROFILE_BYTES_MAX} bytes")
    try:
        return msgspec.json.decode(data, type=Declared)
    except msgspec.ValidationError as error:
        raise InventoryError(f"profile {path}: {error} (fields: gpu, gpu_count, "
                             "gpu_memory_mib, device)") from error
    except msgspec.DecodeError as error:
        raise InventoryError(f"profile {path}: not a JSON object ({error})") from error


def write_profile(inventory: Inventory, path: Path) -> None:
    """Write the inventory as a profile file `read_declared` reads back (for the responder)."""
    declared = Declared(gpu=inventory.gpu, gpu_count=inventory.gpu_count,
                        gpu_memory_mib=inventory.gpu_memory_mib, device=inventory.device)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(declared)) + b"\n")


def inventory_document(inventory: Inventory) -> dict[str, Any]:
    """Return the inventory as the JSON object `register_node` carries (`inventory`): with
    the devices listed when that fits the request's bound, else with their count only."""
    document: dict[str, Any] = msgspec.to_builtins(inventory)
    if len(msgspec.json.encode(document)) > INVENTORY_DOCUMENT_BYTES_MAX:
        document["devices"] = []
        document["devices_omitted"] = len(inventory.devices)
    return document
