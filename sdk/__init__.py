"""The gpux Python SDK: an async websocket client, a local order book, a CLI and bots.

    from sdk.client import ApiKey, Client

    async with Client(url, credentials=ApiKey(key_id, private_key)) as client:
        result = await client.new_order("H100.eu.2025", "buy", quantity=3, price="2.15")

| module | what it owns |
|---|---|
| `client` | `Client`: the typed requests (orders, strips, queries, feeds, the index) |
| `connection` | the asyncio side: websocket, futures, timeouts, reconnects, subscription queues |
| `session` | the protocol state, no I/O: request ids, pending replies, feed routing, book resyncs |
| `requests` | the typed `wsapi` requests the SDK sends, and their encoding |
| `book` | `LocalBook`, an instrument's L2 book kept in step and proved by its checksum |
| `signing` | API-key and wallet logins |
| `errors` | `ClientError` and its subclasses |
| `cli`, `bots` | `gpux trade` and the example bots |
"""
