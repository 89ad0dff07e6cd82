"""The agent's inventory: NVML through a hand-written stub of the pynvml functions (this
machine has no GPU), a declared profile from a file and flags, and errors that name what is
wrong (checked by type and by the names the agent itself puts in them)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.errors import InventoryError
from agent.inventory import (
    Declared,
    Inventory,
    class_from_device_name,
    inventory_document,
    read_declared,
    read_inventory,
    write_profile,
)

H100_NAME = "NVIDIA H100 80GB HBM3"
H100_BYTES = 81_559 * 1024 * 1024


class StubNvmlError(Exception):
    """Stands for pynvml.NVMLError."""


@dataclass(frozen=True)
class StubMemory:
    total: int


@dataclass
class StubPynvml:
    """The pynvml functions the agent calls, over a list of (name, bytes) GPUs."""

    gpus: list[tuple[str | bytes, int]]
    init_fails: bool = False
    fail_on_name: bool = False
    calls: list[str] = field(default_factory=list)
    NVMLError: type[Exception] = StubNvmlError

    def nvmlInit(self) -> None:  # noqa: N802 -- pynvml's names
        self.calls.append("init")
        if self.init_fails:
            raise StubNvmlError("driver not loaded")

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.calls.append("shutdown")

    def nvmlSystemGetDriverVersion(self) -> bytes:  # noqa: N802 -- old pynvml returns bytes
        return b"550.54.15"

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetName(self, handle: Any) -> str | bytes:  # noqa: N802
        if self.fail_on_name:
            raise StubNvmlError("GPU is lost")
        name: str | bytes = self.gpus[handle][0]
        return name

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> StubMemory:  # noqa: N802
        return StubMemory(total=self.gpus[handle][1])

    def nvmlDeviceGetUUID(self, handle: Any) -> str:  # noqa: N802
        return f"GPU-{handle:08d}"


def _profile(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "profile.json"
    path.write_bytes(msgspec.json.encode(document))
    return path


def test_nvml_gives_the_measured_count_memory_and_the_class_of_the_device_name() -> None:
    nvml = StubPynvml(gpus=[(H100_NAME, H100_BYTES)] * 8)
    inventory = read_inventory(nvml=nvml)
    assert inventory.source == "nvml"
    assert (inventory.gpu, inventory.gpu_count, inventory.gpu_memory_mib) == (
        "H100-SXM-80GB", 8, 81_559)
    assert inventory.device == H100_NAME
    assert inventory.driver == "550.54.15"
    assert [device.uuid for device in inventory.devices][:2] == ["GPU-00000000", "GPU-00000001"]
    assert nvml.calls == ["init", "shutdown"]


def test_nvml_memory_is_the_smallest_gpu_and_names_may_be_bytes() -> None:
    nvml = StubPynvml(gpus=[(b"NVIDIA L40S", 46_068 * 2**20), (b"NVIDIA L40S", 45_000 * 2**20)])
    inventory = read_inventory(nvml=nvml)
    assert (inventory.gpu, inventory.gpu_count, inventory.gpu_memory_mib) == (
        "L40S-48GB", 2, 45_000)


def test_nvml_uses_the_declared_class_for_a_device_name_it_does_not_map() -> None:
    nvml = StubPynvml(gpus=[("NVIDIA RTX 6000 Ada Generation", 48_000 * 2**20)])
    with pytest.raises(InventoryError, match="--gpu-class"):
        read_inventory(nvml=nvml)
    inventory = read_inventory(nvml=nvml, declared=Declared(gpu="RTX6000ADA-48GB"))
    assert (inventory.source, inventory.gpu) == ("nvml", "RTX6000ADA-48GB")


def test_nvml_refuses_a_declared_class_that_contradicts_the_devices() -> None:
    nvml = StubPynvml(gpus=[("NVIDIA L40S", 46_068 * 2**20)])
    with pytest.raises(InventoryError, match="H100-SXM-80GB"):
        read_inventory(nvml=nvml, declared=Declared(gpu="H100-SXM-80GB"))


def test_nvml_refuses_a_profile_declaring_more_gpus_than_it_sees(tmp_path: Path) -> None:
    nvml = StubPynvml(gpus=[(H100_NAME, H100_BYTES)] * 2)
    profile = _profile(tmp_path, {"gpu": "H100-SXM-80GB", "gpu_count": 8,
                                  "gpu_memory_mib": 81_559})
    with pytest.raises(InventoryError, match="declares 8 GPUs but NVML sees 2"):
        read_inventory(profile, nvml=nvml)


def test_nvml_refuses_mixed_gpus() -> None:
    nvml = StubPynvml(gpus=[(H100_NAME, H100_BYTES), ("NVIDIA L40S", 46_068 * 2**20)])
    with pytest.raises(InventoryError, match="2 kinds"):
        read_inventory(nvml=nvml)


def test_nvml_failing_after_init_is_an_error_and_still_shuts_down() -> None:
    nvml = StubPynvml(gpus=[(H100_NAME, H100_BYTES)], fail_on_name=True)
    with pytest.raises(InventoryError, match="NVML failed"):
        read_inventory(nvml=nvml)
    assert nvml.calls == ["init", "shutdown"]


def test_nvml_that_does_not_initialise_falls_back_to_the_profile(tmp_path: Path) -> None:
    nvml = StubPynvml(gpus=[], init_fails=True)
    profile = _profile(tmp_path, {"gpu": "L40S-48GB", "gpu_count": 4, "gpu_memory_mib": 46_068})
    inventory = read_inventory(profile, nvml=nvml)
    assert inventory == Inventory(source="profile", gpu="L40S-48GB", gpu_count=4,
                                  gpu_memory_mib=46_068, device="declared L40S-48GB")


def test_nvml_with_no_gpu_falls_back_and_the_error_says_so() -> None:
    with pytest.raises(InventoryError, match="reports no GPU"):
        read_inventory(nvml=StubPynvml(gpus=[]))


def test_without_nvml_or_profile_the_error_names_the_missing_flags() -> None:
    # the real import path: pynvml is not a dependency (and this machine has no GPU)
    with pytest.raises(InventoryError) as raised:
        read_inventory()
    message = str(raised.value)
    if importlib.util.find_spec("pynvml") is None:
        assert "nvidia-ml-py" in message
    for flag in ("--gpu-class", "--gpu-count", "--gpu-memory-mib"):
        assert flag in message


def test_flags_override_the_profile_file_and_no_nvml_skips_nvml(tmp_path: Path) -> None:
    profile = _profile(tmp_path, {"gpu": "H100-SXM-80GB", "gpu_count": 8,
                                  "gpu_memory_mib": 81_559, "device": "NVIDIA H100 80GB HBM3"})
    nvml = StubPynvml(gpus=[("NVIDIA L40S", 46_068 * 2**20)])
    inventory = read_inventory(profile, declared=Declared(gpu_count=4), nvml=nvml,
                               use_nvml=False)
    assert (inventory.source, inventory.gpu_count, inventory.device) == (
        "profile", 4, "NVIDIA H100 80GB HBM3")
    assert nvml.calls == []


def test_flags_alone_are_a_profile() -> None:
    inventory = read_inventory(declared=Declared(gpu="A100-SXM-80GB", gpu_count=1,
                                                 gpu_memory_mib=81_920), use_nvml=False)
    assert (inventory.gpu, inventory.gpu_count, inventory.gpu_memory_mib) == (
        "A100-SXM-80GB", 1, 81_920)


@pytest.mark.parametrize(("declared", "named"), [
    (Declared(gpu="H100 SXM", gpu_count=1, gpu_memory_mib=1), "not a GPU class"),
    (Declared(gpu="H100-SXM-80GB", gpu_count=0, gpu_memory_mib=1), "gpu_count 0"),
    (Declared(gpu="H100-SXM-80GB", gpu_count=65, gpu_memory_mib=1), "gpu_count 65"),
    (Declared(gpu="H100-SXM-80GB", gpu_count=1, gpu_memory_mib=0), "gpu_memory_mib 0"),
    (Declared(gpu="H100-SXM-80GB", gpu_count=1), "--gpu-memory-mib"),
])
def test_a_declared_profile_out_of_range_is_refused_by_name(declared: Declared,
                                                            named: str) -> None:
    with pytest.raises(InventoryError, match=named):
        read_inventory(declared=declared, use_nvml=False)


def test_a_bad_profile_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.json"
    with pytest.raises(InventoryError, match="absent.json"):
        read_declared(missing)
    not_json = tmp_path / "broken.json"
    not_json.write_text("{gpu: H100")
    with pytest.raises(InventoryError, match="broken.json: not a JSON object"):
        read_declared(not_json)
    unknown = _profile(tmp_path, {"gpu": "H100-SXM-80GB", "gpus": 8})
    with pytest.raises(InventoryError, match="fields: gpu, gpu_count"):
        read_declared(unknown)
    wrong_type = _profile(tmp_path, {"gpu_count": "eight"})
    with pytest.raises(InventoryError, match="profile.json"):
        read_declared(wrong_type)
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (64 * 1024 + 1))
    with pytest.raises(InventoryError, match="larger than"):
        read_declared(huge)


def test_a_written_profile_reads_back_as_the_same_figures(tmp_path: Path) -> None:
    measured = read_inventory(nvml=StubPynvml(gpus=[(H100_NAME, H100_BYTES)] * 4))
    path = tmp_path / "written.json"
    write_profile(measured, path)
    again = read_inventory(path, use_nvml=False)
    assert (again.gpu, again.gpu_count, again.gpu_memory_mib, again.device) == (
        measured.gpu, measured.gpu_count, measured.gpu_memory_mib, measured.device)


def test_the_registered_document_is_plain_json() -> None:
    measured = read_inventory(nvml=StubPynvml(gpus=[(H100_NAME, H100_BYTES)]))
    document = inventory_document(measured)
    assert document["source"] == "nvml"
    assert document["devices"][0] == {"index": 0, "name": H100_NAME, "memory_mib": 81_559,
                                       "uuid": "GPU-00000000"}
    assert msgspec.json.decode(msgspec.json.encode(document)) == document


@pytest.mark.parametrize(("name", "memory_mib", "gpu"), [
    ("NVIDIA H100 80GB HBM3", 81_559, "H100-SXM-80GB"),
    ("NVIDIA H100 PCIe", 81_559, None),
    ("NVIDIA A100-SXM4-80GB", 81_920, "A100-SXM-80GB"),
    ("NVIDIA A100-SXM4-40GB", 40_960, None),
    ("NVIDIA L40S", 46_068, "L40S-48GB"),
])
def test_device_names_map_to_the_venue_classes(name: str, memory_mib: int,
                                               gpu: str | None) -> None:
    assert class_from_device_name(name, memory_mib) == gpu


def test_a_registered_document_too_large_for_the_request_keeps_the_figures_only() -> None:
    long_name = "NVIDIA H100 80GB HBM3 " + "x" * 70
    measured = read_inventory(nvml=StubPynvml(gpus=[(long_name, H100_BYTES)] * 64),
                              declared=Declared(gpu="H100-SXM-80GB"))
    document = inventory_document(measured)
    assert len(msgspec.json.encode(document)) <= 8_192
    assert (document["gpu_count"], document["devices"], document["devices_omitted"]) == (
        64, [], 64)
