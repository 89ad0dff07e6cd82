"""One command per figure (see benchmarks/README.md); each prints a baseline measured in the
same run beside it.

| module | measures |
|---|---|
| `engine_core` | the cores' commands per second against a naive matcher |
| `e2e` (+ `e2e_*`) | order to acknowledgement through Kafka, saturation and latency |
| `gateway_fanout` | market-data fan-out to many websocket connections |
| `recovery` | engine restart time with and without snapshots |
| `ledger_projection` | journal projection events per second against row inserts |
| `replay` | the audit tool on either core, whole process |
| `settlement_gas` | gas per settled fill |
| `support` | what the benchmarks share: timing, percentiles, processes |
"""
