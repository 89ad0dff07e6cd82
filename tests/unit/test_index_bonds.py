"""`gpux dev` sizes a new listing's bond from the price index: 1.5 times the class's latest
index value, rounded half up to the cent; a class the index has no value for keeps 1.5
times its reference price."""

from __future__ import annotations

from gpux.dev.market import GPU_CLASSES, bond_per_gpu_hour_micro, listing_commands

NOW_NS = 1_780_000_000 * 10**9


def test_a_listing_is_bonded_at_one_and_a_half_times_its_class_index() -> None:
    index = {"H100-SXM-80GB": 2_003_333, "A100-SXM-80GB": 1_000_001}  # no L40S value yet
    bonds = {(listing.gpu, listing.bond_per_gpu_hour)
             for listing in listing_commands([], NOW_NS, index)}
    assert bonds == {
        ("H100-SXM-80GB", "3"),  # 1.5 x 2.003333 = 3.0049995: rounded to the cent
        ("A100-SXM-80GB", "1.5"),  # 1.5000015
        ("L40S-48GB", "1.2"),  # 1.5 x its reference price of 0.80
    }


def test_the_rounding_is_half_up_to_the_cent() -> None:
    assert bond_per_gpu_hour_micro("H100-SXM-80GB", 2_003_334) == 3_010_000  # 3.005001
    assert bond_per_gpu_hour_micro("H100-SXM-80GB", 2_000_000) == 3_000_000
    assert bond_per_gpu_hour_micro("H100-SXM-80GB", 2_003_330) == 3_000_000  # 3.004995
    assert bond_per_gpu_hour_micro("L40S-48GB") == 3 * GPU_CLASSES["L40S-48GB"] // 2
