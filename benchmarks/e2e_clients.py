"""Load generators of `benchmarks.e2e`: SDK clients in separate processes.

Each process holds `connections` SDK clients (`sdk.client.Client`), each logged in with an
API key of its own account, and runs the phases the parent sends it over a queue:

- `saturate`: closed loop; every connection keeps `window` requests in flight (a single
  `new_order` each, or a `batch` of `batch_size` orders) for `duration_s`; it reports the
  orders answered after `warmup_s`.
- `rate`: open loop at `rate_per_s` orders a second (round robin over the connections),
  one `new_order` request each; every order records its scheduled time, the time the SDK
  call started and the time its answer came back, so a client that falls behind shows
  it (no coordinated omission).
- `echo_saturate` / `echo_rate`: the same two loops against the echo server with a plain
  websockets client: the baseline.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
import time
from collections.abc import AsyncIterator
from typing import Any

SYMBOL_MID_TICKS = 20_000  # 200.00 at a 0.01 tick
PASSIVE_FRACTION = 0.7
# A new_order request as the SDK writes it: what the echo baseline sends.
ECHO_PAYLOAD = ('{"op":"new_order","req_id":1,"client_order_id":"S0-0.1","instrument":'
                '"H100-SXM-80GB.bench0","side":"buy","order_type":"limit","price":"199.95",'
                '"quantity":3,"time_in_force":"gtc"}')


class OrderFlow:
    """Orders that rest near the touch (70%) or cross it as ioc (30%), so books stay bounded."""

    def __init__(self, symbols: list[str], seed: int) -> None:
        self.symbols = symbols
        self.rng = random.Random(seed)

    def item(self, client_order_id: str) -> dict[str, Any]:
        rng = self.rng
        side = "buy" if rng.random() < 0.5 else "sell"
        passive = rng.random() < PASSIVE_FRACTION
        if passive:
            offset = rng.randint(1, 20)
            ticks = SYMBOL_MID_TICKS - offset if side == "buy" else SYMBOL_MID_TICKS + offset
            quantity, time_in_force = rng.randint(1, 5), "gtc"
        else:
            ticks = SYMBOL_MID_TICKS + 5 if side == "buy" else SYMBOL_MID_TICKS - 5
            quantity, time_in_force = rng.randint(5, 15), "ioc"
        return {"op": "new_order", "client_order_id": client_order_id,
                "instrument": rng.choice(self.symbols), "side": side, "order_type": "limit",
                "price": f"{ticks // 100}.{ticks % 100:02d}", "quantity": quantity,
                "time_in_force": time_in_force}


def client_process(index: int, url: str, keys: list[tuple[str, str, str]], symbols: list[str],
                   commands: Any, results: Any) -> None:
    """Entry point of one client process (spawned): connect, then run phases until None."""
    import uvloop

    uvloop.run(_main(index, url, keys, symbols, commands, results))


async def _main(index: int, url: str, keys: list[tuple[str, str, str]], symbols: list[str],
                commands: Any, results: Any) -> None:
    from sdk.client import ApiKey, Client

    clients = []
    for account, key_id, private_key in keys:
        client = Client(url, credentials=ApiKey(key_id, private_key), reconnect=False,
                        request_timeout_s=30.0)
        await client.connect()
        assert client.login is not None and client.login.account == account
        clients.append(client)
    flow = OrderFlow(symbols, seed=index)
    loop = asyncio.get_running_loop()
    results.put(("ready", index, len(clients)))
    try:
        while True:
            phase = await loop.run_in_executor(None, commands.get)
            if phase is None:
                return
            kind = phase["kind"]
            if kind == "saturate":
                outcome: Any = await saturate(clients, flow, index, phase)
            elif kind == "rate":
                outcome = await at_rate(clients, flow, index, phase)
            elif kind == "echo_saturate":
                outcome = await echo_saturate(phase)
            elif kind == "echo_rate":
                outcome = await echo_at_rate(phase)
            else:
                raise ValueError(f"unknown phase {kind!r}")
            results.put((kind, index, outcome))
    finally:
        for client in clients:
            await client.close()


async def saturate(clients: list[Any], flow: OrderFlow, index: int,
                   phase: dict[str, Any]) -> dict[str, Any]:
    """Keep `window` requests in flight per connection; count orders answered after warm-up."""
    started = time.monotonic()
    measure_from = started + phase["warmup_s"]
    deadline = started + phase["duration_s"]
    batch_size = phase["batch_size"]
    counts = collections.Counter[str]()
    ids = itertools.count()
    prefix = f"S{phase['tag']}-{index}."

    async def worker(client: Any) -> None:
        while time.monotonic() < deadline:
            if batch_size == 1:
                reply = await client.request(**flow.item(f"{prefix}{next(ids)}"))
                statuses = [reply.result["status"]]
            else:
                items = [flow.item(f"{prefix}{next(ids)}") for _ in range(batch_size)]
                reply = await client.request("batch", orders=items)
                statuses = [result["status"] for result in reply.result["results"]]
            if time.monotonic() >= measure_from:
                counts.update(statuses)

    await asyncio.gather(*(worker(client) for client in clients
                           for _ in range(phase["window"])))
    return {"counts": dict(counts), "seconds": deadline - measure_from,
            "finished_s": time.monotonic() - started}


async def on_schedule(count: int, interval_ns: int) -> AsyncIterator[tuple[int, int]]:
    """Yield (number, scheduled time in ns) for `count` sends `interval_ns` apart, each when
    it is due (open loop: a sender that falls behind is not waited for, it is late)."""
    start_ns = time.time_ns() + 20_000_000
    for number in range(count):
        scheduled_ns = start_ns + number * interval_ns
        delay_ns = scheduled_ns - time.time_ns()
        if delay_ns > 0:
            await asyncio.sleep(delay_ns / 1e9)
        yield number, scheduled_ns


async def at_rate(clients: list[Any], flow: OrderFlow, index: int,
                  phase: dict[str, Any]) -> dict[str, Any]:
    """Send single new_order requests on a fixed schedule; record each one's times."""
    interval_ns = int(1e9 / phase["rate_per_s"])
    count = int(phase["rate_per_s"] * phase["duration_s"])
    prefix = f"L{phase['tag']}-{index}."
    rows: list[tuple[str, int, int, int, str]] = []
    tasks = set()

    async def one(client: Any, cid: str, scheduled_ns: int) -> None:
        sent_ns = time.time_ns()
        reply = await client.request(**flow.item(cid))
        rows.append((cid, scheduled_ns, sent_ns, time.time_ns(), reply.result["status"]))

    async for number, scheduled_ns in on_schedule(count, interval_ns):
        task = asyncio.create_task(one(clients[number % len(clients)], f"{prefix}{number}",
                                       scheduled_ns))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    return {"rows": rows}


async def _echo_connections(url: str, count: int) -> list[Any]:
    import websockets

    return [await websockets.connect(url, compression=None, max_size=None)
            for _ in range(count)]


async def echo_saturate(phase: dict[str, Any]) -> dict[str, Any]:
    """Closed loop against the echo server: `window` frames in flight per connection."""
    connections = await _echo_connections(phase["url"], phase["connections"])
    payload = ECHO_PAYLOAD
    started = time.monotonic()
    measure_from = started + phase["warmup_s"]
    deadline = started + phase["duration_s"]
    answered = 0

    async def run(ws: Any) -> None:
        nonlocal answered
        for _ in range(phase["window"]):
            await ws.send(payload)
        while time.monotonic() < deadline:
            await ws.recv()
            await ws.send(payload)
            if time.monotonic() >= measure_from:
                answered += 1
        for _ in range(phase["window"]):
            await ws.recv()

    await asyncio.gather(*(run(ws) for ws in connections))
    for ws in connections:
        await ws.close()
    return {"answered": answered, "seconds": deadline - measure_from}


async def echo_at_rate(phase: dict[str, Any]) -> dict[str, Any]:
    """Open loop against the echo server; round trip from scheduled send to echo."""
    connections = await _echo_connections(phase["url"], phase["connections"])
    interval_ns = int(1e9 / phase["rate_per_s"])
    count = int(phase["rate_per_s"] * phase["duration_s"])
    sent: list[collections.deque[int]] = [collections.deque() for _ in connections]
    latencies: list[int] = []

    async def read(position: int, ws: Any) -> None:
        async for _ in ws:
            latencies.append(time.time_ns() - sent[position].popleft())

    readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(connections)]
    async for number, scheduled_ns in on_schedule(count, interval_ns):
        position = number % len(connections)
        sent[position].append(scheduled_ns)
        await connections[position].send(ECHO_PAYLOAD)
    deadline = time.monotonic() + 10
    while len(latencies) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    for ws in connections:
        await ws.close()
    for reader in readers:
        reader.cancel()
    return {"latencies_ns": latencies}
