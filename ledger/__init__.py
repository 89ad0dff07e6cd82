"""The ledger: an append-only double-entry journal in PostgreSQL, fed exactly once from
the event log.

Modules by role: `journal` (the pure core: events to postings, the hash chain), `migrate`
and `migrations/` (the schema), `db` and `store` (the PostgreSQL adapter), `projector`
(the service loop), `reads`, `verify`, `reconcile`, `cli` (`gpux ledger ...`).
"""
