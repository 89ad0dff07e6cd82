"""Fuzz the SDK's reading of server frames: `decode_message`, the client's dispatch of what it
decodes, and the local order book the `book` feed keeps.

A frame the gateway could send decodes to the message it encoded; a broken one raises only
msgspec.DecodeError (ValidationError naming the field when a known message does not fit);
a message of a type this SDK does not know is ignored. A book fed decoded messages raises
only BookError, which the client answers by resubscribing.
"""

from __future__ import annotations

from typing import Any, get_args

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.messages import encode
from sdk.book import BookError, LocalBook
from sdk.client import Client
from tests.fuzz.support import (
    fuzz,
    huge_ints,
    json_path_names,
    mutated_bytes,
    mutated_object,
    odd_text,
    raw_structs,
)
from wsapi.messages import ServerMessage, UnknownMessage, decode_message

MESSAGE_CLASSES: tuple[type[msgspec.Struct], ...] = get_args(ServerMessage)
INSTRUMENT = "H100.fz"

raw_messages = st.one_of(*(raw_structs(cls) for cls in MESSAGE_CLASSES))


def decoded_or_refused(frame: bytes | str) -> Any:
    """Decode `frame`; return None when it is refused the documented way."""
    try:
        message = decode_message(frame)
    except msgspec.DecodeError:
        return None
    assert isinstance(message, (*MESSAGE_CLASSES, UnknownMessage))
    return message


@fuzz(300)
@given(raw=raw_messages)
def test_every_message_the_gateway_encodes_decodes_to_itself(raw: dict[str, Any]) -> None:
    message = decode_message(msgspec.json.encode(raw))
    assert isinstance(message, MESSAGE_CLASSES)
    assert decode_message(encode(message)) == message


@fuzz(300)
@given(data=st.data(), raw=raw_messages)
def test_a_message_broken_in_one_field_is_refused_naming_that_field(
    data: st.DataObject, raw: dict[str, Any]
) -> None:
    changed, name, how = data.draw(mutated_object(raw))
    try:
        message = decode_message(msgspec.json.encode(changed))
    except msgspec.ValidationError as error:
        assert json_path_names(str(error), name), (name, how, str(error))
    except msgspec.DecodeError:
        pass
    else:
        assert isinstance(message, (*MESSAGE_CLASSES, UnknownMessage))


@fuzz(300)
@given(data=st.data(), raw=raw_messages)
def test_the_bytes_of_a_message_mutated_decode_or_raise_a_decode_error(
    data: st.DataObject, raw: dict[str, Any]
) -> None:
    frame = data.draw(mutated_bytes(msgspec.json.encode(raw)))
    decoded_or_refused(frame)
    decoded_or_refused(frame.decode("utf-8", "surrogateescape"))


@fuzz(200)
@given(frame=st.one_of(raw_messages.flatmap(mutated_object).map(lambda b: b[0]),
                       raw_messages).map(msgspec.json.encode))
def test_the_client_dispatches_any_frame_or_raises_a_decode_error(frame: bytes) -> None:
    client = Client("ws://127.0.0.1:1", reconnect=False)
    try:
        client._dispatch(frame.decode())
    except msgspec.DecodeError:
        pass


def test_regression_a_message_of_an_unknown_type_is_ignored_by_the_client() -> None:
    """A newer server's new message type raised ValidationError, which ended the client's
    reader task (and, on reconnect, again at the next such message)."""
    assert decode_message('{"type":"status","state":"halted"}') == UnknownMessage(type="status")
    client = Client("ws://127.0.0.1:1", reconnect=False)
    client._dispatch('{"type":"status","state":"halted"}')


@pytest.mark.parametrize("frame", [b'"\xff"', '"\ud800"', "[" * 40 + "]" * 40],
                         ids=["invalid_utf8", "lone_surrogate", "nested_40_deep"])
def test_regression_frames_not_utf8_json_raise_a_decode_error(frame: bytes | str) -> None:
    """They raised UnicodeDecodeError, UnicodeEncodeError, or recursed without a bound."""
    with pytest.raises(msgspec.DecodeError):
        decode_message(frame)


# --- the local book ----------------------------------------------------------------------------

level_prices = st.one_of(st.from_regex(r"[0-9]{1,4}(\.[0-9]{1,2})?", fullmatch=True), odd_text,
                         st.sampled_from(["٣", "²", "1.", ".5", "-1", "1e3", "1.1234567"]))
level_quantities = st.one_of(st.integers(min_value=0, max_value=50), huge_ints)
levels = st.lists(st.tuples(level_prices, level_quantities), max_size=5)


@st.composite
def book_frames(draw: st.DrawFn) -> list[bytes]:
    """A run of book frames for one instrument, in order or not, with odd levels."""
    count = draw(st.integers(min_value=1, max_value=6))
    frames = []
    for index in range(count):
        seq = draw(st.sampled_from([index + 1, index + 2, 0]))
        frames.append(msgspec.json.encode({
            "type": "book", "instrument": INSTRUMENT,
            "kind": "snapshot" if index == 0 or draw(st.booleans()) is False else "update",
            "seq": seq, "prev_seq": draw(st.sampled_from([index, seq - 1, 0])), "ts": index,
            "bids": draw(levels), "asks": draw(levels),
            "checksum": draw(st.integers(min_value=0, max_value=2**32 - 1)),
        }))
    return frames


@fuzz(300)
@given(frames=book_frames())
def test_a_book_fed_any_decoded_book_messages_raises_only_book_errors(
    frames: list[bytes]
) -> None:
    book = LocalBook(INSTRUMENT)
    for frame in frames:
        message = decoded_or_refused(frame)
        if message is None:
            continue
        try:
            book.apply(message)
        except BookError:
            assert not book.synced
        bids, asks = book.levels()
        assert all(quantity > 0 for _, quantity in bids + asks)


@pytest.mark.parametrize("price", ["٣", "²", "abc", "1.", "-1", "1e3"])
def test_regression_a_book_level_price_that_is_not_a_decimal_is_refused_when_decoded(
    price: str
) -> None:
    """Such a price reached LocalBook.apply, which raised ValueError (not BookError, so the
    client's reader died) or, for "٣", took it as 3 under another text."""
    frame = msgspec.json.encode({
        "type": "book", "instrument": INSTRUMENT, "kind": "snapshot", "seq": 1,
        "prev_seq": 0, "ts": 1, "bids": [[price, 1]], "asks": [], "checksum": 0})
    with pytest.raises(msgspec.ValidationError):  # its text is msgspec's, not asserted
        decode_message(frame)


def test_regression_a_negative_level_quantity_is_refused_when_decoded() -> None:
    """A quantity of -1 was kept in the book as a level (only 0 removes one)."""
    frame = msgspec.json.encode({
        "type": "book", "instrument": INSTRUMENT, "kind": "snapshot", "seq": 1,
        "prev_seq": 0, "ts": 1, "bids": [["2.15", -1]], "asks": [], "checksum": 0})
    with pytest.raises(msgspec.ValidationError):
        decode_message(frame)
