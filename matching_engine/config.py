"""How the engine batches, snapshots and names itself on the log (`EngineConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eventlog.port import COMMANDS_TOPIC, EVENTS_TOPIC
from matching_engine.cores import CORES
from runtime.config import require_positive

__all__ = ["EngineConfig"]


@dataclass(frozen=True)
class EngineConfig:
    """How the engine batches, snapshots and names itself on the log."""

    batch_size_max: int = 2000
    batch_interval_ms: int = 5
    # Recovery re-applies at most this many commands (plus a batch) after the snapshot: the
    # Python core re-applies 60-120k commands a second here. Snapshots are written by a
    # forked child (matching_engine.snapshots.ForkedSnapshots); the loop pays for the fork.
    snapshot_every_commands: int = 100_000
    snapshot_dir: Path | None = None
    snapshots_kept_max: int = 3
    transactional_id: str = "gpux-engine"
    group_id: str = "gpux-engine"
    catch_up_batch_max: int = 10_000
    # A transaction commits once open this long or holding this many commands (0 ms: after
    # every batch). Readers of read_uncommitted events (the gateway) see a batch's events as
    # soon as they are written; readers that move money wait for the commit.
    commit_interval_ms: int = 0
    commit_records_max: int = 20_000
    # Events a crash may abort, bounded well inside the gateway's check window (200,000).
    commit_events_max: int = 50_000
    # Prefixed to both topic names, so several venues (or test runs) share one cluster.
    topic_namespace: str = ""
    core: str = "python"

    @property
    def commands_topic(self) -> str:
        return self.topic_namespace + COMMANDS_TOPIC

    @property
    def events_topic(self) -> str:
        return self.topic_namespace + EVENTS_TOPIC

    def __post_init__(self) -> None:
        require_positive(
            self, "batch_size_max", "batch_interval_ms", "snapshot_every_commands",
            "snapshots_kept_max", "catch_up_batch_max", "commit_records_max",
            "commit_events_max",
        )
        if self.commit_interval_ms < 0:
            raise ValueError(f"commit_interval_ms must be >= 0, got {self.commit_interval_ms}")
        if self.core not in CORES:
            raise ValueError(f"core must be one of {CORES}, got {self.core!r}")
