"""Gateway replicas sharing what they learn and the load they put on each backend, in Redis.

With ``state-store: redis://HOST:PORT/DB`` every replica (a ``perllm serve`` process, or a
worker of ``perllm serve --workers N``) keeps deciding on its *local* copy of the policy and of
the backends' load: no decision waits on Redis. A background task syncs the statistics every
``state-sync.interval-s`` (0.5 s by default) and, in between, the load alone every
``state-sync.load-interval-s`` (0.1 s), each in one round trip (a Lua script, atomic in Redis).

**Learned statistics.** A policy with :class:`~perllm.policies.mergeable.SharedStatistics`
exposes them as additive totals (counts, sums, sums of squares), each under a name of its own;
this module sees the names and numbers only. Redis holds the merged totals ``G`` of every
replica, and per replica ``own[r]``, the cumulative totals replica ``r`` has added to ``G`` so
far. A replica keeps ``B``, the ``G`` it last read, and ``O_B``, the own totals that ``G`` held
then; its policy holds ``P = B + L`` where ``L`` is what it learned itself since. A sync:

1. takes ``S = P`` and sends ``O = O_B + (S - B)``, its cumulative own totals;
2. Redis adds ``O - own[r]`` to ``G`` and stores ``own[r] = O`` (idempotent: a sync whose
   answer was lost is simply repeated with a larger ``O``; nothing is counted twice, nothing is
   lost), then returns ``G``;
3. the replica sets ``P = G + (P_now - S)`` (what it learned while waiting for the answer is
   kept), ``B = G``, ``O_B = O``.

Each observation thus enters ``G`` exactly once, from the replica that made it, and every
replica decides on everything the others learned up to one interval ago. That delay is safe for
a bandit: its feedback already arrives seconds late (a request's answer comes back long after
the decision), the statistics are sums, which commute, so the order of merging is irrelevant,
and a replica's confidence bounds only tighten when the merged counts grow. Without a store, or
while it is down, a replica is exactly the embedded single gateway.

``G`` is seeded once, by the first replica to sync, with its own ``P`` (which holds its
``state-file``); later replicas adopt ``G`` rather than their file (Redis is the newer record: a
replica writes ``P`` to its ``state-file`` on shutdown). If Redis loses ``G`` (restarted without
persistence) the next replica to sync seeds it again with its ``P``, and each other replica adds
only what it learned since its last sync (``own[r]`` is gone too, so ``O_B`` is used for it).
Redis restored from an older snapshot holds an older ``G`` with the matching older ``own[r]``
(the script writes both atomically), so each replica adds back what the snapshot lost. On a
clean shutdown a replica deletes ``own[r]``; a crashed one's expires after a week. Only the
replica itself ever reads its ``own[r]``, and without it uses ``O_B``, so the expiry is safe
too (the one imprecision: a sync whose answer was lost *and* whose ``own[r]`` then expired
would be counted twice).

A sync sends only the names whose own totals changed since the last successful one; after a
failure, or when Redis says it lost ``G`` or ``own[r]``, it sends them all.

**Load.** Each replica publishes its in-flight requests and tokens per backend under a key that
expires after ``state-sync.lease-s`` (5 s by default, at least two intervals) and reads the
others' every 0.1 s (load changes with every request, so it is synced more often than the
statistics; a load sync costs a few small commands); their sum is added to its own in the
:class:`~perllm.gateway.view.LiveView`. A replica that dies stops renewing its lease, so its
requests stop counting within ``lease-s``; a replica that cannot reach Redis for ``lease-s``
forgets the others' load too.

**Redis down.** A failed sync is logged once (``state store unreachable``), ``/health`` says
``degraded-state-store``, the replica goes on with its local state, and the next syncs retry
(the client reconnects by itself); the first that succeeds catches up as in step 3 and logs the
reconnection. No request waits on, or fails because of, Redis.

Replicas share a namespace ``{state-sync.namespace}:{policy}:{digest of the backend names}``,
so gateways in front of different clusters, or with different policies, never mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from typing import Any

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from perllm.gateway.background import Background
from perllm.gateway.config import GatewayConfig
from perllm.gateway.view import LiveView
from perllm.policies.base import Policy
from perllm.policies.mergeable import SharedStatistics, add_totals, subtract_totals

__all__ = ["SharedState"]

log = logging.getLogger(__name__)

OWN_TTL_S = 7 * 24 * 3600
SYNC_TIMEOUT_S = 2.0
INIT_FIELD = "_init"

# KEYS: merged totals G, own[r], this replica's load lease, the set of replicas.
# ARGV: lease ms, own ttl s, replica id, load JSON, load key prefix, n, full (1 when every name
# is sent, else only those whose own total changed), then n x (name, own cumulative O, O_B,
# seed S). The sync answers {0}, changing nothing, when it needs every name and did not get
# them; else {G as one string, the other replicas' load JSONs}.
_MERGE_TOTALS = """
local n = tonumber(ARGV[6])
local fresh = redis.call('EXISTS', KEYS[1]) == 0
local known = redis.call('EXISTS', KEYS[2]) == 1
if (fresh or not known) and ARGV[7] ~= '1' then return {0} end
if fresh then redis.call('HSET', KEYS[1], '_init', '1') end
redis.call('HSET', KEYS[2], '_init', '1')
for i = 0, n - 1 do
  local base = 8 + 4 * i
  local name, own = ARGV[base], ARGV[base + 1]
  if fresh then
    if tonumber(ARGV[base + 3]) ~= 0 then redis.call('HSET', KEYS[1], name, ARGV[base + 3]) end
  else
    local last = ARGV[base + 2]
    if known then last = redis.call('HGET', KEYS[2], name) or '0' end
    local d = tonumber(own) - tonumber(last)
    if d ~= 0 then redis.call('HINCRBYFLOAT', KEYS[1], name, string.format('%.17g', d)) end
  end
  redis.call('HSET', KEYS[2], name, own)
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
"""
_PUBLISH_LOAD = """
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[1])
redis.call('SADD', KEYS[4], ARGV[3])
local loads = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  local value = redis.call('GET', ARGV[5] .. member)
  if not value then
    redis.call('SREM', KEYS[4], member)
  elseif member ~= ARGV[3] then
    table.insert(loads, value)
  end
end
"""
SYNC_SCRIPT = (
    _MERGE_TOTALS
    + _PUBLISH_LOAD
    + "return {table.concat(redis.call('HGETALL', KEYS[1]), '\\0'), loads}"
)
LOAD_SCRIPT = _PUBLISH_LOAD + "return loads"

RETIRE_SCRIPT = """
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""


def namespace(config: GatewayConfig, policy: Policy) -> str:
    """The key prefix shared by replicas of the same cluster and policy."""
    names = "\n".join(b.name for b in config.backends).encode()
    digest = hashlib.sha256(names).hexdigest()[:12]
    return f"{config.state_sync.namespace}:{policy.name}:{digest}"


def redacted(url: str) -> str:
    """The URL without its password (for logs and ``/health``)."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, _ = head.partition("://")
    return f"{scheme}://***@{tail}"


class SharedState:
    """Syncs one gateway's policy statistics and load with its replicas (module docstring)."""

    def __init__(self, config: GatewayConfig, policy: Policy, view: LiveView) -> None:
        assert config.state_store is not None
        self.url = config.state_store
        self.settings = config.state_sync
        self.policy = policy
        self.view = view
        self.replica = uuid.uuid4().hex[:16]
        prefix = self.prefix = namespace(config, policy)
        self._keys = [
            f"{prefix}:stats",
            f"{prefix}:own:{self.replica}",
            f"{prefix}:load:{self.replica}",
            f"{prefix}:replicas",
        ]
        self._load_prefix = f"{prefix}:load:"
        timeout = min(SYNC_TIMEOUT_S, self.settings.lease_s / 2)
        self.client = Redis.from_url(
            self.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self._sync = self.client.register_script(SYNC_SCRIPT)
        self._publish_load = self.client.register_script(LOAD_SCRIPT)
        self._retire = self.client.register_script(RETIRE_SCRIPT)
        self.shares_stats = isinstance(policy, SharedStatistics)
        self.base: dict[str, float] = {}
        self.own_base: dict[str, float] = {}
        self.connected: bool | None = None  # None until the first sync
        self.replicas = 1
        self.syncs = 0
        self._last_ok = time.monotonic()
        self._full_next = True  # every name, until a sync succeeds
        self._task = Background("perllm-state-store", self._loop)

    # --- the policy's totals -------------------------------------------------------------

    def _totals(self) -> dict[str, float]:
        if isinstance(self.policy, SharedStatistics):
            return self.policy.shared_stats()
        return {}

    def _adopt(self, totals: dict[str, float]) -> None:
        if isinstance(self.policy, SharedStatistics):
            self.policy.adopt_shared_stats(totals, len(self.view.servers))

    # --- one sync --------------------------------------------------------------------------

    def _load_json(self) -> str:
        return json.dumps(
            {"in_flight": self.view.in_flight.tolist(), "tokens": self.view.tokens.tolist()}
        )

    def _set_remote(self, loads: list[str]) -> None:
        n = len(self.view.servers)
        in_flight, tokens = np.zeros(n), np.zeros(n)
        for text in loads:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                load = json.loads(text)
                if len(load["in_flight"]) == n and len(load["tokens"]) == n:
                    in_flight += np.asarray(load["in_flight"], dtype=float)
                    tokens += np.asarray(load["tokens"], dtype=float)
        self.view.set_remote(in_flight, tokens)
        self.replicas = 1 + len(loads)

    def _load_args(self, names: int = 0, full: bool = False) -> list[Any]:
        return [
            int(self.settings.lease_s * 1000),
            OWN_TTL_S,
            self.replica,
            self._load_json(),
            self._load_prefix,
            names,
            int(full),
        ]

    def _args(self, own: dict[str, float], snapshot: dict[str, float], full: bool) -> list[Any]:
        if full:
            names = sorted(own.keys() | self.own_base.keys() | snapshot.keys())
        else:  # only what this replica learned since its last sync
            names = [n for n in own if own[n] != self.own_base.get(n, 0.0)]
        args = self._load_args(len(names), full)
        for name in names:
            args += [
                name,
                repr(own.get(name, 0.0)),
                repr(self.own_base.get(name, 0.0)),
                repr(snapshot.get(name, 0.0)),
            ]
        return args

    async def sync(self) -> bool:
        """Publish and merge once; returns whether Redis answered (never raises RedisError)."""
        snapshot = self._totals()
        own = add_totals(self.own_base, subtract_totals(snapshot, self.base))
        full = self._full_next
        try:
            result = await self._sync(keys=self._keys, args=self._args(own, snapshot, full))
            if len(result) == 1:  # the store lost this replica's totals: send them all
                full = True
                result = await self._sync(keys=self._keys, args=self._args(own, snapshot, full))
        except (RedisError, OSError) as err:
            self._full_next = True
            self._down(err)
            return False
        merged_text, loads = result
        merged_flat = merged_text.split("\0")  # one string: far faster to parse than a list
        merged = {
            k: float(v)
            for k, v in zip(merged_flat[::2], merged_flat[1::2], strict=True)
            if k != INIT_FIELD
        }
        learned_meanwhile = subtract_totals(self._totals(), snapshot)
        self._adopt(add_totals(merged, learned_meanwhile))
        self.base, self.own_base = merged, own
        self._full_next = False
        self._set_remote(loads)
        self._up()
        return True

    async def sync_load(self) -> bool:
        """Publish this replica's load and read the others' (no statistics); returns whether
        Redis answered (never raises RedisError)."""
        try:
            loads = await self._publish_load(keys=self._keys, args=self._load_args())
        except (RedisError, OSError) as err:
            self._full_next = True
            self._down(err)
            return False
        self._set_remote(loads)
        self._last_ok = time.monotonic()
        return True

    def _down(self, err: BaseException) -> None:
        if self.connected is not False:
            log.warning(
                "state store %s unreachable (%s): serving on local state, retrying every %gs",
                redacted(self.url),
                str(err) or type(err).__name__,
                self.settings.load_interval_s,
            )
        self.connected = False
        if time.monotonic() - self._last_ok > self.settings.lease_s:  # their leases are over
            self.view.set_remote(np.zeros(len(self.view.servers)), np.zeros(len(self.view.servers)))
            self.replicas = 1

    def _up(self) -> None:
        if self.connected is False:
            log.warning(
                "state store %s reachable again: merged with %d replica(s)",
                redacted(self.url),
                self.replicas,
            )
        elif self.connected is None:
            log.info("state store %s: %d replica(s)", redacted(self.url), self.replicas)
        self.connected = True
        self.syncs += 1
        self._last_ok = time.monotonic()

    # --- lifecycle ---------------------------------------------------------------------------

    async def _loop(self) -> None:
        next_totals = 0.0
        while True:
            try:
                if not self.connected or time.monotonic() >= next_totals:
                    next_totals = time.monotonic() + self.settings.interval_s
                    await self.sync()
                else:
                    await self.sync_load()
            except Exception:  # a bug must not end the syncs: log it and carry on
                log.exception("state store sync failed")
            await asyncio.sleep(self.settings.load_interval_s)

    def start(self) -> None:
        if not self.shares_stats:
            log.info(
                "policy %s has no shareable statistics: replicas share their load only",
                self.policy.name,
            )
        if not self._task.running:
            # What the policy holds now (its state-file) is not this replica's to add: it is
            # either in the store already or seeds it.
            self.base = self._totals()
            self._task.start()

    async def stop(self) -> None:
        """Stop syncing: publish a last time, and retire this replica's keys if that worked."""
        await self._task.stop()
        if await self.sync():
            with contextlib.suppress(RedisError, OSError):
                await self._retire(keys=self._keys[1:], args=[self.replica])
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()

    def status(self) -> dict[str, Any]:
        """For ``/health`` and ``/stats``."""
        state = {None: "connecting", True: "ok", False: "degraded-state-store"}[self.connected]
        return {
            "url": redacted(self.url),
            "status": state,
            "replicas": self.replicas,
            "syncs": self.syncs,
            "shares-statistics": self.shares_stats,
        }
