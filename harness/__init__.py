"""Real Kafka 4.x, PostgreSQL and anvil on free loopback ports, for tests and for people.

`python -m harness install` fetches everything ahead of time; `python -m harness up`
starts the stack detached (see `harness.cli`); tests get it through the fixtures of
`tests/conftest.py`. Each service is a `harness.service.Service`: start, stop, kill,
restart (same ports, same data), endpoint and log_path.

| module | what it owns |
|---|---|
| `kafka`, `postgres`, `anvil` | each service: install, start, stop, kill, restart |
| `sshd` | Debian's OpenSSH server from pinned .debs: a GPU node's sshd for delivery tests |
| `service`, `ports`, `paths`, `errors` | what the services share |
| `install`, `maven/` | fetching ahead of time; the Kafka jars pinned by hash |
| `containers` | the same services from Docker images, where an engine answers |
| `cli` | `gpux services` / `python -m harness` |
"""
