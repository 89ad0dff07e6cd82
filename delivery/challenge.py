"""A compute challenge a node cannot answer faster than doing the work, cheap to check.

The prober sends a random 32-byte seed and a size n; both sides draw the same two n x n
matrices A and B from it (`matrices`); the node computes C = A @ B, hashes each row into a
leaf and commits to the Merkle root of the n leaves; only then does the prober pick a few
rows, and the node opens them with their Merkle proofs. The prober recomputes each picked
row as `A[i] @ B` (n^2 work per row, never n^3) and checks the proofs against the root.
A node that skipped rows cannot know which will be opened, so it must compute them all.

Exactness: entries are integers 0..15, so every entry of C, and every partial sum on the
way, is an integer <= 225 n < 2^24 for n <= 65536, which float32 represents exactly
whatever the summation order: every backend (numpy/BLAS, torch, cupy) must produce the
same C, provided TF32 is off (this module turns it off for torch; cupy uses it only with
CUPY_TF32=1, which the cupy backend refuses).

Drawing (the contract every implementation must follow):
`rng = numpy.random.Generator(numpy.random.PCG64(int.from_bytes(sha256(b"gpux.challenge" +
seed).digest(), "big")))`; A's n*n entries, row-major, are the nibbles of the bit
generator's `random_raw(ceil(n*n / 16))` 64-bit words taken as little-endian bytes, low
nibble first (unused nibbles at the end are dropped); then B's the same way from the next
`random_raw` call (`entries`; `matrices` gives them as float32). Raw PCG64 words split into
nibbles draw about 5x faster than `rng.integers` and 2x faster than `rng.bytes` here, which
matters on a GPU node, where drawing is most of the host's share of the answer time; and
since PCG64 can `advance`, an implementation may draw A and B on two threads.

Leaf i is `sha256(b"gpux.row" + i.to_bytes(4, "big") + C[i].astype("<i4").tobytes())`;
the tree is delivery.merkle's.

Wire: newline-delimited JSON, one message per line, tagged by `type` (see the Structs
below). A line is at most `LINE_BYTES_MAX` (8 MiB: a rows message of 4 rows of n = 65536
is about 2.5 MB). The prober times the answer from sending `challenge` to receiving
`commitment`.

Measured on this machine (`python -m benchmarks.delivery_challenge --runs 15`, 2 shared
vCPUs of an Intel Xeon, numpy with OpenBLAS; answer = the Responder's challenge step, i.e.
drawing A and B, the product, hashing the rows and the tree, what the prober times; check =
the Checker's verdict on 4 rows, drawing included), in ms, over four runs minutes apart
while other helpers' tests loaded the 2 cores to a load average of 11-18:

    n       answer (best)   answer (worst of 15)   check (best)
    256     1.3-12          64-134                 0.3-0.4
    512     16-66           96-186                 1.1-1.4 (10.7 once)
    1024    48-129          251-311                3.0-3.7

On a quiet moment earlier (same machine) n = 256 answered in 1.6 ms, 512 in 7 ms, 1024 in
25 ms. So the demo floor (n = 256, 2,000 ms) leaves 15x over the worst answer seen under
load, and a check is far cheaper than an answer (4 rows: 4 n^2 work, not n^3).
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Protocol

import msgspec
import numpy
import numpy.typing

from delivery.errors import ChallengeError
from delivery.merkle import MerkleTree, verify_proof
from runtime.validation import invalid_path

if TYPE_CHECKING:
    from delivery.classes import ClassFloor

__all__ = [
    "LINE_BYTES_MAX",
    "Backend",
    "ChallengeError",
    "Checker",
    "ChallengeMessage",
    "ChallengeResult",
    "CommitmentMessage",
    "ErrorMessage",
    "Inventory",
    "Message",
    "NumpyBackend",
    "OpenMessage",
    "PingMessage",
    "PongMessage",
    "Responder",
    "RowOpening",
    "RowsMessage",
    "available_backends",
    "decode_message",
    "encode_message",
    "entries",
    "expected_rows",
    "matrices",
    "product",
    "row_leaf",
    "row_leaves",
    "select_backend",
]

LINE_BYTES_MAX: Final = 8 * 1024 * 1024
CHALLENGE_N_MAX: Final = 65536
ROWS_CHECKED_MAX: Final = 64
ENTRY_MAX: Final = 15
SEED_BYTES: Final = 32
HASH_THREADS_MAX: Final = 8
ROWS_PER_CHUNK_MIN: Final = 256
CHECK_BLOCK_BYTES: Final = 32 * 1024 * 1024  # the checker's float32 copy of part of B
CHALLENGE_TAG: Final = b"gpux.challenge"
ROW_TAG: Final = b"gpux.row"

Matrix = numpy.typing.NDArray[numpy.float32]
Entries = numpy.typing.NDArray[numpy.uint8]
Product = numpy.typing.NDArray[numpy.int32]
Hex32 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]
ChallengeSize = Annotated[int, msgspec.Meta(ge=1, le=CHALLENGE_N_MAX)]
RowIndex = Annotated[int, msgspec.Meta(ge=0, lt=CHALLENGE_N_MAX)]
RowValue = Annotated[int, msgspec.Meta(ge=0, le=ENTRY_MAX * ENTRY_MAX * CHALLENGE_N_MAX)]
Reason = Literal["wrong_rows", "bad_proof", "too_slow", "malformed"]


# ---- wire messages ------------------------------------------------------------------------


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type",
              forbid_unknown_fields=True):
    """Base of every challenge wire message."""


class PingMessage(Message, tag="ping", frozen=True, kw_only=True):
    """Prober: are you there, and what do you have?"""


class PongMessage(Message, tag="pong", frozen=True, kw_only=True):
    """Node: what it has (per GPU memory), and the backend that will answer challenges."""

    gpu_count: Annotated[int, msgspec.Meta(ge=0, le=1024)]
    gpu_memory_mib: Annotated[int, msgspec.Meta(ge=0, le=1 << 30)]
    device: Annotated[str, msgspec.Meta(max_length=256)]


class ChallengeMessage(Message, tag="challenge", frozen=True, kw_only=True):
    """Prober: compute A @ B for this seed and size, and commit to the rows."""

    seed: Hex32
    n: ChallengeSize


class CommitmentMessage(Message, tag="commitment", frozen=True, kw_only=True):
    """Node: the Merkle root over the hashed rows of C."""

    root: Hex32


class OpenMessage(Message, tag="open", frozen=True, kw_only=True):
    """Prober: open these rows (picked after the commitment)."""

    rows: Annotated[list[RowIndex], msgspec.Meta(min_length=1, max_length=ROWS_CHECKED_MAX)]


class RowOpening(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One opened row: its values (as integers) and its Merkle proof (hex hashes)."""

    index: RowIndex
    values: Annotated[list[RowValue], msgspec.Meta(max_length=CHALLENGE_N_MAX)]
    proof: Annotated[list[Hex32], msgspec.Meta(max_length=64)]


class RowsMessage(Message, tag="rows", frozen=True, kw_only=True):
    """Node: the opened rows, in the order asked."""

    rows: Annotated[list[RowOpening], msgspec.Meta(max_length=ROWS_CHECKED_MAX)]


class ErrorMessage(Message, tag="error", frozen=True, kw_only=True):
    """Node: the request could not be answered (malformed, out of turn, no backend)."""

    reason: Annotated[str, msgspec.Meta(max_length=512)]


AnyMessage = (
    PingMessage | PongMessage | ChallengeMessage | CommitmentMessage | OpenMessage | RowsMessage
    | ErrorMessage
)

_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(AnyMessage)


def encode_message(message: Message) -> bytes:
    """One NDJSON line (with its newline) for `message`."""
    line = _ENCODER.encode(message) + b"\n"
    if len(line) > LINE_BYTES_MAX:
        raise ChallengeError(f"{type(message).__name__} encodes to {len(line)} bytes, "
                             f"over the {LINE_BYTES_MAX}-byte line limit")
    return line


def decode_message(line: bytes, *, line_bytes_max: int = LINE_BYTES_MAX) -> AnyMessage:
    """Decode one NDJSON line (a trailing newline allowed) into its message.

    Raise a `ChallengeError` for a line over `line_bytes_max` or a malformed message; its
    `field` is the JSON path of what is wrong (`$.rows[0].index`; `$`: the whole message).
    """
    if len(line) > line_bytes_max:
        raise ChallengeError(f"message line of {len(line)} bytes exceeds {line_bytes_max}")
    try:
        return _DECODER.decode(line.rstrip(b"\r\n"))
    except msgspec.ValidationError as exc:
        raise ChallengeError(f"malformed challenge message: {exc}",
                             field=invalid_path(str(exc))[0]) from exc
    except msgspec.DecodeError as exc:
        raise ChallengeError(f"challenge message is not JSON: {exc}") from exc


# ---- the computation ----------------------------------------------------------------------


def _check_size(n: int) -> None:
    if not 1 <= n <= CHALLENGE_N_MAX:
        raise ChallengeError(f"challenge size n={n} outside 1..{CHALLENGE_N_MAX}")


def entries(seed: bytes, n: int) -> tuple[Entries, Entries]:
    """Draw the challenge's A and B as n x n uint8 entries 0..15 from `seed`.

    PCG64's raw 64-bit outputs, `random_raw(ceil(n * n / 16))` for A and then as many for B,
    as little-endian bytes, each byte giving two entries, low nibble first, row-major.
    """
    _check_size(n)
    state = int.from_bytes(hashlib.sha256(CHALLENGE_TAG + seed).digest(), "big")
    bit_generator = numpy.random.Generator(numpy.random.PCG64(state)).bit_generator
    return _nibbles(bit_generator, n), _nibbles(bit_generator, n)


def _nibbles(bit_generator: numpy.random.BitGenerator, n: int) -> Entries:
    count = n * n
    words = bit_generator.random_raw((count + 15) // 16)
    packed = numpy.asarray(words, dtype="<u8").view(numpy.uint8)
    values = numpy.empty(2 * packed.size, dtype=numpy.uint8)
    numpy.bitwise_and(packed, 0x0F, out=values[0::2])
    numpy.right_shift(packed, 4, out=values[1::2])
    return values[:count].reshape(n, n)


def matrices(seed: bytes, n: int) -> tuple[Matrix, Matrix]:
    """Draw the challenge's A and B (n x n float32, integer entries 0..15) from `seed`."""
    a, b = entries(seed, n)
    return a.astype(numpy.float32), b.astype(numpy.float32)


def row_leaf(index: int, values: numpy.typing.NDArray[Any]) -> bytes:
    """The leaf of row `index` of C: its entries hashed as little-endian int32."""
    body = numpy.ascontiguousarray(values).astype("<i4", copy=False).tobytes()
    return hashlib.sha256(ROW_TAG + index.to_bytes(4, "big") + body).digest()


def _chunk_leaves(c: numpy.typing.NDArray[Any], first: int, last: int) -> list[bytes]:
    rows = numpy.ascontiguousarray(c[first:last]).astype("<i4", copy=False)
    return [
        hashlib.sha256(ROW_TAG + (first + offset).to_bytes(4, "big") + row.tobytes()).digest()
        for offset, row in enumerate(rows)
    ]


def row_leaves(c: numpy.typing.NDArray[Any]) -> list[bytes]:
    """The leaves of every row of C, in row order (hashed on up to HASH_THREADS_MAX threads
    for large C: hashlib and numpy's casts release the GIL)."""
    count = c.shape[0]
    chunk = max(ROWS_PER_CHUNK_MIN, -(-count // HASH_THREADS_MAX))
    bounds = [(first, min(first + chunk, count)) for first in range(0, count, chunk)]
    if len(bounds) <= 1:
        return _chunk_leaves(c, 0, count)
    threads = min(HASH_THREADS_MAX, len(bounds), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        parts = pool.map(lambda bound: _chunk_leaves(c, *bound), bounds)
        return [leaf for part in parts for leaf in part]


class Backend(Protocol):
    """A way to compute C = A @ B exactly from uint8 entries (float32 arithmetic, no TF32),
    returned as int32."""

    @property
    def name(self) -> str: ...

    def product(self, a: Entries, b: Entries) -> Product: ...


class NumpyBackend:
    """The product on the CPU with numpy's BLAS: always available."""

    name = "numpy"

    def product(self, a: Entries, b: Entries) -> Product:
        c = numpy.matmul(a.astype(numpy.float32, copy=False), b.astype(numpy.float32, copy=False))
        result: Product = c.astype(numpy.int32)
        return result


class TorchBackend:  # pragma: no cover - needs torch and a CUDA GPU
    """The product on a CUDA GPU with torch, TF32 off so float32 stays exact; the entries
    travel as bytes and are converted on the GPU."""

    name = "torch"

    def __init__(self, torch: Any) -> None:
        self._torch = torch
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def product(self, a: Entries, b: Entries) -> Product:
        torch = self._torch
        device_a = torch.from_numpy(numpy.ascontiguousarray(a)).to("cuda").float()
        device_b = torch.from_numpy(numpy.ascontiguousarray(b)).to("cuda").float()
        result: Product = torch.matmul(device_a, device_b).to(torch.int32).cpu().numpy()
        return result


class CupyBackend:  # pragma: no cover - needs cupy and a CUDA GPU
    """The product on a CUDA GPU with cupy (its default float32 GEMM, no TF32)."""

    name = "cupy"

    def __init__(self, cupy: Any) -> None:
        if os.environ.get("CUPY_TF32", "0") != "0":
            raise ChallengeError("the cupy backend needs CUPY_TF32 unset or 0 (TF32 is inexact)")
        self._cupy = cupy

    def product(self, a: Entries, b: Entries) -> Product:
        cupy = self._cupy
        device_a = cupy.asarray(a).astype(cupy.float32)
        device_b = cupy.asarray(b).astype(cupy.float32)
        result: Product = cupy.asnumpy(cupy.matmul(device_a, device_b).astype(cupy.int32))
        return result


def _gpu_backend(name: str) -> Backend | None:
    """The named GPU backend when its library imports and sees a GPU, else None."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    try:  # pragma: no cover - needs the library installed
        if name == "torch" and module.cuda.is_available():
            return TorchBackend(module)
        if name == "cupy" and module.cuda.runtime.getDeviceCount() > 0:
            return CupyBackend(module)
    except ChallengeError:
        raise
    except Exception:  # noqa: BLE001 - a broken driver means "no GPU", not a crash
        return None
    return None  # pragma: no cover


BACKEND_NAMES: Final = ("cupy", "torch", "numpy")


def available_backends() -> list[str]:
    """The backends usable here, best first (numpy always last and always present)."""
    names = [name for name in BACKEND_NAMES[:-1] if _gpu_backend(name) is not None]
    return [*names, "numpy"]


def select_backend(name: str | None = None) -> Backend:
    """The backend called `name`, or the best available for None (a GPU one if any).

    Raise a `ChallengeError` for an unknown name or a GPU backend without its library or GPU.
    """
    if name is None:
        for candidate in BACKEND_NAMES[:-1]:
            backend = _gpu_backend(candidate)
            if backend is not None:  # pragma: no cover - needs a GPU
                return backend
        return NumpyBackend()
    if name == "numpy":
        return NumpyBackend()
    if name not in BACKEND_NAMES:
        raise ChallengeError(f"unknown challenge backend {name!r} (known: {BACKEND_NAMES})")
    backend = _gpu_backend(name)
    if backend is None:
        raise ChallengeError(f"challenge backend {name!r} needs {name} installed and a GPU")
    return backend  # pragma: no cover - needs a GPU


def product(
    a: numpy.typing.NDArray[Any], b: numpy.typing.NDArray[Any], backend: Backend | None = None
) -> Product:
    """C = A @ B (int32) on `backend` (numpy when None), checked to have the right shape."""
    chosen = backend if backend is not None else NumpyBackend()
    c = chosen.product(a, b)
    if c.shape != (a.shape[0], b.shape[1]):
        raise ChallengeError(f"backend {chosen.name} returned shape {c.shape}")
    return c


# ---- the node's side ----------------------------------------------------------------------


class Inventory(msgspec.Struct, frozen=True, kw_only=True):
    """What a node declares in its pong: GPUs, memory per GPU, and a device description."""

    gpu_count: int
    gpu_memory_mib: int
    device: str


class Responder:
    """The node's side of the exchange, without I/O: one message in, one reply out.

    It keeps C's Merkle tree and rows between `challenge` and `open`, answers one `open`
    per challenge, and refuses an `open` before a challenge, and a challenge larger than
    `challenge_n_max` (a node's bound on the memory a challenge may take: about 7 n^2 bytes
    on the host with numpy).
    """

    def __init__(
        self, backend: Backend, inventory: Inventory, *, challenge_n_max: int = CHALLENGE_N_MAX
    ) -> None:
        _check_size(challenge_n_max)
        self.backend = backend
        self.inventory = inventory
        self.challenge_n_max = challenge_n_max
        self._tree: MerkleTree | None = None
        self._rows: numpy.typing.NDArray[numpy.int32] | None = None

    def handle(self, message: Message) -> Message:
        """The reply to `message`; a `ChallengeError` for one out of turn or not for a node."""
        if isinstance(message, PingMessage):
            return PongMessage(
                gpu_count=self.inventory.gpu_count,
                gpu_memory_mib=self.inventory.gpu_memory_mib,
                device=self.inventory.device,
            )
        if isinstance(message, ChallengeMessage):
            return self._commit(message)
        if isinstance(message, OpenMessage):
            return self._open(message)
        raise ChallengeError(f"a node does not answer a {type(message).__name__}")

    def handle_line(self, line: bytes) -> bytes:
        """Decode a line, handle it, and encode the reply; an `error` line on any refusal."""
        try:
            reply = self.handle(decode_message(line))
        except ChallengeError as exc:
            reply = ErrorMessage(reason=str(exc)[:512])
        return encode_message(reply)

    def _commit(self, message: ChallengeMessage) -> CommitmentMessage:
        self._tree = None
        self._rows = None
        if message.n > self.challenge_n_max:
            raise ChallengeError(
                f"challenge of n={message.n} exceeds this node's limit {self.challenge_n_max}"
            )
        a, b = entries(bytes.fromhex(message.seed), message.n)
        c = product(a, b, self.backend)
        tree = MerkleTree(row_leaves(c))
        self._tree = tree
        self._rows = c
        return CommitmentMessage(root=tree.root.hex())

    def _open(self, message: OpenMessage) -> RowsMessage:
        tree, rows = self._tree, self._rows
        if tree is None or rows is None:
            raise ChallengeError("open before a challenge (or a second open of one challenge)")
        self._tree = None
        self._rows = None
        for index in message.rows:
            if index >= tree.count:
                raise ChallengeError(f"open asks for row {index} of a {tree.count}-row answer")
        return RowsMessage(
            rows=[
                RowOpening(
                    index=index,
                    values=rows[index].tolist(),
                    proof=[sibling.hex() for sibling in tree.proof(index)],
                )
                for index in message.rows
            ]
        )


# ---- the prober's side --------------------------------------------------------------------


def expected_rows(seed: bytes, n: int, rows: list[int]) -> numpy.typing.NDArray[numpy.int64]:
    """Rows `rows` of C = A @ B, recomputed as A[rows] @ B: k n^2 work, never n^3. B is
    converted to float32 a block of its rows at a time (partial sums stay exact integers), so
    the checker's memory stays about CHECK_BLOCK_BYTES above the entries."""
    a, b = entries(seed, n)
    picked = a[rows].astype(numpy.float32)
    total = numpy.zeros((len(rows), n), dtype=numpy.float32)
    block_rows = max(1, CHECK_BLOCK_BYTES // (4 * n))
    for first in range(0, n, block_rows):
        last = min(first + block_rows, n)
        total += picked[:, first:last] @ b[first:last].astype(numpy.float32)
    return total.astype(numpy.int64)


class ChallengeResult(msgspec.Struct, frozen=True, kw_only=True):
    """The checker's verdict on one challenge."""

    n: int
    seed_hex: str
    root_hex: str
    rows_checked: int
    answer_ms: int
    passed: bool
    reason: Reason | None


class Checker:
    """The prober's side of one challenge, without I/O.

    `pick(bound)` returns an integer in 0..bound-1 (the service passes `secrets.randbelow`);
    rows are picked only in `open_message`, after the node committed.
    """

    def __init__(
        self, seed: bytes, n: int, rows_checked: int = 4, pick: Callable[[int], int] | None = None
    ) -> None:
        if len(seed) != SEED_BYTES:
            raise ChallengeError(f"challenge seed has {len(seed)} bytes, not {SEED_BYTES}")
        _check_size(n)
        if not 1 <= rows_checked <= ROWS_CHECKED_MAX:
            raise ChallengeError(f"rows_checked={rows_checked} outside 1..{ROWS_CHECKED_MAX}")
        if pick is None:
            raise ChallengeError("a Checker needs a pick function (e.g. secrets.randbelow)")
        self.seed = seed
        self.n = n
        self.rows_checked = min(rows_checked, n)
        self._pick = pick
        self._root: bytes | None = None
        self._rows: list[int] | None = None

    def challenge_message(self) -> ChallengeMessage:
        """The challenge to send (start the answer clock when it is sent)."""
        return ChallengeMessage(seed=self.seed.hex(), n=self.n)

    def open_message(self, commitment: CommitmentMessage) -> OpenMessage:
        """Record the node's root and pick the rows to open (distinct, random)."""
        if self._root is not None:
            raise ChallengeError("open_message called twice for one challenge")
        self._root = bytes.fromhex(commitment.root)
        remaining = list(range(self.n))
        picked: list[int] = []
        for _ in range(self.rows_checked):
            position = self._pick(len(remaining))
            if not 0 <= position < len(remaining):
                raise ChallengeError(f"pick returned {position}, outside 0..{len(remaining) - 1}")
            remaining[position], remaining[-1] = remaining[-1], remaining[position]
            picked.append(remaining.pop())
        self._rows = picked
        return OpenMessage(rows=picked)

    def result(self, answer_ms: int, reason: Reason | None) -> ChallengeResult:
        """A verdict with `reason` (None = passed), e.g. `malformed` for a bad reply."""
        return ChallengeResult(
            n=self.n,
            seed_hex=self.seed.hex(),
            root_hex=self._root.hex() if self._root is not None else "",
            rows_checked=len(self._rows) if self._rows is not None else 0,
            answer_ms=answer_ms,
            passed=reason is None,
            reason=reason,
        )

    def verdict(self, rows_message: Message, answer_ms: int, floor: ClassFloor) -> ChallengeResult:
        """Check the opened rows: recompute each as A[i] @ B, verify its proof, then the time.

        The first failure wins, in this order: `malformed` (not a rows message, other rows
        than asked, a row of the wrong length), `wrong_rows`, `bad_proof`, `too_slow`.
        """
        root, asked = self._root, self._rows
        if root is None or asked is None:
            raise ChallengeError("verdict before open_message")
        if not isinstance(rows_message, RowsMessage):
            return self.result(answer_ms, "malformed")
        openings = rows_message.rows
        if [opening.index for opening in openings] != asked:
            return self.result(answer_ms, "malformed")
        if any(len(opening.values) != self.n for opening in openings):
            return self.result(answer_ms, "malformed")
        expected = expected_rows(self.seed, self.n, asked)
        for position, opening in enumerate(openings):
            given = numpy.asarray(opening.values, dtype=numpy.int64)
            if not numpy.array_equal(given, expected[position]):
                return self.result(answer_ms, "wrong_rows")
            proof = [bytes.fromhex(sibling) for sibling in opening.proof]
            leaf = row_leaf(opening.index, given)
            if not verify_proof(root, leaf, opening.index, self.n, proof):
                return self.result(answer_ms, "bad_proof")
        if answer_ms > floor.answer_ms_max:
            return self.result(answer_ms, "too_slow")
        return self.result(answer_ms, None)

