"""Redis fixtures: the test server's URL, a key prefix per test (cleaned up after it) and a
pub/sub channel per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.unavailable import unavailable

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis server's URL; skips (fails in CI) when it is not reachable."""
    url = os.environ.get("PROTOEVENTS_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis not reachable at {url}: set PROTOEVENTS_TEST_REDIS_URL ({exc})"
        unavailable(reason)
    finally:
        client.close()
    return url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted after the test."""
    prefix = f"protoevents_test_{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_channel() -> str:
    """A channel no other test publishes on (pub/sub channels are server-wide)."""
    return f"protoevents-test:{uuid.uuid4().hex}"
