"""The GPU-hour price index: one value a minute per GPU class and region, from the venue's
own trades (docs/index-methodology.md).

| module | what it owns |
|---|---|
| `calculator` | the pure core: events in, values out, a function of the event log alone |
| `events`, `book` | what the calculator reads of an event; the best bid and ask it keeps |
| `value` | `IndexValue`, one published value |
| `migrations/`, `store` | schema `index`: the upsert and the reads other services use |
| `service` | `gpux index run`: recompute from the start of the log, then follow it |
| `verify` | `gpux index verify`: recompute from the public events, compare with the rows |
| `cli`, `metrics`, `errors` | `gpux index ...`, its metrics, its failures |
"""
