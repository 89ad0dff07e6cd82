"""Fuzz the engine protocol's decoders, which read the command and event logs.

`decode_command` never raises: whatever it is given comes back as a command or as a
`MalformedCommand` whose error names the field at fault. `decode_event` raises only
msgspec.DecodeError (ValidationError, its subclass, naming the field). Both decode valid
input back to what was encoded and keep no state between calls.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

from protocol import FORMATS, Format, MalformedCommand, decode_command, decode_event, encode
from protocol.codec import NESTING_MAX
from tests.fuzz.support import fuzz, json_path_names, mutated_bytes, mutated_object, raw_structs
from tests.protocol_strategies import COMMAND_CLASSES, EVENT_CLASSES, formats

NESTED_TOO_DEEP = f"nested deeper than {NESTING_MAX} levels"

raw_commands = st.one_of(*(raw_structs(cls) for cls in COMMAND_CLASSES))
raw_events = st.one_of(*(raw_structs(cls) for cls in EVENT_CLASSES))


def wire(value: Any, fmt: Format) -> bytes:
    """`value` as JSON or msgpack; an int msgpack cannot carry makes the example invalid."""
    if fmt == "json":
        return msgspec.json.encode(value)
    try:
        return msgspec.msgpack.encode(value)
    except OverflowError:
        reject()


# --- commands ----------------------------------------------------------------------------------


@fuzz(300)
@given(data=st.data(), raw=raw_commands, fmt=formats)
def test_a_command_broken_in_one_field_is_malformed_naming_that_field(
    data: st.DataObject, raw: dict[str, Any], fmt: Format
) -> None:
    assert isinstance(decode_command(wire(raw, fmt), fmt), COMMAND_CLASSES)
    changed, field, how = data.draw(mutated_object(raw))
    result = decode_command(wire(changed, fmt), fmt)
    if isinstance(result, MalformedCommand):
        assert result.error == NESTED_TOO_DEEP or json_path_names(result.error, field), (
            field, how, result.error)
    else:
        assert isinstance(result, COMMAND_CLASSES), result
        assert decode_command(encode(result, fmt), fmt) == result


@fuzz(200)
@given(garbage=st.binary(max_size=200) | st.text(max_size=50), raw=raw_commands, fmt=formats)
def test_decoding_a_command_keeps_no_state_between_calls(
    garbage: bytes | str, raw: dict[str, Any], fmt: Format
) -> None:
    data = wire(raw, fmt)
    alone = decode_command(data, fmt)
    decode_command(garbage, fmt)
    assert decode_command(data, fmt) == alone


@pytest.mark.parametrize("fmt", FORMATS)
def test_regression_a_str_with_a_lone_surrogate_is_malformed_not_an_exception(
    fmt: Format
) -> None:
    """`str.encode()` raised UnicodeEncodeError before the decoder was even tried."""
    result = decode_command('{"type":"tick","ts":1,"x":"\ud800"}', fmt)
    assert isinstance(result, MalformedCommand) and result.error


# --- events ------------------------------------------------------------------------------------


@fuzz(300)
@given(data=st.data(), raw=raw_events, fmt=formats)
def test_an_event_broken_in_one_field_raises_a_validation_error_naming_it(
    data: st.DataObject, raw: dict[str, Any], fmt: Format
) -> None:
    event = decode_event(wire(raw, fmt), fmt)
    assert decode_event(encode(event, fmt), fmt) == event
    changed, field, how = data.draw(mutated_object(raw))
    try:
        decoded = decode_event(wire(changed, fmt), fmt)
    except msgspec.ValidationError as error:
        assert json_path_names(str(error), field), (field, how, str(error))
    except msgspec.DecodeError as error:
        assert str(error) == NESTED_TOO_DEEP, (field, how, str(error))
    else:
        assert isinstance(decoded, EVENT_CLASSES)


def a_command_or_a_malformed_one(mutated: bytes, fmt: Format) -> None:
    """The bytes decode to a command or to a malformed one with an error, the same each time."""
    result = decode_command(mutated, fmt)
    assert isinstance(result, (MalformedCommand, *COMMAND_CLASSES))
    if isinstance(result, MalformedCommand):
        assert result.error
    assert decode_command(mutated, fmt) == result, "the same bytes decode the same way"


def an_event_or_a_decode_error(mutated: bytes, fmt: Format) -> None:
    """The bytes decode to an event or raise msgspec.DecodeError, nothing else."""
    try:
        assert isinstance(decode_event(mutated, fmt), EVENT_CLASSES)
    except msgspec.DecodeError:
        pass


@pytest.mark.parametrize(("raws", "expect"), [(raw_commands, a_command_or_a_malformed_one),
                                              (raw_events, an_event_or_a_decode_error)],
                         ids=["command", "event"])
@fuzz(300)
@given(data=st.data(), fmt=formats)
def test_the_bytes_of_a_message_mutated_decode_as_its_decoder_promises(
    raws: st.SearchStrategy[dict[str, Any]], expect: Callable[[bytes, Format], None],
    data: st.DataObject, fmt: Format,
) -> None:
    expect(data.draw(mutated_bytes(wire(data.draw(raws), fmt))), fmt)


@pytest.mark.parametrize(
    ("data", "fmt"),
    [(b'{"type":"instrument_closed","seq":1,"ts":1,"symbol":"\xff"}', "json"),
     (b"\x84\xa4type\xb1instrument_closed\xa3seq\x01\xa2ts\x01\xa6symbol\xa1\xff", "msgpack")],
    ids=["json", "msgpack"],
)
def test_regression_an_event_with_invalid_utf8_raises_a_decode_error(
    data: bytes, fmt: Format
) -> None:
    """msgspec raised UnicodeDecodeError, which no caller of decode_event expected. The
    error's type is our contract; its text is msgspec's and is not asserted."""
    with pytest.raises(msgspec.DecodeError):
        decode_event(data, fmt)


# --- nesting past the C stack ------------------------------------------------------------------

_DEEP_SCRIPT = """
import sys
sys.setrecursionlimit(10**7)
import msgspec
from protocol import decode_command, decode_event
depth = 1_000_000
json_nest = b'{"x":' + b"[" * depth + b"]" * depth + b',"type":"tick","ts":1}'
msgpack_nest = b"\\x82\\xa1x" + b"\\x91" * depth + b"\\x90" + b"\\xa4type\\xa4tick"
for data, fmt in ((json_nest, "json"), (msgpack_nest, "msgpack")):
    print(decode_command(data, fmt).error)
    try:
        decode_event(data, fmt)
    except msgspec.DecodeError as error:
        print(error)
"""


def test_regression_nesting_past_the_c_stack_is_refused_before_msgspec_recurses() -> None:
    """With the recursion limit raised, a JSON command or any event nested a million deep
    crashed the interpreter (SIGSEGV): only msgpack commands were checked before decoding.
    Run in a child so a crash fails the test instead of killing pytest."""
    child = subprocess.run([sys.executable, "-c", _DEEP_SCRIPT], capture_output=True,
                           text=True, timeout=120, check=False)
    assert child.returncode == 0, (child.returncode, child.stderr[-2000:])
    assert child.stdout.split("\n")[:4] == [NESTED_TOO_DEEP] * 4
