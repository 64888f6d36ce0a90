"""A `redis-server` of the test run's own, on a free port (no persistence)."""

from __future__ import annotations

import subprocess
import time

import redis


def start_redis_server(port: int, binary: str = "redis-server") -> subprocess.Popen[bytes]:
    """Start one and return once it answers PING; raises ``RuntimeError`` if it never does."""
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with redis.Redis(port=port, socket_connect_timeout=0.5) as client:
                if client.ping():
                    return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"redis-server did not answer on port {port}")
