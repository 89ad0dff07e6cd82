"""The matching engine: the pure cores and the service that runs one over the event log.

| module | what it owns |
|---|---|
| `core/` | the Python core: books, accounts, matching, snapshots; no I/O, no clock |
| `native/` | the Rust core (`gpux_native`), byte for byte the same machine |
| `cores` | `Core`, the one face of both cores: apply, replay, snapshot, restore, digest |
| `service` | `EngineService` (recovery, snapshots) on the log's processor; `EngineSupervisor` |
| `config`, `metrics`, `errors`, `cli` | the service's settings, metrics, refusals, `gpux engine` |
| `snapshots` | snapshot files on disk, written by a forked child |
| `replay` | `gpux replay`: the audit tool, a command file through either core |
| `workload` | a seeded order flow for benchmarks, tests and `gpux dev` |
"""
