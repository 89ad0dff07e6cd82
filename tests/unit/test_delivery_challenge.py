"""The compute challenge (delivery.challenge) and its Merkle tree (delivery.merkle): an
honest node passes, every way of cheating or garbling the exchange is named, proofs verify
for every index of every tree size and fail on any tampering, and the wire is bounded."""

from __future__ import annotations

import hashlib
import random

import msgspec
import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery.challenge import (
    LINE_BYTES_MAX,
    ChallengeError,
    ChallengeMessage,
    Checker,
    CommitmentMessage,
    ErrorMessage,
    Inventory,
    Message,
    NumpyBackend,
    OpenMessage,
    PingMessage,
    PongMessage,
    Responder,
    RowOpening,
    RowsMessage,
    available_backends,
    decode_message,
    encode_message,
    entries,
    expected_rows,
    matrices,
    product,
    row_leaf,
    row_leaves,
    select_backend,
)
from delivery.classes import ClassFloor
from delivery.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    merkle_proof,
    merkle_root,
    node_hash,
    verify_proof,
)

SEED = bytes(range(32))
INVENTORY = Inventory(gpu_count=2, gpu_memory_mib=81920, device="numpy (test)")
FLOOR = ClassFloor(gpu="test", challenge_n=64, answer_ms_max=2000, gpu_memory_mib_min=0)


def leaf(number: int) -> bytes:
    return hashlib.sha256(number.to_bytes(4, "big")).digest()


def first_rows(bound: int) -> int:
    """A pick function that always takes the first remaining row."""
    return 0


def run(
    responder: Responder, checker: Checker, answer_ms: int = 5, floor: ClassFloor = FLOOR
) -> tuple[str, bool, str | None]:
    """One whole exchange through the wire encoding; (root, passed, reason)."""
    commitment = decode_message(responder.handle_line(encode_message(checker.challenge_message())))
    assert isinstance(commitment, CommitmentMessage)
    opened = decode_message(encode_message(checker.open_message(commitment)))
    rows = decode_message(responder.handle_line(encode_message(opened)))
    result = checker.verdict(rows, answer_ms, floor)
    return result.root_hex, result.passed, result.reason


# --- merkle -----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(count=st.integers(min_value=1, max_value=70))
def test_every_proof_of_every_tree_size_verifies_and_only_at_its_index(count: int) -> None:
    leaves = [leaf(number) for number in range(count)]
    tree = MerkleTree(leaves)
    assert tree.root == merkle_root(leaves)
    for index in range(count):
        proof = tree.proof(index)
        assert proof == merkle_proof(leaves, index)
        assert verify_proof(tree.root, leaves[index], index, count, proof)
        if count > 1:
            other = (index + 1) % count
            assert not verify_proof(tree.root, leaves[index], other, count, proof)


@settings(max_examples=80, deadline=None)
@given(
    count=st.integers(min_value=2, max_value=40),
    data=st.data(),
)
def test_a_proof_fails_on_any_single_flipped_bit(count: int, data: st.DataObject) -> None:
    leaves = [leaf(number) for number in range(count)]
    tree = MerkleTree(leaves)
    index = data.draw(st.integers(min_value=0, max_value=count - 1))
    proof = tree.proof(index)
    target = data.draw(st.sampled_from(["leaf", "root", "proof"]))
    bit = data.draw(st.integers(min_value=0, max_value=255))
    flip = bytearray(32)
    flip[bit // 8] = 1 << (bit % 8)

    def flipped(value: bytes) -> bytes:
        return bytes(x ^ y for x, y in zip(value, flip, strict=True))

    if target == "leaf":
        assert not verify_proof(tree.root, flipped(leaves[index]), index, count, proof)
    elif target == "root":
        assert not verify_proof(flipped(tree.root), leaves[index], index, count, proof)
    else:
        position = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bad = [*proof]
        bad[position] = flipped(bad[position])
        assert not verify_proof(tree.root, leaves[index], index, count, bad)


def test_the_tree_carries_an_odd_node_up_unchanged() -> None:
    a, b, c = leaf(0), leaf(1), leaf(2)
    assert merkle_root([a]) == a
    assert merkle_root([a, b]) == node_hash(a, b)
    assert merkle_root([a, b, c]) == node_hash(node_hash(a, b), c)
    assert merkle_proof([a, b, c], 2) == [node_hash(a, b)]
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])


def test_no_leaves_have_the_empty_root_and_no_proof() -> None:
    assert merkle_root([]) == EMPTY_ROOT
    assert not verify_proof(EMPTY_ROOT, EMPTY_ROOT, 0, 0, [])
    with pytest.raises(IndexError):
        MerkleTree([]).proof(0)


def test_proofs_with_extra_or_missing_siblings_or_wrong_sizes_fail() -> None:
    leaves = [leaf(number) for number in range(5)]
    tree = MerkleTree(leaves)
    proof = tree.proof(1)
    assert verify_proof(tree.root, leaves[1], 1, 5, proof)
    assert not verify_proof(tree.root, leaves[1], 1, 5, [*proof, proof[0]])
    assert not verify_proof(tree.root, leaves[1], 1, 5, proof[:-1])
    assert not verify_proof(tree.root, leaves[1][:31], 1, 5, proof)
    assert not verify_proof(tree.root, leaves[1], 1, 5, [proof[0][:16], *proof[1:]])
    assert not verify_proof(tree.root, leaves[1], -1, 5, proof)
    with pytest.raises(ValueError, match="leaf 0"):
        MerkleTree([b"short"])


# --- the computation --------------------------------------------------------------------------


def test_matrices_are_deterministic_small_integers_a_then_b() -> None:
    a, b = matrices(SEED, 16)
    again_a, again_b = matrices(SEED, 16)
    assert a.dtype == numpy.float32 and a.shape == (16, 16)
    assert numpy.array_equal(a, again_a) and numpy.array_equal(b, again_b)
    assert not numpy.array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 15 and numpy.array_equal(a, numpy.round(a))
    other_a, _ = matrices(bytes(32), 16)
    assert not numpy.array_equal(a, other_a)


@pytest.mark.parametrize("n", [1, 3, 5, 8])
def test_matrices_follow_the_documented_drawing(n: int) -> None:
    state = int.from_bytes(hashlib.sha256(b"gpux.challenge" + SEED).digest(), "big")
    generator = numpy.random.Generator(numpy.random.PCG64(state))
    drawn = []
    for _ in range(2):
        nibbles = []
        for word in generator.bit_generator.random_raw((n * n + 15) // 16).tolist():
            for byte in int(word).to_bytes(8, "little"):
                nibbles += [byte & 0x0F, byte >> 4]
        drawn.append(numpy.array(nibbles[: n * n], dtype=numpy.uint8).reshape(n, n))
    got_a, got_b = entries(SEED, n)
    assert numpy.array_equal(got_a, drawn[0]) and numpy.array_equal(got_b, drawn[1])
    float_a, float_b = matrices(SEED, n)
    assert float_a.dtype == numpy.float32
    assert numpy.array_equal(float_a, got_a) and numpy.array_equal(float_b, got_b)


def test_expected_rows_are_the_rows_of_the_product_in_column_blocks() -> None:
    a, b = entries(SEED, 70)
    c = product(a, b)
    assert c.dtype == numpy.int32
    assert numpy.array_equal(expected_rows(SEED, 70, [69, 0, 5]), c[[69, 0, 5]])


def test_large_products_hash_on_threads_with_the_same_leaves() -> None:
    c = numpy.arange(600 * 4, dtype=numpy.int32).reshape(600, 4)
    assert row_leaves(c) == [row_leaf(index, c[index]) for index in range(600)]


def test_the_product_is_exact_at_the_largest_entries() -> None:
    n = 4096
    a = numpy.full((2, n), 15, dtype=numpy.float32)
    b = numpy.full((n, 3), 15, dtype=numpy.float32)
    c = product(a, b)
    assert c.shape == (2, 3)
    assert set(c.astype(numpy.int64).ravel().tolist()) == {225 * n}


def test_row_leaf_hashes_little_endian_int32_with_its_index() -> None:
    values = numpy.array([1, 2, 300], dtype=numpy.float32)
    expected = hashlib.sha256(
        b"gpux.row" + (7).to_bytes(4, "big") + numpy.array([1, 2, 300], "<i4").tobytes()
    ).digest()
    assert row_leaf(7, values) == expected
    assert row_leaves(numpy.stack([values, values]))[1] == row_leaf(1, values)


def test_backends_numpy_always_and_unknown_or_absent_refused() -> None:
    assert available_backends()[-1] == "numpy"
    assert select_backend("numpy").name == "numpy"
    assert select_backend(None).name in available_backends()
    with pytest.raises(ChallengeError, match="unknown"):
        select_backend("fortran")
    for name in ("torch", "cupy"):
        if name not in available_backends():
            with pytest.raises(ChallengeError, match=name):
                select_backend(name)


# --- the exchange -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 17, 64, 100])
def test_an_honest_node_passes_and_the_root_is_the_tree_of_c(n: int) -> None:
    responder = Responder(NumpyBackend(), INVENTORY)
    checker = Checker(SEED, n, rows_checked=4, pick=random.Random(n).randrange)
    root, passed, reason = run(responder, checker)
    assert (passed, reason) == (True, None)
    a, b = matrices(SEED, n)
    assert root == merkle_root(row_leaves(a @ b)).hex()


def test_ping_is_answered_with_the_inventory() -> None:
    reply = Responder(NumpyBackend(), INVENTORY).handle(PingMessage())
    assert reply == PongMessage(gpu_count=2, gpu_memory_mib=81920, device="numpy (test)")


def test_the_checker_picks_distinct_rows_after_the_commitment_only() -> None:
    picks: list[int] = []

    def pick(bound: int) -> int:
        picks.append(bound)
        return bound - 1

    checker = Checker(SEED, 10, rows_checked=4, pick=pick)
    checker.challenge_message()
    assert picks == []
    opened = checker.open_message(CommitmentMessage(root="ab" * 32))
    assert picks == [10, 9, 8, 7]
    assert len(set(opened.rows)) == 4 and all(0 <= row < 10 for row in opened.rows)
    small = Checker(SEED, 2, rows_checked=4, pick=first_rows)
    assert sorted(small.open_message(CommitmentMessage(root="ab" * 32)).rows) == [0, 1]


def test_a_pick_outside_its_bound_is_refused() -> None:
    checker = Checker(SEED, 10, pick=lambda bound: bound)
    with pytest.raises(ChallengeError, match="pick"):
        checker.open_message(CommitmentMessage(root="ab" * 32))


class LazyResponder(Responder):
    """Computes only the first half of the rows and fills the rest with zeros."""

    def handle(self, message: Message) -> Message:
        if isinstance(message, ChallengeMessage):
            a, b = matrices(bytes.fromhex(message.seed), message.n)
            c = numpy.zeros((message.n, message.n), dtype=numpy.float32)
            half = message.n // 2
            c[:half] = a[:half] @ b
            tree = MerkleTree(row_leaves(c))
            self._tree = tree
            self._rows = c.astype("<i4")
            return CommitmentMessage(root=tree.root.hex())
        return super().handle(message)


def test_a_node_that_skipped_rows_fails_with_wrong_rows_when_one_is_opened() -> None:
    n = 16
    checker = Checker(SEED, n, rows_checked=4, pick=lambda bound: bound - 1)  # the last rows
    _, passed, reason = run(LazyResponder(NumpyBackend(), INVENTORY), checker)
    assert (passed, reason) == (False, "wrong_rows")


class Tamper(Responder):
    """Answer honestly, then alter the rows message with `change`."""

    def __init__(self, change: str) -> None:
        super().__init__(NumpyBackend(), INVENTORY)
        self.change = change

    def handle(self, message: Message) -> Message:
        reply = super().handle(message)
        if not isinstance(reply, RowsMessage):
            return reply
        first = reply.rows[0]
        if self.change == "value":
            values = [first.values[0] + 1, *first.values[1:]]
            changed = msgspec.structs.replace(first, values=values)
        elif self.change == "proof":
            proof = ["00" * 32, *first.proof[1:]]
            changed = msgspec.structs.replace(first, proof=proof)
        elif self.change == "short":
            changed = msgspec.structs.replace(first, values=first.values[:-1])
        elif self.change == "index":
            changed = msgspec.structs.replace(first, index=(first.index + 1) % 8)
        elif self.change == "error":
            return ErrorMessage(reason="no")
        else:
            return RowsMessage(rows=reply.rows[1:])
        return RowsMessage(rows=[changed, *reply.rows[1:]])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("value", "wrong_rows"),
        ("proof", "bad_proof"),
        ("short", "malformed"),
        ("index", "malformed"),
        ("missing", "malformed"),
        ("error", "malformed"),
    ],
)
def test_every_tampering_with_the_opened_rows_is_named(change: str, reason: str) -> None:
    checker = Checker(SEED, 8, rows_checked=3, pick=random.Random(1).randrange)
    _, passed, got = run(Tamper(change), checker)
    assert (passed, got) == (False, reason)


def test_a_root_committed_for_other_values_fails_as_bad_proof() -> None:
    responder = Responder(NumpyBackend(), INVENTORY)
    checker = Checker(SEED, 8, rows_checked=2, pick=first_rows)
    responder.handle(checker.challenge_message())
    rows = responder.handle(checker.open_message(CommitmentMessage(root="11" * 32)))
    assert checker.verdict(rows, 5, FLOOR).reason == "bad_proof"


def test_a_correct_answer_slower_than_the_floor_is_too_slow() -> None:
    checker = Checker(SEED, 8, pick=first_rows)
    _, passed, reason = run(Responder(NumpyBackend(), INVENTORY), checker, answer_ms=2001)
    assert (passed, reason) == (False, "too_slow")
    checker = Checker(SEED, 8, pick=first_rows)
    assert run(Responder(NumpyBackend(), INVENTORY), checker, answer_ms=2000)[1]


def test_the_result_records_the_exchange() -> None:
    checker = Checker(SEED, 8, rows_checked=3, pick=first_rows)
    root, _, _ = run(Responder(NumpyBackend(), INVENTORY), checker, answer_ms=42)
    result = checker.result(42, None)
    assert (result.n, result.seed_hex, result.root_hex) == (8, SEED.hex(), root)
    assert (result.rows_checked, result.answer_ms, result.passed) == (3, 42, True)


def test_the_responder_refuses_an_open_before_a_challenge_and_a_second_open() -> None:
    responder = Responder(NumpyBackend(), INVENTORY)
    with pytest.raises(ChallengeError, match="open before a challenge"):
        responder.handle(OpenMessage(rows=[0]))
    error = decode_message(responder.handle_line(encode_message(OpenMessage(rows=[0]))))
    assert isinstance(error, ErrorMessage)
    responder.handle(ChallengeMessage(seed=SEED.hex(), n=4))
    with pytest.raises(ChallengeError, match="row 4"):
        responder.handle(OpenMessage(rows=[4]))
    responder.handle(ChallengeMessage(seed=SEED.hex(), n=4))
    responder.handle(OpenMessage(rows=[3]))
    with pytest.raises(ChallengeError):
        responder.handle(OpenMessage(rows=[3]))
    with pytest.raises(ChallengeError):
        responder.handle(PongMessage(gpu_count=1, gpu_memory_mib=1, device="x"))


def test_the_responder_refuses_a_challenge_over_its_limit() -> None:
    responder = Responder(NumpyBackend(), INVENTORY, challenge_n_max=64)
    line = encode_message(ChallengeMessage(seed=SEED.hex(), n=65))
    reply = decode_message(responder.handle_line(line))
    assert isinstance(reply, ErrorMessage) and "65" in reply.reason
    assert isinstance(responder.handle(ChallengeMessage(seed=SEED.hex(), n=64)), CommitmentMessage)


def test_the_checker_refuses_bad_arguments_and_steps_out_of_order() -> None:
    with pytest.raises(ChallengeError, match="seed"):
        Checker(b"short", 8, pick=first_rows)
    with pytest.raises(ChallengeError, match="size"):
        Checker(SEED, 0, pick=first_rows)
    with pytest.raises(ChallengeError, match="rows_checked"):
        Checker(SEED, 8, rows_checked=0, pick=first_rows)
    with pytest.raises(ChallengeError, match="pick"):
        Checker(SEED, 8)
    checker = Checker(SEED, 8, pick=first_rows)
    with pytest.raises(ChallengeError, match="before open"):
        checker.verdict(RowsMessage(rows=[]), 1, FLOOR)
    checker.open_message(CommitmentMessage(root="ab" * 32))
    with pytest.raises(ChallengeError, match="twice"):
        checker.open_message(CommitmentMessage(root="ab" * 32))


# --- the wire ---------------------------------------------------------------------------------


MESSAGES: list[Message] = [
    PingMessage(),
    PongMessage(gpu_count=8, gpu_memory_mib=81559, device="H100"),
    ChallengeMessage(seed="ab" * 32, n=8192),
    CommitmentMessage(root="cd" * 32),
    OpenMessage(rows=[0, 5, 8191]),
    RowsMessage(rows=[RowOpening(index=3, values=[0, 225, 7], proof=["ef" * 32])]),
    ErrorMessage(reason="open before a challenge"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda message: type(message).__name__)
def test_every_message_round_trips_as_one_tagged_line(message: Message) -> None:
    line = encode_message(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_message(line) == message
    assert msgspec.json.decode(line)["type"] in {
        "ping", "pong", "challenge", "commitment", "open", "rows", "error"
    }


def test_the_wire_shapes_are_the_documented_ones() -> None:
    assert encode_message(PingMessage()) == b'{"type":"ping"}\n'
    assert decode_message(b'{"type":"challenge","seed":"' + b"0a" * 32 + b'","n":256}') == (
        ChallengeMessage(seed="0a" * 32, n=256)
    )
    rows = b'{"type":"rows","rows":[{"index":1,"values":[3],"proof":[]}]}\r\n'
    assert decode_message(rows) == RowsMessage(rows=[RowOpening(index=1, values=[3], proof=[])])


@settings(max_examples=50, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=65535),
            st.lists(st.integers(min_value=0, max_value=225 * 65536), max_size=20),
            st.lists(st.binary(min_size=32, max_size=32).map(bytes.hex), max_size=5),
        ),
        max_size=8,
    )
)
def test_rows_messages_round_trip(rows: list[tuple[int, list[int], list[str]]]) -> None:
    message = RowsMessage(
        rows=[RowOpening(index=i, values=values, proof=proof) for i, values, proof in rows]
    )
    assert decode_message(encode_message(message)) == message


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (b'{"type":"challenge","seed":"xyz","n":8}', "$.seed"),
        (b'{"type":"challenge","seed":"' + b"AB" * 32 + b'","n":8}', "$.seed"),
        (b'{"type":"challenge","seed":"' + b"ab" * 32 + b'","n":0}', "$.n"),
        (b'{"type":"challenge","seed":"' + b"ab" * 32 + b'","n":65537}', "$.n"),
        (b'{"type":"open","rows":[-1]}', "$.rows[0]"),
        (b'{"type":"open","rows":[]}', "$.rows"),
        (b'{"type":"open","rows":[1],"extra":1}', "$.extra"),
        (b'{"type":"rows","rows":[{"index":1,"values":[-3],"proof":[]}]}', "$.rows[0].values[0]"),
        (b'{"type":"rows","rows":[{"index":1,"values":[3],"proof":[],"x":1}]}', "$.rows[0].x"),
        (b'{"type":"pong","gpu_count":1,"device":"x"}', "$.gpu_memory_mib"),
        (b'{"type":"launch"}', "$.type"),
    ],
)
def test_a_malformed_message_is_refused_naming_its_field(line: bytes, field: str) -> None:
    with pytest.raises(ChallengeError) as caught:
        decode_message(line)
    assert caught.value.field == field


def test_a_message_wrong_as_a_whole_is_refused_at_the_root() -> None:
    with pytest.raises(ChallengeError) as caught:
        decode_message(b"[1]")
    assert caught.value.field == "$"
    with pytest.raises(ChallengeError) as caught:
        decode_message(b'{"type":"ping"}', line_bytes_max=4)
    assert caught.value.field is None


def test_a_line_that_is_not_json_or_too_long_is_refused() -> None:
    with pytest.raises(ChallengeError, match="not JSON"):
        decode_message(b'{"type": "ping"')
    with pytest.raises(ChallengeError, match="exceeds"):
        decode_message(b" " * (LINE_BYTES_MAX + 1))
    with pytest.raises(ChallengeError, match="exceeds 10"):
        decode_message(b'{"type":"ping"}  ', line_bytes_max=10)
    huge = RowsMessage(
        rows=[
            RowOpening(index=i, values=[225 * 65536] * 65536, proof=[])
            for i in range(2)
        ]
        * 8
    )
    with pytest.raises(ChallengeError, match="line limit"):
        encode_message(huge)


def test_a_responder_answers_a_malformed_line_with_an_error_line() -> None:
    responder = Responder(NumpyBackend(), INVENTORY)
    for line in (b"garbage", b'{"type":"rows","rows":[]}'):
        reply = decode_message(responder.handle_line(line))
        assert isinstance(reply, ErrorMessage) and reply.reason


def test_the_checker_never_computes_the_full_product(monkeypatch: pytest.MonkeyPatch) -> None:
    checker = Checker(SEED, 64, rows_checked=4, pick=first_rows)
    responder = Responder(NumpyBackend(), INVENTORY)
    commitment = responder.handle(checker.challenge_message())
    assert isinstance(commitment, CommitmentMessage)
    rows = responder.handle(checker.open_message(commitment))

    def refuse(*arguments: object) -> None:
        raise AssertionError("the checker computed the full product")

    monkeypatch.setattr("delivery.challenge.product", refuse)
    assert checker.verdict(rows, 1, FLOOR).passed
