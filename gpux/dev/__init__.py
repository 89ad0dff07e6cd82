"""`gpux dev`: the whole venue in one process, on embedded defaults (see gpux.dev.cli).

| module | role |
|---|---|
| `cli` | the command: options, logging, start-up order, the banner with the page's URL |
| `infra` | the embedded PostgreSQL (the pgserver wheel's binaries) and anvil, under the data dir |
| `chain` | deploy or reopen the contracts; the demo accounts' USDC through the Vault |
| `market` | what is listed, the demo accounts and their API keys |
| `lister` | keep the next 24 hours listed (deliverable); fund the accounts' USDC once |
| `venue` | engine, ledger, settlement and gateway as tasks of this process; one /metrics |
| `site` | the trading page plus `/proof/TRADE_ID` |
| `bots` | market maker, operator (both issue their GPU-hours) and taker over the websocket API |
| `status` | the status line and the ledger/settlement gauges |
"""

from gpux.dev.cli import main

__all__ = ["main"]
