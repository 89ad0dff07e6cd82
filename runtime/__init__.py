"""What every long-running service shares, and nothing of any one service.

| module | owns |
| --- | --- |
| `observability` | JSON logs, the /metrics and /healthz server |
| `retry` | `RetryPolicy`, `Backoff`, and the one `Supervisor` services run under |
| `postgres` | opening, recognising lost and replacing PostgreSQL connections; databases |
| `migrations` | applying a package's numbered SQL files once each, recorded per schema |

The event log's flags live with the log (`eventlog.flags`).
"""
