"""Settlement on chain: fills and delivery moves batched into Merkle roots, deposits in,
withdrawals paid out, and the price index published with the batches.

| module | what it owns |
|---|---|
| `fills`, `moves`, `batching`, `merkle`, `accounts` | the pure core: leaves, netting, trees |
| `jobs`, `submitter`, `looping` | the submitter: `Vault.settle`, `payout`, `IndexOracle.publish` |
| `index_chain` | the index on chain: keys, minutes, publications, reads and comparisons |
| `deposits` | the deposit watcher: `Deposited` logs, N blocks deep, to `deposit` commands |
| `store`, `migrations/` | the `settlement` schema; the ledger's rows read through `ledger.reads` |
| `chain`, `artifacts`, `contracts/` | web3 and the contracts, compiled by solc-js |
| `proofs` | the proof of a fill or a delivery move, checked locally and by the Vault |
| `cli`, `metrics`, `errors` | `gpux settlement`, its metrics and its failures |
| `dev`, `testing` | dev-chain helpers; test databases with the ledger's tables |

See settlement/README.md for the design.
"""
