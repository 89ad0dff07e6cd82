"""The websocket API, defined once: what the gateway decodes and answers and what the SDK
sends and decodes (docs/asyncapi.yaml documents it).

| module | what it owns |
|---|---|
| `requests` | client requests, tagged by `op`; decode errors name the field |
| `messages` | server messages and replies (`hello`, feeds, results) |
| `errors` | the error codes a reply carries, and `RequestError` |
| `checksum` | the book checksum of the top 10 levels |
| `login` | what an API-key or wallet login signs |
"""
