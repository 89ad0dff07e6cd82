"""Property tests of the protocol codecs: every valid command and event (v1 and v2, Delivery
and Strip orders included) survives a JSON and a msgpack round trip, a listing without a bond
encodes as in v1, a strip whose id is too long to name its legs is malformed yet salvages
what its rejection needs, and `decode_command` never raises, whatever bytes or JSON it is
given.

Strategies are derived from the Structs themselves through `msgspec.inspect`, so they honour
the Meta constraints (identifier pattern, ts range, lengths, enumerations) and cover any command
or event type added later without changes here.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any

import msgspec
import msgspec.inspect as inspect
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    Format,
    InstrumentListed,
    ListInstrument,
    MalformedCommand,
    NewStripOrder,
    decode_command,
    decode_event,
    encode,
)
from protocol.commands import COMMAND_TYPES, IDENTIFIER_PATTERN
from protocol.events import EVENT_TYPES
from tests.protocol_strategies import (
    COMMAND_CLASSES,
    EVENT_CLASSES,
    INT64_MAX,
    INT64_MIN,
    choice_values,
    formats,
    int64_bounds,
)

IDENTIFIER_ALPHABET = string.ascii_letters + string.digits + "_.:-"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)

EXAMPLES_MAX = 150
LIST_SIZE_MAX = 12  # items of a list field drawn, when its type does not bound them
FUZZ_EXAMPLES_MAX = 400
_settings = settings(
    max_examples=EXAMPLES_MAX,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
_fuzz_settings = settings(_settings, max_examples=FUZZ_EXAMPLES_MAX)

# --- strategies built from msgspec type info ---------------------------------------------------


def _integers(info: inspect.IntType) -> st.SearchStrategy[int]:
    """Integers within the Meta bounds, and within int64 so msgpack can carry them."""
    assert info.multiple_of is None, "no protocol field uses multiple_of"
    low, high = int64_bounds(info)
    return st.integers(min_value=low, max_value=high)


def _strings(info: inspect.StrType) -> st.SearchStrategy[str]:
    if info.pattern == IDENTIFIER_PATTERN:
        return st.text(IDENTIFIER_ALPHABET, min_size=1, max_size=64)
    if info.pattern is not None:
        return st.from_regex(info.pattern, fullmatch=True)
    return st.text(min_size=info.min_length or 0, max_size=info.max_length)


def _values(info: inspect.Type) -> st.SearchStrategy[Any]:
    """A strategy for the values msgspec accepts for one field type."""
    if isinstance(info, inspect.IntType):
        return _integers(info)
    if isinstance(info, inspect.StrType):
        return _strings(info)
    if isinstance(info, inspect.ListType):  # a strip's legs
        return st.lists(_values(info.item_type), min_size=info.min_length or 0,
                        max_size=info.max_length or LIST_SIZE_MAX)
    choice = choice_values(info, _values)
    if choice is None:
        raise AssertionError(f"no strategy for {info!r}: extend _values")
    return choice


def _structs(struct_type: type[msgspec.Struct]) -> st.SearchStrategy[msgspec.Struct]:
    """Instances of one Struct; optional fields are sometimes left out."""
    info = inspect.type_info(struct_type)
    assert isinstance(info, inspect.StructType)
    required = {field.name: _values(field.type) for field in info.fields if field.required}
    optional = {field.name: _values(field.type) for field in info.fields if not field.required}
    return st.fixed_dictionaries(required, optional=optional).map(
        lambda fields: struct_type(**fields)
    )


commands = st.one_of(*(_structs(cls) for cls in COMMAND_CLASSES))
events = st.one_of(*(_structs(cls) for cls in EVENT_CLASSES))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


def _wire(value: Any, fmt: Format) -> bytes:
    if fmt == "json":
        return msgspec.json.encode(value)
    return msgspec.msgpack.encode(value)


def _assert_well_salvaged(result: MalformedCommand, raw: Any) -> None:
    """What a MalformedCommand carries is well formed and taken from the input unchanged."""
    assert isinstance(result.error, str) and result.error
    assert isinstance(result.type, str)
    if result.ts is not None:
        assert 0 <= result.ts <= INT64_MAX
        assert raw["ts"] == result.ts
    for name in ("account", "client_order_id"):
        value = getattr(result, name)
        if value is not None:
            assert _IDENTIFIER.match(value)
            assert raw[name] == value
    for name in ("instrument", "asset", "amount"):
        value = getattr(result, name)
        if value is not None:
            assert raw[name] == value
    if result.type:
        assert raw["type"] == result.type


# --- round trips -------------------------------------------------------------------------------


def test_strategies_cover_every_command_and_event_type() -> None:
    assert {cls.__struct_config__.tag for cls in COMMAND_CLASSES} == set(COMMAND_TYPES)
    assert {cls.__struct_config__.tag for cls in EVENT_CLASSES} == set(EVENT_TYPES)


@pytest.mark.parametrize(("messages", "decode"), [(commands, decode_command),
                                                  (events, decode_event)],
                         ids=["command", "event"])
@_settings
@given(draw=st.data(), fmt=formats)
def test_every_valid_command_and_event_survives_a_round_trip(
    messages: st.SearchStrategy[msgspec.Struct], decode: Callable[[bytes, Format], Any],
    draw: st.DataObject, fmt: Format,
) -> None:
    message = draw.draw(messages)
    data = encode(message, fmt)
    decoded = decode(data, fmt)
    assert type(decoded) is type(message)
    assert decoded == message
    assert encode(decoded, fmt) == data


@_settings
@given(command=commands)
def test_json_and_msgpack_carry_the_same_command(command: msgspec.Struct) -> None:
    from_json = msgspec.json.decode(encode(command, "json"))
    from_msgpack = msgspec.msgpack.decode(encode(command, "msgpack"))
    assert from_json == from_msgpack
    assert list(from_json) == list(from_msgpack)


@_settings
@given(listing=_structs(ListInstrument) | _structs(InstrumentListed), fmt=formats)
def test_a_listing_without_a_bond_encodes_as_in_v1(listing: Any, fmt: Format) -> None:
    """A v1 listing (and its event) carries no bond field, so a v1 log keeps its bytes."""
    data = encode(listing, fmt)
    fields = msgspec.json.decode(data) if fmt == "json" else msgspec.msgpack.decode(data)
    assert ("bond_per_gpu_hour" in fields) == (listing.bond_per_gpu_hour is not None)


@_settings
@given(strip=_structs(NewStripOrder), length=st.integers(min_value=1, max_value=64),
       draw=st.data(), fmt=formats)
def test_a_strip_whose_id_cannot_name_its_legs_is_malformed_yet_salvaged(
    strip: NewStripOrder, length: int, draw: st.DataObject, fmt: Format,
) -> None:
    """Up to 59 characters the strip decodes; from 60 to 64 its id is an identifier, but
    `CLIENT_ORDER_ID:LEG_INDEX` would not fit in 64: the strip is malformed and keeps what
    its `command_rejected` needs, the id included."""
    client_order_id = draw.draw(st.text(IDENTIFIER_ALPHABET, min_size=length, max_size=length))
    raw = msgspec.json.decode(encode(strip, "json"))
    raw["client_order_id"] = client_order_id
    result = decode_command(_wire(raw, fmt), fmt)
    if length <= 59:
        assert result == msgspec.structs.replace(strip, client_order_id=client_order_id)
    else:
        assert isinstance(result, MalformedCommand)
        assert (result.type, result.ts, result.account, result.client_order_id) == (
            "new_strip_order", strip.ts, strip.account, client_order_id)


# --- decode_command never raises ---------------------------------------------------------------


@_fuzz_settings
@given(data=st.binary(max_size=256), fmt=formats)
def test_decode_command_never_raises_on_arbitrary_bytes(data: bytes, fmt: Format) -> None:
    result = decode_command(data, fmt)
    assert isinstance(result, (MalformedCommand, *COMMAND_CLASSES))


@_fuzz_settings
@given(value=json_values, fmt=formats)
def test_decode_command_never_raises_on_arbitrary_json_values(value: Any, fmt: Format) -> None:
    result = decode_command(_wire(value, fmt), fmt)
    if not isinstance(value, dict):
        assert isinstance(result, MalformedCommand)
        assert result == MalformedCommand(type="", error=result.error)
    elif isinstance(result, MalformedCommand):
        _assert_well_salvaged(result, value)
    else:
        assert isinstance(result, COMMAND_CLASSES)


@_fuzz_settings
@given(
    command=commands,
    field=st.sampled_from(
        ["type", "ts", "account", "client_order_id", "instrument", "asset", "amount", "side",
         "quantity", "price", "post_only", "stp", "extra", "issue_id", "node_id", "holder",
         "delivered_ppm", "evidence", "bond_per_gpu_hour", "instruments", "limit_total"]
    ),
    value=json_values,
    fmt=formats,
)
def test_decode_command_salvages_a_valid_command_with_one_field_replaced(
    command: msgspec.Struct, field: str, value: Any, fmt: Format
) -> None:
    raw = msgspec.json.decode(encode(command, "json"))
    raw[field] = value
    result = decode_command(_wire(raw, fmt), fmt)
    if isinstance(result, MalformedCommand):
        _assert_well_salvaged(result, raw)
    else:
        assert isinstance(result, COMMAND_CLASSES)
        assert msgspec.json.decode(encode(result, "json")).items() <= raw.items()


@_fuzz_settings
@given(command=commands, fmt=formats, cut=st.integers(min_value=0))
def test_decode_command_never_raises_on_a_truncated_command(
    command: msgspec.Struct, fmt: Format, cut: int
) -> None:
    data = encode(command, fmt)
    truncated = data[: cut % len(data)]
    result = decode_command(truncated, fmt)
    assert isinstance(result, MalformedCommand)
