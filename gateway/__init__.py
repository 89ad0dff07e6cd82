"""The websocket gateway: order entry, private reports and market data over one socket.

Read `gateway.service` for the I/O (websockets server, Kafka producer and consumer),
`gateway.core` for the protocol state machine it drives, and `docs/asyncapi.yaml` for the
API a client sees.
"""
