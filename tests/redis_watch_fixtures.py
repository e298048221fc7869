"""Redis fixtures of the watch tests: the test server's URL and a channel of one's own."""

from __future__ import annotations

import os
import uuid

import pytest
import redis
import redis.exceptions

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_test_url() -> str:
    return os.environ.get("PROTOEVENTS_TEST_REDIS_URL", DEFAULT_REDIS_URL)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"true", "1"}


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis server's URL; skips (fails in CI) when it is not reachable."""
    url = redis_test_url()
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        reason = f"Redis not reachable at {url}: set PROTOEVENTS_TEST_REDIS_URL ({exc})"
        if _in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    finally:
        client.close()
    return url


@pytest.fixture
def redis_channel() -> str:
    """A channel no other test publishes on (pub/sub channels are server-wide)."""
    return f"protoevents-test:{uuid.uuid4().hex}"
