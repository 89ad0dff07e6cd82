"""Class floors (delivery.classes): the defaults are realistic and consistent, the demo floors
fit numpy on a CPU, a floors file overrides by class with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from delivery.classes import (
    DEFAULT_FLOORS,
    ClassFloor,
    demo_floors,
    floor_for,
    floor_throughput_flops,
    load_floors,
    throughput_flops,
)
from delivery.errors import DeliveryError


def test_the_default_classes_are_the_dev_classes_with_gpu_sized_figures() -> None:
    assert set(DEFAULT_FLOORS) == {"H100-SXM-80GB", "A100-SXM-80GB", "L40S-48GB"}
    for gpu, floor in DEFAULT_FLOORS.items():
        assert floor.gpu == gpu
        assert 225 * floor.challenge_n < 2**24  # the product stays exact in float32
        assert floor.challenge_n >= 8192
        # A GPU class demands at least a few Tflop/s: more than a CPU core can give.
        assert floor_throughput_flops(floor) > 1e12
    assert DEFAULT_FLOORS["H100-SXM-80GB"].gpu_memory_mib_min <= 81559
    assert DEFAULT_FLOORS["A100-SXM-80GB"].gpu_memory_mib_min <= 81920
    assert DEFAULT_FLOORS["L40S-48GB"].gpu_memory_mib_min <= 46068
    with pytest.raises(TypeError):
        DEFAULT_FLOORS["X"] = DEFAULT_FLOORS["L40S-48GB"]  # type: ignore[index]


def test_demo_floors_are_small_and_generous_for_every_class() -> None:
    floors = demo_floors()
    assert set(floors) == set(DEFAULT_FLOORS)
    for floor in floors.values():
        assert floor.challenge_n <= 512 and floor.answer_ms_max >= 1000
        assert floor.gpu_memory_mib_min == 0
    assert floors is not demo_floors()


def test_floor_for_names_an_unknown_class() -> None:
    assert floor_for("L40S-48GB", DEFAULT_FLOORS) is DEFAULT_FLOORS["L40S-48GB"]
    with pytest.raises(DeliveryError, match="'B200'.*H100-SXM-80GB"):
        floor_for("B200", DEFAULT_FLOORS)
    with pytest.raises(DeliveryError, match="known: none"):
        floor_for("B200", {})


def test_throughput_is_twice_n_cubed_per_second() -> None:
    assert throughput_flops(1000, 2000) == 1e9
    assert throughput_flops(1000, 0) == 2e12
    floor = ClassFloor(gpu="x", challenge_n=1000, answer_ms_max=1000, gpu_memory_mib_min=0)
    assert floor_throughput_flops(floor) == 2e9


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "floors.json"
    path.write_text(json.dumps(document))
    return path


def test_a_floors_object_overrides_its_classes_and_keeps_the_others(tmp_path: Path) -> None:
    path = write(tmp_path, {
        "H100-SXM-80GB": {"challenge_n": 4096, "answer_ms_max": 900, "gpu_memory_mib_min": 1},
        "B200": {"gpu": "B200", "challenge_n": 16384, "answer_ms_max": 2000,
                 "gpu_memory_mib_min": 180000},
    })
    floors = load_floors(path)
    assert floors["H100-SXM-80GB"] == ClassFloor(
        gpu="H100-SXM-80GB", challenge_n=4096, answer_ms_max=900, gpu_memory_mib_min=1)
    assert floors["B200"].gpu_memory_mib_min == 180000
    assert floors["L40S-48GB"] == DEFAULT_FLOORS["L40S-48GB"]


def test_a_floors_list_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, [
        {"gpu": "L40S-48GB", "challenge_n": 256, "answer_ms_max": 2000, "gpu_memory_mib_min": 0}
    ])
    assert load_floors(path)["L40S-48GB"].challenge_n == 256


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"X": {"challenge_n": 0, "answer_ms_max": 1, "gpu_memory_mib_min": 0}}, "challenge_n"),
        ({"X": {"challenge_n": 70000, "answer_ms_max": 1, "gpu_memory_mib_min": 0}},
         "challenge_n"),
        ({"X": {"challenge_n": 8, "gpu_memory_mib_min": 0}}, "answer_ms_max"),
        ({"X": {"challenge_n": 8, "answer_ms_max": 1, "gpu_memory_mib_min": 0, "y": 1}}, "y"),
        ({"X": {"gpu": "Y", "challenge_n": 8, "answer_ms_max": 1, "gpu_memory_mib_min": 0}},
         "'Y'"),
        ({"X": 3}, "'X' is not an object"),
        ([{"gpu": "X", "challenge_n": 8, "answer_ms_max": 1, "gpu_memory_mib_min": 0}] * 2,
         "twice"),
        ("floors", "object or a list"),
    ],
)
def test_a_bad_floors_file_is_refused_naming_what(
    tmp_path: Path, document: object, words: str
) -> None:
    with pytest.raises(DeliveryError, match=words) as caught:
        load_floors(write(tmp_path, document))
    assert "floors.json" in str(caught.value)


def test_a_missing_or_non_json_floors_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError, match="cannot read"):
        load_floors(tmp_path / "absent.json")
    path = tmp_path / "floors.json"
    path.write_text("{")
    with pytest.raises(DeliveryError, match="not JSON"):
        load_floors(path)
