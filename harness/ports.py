"""Free loopback ports and TCP reachability checks."""

from __future__ import annotations

import socket

LOOPBACK_HOST = "127.0.0.1"


def free_port(host: str = LOOPBACK_HOST) -> int:
    """Return a TCP port on `host` that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


def free_ports(count: int, host: str = LOOPBACK_HOST) -> list[int]:
    """Return `count` distinct free ports, all held open until chosen so none repeats."""
    if not 1 <= count <= 16:
        raise ValueError(f"count must be within 1..16, got {count}")
    probes = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind((host, 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def port_is_open(port: int, host: str = LOOPBACK_HOST, timeout_s: float = 0.5) -> bool:
    """Tell whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
