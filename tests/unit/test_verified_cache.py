"""The verification cache (api/auth.py) holds a fleet's credentials: bounded, oldest out first,
remembered longer than an agent's poll interval (issue 16)."""

from __future__ import annotations

import time

from opencbs.api.auth import VerifiedCache


def test_the_oldest_goes_first_when_full() -> None:
    cache = VerifiedCache(size=3)
    for n in range(3):
        cache.remember("user", f"hash{n}", "pw")
    cache.remember("user", "hash0", "pw")  # seen again: now the newest
    cache.remember("user", "hash3", "pw")  # full: hash1, the oldest, goes
    assert [cache.hit("user", f"hash{n}", "pw") for n in range(4)] == [True, False, True, True]
    assert not cache.hit("user", "hash3", "other")


def test_remembered_longer_than_the_poll_interval() -> None:
    assert VerifiedCache()._ttl > 60 + 60  # agent_poll_interval and its jitter
    cache = VerifiedCache(ttl=0.05)
    cache.remember("user", "hash", "pw")
    assert cache.hit("user", "hash", "pw")
    time.sleep(0.1)
    assert not cache.hit("user", "hash", "pw")
