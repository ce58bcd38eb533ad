"""Replicas that share a state store scrape each backend's engine once per interval between
them, not once each.

Before its scrape of a backend, a replica claims it for the interval (``SET NX`` with an expiry
a little under ``scrape.interval-s``). The replica that holds the claim scrapes and publishes
what it found of others' load (requests, tokens, KV-cache use; already net of every replica's
calls, since its view counts them all) and the backend's slowdown, kept for ``scrape.stale-s``;
the others take that. If the store cannot be reached, every replica scrapes for itself. Power
sources are read by each replica, whose energy accounts are its own.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["Others", "SharedScrapes"]

Others = tuple[float, float, float | None, float]  # requests, tokens, KV-cache use, slowdown


class SharedScrapes:
    """Claims and results of scrapes, under ``prefix`` in the state store (module docstring)."""

    def __init__(
        self, client: Redis, prefix: str, replica: str, interval_s: float, stale_s: float
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.replica = replica
        self.claim_ms = max(int(interval_s * 900), 1)  # 90% of an interval
        self.keep_ms = max(int(stale_s * 1000), 1)

    async def claim(self, names: Sequence[str]) -> list[bool]:
        """Which of the backends ``names`` this replica scrapes this interval (all of them when
        the store cannot be reached)."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.set(f"{self.prefix}:claim:{name}", self.replica, nx=True, px=self.claim_ms)
                won = await pipe.execute()
        except (RedisError, OSError):
            return [True] * len(names)
        return [bool(w) for w in won]

    async def publish(self, name: str, others: Others) -> None:
        """What this replica's scrape of ``name`` found of others' load."""
        # Unpublished, it expires and the others scrape for themselves.
        with contextlib.suppress(RedisError, OSError):
            key = f"{self.prefix}:scraped:{name}"
            await self.client.set(key, json.dumps(others), px=self.keep_ms)

    async def fetch(self, names: Sequence[str]) -> list[Others | None]:
        """The latest published scrape of each backend, ``None`` where none is fresh."""
        if not names:
            return []
        try:
            texts = await self.client.mget([f"{self.prefix}:scraped:{n}" for n in names])
        except (RedisError, OSError):
            return [None] * len(names)
        found: list[Others | None] = []
        for text in texts:
            if text is None:
                found.append(None)
                continue
            try:
                values = json.loads(text)
                requests, tokens, kv = values[:3]
                # A replica of a version that shares no slowdown publishes three values.
                slowdown = float(values[3]) if len(values) > 3 else 1.0
                kv_use = None if kv is None else float(kv)
                found.append((float(requests), float(tokens), kv_use, slowdown))
            except (TypeError, ValueError):
                found.append(None)
        return found
