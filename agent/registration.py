"""Register the node with the venue (the gateway's `register_node`, through the SDK).

Registration is idempotent: the agent registers at every start, so a changed host, port,
host key or inventory reaches the venue by restarting the agent. The reply carries the
venue CA's public key, which the node's SSH server trusts. A venue that cannot be reached
(or whose delivery service has not published its CA yet) is tried again a bounded number
of times; a refusal (a node id of another account, a field out of range) is not.

The agent talks to the venue through a `Register` function, so tests give it a stub and
the command gives it `sdk_register` (an API key, as `gpux trade` takes it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from agent.errors import RegistrationError
from sdk.client import Client, ClientError, RequestFailed
from sdk.signing import Credentials

__all__ = ["ATTEMPTS_MAX", "Register", "Registered", "Registration", "register_with_retries",
           "sdk_register"]

ATTEMPTS_MAX = 8  # about 40 s of backoff in all
BACKOFF_S_FIRST = 1.0
BACKOFF_S_MAX = 8.0


class Registration(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of `register_node`: where the node is reached and what it has."""

    node_id: str
    gpu: str
    region: str
    gpu_count: int
    gpu_memory_mib: int
    host: str
    port: int
    login: str
    host_key: str
    inventory: dict[str, Any]


class Registered(msgspec.Struct, frozen=True, kw_only=True):
    """The venue's answer: the CA key to trust and the principals to accept."""

    node_id: str
    ca_public_key: str
    holder_principal: str
    prober_principal: str


Register = Callable[[Registration], Awaitable[Registered]]


def sdk_register(url: str, credentials: Credentials) -> Register:
    """A Register that logs in to the gateway at `url` and sends `register_node`."""

    async def register(registration: Registration) -> Registered:
        try:
            async with Client(url, credentials=credentials) as client:
                result = await client.register_node(**msgspec.structs.asdict(registration))
        except RequestFailed as error:
            # `unavailable`: the venue's delivery service has not published its CA yet
            raise RegistrationError(f"the venue refused the node: {error}",
                                    retriable=error.code == "unavailable") from error
        except (ClientError, OSError) as error:
            raise RegistrationError(f"the venue at {url} did not answer: {error}",
                                    retriable=True) from error
        return Registered(node_id=result.node_id, ca_public_key=result.ca_public_key,
                          holder_principal=result.holder_principal,
                          prober_principal=result.prober_principal)

    return register


async def register_with_retries(register: Register, registration: Registration, *,
                                attempts_max: int = ATTEMPTS_MAX,
                                backoff_s_first: float = BACKOFF_S_FIRST) -> Registered:
    """Register, trying a retriable failure again up to `attempts_max` times in all."""
    backoff_s = backoff_s_first
    for attempt in range(1, attempts_max + 1):
        try:
            registered = await register(registration)
        except RegistrationError as error:
            if not error.retriable or attempt == attempts_max:
                raise
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, BACKOFF_S_MAX)
            continue
        if registered.node_id != registration.node_id:
            raise RegistrationError(f"the venue answered for node {registered.node_id!r}, "
                                    f"not {registration.node_id!r}", retriable=False)
        return registered
    raise AssertionError("unreachable: the loop returns or raises")
