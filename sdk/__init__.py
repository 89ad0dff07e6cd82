"""The gpux Python SDK: an async websocket client, a local order book, a CLI and bots.

    from sdk.client import ApiKey, Client

    async with Client(url, credentials=ApiKey(key_id, private_key)) as client:
        result = await client.new_order("H100.eu.2025", "buy", quantity=3, price="2.15")
"""
