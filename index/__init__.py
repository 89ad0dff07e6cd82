"""The GPU-hour price index: one value a minute per GPU class and region, from the venue's
own trades (docs/index-methodology.md).

| module | what it owns |
|---|---|
| `value` | `IndexValue`, one published value |
| `migrations/`, `store` | schema `index`: the upsert and the reads other services use |
"""
