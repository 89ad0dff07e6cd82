"""Exact fixed-point money of protocol v1: USDC decimal strings <-> integer micro-USDC, and
whole-number token amounts (PROTOCOL.md, Encoding; protocol-notes.md, amounts on the wire)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import MICRO_PER_USDC, ProtocolError, format_micro, parse_micro, parse_token_amount
from protocol.money import MICRO_MAX, parse_positive_micro

# --- parse_micro: well-formed amounts --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("2.15", 2_150_000),
        ("1000", 1_000_000_000),
        ("0.5", 500_000),
        ("0.000001", 1),
        ("0", 0),
        ("1", MICRO_PER_USDC),
        ("10", 10_000_000),
        ("123456.654321", 123_456_654_321),
        ("1000000000000", MICRO_MAX),
    ],
)
def test_parse_micro_reads_canonical_decimal_strings_exactly(text: str, micro: int) -> None:
    assert parse_micro(text) == micro


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("2.150", 2_150_000),
        ("2.150000", 2_150_000),
        ("1.000000", 1_000_000),
        ("0.0", 0),
        ("0.100000", 100_000),
    ],
)
def test_parse_micro_accepts_trailing_zeros_up_to_six_decimals(text: str, micro: int) -> None:
    assert parse_micro(text) == micro


def test_parse_micro_never_goes_through_floats() -> None:
    # 0.1 + 0.2 != 0.3 in binary floating point; micro-USDC integers add exactly.
    assert parse_micro("0.1") + parse_micro("0.2") == parse_micro("0.3")
    assert parse_micro("999999999999.999999") == MICRO_MAX - 1


# --- parse_micro: malformed amounts ------------------------------------------------------------

MALFORMED_DECIMAL_STRINGS = [
    # more than 6 decimals, trailing zeros included
    "1.0000000",
    "2.1500001",
    "0.0000001",
    "2.1500000000",
    # signs
    "-1",
    "+1",
    "-0",
    "-0.5",
    # exponents and special floats
    "1e3",
    "1E3",
    "1e-3",
    "2.15e0",
    "inf",
    "Infinity",
    "nan",
    # spaces and other whitespace
    " 1",
    "1 ",
    "1 000",
    "2. 15",
    "\t1",
    "1\n",
    # empty and bare dots
    "",
    ".5",
    "1.",
    ".",
    # other separators and notations
    "1,5",
    "1.2.3",
    "1_000",
    "0x10",
    "\u0661",  # ARABIC-INDIC DIGIT ONE: a digit, not an ASCII one
    "\uff11",  # FULLWIDTH DIGIT ONE
    "two",
]


@pytest.mark.parametrize("text", MALFORMED_DECIMAL_STRINGS)
def test_parse_micro_refuses_malformed_decimal_strings_naming_the_field(text: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_micro(text, "price")
    assert caught.value.field == "price"
    assert str(caught.value).startswith("price: ")
    assert caught.value.reason


@pytest.mark.parametrize("value", [1, 0, 2.15, 1.0, None, True, False, b"1", Decimal("1"), ["1"]])
def test_parse_micro_refuses_values_that_are_not_strings(value: object) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_micro(value, "tick_size")
    assert caught.value.field == "tick_size"
    assert type(value).__name__ in caught.value.reason


@pytest.mark.parametrize(
    "text",
    ["1000000000000.000001", "1000000000001", "9999999999999999999", "99999999999999999999"],
)
def test_parse_micro_refuses_amounts_above_the_maximum(text: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_micro(text, "amount")
    assert caught.value.field == "amount"


def test_parse_micro_names_amount_by_default() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_micro("1.0000000")
    assert caught.value.field == "amount"


def test_protocol_error_is_a_value_error_carrying_field_and_reason() -> None:
    error = ProtocolError("new_price", "is not a decimal string")
    assert isinstance(error, ValueError)
    assert (error.field, error.reason) == ("new_price", "is not a decimal string")
    assert str(error) == "new_price: is not a decimal string"


def test_parse_positive_micro_refuses_zero_and_accepts_one_micro() -> None:
    assert parse_positive_micro("0.000001", "price") == 1
    for zero in ("0", "0.0", "0.000000"):
        with pytest.raises(ProtocolError) as caught:
            parse_positive_micro(zero, "price")
        assert caught.value.field == "price"


def test_parse_positive_micro_passes_malformed_errors_through_with_the_field() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_positive_micro("-1", "new_price")
    assert caught.value.field == "new_price"


# --- format_micro ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("micro", "text"),
    [
        (2_150_000, "2.15"),
        (1_000_000_000, "1000"),
        (500_000, "0.5"),
        (1, "0.000001"),
        (0, "0"),
        (10_000_000, "10"),
        (1_000_001, "1.000001"),
        (100_000, "0.1"),
        (123_456_654_321, "123456.654321"),
        (MICRO_MAX, "1000000000000"),
        (-500_000, "-0.5"),
        (-3_000_000, "-3"),
    ],
)
def test_format_micro_writes_the_canonical_decimal_string(micro: int, text: str) -> None:
    assert format_micro(micro) == text


@given(st.integers(min_value=0, max_value=MICRO_MAX))
def test_format_then_parse_is_the_identity_on_micro_usdc(micro: int) -> None:
    text = format_micro(micro)
    assert parse_micro(text) == micro
    assert not text.endswith(".")
    assert "." not in text or not text.endswith("0")


@given(st.integers(min_value=0, max_value=MICRO_MAX), st.integers(min_value=0, max_value=6))
def test_parse_then_format_canonicalises_padded_strings(micro: int, digits: int) -> None:
    whole, fraction = divmod(micro, MICRO_PER_USDC)
    fraction_text = f"{fraction:06d}"
    if fraction_text[digits:].strip("0"):
        digits = 6  # cannot drop significant digits
    padded = f"{whole}.{fraction_text[:digits]}" if digits else f"{whole}"
    assert format_micro(parse_micro(padded)) == format_micro(micro)


# --- parse_token_amount ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "amount"),
    [
        (1, 1),
        (10, 10),
        ("1", 1),
        ("10", 10),
        ("250", 250),
        (MICRO_MAX, MICRO_MAX),
        (str(MICRO_MAX), MICRO_MAX),
    ],
)
def test_parse_token_amount_accepts_integers_and_digit_strings(value: object, amount: int) -> None:
    parsed = parse_token_amount(value)
    assert parsed == amount
    assert type(parsed) is int


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        1.0,
        2.5,
        0,
        "0",
        -1,
        "-1",
        "+1",
        "",
        " 1",
        "1 ",
        "1.0",
        "1e3",
        "0x10",
        "\u00b2",  # SUPERSCRIPT TWO: str.isdigit() is true for it
        "\uff11",  # FULLWIDTH DIGIT ONE
        None,
        b"1",
        Decimal("1"),
        MICRO_MAX + 1,
        "10000000000000000000",
        "1" * 40,
    ],
)
def test_parse_token_amount_refuses_everything_else_naming_the_field(value: object) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_token_amount(value, "quantity")
    assert caught.value.field == "quantity"
    assert str(caught.value).startswith("quantity: ")


def test_parse_token_amount_names_amount_by_default() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_token_amount(0)
    assert caught.value.field == "amount"


def test_parse_micro_answers_a_repeated_price_the_same_and_never_caches_a_refusal() -> None:
    assert parse_micro("2.15") == parse_micro("2.15") == 2_150_000
    assert parse_micro("2.150000") == 2_150_000
    for _ in range(2):
        with pytest.raises(ProtocolError, match="more than 6 decimals"):
            parse_micro("2.1500001", "price")
        with pytest.raises(ProtocolError, match="price"):
            parse_micro("2,15", "price")
