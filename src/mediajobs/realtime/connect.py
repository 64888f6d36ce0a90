"""Redis clients from ``Settings``: the machine's Redis (REDIS_URL) or, in development and
tests, an in-process fakeredis server."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mediajobs.config import Environment, Settings
from mediajobs.errors import ConfigError


def redis_client(settings: Settings, fake_server: Any = None, *, subscriber: bool = False) -> Redis:
    """The Redis client for ``settings``. A ``subscriber`` client (the hub's) does not
    reconnect behind the caller's back: the hub must know when its subscription broke, to
    catch up on what was published meanwhile. It also pings the server while idle, so a
    silently dropped connection is noticed."""
    if settings.redis_url:
        if subscriber:
            return Redis.from_url(
                settings.redis_url,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=10,
                socket_connect_timeout=2.0,
            )
        return Redis.from_url(settings.redis_url, socket_connect_timeout=2.0, socket_timeout=5.0)
    if settings.env is Environment.PRODUCTION:
        raise ConfigError("REDIS_URL", "is required when MEDIAJOBS_ENV=production")
    import fakeredis

    client: Redis = fakeredis.FakeAsyncRedis(server=fake_server or fakeredis.FakeServer())
    return client
