"""What every long-running service shares, and nothing of any one service.

| module | owns |
| --- | --- |
| `observability` | JSON logs, the /metrics and /healthz server |
| `retry` | `RetryPolicy`, `Backoff`, and the one `Supervisor` services run under |
| `postgres` | opening, recognising lost and replacing PostgreSQL connections; databases |
| `migrations` | applying a package's numbered SQL files once each, recorded per schema |
| `errors` | `RetriableError`, the base of errors that carry a `retriable` flag |
| `npm` | `npm ci` from package-lock.json (anvil, solc-js) |
| `config` | the checks every service's settings share |
| `cli` | running a supervised service until a signal, its metrics served (`run` commands) |

The event log's flags live with the log (`eventlog.flags`).
"""
