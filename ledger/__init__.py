"""The ledger: an append-only double-entry journal in PostgreSQL, fed exactly once from
the event log.

| module | what it owns |
|---|---|
| `journal` | the pure core: events to postings (bonds and redemption too), the hash chain |
| `migrate`, `migrations/` | the schema and the service role |
| `store` | the PostgreSQL adapter: checkpoints, delivery state, the writer lock, appends |
| `projector` | the service loop, under `runtime.retry.Supervisor` |
| `reads` | balances, statements, fees, bonds, and the rows settlement carries on chain |
| `verify`, `reconcile` | the hash chain walked; the journal against the engine's state |
| `cli`, `metrics`, `errors` | `gpux ledger ...`, its metrics, its failures |
"""
