"""The websocket gateway: order entry, private reports and market data over one socket.

Read `service` for the I/O (websockets server, Kafka producer and consumer), `core` for
the protocol state machine it drives, and `docs/asyncapi.yaml` for the API a client sees.

| module | what it owns |
|---|---|
| `service` | the asyncio side: sockets, the command queue, the event consumer, the clock |
| `core`, `ports` | the sans-I/O state machine and the ports it is given |
| `session`, `admission`, `auth`, `ratelimit` | a connection; who may connect; logins; limits |
| `orderentry`, `correlation`, `replies` | requests to commands; events back to replies |
| `strips` | strip_quote (the engine's simulation over the gateway's books), a strip's reply |
| `projection`, `marketdata`, `accounts`, `deliveries`, `books`, `marketstats` | events to feeds |
| `feeds`, `messages`, `public` | subscriptions, server messages, the requests without a login |
| `store`, `migrations/` | keys, roles and used nonces in PostgreSQL |
| `index`, `indexsource`, `indexhttp` | the price index: its feed, the store it polls, `/index` |
| `static` | the trading page on the same port |
| `config`, `metrics`, `errors`, `cli` | settings, metrics, failures, `gpux gateway` |
| `testing` | test helpers: the AsyncAPI contract check, an in-memory key store |
"""
