"""The embedded log on disk: restarts, torn tails, corruption and unfinished transactions."""

from __future__ import annotations

import struct
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlog.embedded import EmbeddedConfig, EmbeddedLog
from eventlog.embedded_store import CommitStore
from eventlog.errors import CorruptRecordError, LogError
from eventlog.frames import FRAME_HEADER
from eventlog.port import Record, TopicSpec
from eventlog.reading import read_to_end

TOPIC = "gpux.commands"
GROUP = "engine"


class SimulatedCrash(BaseException):
    """Stop a commit half-way, as a kill would: no handler may catch and repair it."""


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
async def opened(data_dir: Path) -> AsyncIterator[list[EmbeddedLog]]:
    """Collect every log a test opens, and close them all at the end."""
    logs: list[EmbeddedLog] = []
    yield logs
    for log in logs:
        await log.close()


async def open_log(
    data_dir: Path, opened: list[EmbeddedLog], config: EmbeddedConfig | None = None
) -> EmbeddedLog:
    log = EmbeddedLog.open(data_dir, config)
    opened.append(log)
    await log.create_topics([TopicSpec(name=TOPIC)])
    return log


def partition_file(data_dir: Path) -> Path:
    return data_dir / "topics" / TOPIC / "0.log"


def frame_positions(path: Path) -> list[int]:
    """Return where each frame of an intact file starts."""
    data = path.read_bytes()
    positions: list[int] = []
    position = 0
    while position < len(data):
        positions.append(position)
        _, length, _ = FRAME_HEADER.unpack_from(data, position)
        position += FRAME_HEADER.size + length
    return positions


def flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


async def send_each(log: EmbeddedLog, values: list[bytes]) -> None:
    """Append each value on its own, so each lands in its own frame."""
    async with log.producer() as producer:
        for value in values:
            await producer.send(TOPIC, value)


async def read_all(log: EmbeddedLog, topic: str = TOPIC) -> list[Record]:
    async with log.consumer(topic, start="earliest") as consumer:
        return await read_to_end(consumer, timeout_s=5)


async def values_of(log: EmbeddedLog) -> list[bytes]:
    return [record.value for record in await read_all(log)]


@pytest.mark.parametrize("fsync", [True, False])
async def test_records_offsets_and_topics_survive_a_restart(
    data_dir: Path, opened: list[EmbeddedLog], fsync: bool
) -> None:
    config = EmbeddedConfig(fsync=fsync)
    log = await open_log(data_dir, opened, config)
    async with log.producer() as producer:
        await producer.send(TOPIC, b"plain", key=b"k")
        await producer.send_batch(TOPIC, [b"b1", b"b2"])
    async with log.producer("engine-tx") as producer, producer.transaction():
        await producer.send(TOPIC, b"in-tx")
        await producer.send_offsets(GROUP, {(TOPIC, 0): 2})
    before = await read_all(log)
    await log.close()

    reopened = await open_log(data_dir, opened, config)
    after = await read_all(reopened)
    async with reopened.producer() as producer:
        next_offset = await producer.send(TOPIC, b"after-restart")

    assert after == before
    assert [(r.offset, r.key, r.value) for r in after] == [
        (0, b"k", b"plain"),
        (1, None, b"b1"),
        (2, None, b"b2"),
        (3, None, b"in-tx"),
    ]
    assert await reopened.committed_offset(GROUP, TOPIC) == 2
    assert next_offset == 4


@pytest.mark.parametrize("bytes_kept_of_last_frame", [1, 5, FRAME_HEADER.size + 3])
async def test_a_torn_tail_is_truncated_on_open_and_appends_continue(
    data_dir: Path, opened: list[EmbeddedLog], bytes_kept_of_last_frame: int
) -> None:
    log = await open_log(data_dir, opened)
    await send_each(log, [b"first", b"second", b"torn-one"])
    await log.close()
    path = partition_file(data_dir)
    last_frame = frame_positions(path)[-1]
    with path.open("r+b") as file:
        file.truncate(last_frame + bytes_kept_of_last_frame)

    reopened = await open_log(data_dir, opened)
    assert await values_of(reopened) == [b"first", b"second"]
    assert path.stat().st_size == last_frame
    await send_each(reopened, [b"third"])
    await reopened.close()

    again = await open_log(data_dir, opened)
    assert [(r.offset, r.value) for r in await read_all(again)] == [
        (0, b"first"),
        (1, b"second"),
        (2, b"third"),
    ]


async def test_a_checksum_failure_in_the_last_record_is_truncated_on_open(
    data_dir: Path, opened: list[EmbeddedLog]
) -> None:
    log = await open_log(data_dir, opened)
    await send_each(log, [b"first", b"second", b"flipped"])
    await log.close()
    path = partition_file(data_dir)
    flip_byte(path, path.stat().st_size - 2)

    reopened = await open_log(data_dir, opened)
    assert await values_of(reopened) == [b"first", b"second"]
    await send_each(reopened, [b"replacement"])

    assert await values_of(reopened) == [b"first", b"second", b"replacement"]


@pytest.mark.parametrize("damage", ["payload", "length"])
async def test_corruption_in_the_middle_raises_naming_the_file_and_offset(
    data_dir: Path, opened: list[EmbeddedLog], damage: str
) -> None:
    log = await open_log(data_dir, opened)
    await send_each(log, [b"zero", b"one", b"two", b"three"])
    await log.close()
    path = partition_file(data_dir)
    second_frame = frame_positions(path)[1]
    size_before = path.stat().st_size
    if damage == "payload":
        flip_byte(path, second_frame + FRAME_HEADER.size + 1)
    else:  # a length pointing past the end would look like a torn tail but for what follows
        data = bytearray(path.read_bytes())
        struct.pack_into("<I", data, second_frame + 4, 1 << 20)
        path.write_bytes(bytes(data))

    with pytest.raises(CorruptRecordError) as raised:
        EmbeddedLog.open(data_dir)

    assert raised.value.path == path
    assert raised.value.offset == 1
    assert raised.value.position == second_frame
    assert str(path) in str(raised.value)
    assert path.stat().st_size == size_before  # nothing was dropped


async def test_a_transaction_never_committed_leaves_nothing_after_reopen(
    data_dir: Path, opened: list[EmbeddedLog]
) -> None:
    log = await open_log(data_dir, opened)
    await send_each(log, [b"before"])
    abandoned = log.producer("engine-tx")
    await abandoned.start()
    await abandoned.begin()
    await abandoned.send_batch(TOPIC, [b"lost-1", b"lost-2"])
    await abandoned.send_offsets(GROUP, {(TOPIC, 0): 1})
    await log.close()  # the process dies: the producer never commits

    reopened = await open_log(data_dir, opened)

    assert await values_of(reopened) == [b"before"]
    assert await reopened.committed_offset(GROUP, TOPIC) is None


async def test_a_crash_between_the_batch_and_its_commit_entry_leaves_nothing(
    data_dir: Path, opened: list[EmbeddedLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = await open_log(data_dir, opened)
    async with log.producer("engine-tx") as producer:
        async with producer.transaction():
            await producer.send(TOPIC, b"committed")
            await producer.send_offsets(GROUP, {(TOPIC, 0): 1})
        size_after_first_commit = partition_file(data_dir).stat().st_size

        def crash(*args: object, **kwargs: object) -> None:
            raise SimulatedCrash

        monkeypatch.setattr(CommitStore, "append", crash)
        await producer.begin()
        await producer.send_batch(TOPIC, [b"torn-1", b"torn-2"])
        await producer.send_offsets(GROUP, {(TOPIC, 0): 3})
        with pytest.raises(SimulatedCrash):
            await producer.commit()
    monkeypatch.undo()
    assert partition_file(data_dir).stat().st_size > size_after_first_commit  # batch on disk
    await log.close()

    reopened = await open_log(data_dir, opened)
    assert await values_of(reopened) == [b"committed"]
    assert await reopened.committed_offset(GROUP, TOPIC) == 1
    assert partition_file(data_dir).stat().st_size == size_after_first_commit
    async with reopened.producer("engine-tx") as producer, producer.transaction():
        await producer.send(TOPIC, b"next")
    await reopened.close()

    again = await open_log(data_dir, opened)
    assert [(r.offset, r.value) for r in await read_all(again)] == [(0, b"committed"), (1, b"next")]


async def test_an_io_error_during_commit_rolls_the_transaction_back(
    data_dir: Path, opened: list[EmbeddedLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = await open_log(data_dir, opened)
    size_before = partition_file(data_dir).stat().st_size

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    async with log.producer("engine-tx") as producer:
        monkeypatch.setattr(CommitStore, "append", fail)
        await producer.begin()
        await producer.send(TOPIC, b"rolled-back")
        await producer.send_offsets(GROUP, {(TOPIC, 0): 1})
        with pytest.raises(LogError) as raised:
            await producer.commit()
        await producer.abort()
        monkeypatch.undo()
        async with producer.transaction():
            await producer.send(TOPIC, b"committed")

    assert raised.value.retriable
    assert partition_file(data_dir).stat().st_size > size_before
    assert [(r.offset, r.value) for r in await read_all(log)] == [(0, b"committed")]
    assert await log.committed_offset(GROUP, TOPIC) is None
    await log.close()
    reopened = await open_log(data_dir, opened)
    assert await values_of(reopened) == [b"committed"]


async def test_a_torn_commit_entry_drops_its_transaction(
    data_dir: Path, opened: list[EmbeddedLog]
) -> None:
    log = await open_log(data_dir, opened)
    async with log.producer("engine-tx") as producer:
        for value, offset in ((b"kept", 1), (b"torn", 2)):
            async with producer.transaction():
                await producer.send(TOPIC, value)
                await producer.send_offsets(GROUP, {(TOPIC, 0): offset})
    await log.close()
    commits = data_dir / "commits.log"
    with commits.open("r+b") as file:
        file.truncate(commits.stat().st_size - 3)

    reopened = await open_log(data_dir, opened)

    assert await values_of(reopened) == [b"kept"]
    assert await reopened.committed_offset(GROUP, TOPIC) == 1


async def test_a_second_log_on_the_same_directory_is_refused(
    data_dir: Path, opened: list[EmbeddedLog]
) -> None:
    await open_log(data_dir, opened)

    with pytest.raises(LogError, match="in use"):
        EmbeddedLog.open(data_dir)


async def test_the_commit_log_is_compacted_on_open_keeping_every_offset(
    data_dir: Path, opened: list[EmbeddedLog]
) -> None:
    config = EmbeddedConfig(commit_entries_compact_min=5)
    log = await open_log(data_dir, opened, config)
    await send_each(log, [b"a", b"b", b"c"])
    async with log.consumer(TOPIC, group_id=GROUP) as consumer:
        for offset in (1, 2, 3, 1, 2, 3, 2):
            await consumer.commit(offset)
    async with log.consumer(TOPIC, group_id="other") as consumer:
        await consumer.commit(1)
    await log.close()
    size_before = (data_dir / "commits.log").stat().st_size

    reopened = await open_log(data_dir, opened, config)

    assert (data_dir / "commits.log").stat().st_size < size_before
    assert await reopened.committed_offset(GROUP, TOPIC) == 2
    assert await reopened.committed_offset("other", TOPIC) == 1


records_strategy = st.lists(
    st.tuples(st.one_of(st.none(), st.binary(max_size=40)), st.binary(max_size=300)),
    max_size=60,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=records_strategy, batch_size=st.integers(min_value=1, max_value=7))
async def test_any_records_read_back_identical_after_reopen(
    records: list[tuple[bytes | None, bytes]], batch_size: int
) -> None:
    config = EmbeddedConfig(frame_records_max=3, frame_bytes_max=1024, read_records_max=5)
    with tempfile.TemporaryDirectory() as directory:
        log = EmbeddedLog.open(directory, config)
        await log.create_topics([TopicSpec(name=TOPIC)])
        async with log.producer("writer") as producer:
            for start in range(0, len(records), batch_size):
                async with producer.transaction():  # one commit, split into small frames
                    for key, value in records[start : start + batch_size]:
                        await producer.send(TOPIC, value, key=key)
        await log.close()

        reopened = EmbeddedLog.open(directory, config)
        try:
            read_back = await read_all(reopened)
        finally:
            await reopened.close()

    assert [(r.key, r.value) for r in read_back] == records
    assert [r.offset for r in read_back] == list(range(len(records)))
